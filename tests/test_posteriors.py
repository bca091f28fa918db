"""IAF posterior (Kingma et al. 2016): exact log-density, autoregressive structure, identity start,
gradients, checkpoints, training and the bounds."""
import numpy as np
import pytest
import tensorflow as tf

import flow_fixtures as ff
import model_fixtures as mf
import vapnev_tf
from vapnev_tf.posteriors import IAFPosterior
from vapnev_tf.posteriors import made_masks

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

SHAPE = (8, 8, 1)
L = 5


def perturb_zero_kernels(layer, seed=0, stddev=0.3):
  rng = np.random.default_rng(seed)
  for v in layer.trainable_variables:
    if v.path.endswith("kernel") and not np.any(v.numpy()):
      v.assign(rng.normal(0.0, stddev, v.shape).astype(str(v.dtype)))


def iaf(num_steps=2, dtype="float64", perturb=True, context=3):
  layer = IAFPosterior(L, num_steps, hidden=12, dtype=dtype)
  layer(tf.zeros([1, L], dtype), tf.zeros([1, context], dtype))
  if perturb:
    perturb_zero_kernels(layer, seed=1)
  return layer


def gaussian_inputs(batch=4, context=3, dtype="float64", seed=0):
  rng = np.random.default_rng(seed)
  mu = tf.constant(rng.normal(size=(batch, L)), dtype)
  sigma = tf.constant(rng.uniform(0.5, 1.5, (batch, L)), dtype)
  h = tf.constant(rng.normal(size=(batch, context)), dtype)
  return mu, sigma, h


def model(**overrides):
  return vapnev_tf.VAPNEV(mf.tiny_config(SHAPE, encoder_blocks=2, posterior="iaf", iaf_hidden=16,
                                         **overrides))


def _jacobian(bijector, z):
  with tf.GradientTape() as tape:
    tape.watch(z)
    out = bijector.forward(z)
  return tape.batch_jacobian(out, z).numpy()  # (B, L, L): d out_i / d z_j


@pytest.mark.parametrize("reverse", [False, True])
def test_made_masks_are_autoregressive(reverse):
  to_hidden, hidden_to_hidden, to_output = made_masks(L, 12, reverse)
  connectivity = ((to_hidden @ hidden_to_hidden @ to_output) > 0)  # input j -> output i
  order = np.arange(L)[::-1] if reverse else np.arange(L)
  for j in range(L):
    for i in range(L):
      assert connectivity[j, i] == (order[j] < order[i]), (j, i)


def test_each_step_is_triangular_in_its_order_and_the_log_det_is_exact_float64():
  layer = iaf(num_steps=2)
  mu, sigma, h = gaussian_inputs()
  z0 = mu + sigma * tf.random.stateless_normal(mu.shape, (1, 2), dtype=tf.float64)
  for t, lower in ((0, True), (1, False)):
    jacobian = _jacobian(layer.step(t, h), z0)
    strict = np.triu(jacobian, 1) if lower else np.tril(jacobian, -1)
    assert np.all(strict == 0.0), t  # z_t[i] depends on z_{t-1}[<= i] in step t's order
    other = np.tril(jacobian, -1) if lower else np.triu(jacobian, 1)
    assert np.all(np.abs(other).sum(axis=(1, 2)) > 1e-3), t  # and does depend on them
  chain = layer.bijector(h)
  jacobian = _jacobian(chain, z0)
  _, log_abs_det = np.linalg.slogdet(jacobian)
  fldj = chain.forward_log_det_jacobian(ff.fresh(z0), event_ndims=1).numpy()
  np.testing.assert_allclose(fldj, log_abs_det, rtol=1e-10, atol=1e-10)
  q = layer.distribution(mu, sigma, h)
  z = chain.forward(z0)
  expected = q.distribution.log_prob(z0).numpy() - log_abs_det
  np.testing.assert_allclose(q.log_prob(ff.fresh(z)).numpy(), expected, rtol=1e-8, atol=1e-8)


def test_sample_and_log_prob_agrees_with_log_prob_of_the_samples():
  layer = iaf(num_steps=3)
  mu, sigma, h = gaussian_inputs()
  q = layer.distribution(mu, sigma, h)
  z, log_q = q.experimental_sample_and_log_prob(6, seed=(3, 4))
  assert z.shape == (6, 4, L) and log_q.shape == (6, 4)
  np.testing.assert_allclose(q.log_prob(ff.fresh(z)), log_q, rtol=1e-8, atol=1e-8)
  # its samples are not those of the base Gaussian: the steps move them
  base = q.distribution.sample(6, seed=(3, 4))
  assert not np.allclose(base, z)


def test_a_fresh_iaf_is_the_identity():
  layer = iaf(num_steps=2, dtype="float32", perturb=False)
  mu, sigma, h = gaussian_inputs(dtype="float32")
  q = layer.distribution(mu, sigma, h)
  z, log_q = q.experimental_sample_and_log_prob(3, seed=(5, 6))
  np.testing.assert_array_equal(z, q.distribution.sample(3, seed=(5, 6)))
  np.testing.assert_allclose(log_q, q.distribution.log_prob(z), rtol=1e-6)


