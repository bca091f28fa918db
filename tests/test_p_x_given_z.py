"""p(x|z) of every flow likelihood as a TFP TransformedDistribution: `p.bijector` (f_z^{-1} as a
`tfb.Chain`, forward y -> x) and `p.distribution` (the base over y), tested in the manner of TFP's
bijector tests (round trips with the cache bypassed, log-dets against the autodiff Jacobian, batch
ranks, execution regimes), and the model's bounds against a distribution built by hand from them."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
import model_fixtures as mf
import vapnev_tf
from vapnev_tf import bijectors as vb
from vapnev_tf.flow_steps import glow

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

tfb = tfp.bijectors
tfd = tfp.distributions

SHAPE = (4, 4, 1)
LATENT = 8
TOL = {"float32": dict(rtol=1e-4, atol=2e-3), "float64": dict(rtol=1e-9, atol=1e-8)}
VARIANTS = {
    "vapnev": dict(likelihood="vapnev"),
    "vae_flow": dict(likelihood="vae_flow"),
    "realnvp": dict(likelihood="realnvp"),
    "glow": dict(likelihood="vapnev", flow_layout=glow.glow_layout_string(2, 1)),
    "shared": dict(likelihood="vapnev", conditioning="shared"),
}


def _model(variant, dtype="float64"):
  model = vapnev_tf.VAPNEV(mf.tiny_config(SHAPE, encoder_blocks=1, dtype=dtype,
                                          **VARIANTS[variant]))
  ff.perturb_multipliers(model.flow, seed=3)  # no coupling is the identity
  for layer in glow.actnorm_layers(model.flow):
    ff.perturb_all(layer, seed=4)
  return model


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
  return request.param, _model(request.param)


def _z(model, batch_shape, seed=1):
  if not model.has_vae:
    return None
  return model.prior.sample(batch_shape, seed=(seed, seed))


def _leaves(bijector):
  """Every non-composite bijector inside `bijector` (through Chain, Invert and FactorOut)."""
  if hasattr(bijector, "bijectors"):  # a Chain
    return [leaf for part in bijector.bijectors for leaf in _leaves(part)]
  if hasattr(bijector, "bijector"):  # an Invert
    return _leaves(bijector.bijector)
  if isinstance(bijector, vb.FactorOut):
    return [bijector] + _leaves(bijector.inner)
  return [bijector]


# ------------------------------------------------------------------------------------ structure


def test_p_is_a_transformed_distribution_of_the_base_by_the_inverse_flow(variant):
  name, model = variant
  z = _z(model, [3, 2])
  p = model.p_x_given_z(z)
  assert isinstance(p, tfd.TransformedDistribution)
  assert isinstance(p.bijector, tfb.Chain)
  assert isinstance(p.distribution, tfd.Independent)
  assert isinstance(p.distribution.distribution, tfd.Normal)
  batch = () if z is None else (3, 2)
  assert p.batch_shape == batch and p.distribution.batch_shape == batch
  assert p.event_shape == SHAPE and p.distribution.event_shape == SHAPE
  if z is not None:
    mu_y, sigma_y = model.decode(z[0])
    np.testing.assert_allclose(p.distribution.mean()[0], mu_y, rtol=1e-12)
    np.testing.assert_allclose(p.distribution.stddev()[0], sigma_y, rtol=1e-12)
  # The parts a user lists: the pre-processing squash and the flow's own bijectors, inverted.
  first, flow_part = p.bijector.bijectors
  assert first.bijector.name == "pixels_to_logits"  # each an Invert of f_z's parts
  assert flow_part.bijector.name == "scale0"
  couplings = [b for b in _leaves(p.bijector) if isinstance(b, vb.ConditionalAffineCoupling)]
  assert len(couplings) == len(model.flow.coupling_networks())
  if model.flow.conditional:
    assert all(c.conditioning is not None for c in couplings)
  x = ff.pixels((2,) + SHAPE, "float64")
  f_z = model.flow.bijector(None if z is None or not model.flow.conditional else z)
  np.testing.assert_allclose(p.bijector.inverse(x), f_z.forward(ff.fresh(x)), rtol=1e-10)
  np.testing.assert_allclose(p.bijector.inverse_log_det_jacobian(ff.fresh(x), event_ndims=3),
                             f_z.forward_log_det_jacobian(ff.fresh(x), event_ndims=3), rtol=1e-10)


def test_p_log_prob_is_the_base_log_prob_of_y_plus_the_log_det(variant):
  _, model = variant
  z = _z(model, [2])
  p = model.p_x_given_z(z)
  x = ff.pixels((2,) + SHAPE, "float64", seed=5)
  y = p.bijector.inverse(ff.fresh(x))
  log_det = p.bijector.inverse_log_det_jacobian(ff.fresh(x), event_ndims=3)
  np.testing.assert_allclose(p.log_prob(x), p.distribution.log_prob(y) + log_det, rtol=1e-10)
  np.testing.assert_allclose(p.prob(x), np.exp(p.distribution.log_prob(y) + log_det), rtol=1e-9)


# ------------------------------------------------------------------ the bijector, TFP's manner


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trips_with_the_cache_bypassed_and_opposite_log_dets(variant, dtype):
  name, model = variant
  model = model if dtype == "float64" else _model(name, dtype)
  bijector = model.p_x_given_z(_z(model, [2])).bijector
  x = ff.pixels((2,) + SHAPE, dtype, seed=6)
  y = bijector.inverse(x)
  assert y.dtype == x.dtype and y.shape == x.shape
  np.testing.assert_allclose(bijector.forward(ff.fresh(y)), x, **TOL[dtype])  # x -> y -> x
  y0 = ff.fresh(y) * 0.5  # a point of y-space not computed from x
  x0 = bijector.forward(y0)
  np.testing.assert_allclose(bijector.inverse(ff.fresh(x0)), y0, **TOL[dtype])  # y -> x -> y
  fldj = bijector.forward_log_det_jacobian(ff.fresh(y0), event_ndims=3)
  ildj = bijector.inverse_log_det_jacobian(ff.fresh(x0), event_ndims=3)
  assert fldj.shape == (2,)
  np.testing.assert_allclose(fldj, -ildj, **TOL[dtype])


def test_log_det_matches_slogdet_of_the_autodiff_jacobian(variant):
  _, model = variant
  bijector = model.p_x_given_z(_z(model, [1])).bijector
  y = ff.pixels((1,) + SHAPE, "float64", low=-2.0, high=2.0)
  expected = ff.autodiff_log_det(bijector.forward, y)
  got = float(bijector.forward_log_det_jacobian(ff.fresh(y), event_ndims=3)[0])
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
  x = ff.pixels((1,) + SHAPE, "float64", seed=2)
  expected = ff.autodiff_log_det(bijector.inverse, x)
  got = float(bijector.inverse_log_det_jacobian(ff.fresh(x), event_ndims=3)[0])
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3), (2, 1, 3)])
def test_batch_ranks_0_to_3_give_each_event_its_own_value(variant, batch_shape):
  """`flow.to_pixels(z)` is what `p.bijector` is; z of batch rank 0 is only possible there."""
  _, model = variant
  conditional = model.flow.conditional
  z = ff.latents(batch_shape, "float64") if conditional else None
  if conditional:  # the fixtures' latents are 3-dimensional; the model's are 8
    z = tf.concat([z, z, z[..., :2]], axis=-1)
  x = ff.pixels(batch_shape + SHAPE, "float64")
  bijector = model.flow.to_pixels(z)
  y = bijector.inverse(x)
  ildj = bijector.inverse_log_det_jacobian(x, event_ndims=3)
  assert y.shape == x.shape and ildj.shape == batch_shape
  flat_x = tf.reshape(x, (-1,) + SHAPE)
  flat_z = None if z is None else tf.reshape(z, (-1, LATENT))
  for i in range(flat_x.shape[0]):
    single = model.flow.to_pixels(None if z is None else flat_z[i:i + 1])
    np.testing.assert_allclose(tf.reshape(ildj, [-1])[i],
                               single.inverse_log_det_jacobian(flat_x[i:i + 1], 3)[0], rtol=1e-10)
    np.testing.assert_allclose(tf.reshape(y, (-1,) + SHAPE)[i], single.inverse(flat_x[i:i + 1])[0],
                               rtol=1e-10, atol=1e-12)


def test_x_broadcasts_against_z_in_the_bijector_and_the_distribution(variant):
  name, model = variant
  if not model.has_vae:
    pytest.skip("realnvp has no z")
  z = _z(model, [3, 2])
  x = ff.pixels((2,) + SHAPE, "float64")
  p = model.p_x_given_z(z)
  y = p.bijector.inverse(x)
  batch = (3, 2) if model.flow.conditional else (2,)  # vae_flow's f does not depend on z
  assert y.shape == batch + SHAPE
  assert p.bijector.inverse_log_det_jacobian(x, event_ndims=3).shape == batch
  for i in range(3 if model.flow.conditional else 0):
    np.testing.assert_allclose(y[i], model.p_x_given_z(z[i]).bijector.inverse(ff.fresh(x)),
                               rtol=1e-10, atol=1e-12)
  assert p.log_prob(x).shape == (3, 2)
  assert model.p_x_given_z(z[:, 0]).log_prob(x[:1]).shape == (3,)
  np.testing.assert_allclose(p[1].log_prob(x), p.log_prob(x)[1], rtol=1e-10)
  if model.flow.conditional:  # slicing p slices every coupling's z
    assert p[1].bijector.experimental_batch_shape(x_event_ndims=3) == (2,)


@pytest.mark.compiled
@pytest.mark.parametrize("regime", ["function", "xla"])
def test_bijector_and_log_prob_agree_in_eager_function_and_xla(regime):
  model = _model("vapnev", "float32")
  z, x = _z(model, [2]), ff.pixels((2,) + SHAPE)

  def run(z, x):
    p = model.p_x_given_z(z, validate_args=False)
    return (p.bijector.inverse(x), p.bijector.inverse_log_det_jacobian(x, event_ndims=3),
            p.log_prob(x))

  graph = tf.function(run, jit_compile=regime == "xla")
  for got, eager in zip(graph(z, x), run(z, x)):
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------- the model's bounds, by hand


def test_a_distribution_built_from_p_bijector_and_p_distribution_gives_the_model_bounds(variant):
  _, model = variant
  x = ff.pixels((3,) + SHAPE, "float64", seed=7)
  seed = tf.constant([5, 6])
  terms = model.elbo_terms(x, seed=seed)
  if model.has_vae:
    q = model.encode(x)
    z = q.sample(seed=seed)
  else:
    z = None
  p = model.p_x_given_z(z)
  by_hand = tfd.TransformedDistribution(p.distribution, p.bijector)
  np.testing.assert_allclose(terms["log_px_given_z"], by_hand.log_prob(x), rtol=1e-10)
  bound = model.log_likelihood_bound(x, num_samples=1, seed=seed)
  if not model.has_vae:
    np.testing.assert_allclose(bound, by_hand.log_prob(x), rtol=1e-10)
    return
  z1 = q.sample(1, seed=seed)  # the bound's one chunk: (1, B, L), x broadcast against it
  p1 = model.p_x_given_z(z1)
  by_hand = tfd.TransformedDistribution(p1.distribution, p1.bijector)
  expected = by_hand.log_prob(x) + model.prior.log_prob(z1) - q.log_prob(z1)
  np.testing.assert_allclose(bound, expected[0], rtol=1e-10)
