"""The multi-scale conditional flow as p(x|z): composition, conditioning, weights, call counts,
checkpoints, bits/dim of known densities and geometry errors."""
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
import vapnev_tf
from vapnev_tf.flow import ConditionalRealNVP
from vapnev_tf.layers import CouplingNetwork

tfb = tfp.bijectors
tfd = tfp.distributions


def _p_x(flow, z, loc=0.0, scale=1.0):
  shape = (z.shape[0],) + flow.image_shape
  dtype = flow.compute_dtype
  base = tfd.Independent(tfd.Normal(tf.fill(shape, tf.constant(loc, dtype)),
                                    tf.fill(shape, tf.constant(scale, dtype))), 3)
  return tfd.TransformedDistribution(base, tfb.Invert(flow.bijector(z)))


@pytest.fixture(scope="module")
def flow():
  return ff.make_flow((8, 8, 1))


def test_log_prob_is_base_log_prob_plus_log_det(flow):
  z, x = ff.latents((3,)), ff.pixels((3, 8, 8, 1))
  p = _p_x(flow, z, 0.1, 0.7)
  f = flow.bijector(z)
  y = f.forward(ff.fresh(x))
  expected = p.distribution.log_prob(y) + f.forward_log_det_jacobian(ff.fresh(x), event_ndims=3)
  np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-6)


def test_identity_flow_reduces_to_the_logit_density_computed_in_numpy():
  """Fresh couplings are the identity (zero-initialised Eq. 16 multipliers) and the squeezes cancel,
  so log p(x) = sum log N(logit(x')) + log|d logit(x')/dx|, computed here independently."""
  alpha = 0.05
  fresh_flow = ConditionalRealNVP((8, 8, 1), latent_dim=ff.LATENT_DIM, filters=4, num_res_blocks=1,
                                  dtype="float64")
  x = ff.pixels((2, 8, 8, 1), "float64").numpy()
  z = ff.latents((2,), "float64")
  xp = alpha + (1 - 2 * alpha) * x / 256.0
  y = np.log(xp) - np.log1p(-xp)
  log_normal = -0.5 * y ** 2 - 0.5 * math.log(2 * math.pi)
  log_det = np.log(1 - 2 * alpha) - math.log(256.0) - np.log(xp) - np.log1p(-xp)
  expected = np.sum(log_normal + log_det, axis=(1, 2, 3))
  np.testing.assert_allclose(_p_x(fresh_flow, z).log_prob(x), expected, rtol=1e-10)


def test_uniform_density_over_256_levels_is_exactly_8_bits_per_dim():
  shape = (5, 4, 4, 3)
  uniform = tfd.Independent(tfd.Uniform(tf.zeros(shape[1:]), 256.0 * tf.ones(shape[1:])), 3)
  x = ff.pixels(shape)
  np.testing.assert_allclose(vapnev_tf.bits_per_dim(uniform.log_prob(x), shape[1:]), 8.0,
                             rtol=1e-6)
  assert vapnev_tf.bits_per_dim(np.array([-16 * 3 * 8 * math.log(2.0)]), (4, 4, 3))[0] == \
      pytest.approx(8.0)


def test_conditioning_changes_log_prob_only_when_on():
  x = ff.pixels((1, 8, 8, 1))
  z1, z2 = ff.latents((1,), seed=1), ff.latents((1,), seed=2)
  conditional = ff.make_flow((8, 8, 1), conditional=True)
  unconditional = ff.make_flow((8, 8, 1), conditional=False)
  assert abs(float((_p_x(conditional, z1).log_prob(x) - _p_x(conditional, z2).log_prob(x))[0])) > 1e-3
  np.testing.assert_array_equal(_p_x(unconditional, z1).log_prob(x),
                                _p_x(unconditional, z2).log_prob(x))


def _multipliers(layer):
  return [v for v in layer.trainable_variables
          if v.path.split("/")[-1].startswith(("alpha_", "beta1_", "beta2_", "b_"))]


def test_eq16_multipliers_get_nonzero_gradients_from_a_fresh_init():
  fresh_flow = ConditionalRealNVP((8, 8, 1), latent_dim=ff.LATENT_DIM, filters=4, num_res_blocks=1)
  z, x = ff.latents((2,)), ff.pixels((2, 8, 8, 1))
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(_p_x(fresh_flow, z, 0.0, 0.5).log_prob(x))
  mults = _multipliers(fresh_flow)
  assert len(mults) == 8 * len(fresh_flow.coupling_networks())  # alpha, beta1, beta2, b for l and m
  for v, g in zip(mults, tape.gradient(loss, mults)):
    assert g is not None and float(tf.norm(g)) > 0, v.path


def test_every_weight_is_tracked_and_gets_a_gradient(flow):
  z, x = ff.latents((2,)), ff.pixels((2, 8, 8, 1))
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(_p_x(flow, z, 0.0, 0.5).log_prob(x))
  variables = flow.trainable_variables
  assert len({id(v) for v in variables}) == len(variables)
  grads = tape.gradient(loss, variables)
  for v, g in zip(variables, grads):
    assert g is not None and float(tf.norm(g)) > 0, v.path
  # Every variable created by any coupling network is owned by the flow layer.
  owned = {id(v) for v in variables}
  for net in flow.coupling_networks():
    assert all(id(v) in owned for v in net.weights)


