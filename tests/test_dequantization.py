"""Variational dequantisation (Flow++): q(u|x_int) support, exact log-density, sampling
consistency, the uniform model unchanged bit for bit, the bounds, gradients, checkpoints and
training."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
import model_fixtures as mf
import vapnev_tf
from vapnev_tf.dequantization import EDGE
from vapnev_tf.dequantization import VariationalDequantizer

SHAPE = (8, 8, 1)


def perturb_zero_kernels(layer, seed=0, stddev=0.1):
  """Moves the zero-initialised output kernels away from 0 (so no part is the identity and every
  weight upstream of them gets a gradient)."""
  rng = np.random.default_rng(seed)
  for v in layer.trainable_variables:
    if v.path.endswith("kernel") and not np.any(v.numpy()):
      v.assign(rng.normal(0.0, stddev, v.shape).astype(str(v.dtype)))


def integer_images(shape, seed=0, dtype="float32"):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, shape).astype(dtype))


def dequantizer(image_shape, dtype="float32", seed=0):
  layer = VariationalDequantizer(image_shape, filters=4, dtype=dtype)
  layer(integer_images((1,) + tuple(image_shape), dtype=dtype))
  perturb_zero_kernels(layer, seed=seed)
  return layer


def model(likelihood="vapnev", **overrides):
  return vapnev_tf.VAPNEV(mf.tiny_config(SHAPE, likelihood, encoder_blocks=2,
                                         dequantization_filters=4, **overrides))


# --- q(u | x_int) --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loc", [-60.0, 0.0, 60.0])
def test_support_is_strictly_inside_the_unit_cube_even_at_extreme_logits(dtype, loc):
  layer = dequantizer((4, 4, 2), dtype=dtype)
  bias = layer.base.bias.numpy()
  bias[:2] = loc  # the base Gaussian's mean: the sigmoid saturates at +-60
  layer.base.bias.assign(bias)
  x_int = integer_images((3, 4, 4, 2), dtype=dtype)
  u, log_q = layer.sample_and_log_prob(x_int, n=5, seed=(1, 2))
  u = u.numpy()
  assert u.shape == (5, 3, 4, 4, 2) and log_q.shape == (5, 3)
  assert u.min() >= EDGE and u.max() <= 1.0 - EDGE and 0.0 < u.min() and u.max() < 1.0
  assert np.all(np.isfinite(log_q))
  x = (255.0 + tf.constant(u)).numpy()  # the brightest pixel stays below 256 in this dtype
  assert x.max() < 256.0 and x.dtype == np.dtype(dtype)


def test_log_density_is_exact_against_the_autodiff_jacobian_float64():
  layer = dequantizer((3, 3, 2), dtype="float64", seed=3)
  x_int = integer_images((2, 3, 3, 2), seed=1, dtype="float64")
  q = layer.distribution(x_int)
  eps = q.distribution.sample(seed=(4, 5))  # (2, 3, 3, 2)
  with tf.GradientTape() as tape:
    tape.watch(eps)
    u = q.bijector.forward(eps)
  jacobian = tape.batch_jacobian(u, eps).numpy().reshape(2, 18, 18)
  _, log_abs_det = np.linalg.slogdet(jacobian)
  fldj = q.bijector.forward_log_det_jacobian(ff.fresh(eps), event_ndims=3).numpy()
  np.testing.assert_allclose(fldj, log_abs_det, rtol=1e-10, atol=1e-10)
  expected = q.distribution.log_prob(eps).numpy() - log_abs_det
  np.testing.assert_allclose(q.log_prob(ff.fresh(u)).numpy(), expected, rtol=1e-8, atol=1e-8)
  # the couplings see x_int: another image gives another density at the same u
  other = layer.distribution(x_int[::-1]).log_prob(ff.fresh(u)).numpy()
  assert np.all(np.abs(other - expected) > 1e-6)


def test_density_integrates_to_one_and_matches_its_samples():
  """One pixel: q(u) on a fine grid integrates to 1 and gives the samples' mean and variance."""
  layer = dequantizer((1, 1, 1), dtype="float64", seed=2)
  x_int = tf.constant([[[[37.0]]]], tf.float64)
  grid = np.linspace(EDGE, 1.0 - EDGE, 40001)
  inner = grid[1:-1]  # the density vanishes at the two ends (logit = -inf, +inf there)
  density = np.exp(layer.distribution(tf.broadcast_to(x_int, (len(inner), 1, 1, 1))).log_prob(
      tf.constant(inner.reshape(-1, 1, 1, 1))).numpy())
  density = np.concatenate([[0.0], density, [0.0]])
  assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-4)
  mean = np.trapezoid(grid * density, grid)
  var = np.trapezoid((grid - mean) ** 2 * density, grid)
  u, log_q = layer.sample_and_log_prob(x_int, n=20000, seed=(7, 8))
  u = u.numpy().ravel()
  assert abs(u.mean() - mean) < 4 * np.sqrt(var / len(u))
  assert u.var() == pytest.approx(var, rel=0.05)
  # sample_and_log_prob (forward log-det) agrees with log_prob (inverse) on the same u
  inverse = layer.distribution(x_int).log_prob(tf.constant(u.reshape(-1, 1, 1, 1, 1)))
  np.testing.assert_allclose(log_q.numpy().ravel(), inverse.numpy().ravel(), rtol=1e-7, atol=1e-7)


