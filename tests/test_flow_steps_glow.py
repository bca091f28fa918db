"""Glow's step kinds (`actnorm`, `invconv`; vapnev_tf.flow_steps.glow) and the Glow recipe:
exactness like TFP's bijector tests (round trips with the cache bypassed, fldj = -ildj, log-det vs
the autodiff Jacobian in float64, several batch ranks), weights and gradients, ActNorm's
data-dependent init (global batch under a MirroredStrategy, checkpointed flag), the layout group
grammar, and a whole Glow-style `ConditionalRealNVP` that trains."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
from vapnev_tf import flow_steps
from vapnev_tf.bijectors import glow as glow_bijectors
from vapnev_tf.flow_steps import StepSpec
from vapnev_tf.flow_steps import glow

tfb = tfp.bijectors
tfd = tfp.distributions

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
GLOW = "squeeze (actnorm invconv channel)*2 factor_out | squeeze (actnorm invconv channel)*2"


def _p_x(flow, z):
  shape = tuple(z.shape[:-1]) + flow.image_shape
  base = tfd.Independent(tfd.Normal(tf.zeros(shape, flow.compute_dtype),
                                    tf.ones(shape, flow.compute_dtype)), 3)
  return tfd.TransformedDistribution(base, tfb.Invert(flow.bijector(z)))


def _actnorm(channels=3, dtype="float64", seed=0):
  layer = glow.ActNormLayer(channels, dtype=dtype, name="actnorm")
  ff.perturb_all(layer, seed=seed, stddev=0.5)
  return layer


def _invconv(channels=3, dtype="float64", seed=0):
  keras.utils.set_random_seed(seed)
  layer = glow.InvConvLayer(channels, dtype=dtype, name="invconv")
  ff.perturb_all(layer, seed=seed, stddev=0.1)  # away from a rotation: |det W| != 1
  return layer


def _step_bijectors(dtype):
  return {"actnorm": glow_bijectors.ActNorm(_actnorm(dtype=dtype).params),
          "invconv": glow_bijectors.InvertibleConv1x1(_invconv(dtype=dtype).matrices)}


# --- the two bijectors alone ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["actnorm", "invconv"])
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_steps_round_trip_and_log_dets_agree(kind, dtype, tol, batch):
  bij = _step_bijectors(dtype)[kind]
  x = ff.pixels(batch + (2, 4, 3), dtype, low=-2, high=2)
  y = bij.forward(x)
  assert y.shape == x.shape and np.all(np.isfinite(y))
  x2 = bij.inverse(ff.fresh(y))
  np.testing.assert_allclose(x2, x, rtol=tol, atol=tol)
  np.testing.assert_allclose(bij.forward(ff.fresh(x2)), y, rtol=tol, atol=tol)
  fldj = bij.forward_log_det_jacobian(ff.fresh(x), event_ndims=3)
  ildj = bij.inverse_log_det_jacobian(ff.fresh(y), event_ndims=3)
  assert fldj.shape == batch and np.all(np.isfinite(fldj))
  np.testing.assert_allclose(fldj, -ildj, rtol=tol)
  assert np.all(np.abs(fldj) > 1e-3)  # not a volume-preserving map: the check can fail


@pytest.mark.parametrize("kind", ["actnorm", "invconv"])
def test_step_log_det_matches_slogdet_of_the_autodiff_jacobian(kind):
  bij = _step_bijectors("float64")[kind]
  x = ff.pixels((1, 2, 3, 3), "float64", low=-2, high=2)
  expected = ff.autodiff_log_det(bij.forward, x)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, 3).numpy()[0], expected, rtol=1e-10)
  y = bij.forward(x)
  np.testing.assert_allclose(bij.inverse_log_det_jacobian(ff.fresh(y), 3).numpy()[0], -expected,
                             rtol=1e-10)


def test_actnorm_is_the_per_channel_affine_map_with_the_papers_log_det():
  layer = _actnorm(channels=2)
  bias, log_scale = (v.numpy() for v in layer.params())
  x = ff.pixels((1, 3, 5, 2), "float64", low=-2, high=2)
  bij = glow_bijectors.ActNorm(layer.params)
  np.testing.assert_allclose(bij.forward(x), (x.numpy() + bias) * np.exp(log_scale), rtol=1e-12)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(x, 3), [15 * log_scale.sum()],
                             rtol=1e-12)


def test_invconv_starts_at_a_random_rotation_with_its_lu_factors():
  keras.utils.set_random_seed(3)
  layer = glow.InvConvLayer(6, dtype="float64")
  w, w_inverse, log_abs_det = (t.numpy() for t in layer.matrices())
  np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-12)
  np.testing.assert_allclose(w @ w_inverse, np.eye(6), atol=1e-12)
  assert abs(log_abs_det) < 1e-12 and abs(np.linalg.det(w)) == pytest.approx(1.0)
  assert not np.allclose(np.abs(w), np.eye(6))  # a rotation, not a permutation
  assert sorted(layer.permutation.numpy()) == list(range(6))
  # W = P L (U + diag(exp(log|s|))) with P[i, perm[i]] = 1, from the layer's own weights.
  p = np.eye(6)[layer.permutation.numpy()]
  lower = np.tril(layer.lower.numpy(), -1) + np.eye(6)
  upper = np.triu(layer.upper.numpy(), 1) + np.diag(np.exp(layer.log_abs_s.numpy()))
  np.testing.assert_allclose(p @ lower @ upper, w, atol=1e-12)
  # The same seed gives the same start; another seed another one.
  keras.utils.set_random_seed(3)
  np.testing.assert_array_equal(glow.InvConvLayer(6, dtype="float64").matrices()[0], w)
  keras.utils.set_random_seed(4)
  assert not np.allclose(glow.InvConvLayer(6, dtype="float64").matrices()[0], w)


def test_invconv_log_det_is_log_abs_det_w_after_training_moves_the_weights():
  layer = _invconv(channels=4)
  w, w_inverse, log_abs_det = (t.numpy() for t in layer.matrices())
  np.testing.assert_allclose(log_abs_det, np.linalg.slogdet(w)[1], rtol=1e-10)
  np.testing.assert_allclose(w_inverse, np.linalg.inv(w), rtol=1e-9, atol=1e-12)
  layer32 = _invconv(channels=4, dtype="float32")
  assert all(t.dtype == tf.float32 for t in layer32.matrices())


@pytest.mark.parametrize("make", [_actnorm, _invconv], ids=["actnorm", "invconv"])
def test_step_weights_are_trainable_and_get_gradients(make):
  layer = make()
  is_actnorm = isinstance(layer, glow.ActNormLayer)
  bij = (glow_bijectors.ActNorm(layer.params) if is_actnorm else
         glow_bijectors.InvertibleConv1x1(layer.matrices))
  x = ff.pixels((2, 2, 2, 3), "float64", low=-2, high=2)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.square(bij.forward(x))) - tf.reduce_sum(
        bij.forward_log_det_jacobian(x, 3))
  grads = tape.gradient(loss, layer.trainable_variables)
  assert len(layer.trainable_variables) == (2 if is_actnorm else 3)
  for v, g in zip(layer.trainable_variables, grads):
    assert g is not None and float(tf.norm(g)) > 0, v.path
  fixed = {v.path.split("/")[-1] for v in layer.non_trainable_variables}
  assert fixed == ({"initialized"} if is_actnorm else {"permutation"})


def test_constructors_refuse_bad_arguments():
  with pytest.raises(ValueError, match="channels must be >= 1, got 0"):
    glow.ActNormLayer(0)
  with pytest.raises(ValueError, match="channels must be >= 1, got 0"):
    glow.InvConvLayer(0)
  with pytest.raises(ValueError, match="params_fn must be callable"):
    glow_bijectors.ActNorm(None)
  with pytest.raises(ValueError, match="matrices_fn must be callable"):
    glow_bijectors.InvertibleConv1x1(3)
  with pytest.raises(ValueError, match="flow must be a ConditionalRealNVP"):
    flow_steps.data_dependent_init(object(), tf.zeros((1, 4, 4, 1)))


# --- the layout: registered kinds, groups, the Glow recipe -------------------------------------


def test_glow_kinds_are_registered_by_default():
  assert {"actnorm", "invconv"} <= set(flow_steps.registered_kinds())
  assert flow_steps.get_step_kind("actnorm") is glow.ACTNORM


def test_groups_repeat_steps_and_flip_parities():
  parsed = flow_steps.parse_layout("(actnorm channel:1)*3, (squeeze) (invconv)")
  assert parsed == ((StepSpec("actnorm"), StepSpec("channel", 1), StepSpec("actnorm"),
                     StepSpec("channel", 0), StepSpec("actnorm"), StepSpec("channel", 1),
                     StepSpec("squeeze"), StepSpec("invconv")),)
  assert flow_steps.parse_layout("(channel)*3") == flow_steps.parse_layout("channel*3")
  assert flow_steps.parse_layout("((actnorm channel)*2 invconv)*2") == flow_steps.parse_layout(
      "actnorm channel actnorm channel:1 invconv actnorm channel:1 actnorm channel invconv")
  text = flow_steps.format_layout(flow_steps.parse_layout(GLOW))
  assert flow_steps.parse_layout(text) == flow_steps.parse_layout(GLOW)


def test_glow_layout_is_the_recipe_and_its_string_form():
  unit = lambda p: (StepSpec("actnorm"), StepSpec("invconv"), StepSpec("channel", p))
  scale = (StepSpec("squeeze"),) + unit(0) + unit(1) + unit(0)
  assert flow_steps.glow_layout(2, 3) == (scale + (StepSpec("factor_out"),), scale)
  assert flow_steps.glow_layout_string(2, 3) == (
      "squeeze (actnorm invconv channel)*3 factor_out | squeeze (actnorm invconv channel)*3")
  for scales, steps in [(1, 1), (2, 3), (3, 2)]:
    assert flow_steps.parse_layout(flow_steps.glow_layout_string(scales, steps)) == \
        flow_steps.glow_layout(scales, steps)
  with pytest.raises(ValueError, match="num_scales must be >= 1, got 0"):
    flow_steps.glow_layout(0, 2)
  with pytest.raises(ValueError, match="steps_per_scale must be >= 1, got 0"):
    flow_steps.glow_layout_string(2, 0)


# --- a whole Glow-style flow -------------------------------------------------------------------


def _glow_flow(conditional=True, dtype="float64", seed=0):
  return ff.make_flow((4, 4, 1), conditional=conditional, dtype=dtype, seed=seed,
                      layout=flow_steps.glow_layout(2, 2))


def _perturb_glow_steps(flow, seed=4):
  for layer in flow.step_layers():
    if isinstance(layer, (glow.ActNormLayer, glow.InvConvLayer)):
      ff.perturb_all(layer, seed=seed, stddev=0.1)


@pytest.fixture(scope="module", params=[True, False], ids=["conditional", "unconditional"])
def glow_flow(request):
  flow = _glow_flow(conditional=request.param)
  z = ff.latents((8,), "float64") if request.param else None
  flow_steps.data_dependent_init(flow, ff.pixels((8, 4, 4, 1), "float64", seed=5), z)
  _perturb_glow_steps(flow)
  return flow


def test_glow_flow_owns_its_layers_under_the_standard_names(glow_flow):
  assert glow_flow.layout_string() == (
      "squeeze actnorm invconv channel actnorm invconv channel:1 factor_out | "
      "squeeze actnorm invconv channel actnorm invconv channel:1")
  assert isinstance(glow_flow.scale1_actnorm1, glow.ActNormLayer)
  assert glow_flow.scale0_invconv0.channels == 4 and glow_flow.scale1_invconv1.channels == 8
  assert len(glow.actnorm_layers(glow_flow)) == 4


@pytest.mark.parametrize("batch", [(2,), (2, 3)])
def test_glow_flow_round_trips_with_the_cache_bypassed(glow_flow, batch):
  z, x = ff.latents(batch, "float64"), ff.pixels(batch + (4, 4, 1), "float64")
  bij = glow_flow.bijector(z)
  y = bij.forward(x)
  assert y.shape == x.shape and np.all(np.isfinite(y))
  x2 = bij.inverse(ff.fresh(y))
  np.testing.assert_allclose(x2, x, rtol=1e-9, atol=1e-8)
  np.testing.assert_allclose(bij.forward(ff.fresh(x2)), y, rtol=1e-9, atol=1e-8)
  fldj = bij.forward_log_det_jacobian(ff.fresh(x), event_ndims=3)
  ildj = bij.inverse_log_det_jacobian(ff.fresh(y), event_ndims=3)
  assert fldj.shape == batch and np.all(np.isfinite(fldj))
  np.testing.assert_allclose(fldj, -ildj, rtol=1e-9)
  assert np.all(np.isfinite(_p_x(glow_flow, z).log_prob(x)))


def test_glow_flow_is_finite_at_the_edges_of_the_pixel_range(glow_flow):
  x = tf.constant(np.tile([0.0, 255.999], 16).reshape(2, 4, 4, 1))
  z = ff.latents((2,), "float64")
  bij = glow_flow.bijector(z)
  assert np.all(np.isfinite(bij.forward(x))) and np.all(np.isfinite(_p_x(glow_flow, z).log_prob(x)))
  np.testing.assert_allclose(bij.inverse(ff.fresh(bij.forward(x))), x, atol=1e-6)


def test_glow_flow_log_det_matches_the_autodiff_jacobian(glow_flow):
  z, x = ff.latents((1,), "float64"), ff.pixels((1, 4, 4, 1), "float64")
  expected = ff.autodiff_log_det(lambda t: glow_flow.bijector(z).forward(t), x)
  got = glow_flow.bijector(z).forward_log_det_jacobian(x, event_ndims=3).numpy()[0]
  assert abs(got - expected) < 1e-6


def test_glow_flow_depends_on_z_only_when_conditional(glow_flow):
  ff.assert_log_prob_depends_on_z_only_when_conditional(glow_flow, _p_x)


def test_glow_flow_weights_are_trainable_and_get_gradients(glow_flow):
  owned = {id(v) for v in glow_flow.trainable_variables}
  for layer in glow_flow.step_layers():
    assert all(id(v) in owned for v in layer.trainable_variables), layer.name
  flags = [v for v in glow_flow.non_trainable_variables if v.path.endswith("/initialized")]
  assert len(flags) == 4 and all(id(v) not in owned for v in flags)
  ff.assert_every_flow_weight_gets_a_gradient(glow_flow, _p_x)


def test_glow_flow_trains_a_few_adam_steps_with_a_finite_decreasing_loss():
  flow = _glow_flow(dtype="float32")
  z, x = ff.latents((8,)), ff.pixels((8, 4, 4, 1))
  flow_steps.data_dependent_init(flow, x, z)
  optimizer = keras.optimizers.Adam(1e-3)
  losses = []
  for _ in range(5):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(_p_x(flow, z).log_prob(x))
    grads = tape.gradient(loss, flow.trainable_variables)
    optimizer.apply_gradients(zip(grads, flow.trainable_variables))
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0], losses


# --- data-dependent init -----------------------------------------------------------------------


def _actnorm_outputs(flow, x, z, monkeypatch):
  """Every ActNorm's output on x during one forward pass of the flow, in order."""
  outputs, original = [], glow_bijectors.ActNorm._augmented_forward
  def record(self, t):
    y, log_det = original(self, t)
    outputs.append(y.numpy())
    return y, log_det
  with monkeypatch.context() as patch:
    patch.setattr(glow_bijectors.ActNorm, "_augmented_forward", record)
    flow.bijector(z).forward(x)
  return outputs