def test_model_iaf_terms_use_the_monte_carlo_kl():
  m = model()
  perturb_zero_kernels(m.iaf, seed=2)
  x = ff.pixels((3,) + SHAPE, seed=1)
  q = m.encode(x)
  assert "TransformedDistribution" in type(q).__name__ and q.bijector.name == "iaf"
  assert q.batch_shape == (3,) and q.event_shape == (8,)
  mu_z, sigma_z = m.encode_moments(x)
  np.testing.assert_allclose(q.distribution.mean(), mu_z)
  np.testing.assert_allclose(q.distribution.stddev(), sigma_z)
  seed = tf.constant([7, 8])
  terms = m.elbo_terms(x, seed=seed)
  z, log_q = q.experimental_sample_and_log_prob(seed=seed)
  np.testing.assert_allclose(terms["kl"], log_q - m.prior.log_prob(z), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(terms["log_px_given_z"], m.p_x_given_z(z).log_prob(x), rtol=1e-5)


def test_iw_bound_is_above_the_elbo_on_average():
  m = model()
  perturb_zero_kernels(m.iaf, seed=3, stddev=0.1)
  x = ff.pixels((4,) + SHAPE, seed=2)
  elbo = np.mean([m.elbo(x, seed=(s, 2)).numpy() for s in range(8)], axis=0)
  iw = m.log_likelihood_bound(x, 16, seed=(4, 5), chunk_size=6).numpy()
  assert np.all(np.isfinite(iw)) and iw.mean() > elbo.mean()
  assert m.log_likelihood_bound(x, 1, seed=(4, 5)).shape == (4,)


def test_realnvp_refuses_the_iaf_posterior():
  with pytest.raises(ValueError, match=r"posterior='iaf'.*realnvp"):
    vapnev_tf.ModelConfig(likelihood="realnvp", posterior="iaf")


def test_every_iaf_weight_gets_a_gradient_and_is_checkpointed(tmp_path):
  m = model(iaf_steps=2)
  baseline = vapnev_tf.VAPNEV(mf.tiny_config(SHAPE, encoder_blocks=2))
  per_step = 2 + 1 + 2 + 2 + 2  # masked_in, context_in, masked_hidden, shift, log-scale
  assert len(m.trainable_variables) == len(baseline.trainable_variables) + 2 + 2 * per_step
  assert len(m.iaf.trainable_variables) == 2 * per_step
  ff.perturb_multipliers(m, seed=1)
  perturb_zero_kernels(m.iaf, seed=4, stddev=0.1)
  x = ff.pixels((3,) + SHAPE, seed=3)
  mf.assert_every_weight_trains_and_survives_a_checkpoint(m, lambda: model(iaf_steps=2), x,
                                                          tmp_path)


# The variational one trains q(u|x_int) and the IAF together in `make test`; the other under `slow`.
@pytest.mark.parametrize("dequantization", [pytest.param("uniform", marks=pytest.mark.slow),
                                            "variational"])
def test_a_few_training_steps_give_finite_falling_losses(dequantization):
  m = model(dequantization=dequantization, dequantization_filters=4)
  x = mf.real_batch(8)[:, 10:18, 10:18, :]
  losses = mf.train(m, x, 12, learning_rate=3e-3)
  assert np.all(np.isfinite(losses)) and losses[-3:].mean() < losses[:3].mean()


def test_export_module_uses_q_u_and_the_iaf_posterior():
  """The export's bound is the model's (q(u|x_int) and the IAF inside a tf.function, tensor k);
  its encode gives the encoder's Gaussian."""
  from vapnev_tf import data  # pylint: disable=g-import-not-at-top
  from vapnev_tf import export  # pylint: disable=g-import-not-at-top
  m = model(dequantization="variational", dequantization_filters=4)
  perturb_zero_kernels(m.iaf, seed=5, stddev=0.1)
  module = export.VapnevModule(m)
  images = np.random.default_rng(0).integers(0, 256, size=(2,) + SHAPE, dtype=np.uint8)
  dequantize_seed, model_seed = export.derive_seeds(7)
  x = data.dequantize(images, dequantize_seed)
  got = module.log_likelihood_bound(images=images, num_samples=5, seed=7)["log_likelihood"]
  np.testing.assert_allclose(got.numpy(), m.log_likelihood_bound(x, 5, seed=model_seed),
                             rtol=1e-5, atol=1e-3)
  out = module.encode(images=images)
  mu_z, sigma_z = m.encode_moments(tf.constant(images, tf.float32) + 0.5)
  np.testing.assert_allclose(out["mu_z"], mu_z, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["sigma_z"], sigma_z, rtol=1e-5, atol=1e-6)


def test_encode_center_is_the_mean_or_the_iaf_image_of_it():
  """`encode_center` (the z of ActNorm's data-dependent init): the Gaussian's mean, and mu_z carried
  through the IAF steps for posterior="iaf" (whose TransformedDistribution has no mean)."""
  x = mf.real_batch(3)[:, 10:18, 10:18, :]
  gaussian = vapnev_tf.VAPNEV(mf.tiny_config(SHAPE, encoder_blocks=2))
  np.testing.assert_allclose(gaussian.encode_center(x), gaussian.encode(x).mean(), rtol=1e-6)
  m = model()
  perturb_zero_kernels(m.iaf, seed=3, stddev=0.3)
  mu_z, _, h = m.encoder(x)
  center = m.encode_center(x).numpy()
  np.testing.assert_allclose(center, m.iaf.bijector(h).forward(mu_z), rtol=1e-5, atol=1e-6)
  assert np.abs(center - mu_z.numpy()).max() > 1e-3  # the perturbed steps move it