def _expected_num_variables(num_couplings, res_blocks, deconv_layers, conditional=True):
  resnet = 2 * (2 + 2 * 2 * res_blocks + 2)  # l1 and m1: conv_in, blocks, conv_out (kernel+bias)
  deconv = 2 * (2 + 2 * deconv_layers + 2) if conditional else 0  # l2, m2: dense, ups, 1x1 conv
  multipliers = 8 if conditional else 4
  return num_couplings * (resnet + deconv + multipliers)


def test_variable_count_matches_architecture():
  # 8x8x1, 2 scales: scale 0 checkerboard on 8x8 (2 up-layers from 2x2), channel on 4x4 (1),
  # scale 1 checkerboard on 4x4 (1), channel on 2x2 (0).
  flow = ConditionalRealNVP((8, 8, 1), latent_dim=3, num_checkerboard=1, num_channelwise=1,
                            filters=4, num_res_blocks=2)
  expected = sum(_expected_num_variables(1, 2, ups) for ups in (2, 1, 1, 0))
  assert len(flow.trainable_variables) == expected
  flow_u = ConditionalRealNVP((8, 8, 1), num_checkerboard=1, num_channelwise=1, filters=4,
                              num_res_blocks=2, conditional=False)
  assert len(flow_u.trainable_variables) == 4 * _expected_num_variables(1, 2, 0, False)


def test_checkpoint_round_trip_restores_every_variable(flow, tmp_path):
  z, x = ff.latents((2,)), ff.pixels((2, 8, 8, 1))
  before = _p_x(flow, z).log_prob(x).numpy()
  path = tf.train.Checkpoint(flow=flow).save(str(tmp_path / "ckpt"))
  saved = [name for name, _ in tf.train.list_variables(path) if "/.ATTRIBUTES/" in name
           and "save_counter" not in name]
  assert len(saved) == len(flow.variables)
  originals = [v.numpy() for v in flow.variables]
  for v in flow.variables:
    v.assign(tf.zeros_like(v))
  assert not np.allclose(_p_x(flow, z).log_prob(x), before)
  tf.train.Checkpoint(flow=flow).restore(path).assert_consumed()
  np.testing.assert_array_equal(_p_x(flow, z).log_prob(x), before)
  for v, original in zip(flow.variables, originals):
    np.testing.assert_array_equal(v.numpy(), original)


class _CallCounter:
  def __init__(self, monkeypatch):
    self.count = 0
    original = CouplingNetwork.call

    def counting_call(layer, *args, **kwargs):
      self.count += 1
      return original(layer, *args, **kwargs)

    monkeypatch.setattr(CouplingNetwork, "call", counting_call)


def test_each_coupling_network_runs_once_per_log_prob_and_once_per_sample(flow, monkeypatch):
  counter = _CallCounter(monkeypatch)
  num_couplings = len(flow.coupling_networks())
  p = _p_x(flow, ff.latents((2,)))
  p.log_prob(ff.pixels((2, 8, 8, 1)))
  assert counter.count == num_couplings
  counter.count = 0
  _p_x(flow, ff.latents((2,))).sample(seed=(1, 2))
  assert counter.count == num_couplings
  counter.count = 0
  tf.function(lambda x, z: _p_x(flow, z).log_prob(x))(ff.pixels((2, 8, 8, 1)), ff.latents((2,)))
  assert counter.count == num_couplings  # traced once: one call per network in the graph


@pytest.mark.parametrize("shape,scales", [((7, 8, 1), 1), ((6, 6, 1), 2), ((28, 30, 1), 2)])
def test_sizes_the_multiscale_flow_cannot_split_are_refused(shape, scales):
  with pytest.raises(ValueError, match=f"divisible by {2 ** scales}"):
    ConditionalRealNVP(shape, num_scales=scales, filters=2)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3)])
def test_paper_image_sizes_build_and_keep_the_image_layout(shape):
  flow = ConditionalRealNVP(shape, latent_dim=3, num_checkerboard=1, num_channelwise=1, filters=2,
                            num_res_blocks=1)
  x = ff.pixels((1,) + shape)
  y = flow.bijector(ff.latents((1,))).forward(x)
  assert y.shape == (1,) + shape


def test_wrong_rank_channels_and_latent_raise_value_errors(flow):
  with pytest.raises(ValueError, match="expected events of shape"):
    flow.bijector(ff.latents((1,))).forward(ff.pixels((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="expected"):
    flow.bijector(ff.latents((1,))).forward(ff.pixels((8, 8)))
  with pytest.raises(ValueError, match="z must have shape"):
    flow.bijector(tf.zeros((1, 5)))
  with pytest.raises(ValueError, match="z is required"):
    flow.bijector(None)