def test_a_fresh_flow_keeps_actnorm_at_the_identity_until_initialised():
  flow = _glow_flow()
  for layer in glow.actnorm_layers(flow):
    assert not bool(layer.initialized.numpy())
    assert not np.any(layer.bias.numpy()) and not np.any(layer.log_scale.numpy())
  x, z = ff.pixels((2, 4, 4, 1), "float64"), ff.latents((2,), "float64")
  before = flow.bijector(z).forward(x).numpy()
  flow.bijector(z).forward(ff.fresh(x))  # plain calls never initialise
  assert not any(bool(layer.initialized.numpy()) for layer in glow.actnorm_layers(flow))
  np.testing.assert_array_equal(flow.bijector(z).forward(ff.fresh(x)), before)


def test_data_dependent_init_normalises_each_actnorm_output_on_the_init_batch(monkeypatch):
  flow = _glow_flow()
  x, z = ff.pixels((16, 4, 4, 1), "float64", seed=7), ff.latents((16,), "float64")
  raw = _actnorm_outputs(flow, x, z, monkeypatch)
  assert any(np.abs(out.std(axis=(0, 1, 2)) - 1).max() > 0.1 for out in raw)
  names = flow_steps.data_dependent_init(flow, x, z)
  assert names == ("scale0_actnorm0", "scale0_actnorm1", "scale1_actnorm0", "scale1_actnorm1")
  for layer, out in zip(glow.actnorm_layers(flow), _actnorm_outputs(flow, x, z, monkeypatch)):
    assert bool(layer.initialized.numpy()) and not layer.init_pending
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1, atol=1e-4)
  # A second call (e.g. by a resumed run) changes nothing.
  values = [v.numpy() for v in flow.variables]
  assert flow_steps.data_dependent_init(flow, ff.pixels((4, 4, 4, 1), "float64", seed=9),
                                        ff.latents((4,), "float64")) == ()
  for v, before in zip(flow.variables, values):
    np.testing.assert_array_equal(v.numpy(), before)


