"""The flow's network options beyond the paper: shared z-trunk, fused networks, bfloat16 compute.

Each option keeps f_z an exact bijection with its own log-det: round trips (cache bypassed),
fldj = -ildj, log-det vs slogdet of the autodiff Jacobian (float64 for the float32-family options;
for bfloat16 with the network outputs held fixed, which is what the coupling's log-det is exact
for), one network evaluation per coupling (and one trunk evaluation) per log_prob / sample, every
weight tracked and trained, checkpoint round trips, and a VAPNEV model that trains.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
import model_fixtures as mf
import vapnev_tf
from vapnev_tf import bijectors as vb
from vapnev_tf.flow import ConditionalRealNVP
from vapnev_tf.layers import CouplingNetwork
from vapnev_tf.layers import LatentDeconvNet
from vapnev_tf.layers import ResidualNet
from vapnev_tf.layers import SharedLatentTrunk

tfd = tfp.distributions

OPTIONS = {
    "shared": dict(conditioning="shared"),
    "fused": dict(fused_networks=True),
    "shared_fused": dict(conditioning="shared", fused_networks=True),
    "bf16": dict(compute_dtype="bfloat16"),
    "shared_fused_bf16": dict(conditioning="shared", fused_networks=True,
                              compute_dtype="bfloat16"),
}
FLOAT64_OPTIONS = [name for name, o in OPTIONS.items() if "compute_dtype" not in o]
SHAPE = (8, 8, 1)


def make_flow(options, dtype="float32", image_shape=SHAPE, seed=0):
  keras.utils.set_random_seed(seed)
  flow = ConditionalRealNVP(image_shape, latent_dim=ff.LATENT_DIM, num_checkerboard=2,
                            num_channelwise=2, filters=4, num_res_blocks=1, dtype=dtype,
                            **options)
  ff.perturb_multipliers(flow, seed)
  return flow


def _dtype(name):
  return "float64" if name in FLOAT64_OPTIONS else "float32"


def _p_x(flow, z):
  shape = tuple(z.shape[:-1]) + SHAPE
  base = tfd.Independent(tfd.Normal(tf.zeros(shape, flow.compute_dtype),
                                    tf.fill(shape, tf.constant(0.5, flow.compute_dtype))), 3)
  return tfd.TransformedDistribution(base, tfp.bijectors.Invert(flow.bijector(z)))


@pytest.mark.parametrize("name", list(OPTIONS))
def test_round_trip_and_fldj_is_minus_ildj_with_the_cache_bypassed(name):
  dtype = _dtype(name)
  flow = make_flow(OPTIONS[name], dtype)
  x, z = ff.pixels((3,) + SHAPE, dtype), ff.latents((3,), dtype)
  y = flow.bijector(z).forward(x)
  x_back = flow.bijector(z).inverse(ff.fresh(y))
  tol = 1e-9 if dtype == "float64" else 1e-3
  np.testing.assert_allclose(x_back, x, atol=tol * 256, rtol=0)
  fldj = flow.bijector(z).forward_log_det_jacobian(ff.fresh(x), event_ndims=3)
  ildj = flow.bijector(z).inverse_log_det_jacobian(ff.fresh(y), event_ndims=3)
  np.testing.assert_allclose(fldj, -ildj, rtol=1e-9 if dtype == "float64" else 1e-4)
  assert fldj.shape == (3,) and y.dtype == dtype


@pytest.mark.parametrize("name", FLOAT64_OPTIONS)
def test_log_det_equals_slogdet_of_the_autodiff_jacobian_in_float64(name):
  flow = make_flow(OPTIONS[name], "float64")
  x, z = ff.pixels(SHAPE, "float64", seed=3), ff.latents((), "float64", seed=4)
  expected = ff.autodiff_log_det(lambda v: flow.bijector(z).forward(v), x)
  got = float(flow.bijector(z).forward_log_det_jacobian(x, event_ndims=3))
  np.testing.assert_allclose(got, expected, rtol=1e-9)


def _hold_network_outputs_fixed(monkeypatch):
  original = CouplingNetwork.call

  def held(layer, *args, **kwargs):
    return tuple(tf.stop_gradient(t) for t in original(layer, *args, **kwargs))

  monkeypatch.setattr(CouplingNetwork, "call", held)


@pytest.mark.parametrize("name", ["bf16", "shared_fused_bf16"])
def test_bf16_log_det_is_the_exact_float32_log_det_given_the_network_outputs(name, monkeypatch):
  # With l_z, m_z held fixed, f_z is a chain of float32 diagonal affine maps and permutations, so
  # slogdet of its autodiff Jacobian is the float32 log-det of those network outputs; log_prob
  # uses exactly that (the full Jacobian is triangular per coupling, with the same determinant).
  flow = make_flow(OPTIONS[name], "float32")
  x, z = ff.pixels(SHAPE, seed=3), ff.latents((), seed=4)
  got = float(flow.bijector(z).forward_log_det_jacobian(x, event_ndims=3))
  _hold_network_outputs_fixed(monkeypatch)
  expected = ff.autodiff_log_det(lambda v: flow.bijector(z).forward(v), x)
  np.testing.assert_allclose(got, expected, rtol=2e-5)


@pytest.mark.parametrize("mask_type,parity", [("checkerboard", 0), ("channel", 1)])
def test_bf16_coupling_log_det_is_the_float32_sum_of_the_returned_log_scales(mask_type, parity):
  keras.utils.set_random_seed(0)
  channels = 2
  out = channels if mask_type == "checkerboard" else channels // 2
  net = CouplingNetwork(out, 4, 4, filters=4, num_res_blocks=1, compute_dtype="bfloat16")
  x, z = ff.pixels((2, 4, 4, channels), seed=5) / 64.0, ff.latents((2,))
  coupling = vb.ConditionalAffineCoupling(net, mask_type, parity, z, event_shape=(4, 4, channels))
  coupling.forward(x)  # builds the multipliers
  ff.perturb_multipliers(net)
  assert all(v.dtype == "float32" for v in net.weights)
  if mask_type == "checkerboard":
    mask = vb.coupling.checkerboard_mask(4, 4, parity, tf.float32)
    net_in = tf.concat([x * mask, tf.broadcast_to(mask, x[..., :1].shape)], axis=-1)
  else:
    mask, net_in = 0.0, (x[..., :1] if parity == 0 else x[..., 1:])
  assert net.l1.conv_in.compute_dtype == "bfloat16"  # the hidden layers compute in bfloat16 ...
  _, log_scale = net(net_in, z)
  assert log_scale.dtype == tf.float32  # ... and hand float32 to Eq. 16
  expected = tf.reduce_sum(log_scale * (1.0 - mask), axis=[1, 2, 3])
  np.testing.assert_allclose(coupling.forward_log_det_jacobian(ff.fresh(x), event_ndims=3),
                             expected, rtol=1e-6)


class _Counter:
  """Counts calls of `cls.call` (CouplingNetwork, SharedLatentTrunk, ResidualNet, ...)."""

  def __init__(self, monkeypatch, cls):
    self.count = 0
    original = cls.call

    def counting(layer, *args, **kwargs):
      self.count += 1
      return original(layer, *args, **kwargs)

    monkeypatch.setattr(cls, "call", counting)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_one_network_evaluation_per_coupling_and_one_trunk_per_log_prob(name, monkeypatch):
  opts = OPTIONS[name]
  flow = make_flow(opts)
  nets = _Counter(monkeypatch, CouplingNetwork)
  trunks = _Counter(monkeypatch, SharedLatentTrunk)
  x_paths = _Counter(monkeypatch, ResidualNet)
  z_paths = _Counter(monkeypatch, LatentDeconvNet)
  n = len(flow.coupling_networks())
  shared, fused = opts.get("conditioning") == "shared", opts.get("fused_networks", False)
  runs = [lambda: _p_x(flow, ff.latents((2,))).log_prob(ff.pixels((2,) + SHAPE)),
          lambda: _p_x(flow, ff.latents((2,))).sample(seed=(1, 2)),
          lambda: tf.function(lambda x, z: _p_x(flow, z).log_prob(x))(
              ff.pixels((2,) + SHAPE), ff.latents((2,)))]
  for run in runs:
    for counter in (nets, trunks, x_paths, z_paths):
      counter.count = 0
    run()
    assert nets.count == n
    assert trunks.count == (1 if shared else 0)
    assert x_paths.count == (1 if fused else 2) * n
    assert z_paths.count == (0 if shared else (1 if fused else 2) * n)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_weight_is_tracked_and_gets_a_gradient(name):
  flow = make_flow(OPTIONS[name])
  z, x = ff.latents((2,)), ff.pixels((2,) + SHAPE)
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(_p_x(flow, z).log_prob(x))
  variables = flow.trainable_variables
  assert len({id(v) for v in variables}) == len(variables)
  owned = {id(v) for v in variables}
  layers = flow.coupling_networks() + ([flow.z_trunk] if flow.uses_shared_trunk else [])
  assert all(id(v) in owned for layer in layers for v in layer.weights)
  assert all(v.dtype == "float32" for v in variables)
  for v, g in zip(variables, tape.gradient(loss, variables)):
    assert g is not None and float(tf.norm(tf.cast(g, tf.float32))) > 0, v.path


@pytest.mark.parametrize("name", list(OPTIONS))
def test_checkpoint_round_trip_restores_every_variable(name, tmp_path):
  flow = make_flow(OPTIONS[name])
  z, x = ff.latents((2,)), ff.pixels((2,) + SHAPE)
  before = _p_x(flow, z).log_prob(x).numpy()
  path = tf.train.Checkpoint(flow=flow).save(str(tmp_path / "ckpt"))
  for v in flow.variables:
    v.assign(tf.zeros_like(v))
  assert not np.allclose(_p_x(flow, z).log_prob(x), before)
  fresh_flow = make_flow(OPTIONS[name], seed=7)
  tf.train.Checkpoint(flow=fresh_flow).restore(path).assert_consumed()
  np.testing.assert_array_equal(_p_x(fresh_flow, z).log_prob(x), before)


def test_the_default_is_the_papers_architecture_and_the_options_change_the_attributes():
  default = make_flow({})
  net = default.coupling_networks()[0]
  assert not hasattr(default, "z_trunk")
  assert all(hasattr(net, a) for a in ("l1", "m1", "l2", "m2"))
  assert isinstance(net.l2, LatentDeconvNet) and not hasattr(net, "lm1")
  shared_fused = make_flow(OPTIONS["shared_fused"]).coupling_networks()[0]
  assert hasattr(shared_fused, "lm1") and hasattr(shared_fused, "lm2")
  assert not any(hasattr(shared_fused, a) for a in ("l1", "m1", "l2", "m2"))
  assert isinstance(shared_fused.lm2, keras.layers.Conv2D)
  assert shared_fused.lm2.filters == 2 * shared_fused.out_channels
  shared = make_flow(OPTIONS["shared"])
  assert len(shared.trainable_variables) < len(default.trainable_variables)


def test_the_trunk_serves_every_coupling_resolution_once_with_the_batch_shape():
  flow = make_flow(OPTIONS["shared"])
  # 8x8: scale-0 checkerboard 8x8, channel 4x4; scale-1 checkerboard 4x4, channel 2x2.
  assert flow.z_trunk.resolutions == ((2, 2), (4, 4), (8, 8))
  features = flow.z_features(ff.latents((5, 2)))
  assert {k: tuple(v.shape) for k, v in features.items()} == {
      "2x2": (5, 2, 2, 2, 4), "4x4": (5, 2, 4, 4, 4), "8x8": (5, 2, 8, 8, 4)}
  tiny = make_flow(OPTIONS["shared"], image_shape=(4, 4, 1))  # needs a 1x1 map below the 2x2 start
  assert tiny.z_trunk.resolutions == ((1, 1), (2, 2), (4, 4))


def test_batched_z_broadcasts_like_the_per_coupling_flow():
  flow = make_flow(OPTIONS["shared_fused"])
  z, x = ff.latents((2,)), ff.pixels((3, 2) + SHAPE)
  joint = flow.bijector(z).forward(x)
  for i in range(3):
    np.testing.assert_allclose(flow.bijector(z).forward(ff.fresh(x[i])), joint[i], rtol=1e-5,
                               atol=1e-5)


def test_invalid_options_raise_value_errors_naming_them():
  with pytest.raises(ValueError, match="conditioning"):
    make_flow(dict(conditioning="global"))
  with pytest.raises(ValueError, match="compute_dtype"):
    make_flow(dict(compute_dtype="float16"))
  with pytest.raises(ValueError, match="float32 model"):
    make_flow(dict(compute_dtype="bfloat16"), dtype="float64")
  with pytest.raises(ValueError, match="not on the ceil-halving walk"):
    SharedLatentTrunk(4, [(8, 8), (3, 3)])
  with pytest.raises(ValueError, match="compute_dtype='bfloat16' needs dtype='float32'"):
    mf.tiny_config(compute_dtype="bfloat16", dtype="float64")
  with pytest.raises(ValueError, match="ModelConfig.conditioning"):
    mf.tiny_config(conditioning="global")


# `make test` trains the model with every option at once; each option alone runs under `slow`.
@pytest.mark.parametrize("name", [
    name if name == "shared_fused_bf16" else pytest.param(name, marks=pytest.mark.slow)
    for name in OPTIONS])
def test_a_vapnev_model_with_the_option_trains_with_finite_loss(name):
  keras.utils.set_random_seed(0)
  model = vapnev_tf.VAPNEV(mf.tiny_config(**OPTIONS[name]))
  if OPTIONS[name].get("compute_dtype") == "bfloat16":
    assert model.encoder.conv0_0.compute_dtype == "bfloat16"
    assert model.encoder.mu_z.compute_dtype == "float32"
    assert model.decoder.head0.compute_dtype == "float32"
  losses = mf.train(model, mf.real_batch(8), steps=3)
  assert np.all(np.isfinite(losses))
  assert np.all(np.isfinite(model.elbo(mf.real_batch(4)).numpy()))