# --- the model's bounds --------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["vapnev", "vae_flow"])
def test_uniform_bounds_are_todays_bit_for_bit(likelihood):
  m = model(likelihood)
  assert m.config.dequantization == "uniform" and not hasattr(m, "dequantizer")
  x = ff.pixels((3,) + SHAPE, seed=4)
  seed = tf.constant([3, 9])
  terms = m.elbo_terms(x, seed=seed)
  assert set(terms) == {"log_px_given_z", "kl"}
  q = m.encode(x)
  z = q.sample(seed=seed)
  np.testing.assert_array_equal(terms["log_px_given_z"], m.p_x_given_z(z).log_prob(x))
  np.testing.assert_array_equal(terms["kl"], tfp.distributions.kl_divergence(q, m.prior))
  k = 4  # one chunk: its seed is the seed itself
  z = q.sample(k, seed=seed)
  log_w = m.p_x_given_z(z).log_prob(x) + m.prior.log_prob(z) - q.log_prob(z)
  expected = tf.reduce_logsumexp(log_w, axis=0) - np.log(np.float32(k))
  np.testing.assert_array_equal(m.log_likelihood_bound(x, k, seed=seed, chunk_size=8), expected)
  x_again, log_q = m.dequantize(x)
  assert x_again is x or np.array_equal(x_again, x)
  np.testing.assert_array_equal(log_q, np.zeros(3, np.float32))


def test_uniform_realnvp_bound_is_todays_exact_log_likelihood():
  m = model("realnvp")
  x = ff.pixels((2,) + SHAPE, seed=5)
  exact = m.p_x_given_z(None).log_prob(x)
  np.testing.assert_array_equal(m.log_likelihood_bound(x, 3, seed=(1, 2)), exact)
  np.testing.assert_array_equal(m.elbo(x), exact)


def test_variational_elbo_terms_are_the_flow_plus_dequantisation_terms():
  m = model(dequantization="variational")
  perturb_zero_kernels(m.dequantizer, seed=1)
  x = ff.pixels((3,) + SHAPE, seed=6)
  seed = tf.constant([5, 6])
  terms = m.elbo_terms(x, seed=seed)
  u_seed, z_seed = tfp.random.split_seed(seed)
  x_deq, log_q_u = m.dequantize(x, seed=u_seed)
  x_int = np.floor(x.numpy())
  u = x_deq.numpy() - x_int
  assert u.min() > 0 and u.max() < 1 and not np.allclose(x_deq, x)
  z = m.encode(x).sample(seed=z_seed)
  np.testing.assert_allclose(terms["log_q_u"], log_q_u, rtol=1e-6)
  np.testing.assert_allclose(terms["log_px_given_z"],
                             m.p_x_given_z(z).log_prob(x_deq) - log_q_u, rtol=1e-5)


@pytest.mark.parametrize("likelihood", ["vapnev", "realnvp"])
def test_variational_bounds_see_only_the_integer_image(likelihood):
  m = model(likelihood, dequantization="variational")
  x = ff.pixels((2,) + SHAPE, seed=7)
  centred = tf.floor(x) + 0.5
  for bound in (lambda v: m.elbo(v, seed=(1, 2)),
                lambda v: m.log_likelihood_bound(v, 5, seed=(3, 4), chunk_size=2)):
    np.testing.assert_array_equal(bound(x), bound(centred))
  if m.has_vae:
    np.testing.assert_array_equal(m.encode_moments(x)[0], m.encode_moments(centred)[0])


def test_variational_iw_bound_rises_with_k_on_average():
  m = model(dequantization="variational")
  x = ff.pixels((4,) + SHAPE, seed=8)
  elbo = np.mean([m.elbo(x, seed=(s, 1)).numpy() for s in range(8)], axis=0)
  iw = m.log_likelihood_bound(x, 16, seed=(2, 3), chunk_size=5).numpy()
  assert np.all(np.isfinite(iw)) and iw.mean() > elbo.mean()


@pytest.mark.parametrize("likelihood", ["pixel_gaussian", "pixel_logistic"])
def test_pixel_likelihoods_refuse_variational_dequantisation(likelihood):
  with pytest.raises(ValueError, match=rf"dequantization='variational'.*{likelihood}"):
    vapnev_tf.ModelConfig(likelihood=likelihood, dequantization="variational")


def test_every_dequantiser_weight_gets_a_gradient_and_is_checkpointed(tmp_path):
  m = model(dequantization="variational")
  baseline = model()
  assert len(m.trainable_variables) == (len(baseline.trainable_variables)
                                        + len(m.dequantizer.trainable_variables))
  assert len(m.dequantizer.trainable_variables) == 2 * (2 + 1 + 2 * 2)  # context, base, couplings
  ff.perturb_multipliers(m, seed=1)
  perturb_zero_kernels(m, seed=2)
  x = ff.pixels((3,) + SHAPE, seed=9)
  mf.assert_every_weight_trains_and_survives_a_checkpoint(
      m, lambda: model(dequantization="variational"), x, tmp_path, clone_differs=True)


# VAPNEV's in `make test`; the unconditional flow's (the same dequantizer) under `slow`.
@pytest.mark.parametrize("likelihood", ["vapnev", pytest.param("realnvp", marks=pytest.mark.slow)])
def test_a_few_training_steps_give_finite_falling_losses(likelihood):
  m = model(likelihood, dequantization="variational")
  x = mf.real_batch(8)[:, 10:18, 10:18, :]
  losses = mf.train(m, x, 12, learning_rate=3e-3)
  assert np.all(np.isfinite(losses)) and losses[-3:].mean() < losses[:3].mean()