def test_data_dependent_init_takes_z_as_a_function_of_x():
  x, z = ff.pixels((8, 4, 4, 1), "float64", seed=7), ff.latents((8,), "float64")
  by_tensor, by_function = _glow_flow(), _glow_flow()
  flow_steps.data_dependent_init(by_tensor, x, z)
  flow_steps.data_dependent_init(by_function, x, lambda t: z * tf.ones_like(t[:, :1, 0, 0]))
  for a, b in zip(by_tensor.variables, by_function.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_actnorm_after_init_is_a_fixed_affine_map_with_exact_log_det():
  flow = _glow_flow()
  x, z = ff.pixels((8, 4, 4, 1), "float64", seed=7), ff.latents((8,), "float64")
  flow_steps.data_dependent_init(flow, x, z)
  layer = flow.scale0_actnorm0
  bij = glow_bijectors.ActNorm(layer.params)
  u = ff.pixels((1, 2, 2, 4), "float64", low=-3, high=3)
  np.testing.assert_allclose(bij.forward_log_det_jacobian(u, 3).numpy()[0],
                             ff.autodiff_log_det(bij.forward, u), rtol=1e-10)
  expected = 4 * layer.log_scale.numpy().sum()  # H W sum(log|s|) on (2, 2, 4) events
  np.testing.assert_allclose(bij.forward_log_det_jacobian(u, 3), [expected], rtol=1e-12)


def test_checkpoint_restores_the_initialised_state_without_re_initialising(tmp_path):
  flow = _glow_flow(seed=0)
  x, z = ff.pixels((8, 4, 4, 1), "float64", seed=7), ff.latents((8,), "float64")
  flow_steps.data_dependent_init(flow, x, z)
  _perturb_glow_steps(flow)
  path = tf.train.Checkpoint(flow=flow).save(str(tmp_path / "ckpt"))
  names = [name for name, _ in tf.train.list_variables(path)]
  for weight in ("initialized", "bias", "log_scale"):
    assert any(n.startswith("flow/scale0_actnorm0/") and weight in n for n in names), weight
  assert any(n.startswith("flow/scale1_invconv1/") and "permutation" in n for n in names)

  fresh = _glow_flow(seed=1)  # another seed: other rotations (and permutations)
  assert not np.allclose(fresh.scale0_invconv0.matrices()[0], flow.scale0_invconv0.matrices()[0])
  tf.train.Checkpoint(flow=fresh).restore(path).assert_consumed()
  assert all(bool(layer.initialized.numpy()) for layer in glow.actnorm_layers(fresh))
  assert flow_steps.data_dependent_init(fresh, ff.pixels((8, 4, 4, 1), "float64", seed=8),
                                        z) == ()
  for a, b in zip(flow.variables, fresh.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  x_test = ff.pixels((2, 4, 4, 1), "float64", seed=3)
  np.testing.assert_array_equal(_p_x(fresh, z[:2]).log_prob(x_test),
                                _p_x(flow, z[:2]).log_prob(x_test))


_MIRRORED_SCRIPT = textwrap.dedent("""
  import json
  import numpy as np
  import tensorflow as tf
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  import flow_fixtures as ff
  from vapnev_tf import flow_steps
  from vapnev_tf.flow_steps import glow

  layout = flow_steps.glow_layout(2, 2)
  x, z = ff.pixels((8, 4, 4, 1), "float64", seed=7), ff.latents((8,), "float64")
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    mirrored = ff.make_flow((4, 4, 1), dtype="float64", layout=layout)
  per_replica = lambda t: strategy.experimental_distribute_values_from_function(
      lambda ctx: t[4 * ctx.replica_id_in_sync_group:4 * (ctx.replica_id_in_sync_group + 1)])
  names = flow_steps.data_dependent_init(mirrored, per_replica(x), per_replica(z), strategy)
  whole = ff.make_flow((4, 4, 1), dtype="float64", layout=layout)
  flow_steps.data_dependent_init(whole, x, z)
  half = ff.make_flow((4, 4, 1), dtype="float64", layout=layout)
  flow_steps.data_dependent_init(half, x[:4], z[:4])
  values = lambda flow: np.concatenate([np.concatenate([l.bias.numpy(), l.log_scale.numpy()])
                                        for l in glow.actnorm_layers(flow)]).tolist()
  flags = [bool(l.initialized.numpy()) for l in glow.actnorm_layers(mirrored)]
  print("RESULT" + json.dumps({"replicas": strategy.num_replicas_in_sync, "names": names,
                               "flags": flags, "mirrored": values(mirrored),
                               "whole": values(whole), "half": values(half)}))
""")


def test_data_dependent_init_under_a_mirrored_strategy_uses_the_global_batch():
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]),
             TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  run = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=600, check=False)
  lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
  assert run.returncode == 0 and lines, run.stderr[-3000:]
  result = json.loads(lines[-1][len("RESULT"):])
  assert result["replicas"] == 2 and len(result["names"]) == 4 and all(result["flags"])
  np.testing.assert_allclose(result["mirrored"], result["whole"], rtol=1e-10, atol=1e-12)
  assert not np.allclose(result["half"], result["whole"], atol=1e-3)  # one replica's alone differs
