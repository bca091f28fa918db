"""Flow steps as parts: the layout as data (default = the paper's flow, string form, validation
errors), the step-kind registry, and a kind registered outside the library (`z_affine` from
flow_fixtures) used in a flow: round trip, log-det vs autodiff, weights, gradients, training."""
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
from vapnev_tf import flow_steps
from vapnev_tf.flow import ConditionalRealNVP
from vapnev_tf.flow_steps import StepSpec
from vapnev_tf.layers import CouplingNetwork

tfb = tfp.bijectors
tfd = tfp.distributions

Z_AFFINE = ff.register_z_affine()  # The one place this module registers a new kind.
BUILTIN = ("channel", "checkerboard", "factor_out", "squeeze")
PAPER = "checkerboard*3 squeeze channel*3 factor_out | checkerboard*3 squeeze channel*3"
CUSTOM = ("checkerboard z_affine squeeze channel*2 factor_out | "
          "z_affine checkerboard:1 squeeze channel")


def _p_x(flow, z):
  shape = (z.shape[0],) + flow.image_shape
  base = tfd.Independent(tfd.Normal(tf.zeros(shape, flow.compute_dtype),
                                    tf.ones(shape, flow.compute_dtype)), 3)
  return tfd.TransformedDistribution(base, tfb.Invert(flow.bijector(z)))


# --- the default layout is the paper's flow ----------------------------------------------------


def test_default_layout_is_the_papers_structure():
  cb = lambda p: StepSpec("checkerboard", p)
  ch = lambda p: StepSpec("channel", p)
  scale = (cb(0), cb(1), cb(0), StepSpec("squeeze"), ch(0), ch(1), ch(0))
  assert flow_steps.default_layout(2, 3, 3) == (scale + (StepSpec("factor_out"),), scale)
  assert flow_steps.default_layout(1, 0, 2) == ((StepSpec("squeeze"), ch(0), ch(1)),)
  assert flow_steps.parse_layout(PAPER) == flow_steps.default_layout(2, 3, 3)
  assert flow_steps.format_layout(flow_steps.default_layout(2, 3, 3)) == PAPER


def _chain_names(bijector):
  """Names of the bijectors in application order, descending into chains, inverts, factor-outs."""
  if hasattr(bijector, "bijectors") and bijector.name != "pixels_to_logits":  # a Chain
    return [n for b in reversed(bijector.bijectors) for n in _chain_names(b)]
  if hasattr(bijector, "bijector"):  # an Invert
    return [f"undo({_chain_names(bijector.bijector)[0]})"]
  if hasattr(bijector, "inner"):
    return [f"{bijector.name}[{', '.join(_chain_names(bijector.inner))}]"]
  return [bijector.name]


def test_default_flow_composes_steps_like_the_paper():
  flow = ff.make_flow((8, 8, 1), num_scales=2, num_checkerboard=2, num_channelwise=1)
  names = _chain_names(flow.bijector(ff.latents((1,))))
  inner = ("scale1_checkerboard0, scale1_checkerboard1, scale1_squeeze0, scale1_channel0, "
           "undo(scale1_squeeze0)")
  assert names == ["pixels_to_logits", "scale0_checkerboard0", "scale0_checkerboard1",
                   "scale0_squeeze0", "scale0_channel0", f"scale0_factor_out0[{inner}]",
                   "undo(scale0_squeeze0)"]
  assert [layer.name for layer in flow.step_layers()] == [
      "scale0_checkerboard0", "scale0_checkerboard1", "scale0_channel0",
      "scale1_checkerboard0", "scale1_checkerboard1", "scale1_channel0"]
  assert flow.coupling_networks() == flow.step_layers()
  assert flow.scale1_channel0.out_channels == 4  # event (2, 2, 8) at scale 1 after the squeeze
  assert flow.layout_string() == ("checkerboard*2 squeeze channel factor_out | "
                                  "checkerboard*2 squeeze channel")


def test_layout_given_as_string_or_specs_builds_the_same_flow_as_the_counts():
  x, z = ff.pixels((2, 8, 8, 1)), ff.latents((2,))
  counts = ff.make_flow((8, 8, 1), num_checkerboard=3, num_channelwise=3)
  by_string = ff.make_flow((8, 8, 1), num_checkerboard=1, num_channelwise=1, layout=PAPER)
  by_specs = ff.make_flow((8, 8, 1), layout=list(map(list, flow_steps.default_layout(2, 3, 3))))
  for other in (by_string, by_specs):
    assert [v.path for v in other.variables] == [v.path for v in counts.variables]
    for a, b in zip(counts.variables, other.variables):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(_p_x(other, z).log_prob(x), _p_x(counts, z).log_prob(x))
  assert by_string.num_checkerboard is None and by_string.num_scales == 2


# --- the string form ---------------------------------------------------------------------------


def test_repeats_alternate_parity_and_the_string_form_round_trips():
  layout = flow_steps.parse_layout(
      "checkerboard:1*3, squeeze  channel factor_out\t|channel:1 channel")
  assert layout == ((StepSpec("checkerboard", 1), StepSpec("checkerboard", 0),
                     StepSpec("checkerboard", 1), StepSpec("squeeze"), StepSpec("channel", 0),
                     StepSpec("factor_out")),
                    (StepSpec("channel", 1), StepSpec("channel", 0)))
  text = flow_steps.format_layout(flow_steps.parse_layout(CUSTOM))
  assert flow_steps.parse_layout(text) == flow_steps.parse_layout(CUSTOM)


def test_specs_are_hashable_values_and_parity_defaults_to_zero():
  assert StepSpec("channel", 1, {"b": 2, "a": 1}) == StepSpec("channel", 1, (("a", 1), ("b", 2)))
  assert len({StepSpec("squeeze"), StepSpec("squeeze")}) == 1
  assert flow_steps.validate_layout([[StepSpec("channel")]]) == ((StepSpec("channel", 0),),)


@pytest.mark.parametrize("text,message", [
    ("checkerboard convolution", r"unknown flow step kind 'convolution'; registered kinds: "
                                 r"actnorm, channel, checkerboard, factor_out, invconv, squeeze"),
    ("checkerboard*", r"cannot parse step 'checkerboard\*'; expected kind\[:parity\]"),
    ("Squeeze", r"cannot parse step 'Squeeze'.*registered kinds: actnorm, channel, checkerboard"),
    ("squeeze:1 channel", r"step 'squeeze:1': kind 'squeeze' takes no parity"),
    ("channel:2", r"step 'channel:2': parity must be 0 or 1, got 2"),
    ("channel*0", r"step 'channel\*0': the repeat count must be >= 1, got 0"),
    ("channel(width=3)", r"kind 'channel' has no option 'width'; its options: none"),
    ("channel(width)", r"cannot parse option 'width'; expected name=value"),
    ("channel(a=1", r"scale 0: unbalanced '\('"),
    ("channel a=1)", r"scale 0: unbalanced '\)'"),
    ("channel | ", r"scale 1 has no steps"),
    ("", r"non-empty string"),
    ("channel factor_out", r"scale 0 step 1 \('factor_out'\): a splitting step must be the last "
                           r"step of a scale that is not the last scale"),
    ("factor_out channel | channel", r"scale 0 step 0 \('factor_out'\): a splitting step"),
    ("channel | channel", r"scale 0: every scale but the last must end with a splitting step"),
    # repeated groups
    ("() channel", r"scale 0: the group '\(\)' has no steps"),
    ("(channel)*0", r"step '\(channel\)\*0': the repeat count must be >= 1, got 0"),
    ("(channel conv)*2", r"unknown flow step kind 'conv'"),
    ("(channel)*2x", r"cannot parse step '\(channel\)\*2x'"),
    ("(channel factor_out)*2 | channel", r"a splitting step must be the last step"),
])
def test_bad_layout_strings_raise_value_errors_naming_the_token(text, message):
  with pytest.raises(ValueError, match=message):
    flow_steps.parse_layout(text)


def test_bad_layout_specs_raise_value_errors():
  with pytest.raises(ValueError, match="non-empty sequence of scales"):
    flow_steps.validate_layout(())
  with pytest.raises(ValueError, match="scale 0 step 1 must be a StepSpec, got 'squeeze'"):
    flow_steps.validate_layout([[StepSpec("channel"), "squeeze"]])
  with pytest.raises(ValueError, match=r"scale 0 step 0: unknown flow step kind 'glow'"):
    flow_steps.validate_layout([[StepSpec("glow")]])
  with pytest.raises(ValueError, match=r"kind 'squeeze' takes no parity, got 0"):
    flow_steps.validate_layout([[StepSpec("squeeze", 0)]])
  with pytest.raises(ValueError, match=r"unknown option 'k'"):
    flow_steps.validate_layout([[StepSpec("squeeze", options={"k": 1})]])


@pytest.mark.parametrize("shape,layout,message", [
    ((4, 4, 1), "channel", r"scale 0 step 0 \('channel'\) on events of shape \(4, 4, 1\): channel "
                           r"needs an even channel count, got C=1"),
    ((6, 6, 1), "squeeze channel factor_out | squeeze channel",
     r"scale 1 step 0 \('squeeze'\) on events of shape \(3, 3, 2\): squeeze needs even height"),
    ((4, 4, 1), "checkerboard factor_out | checkerboard",
     r"factor_out needs an even channel count, got C=1"),
])
def test_layouts_the_image_cannot_carry_are_refused_at_construction(shape, layout, message):
  with pytest.raises(ValueError, match=message):
    ConditionalRealNVP(shape, latent_dim=3, filters=2, num_res_blocks=1, layout=layout)


# --- the registry ------------------------------------------------------------------------------


def test_registry_lists_kinds_and_refuses_clashes():
  assert set(BUILTIN) | {Z_AFFINE} <= set(flow_steps.registered_kinds())
  assert ff.register_z_affine() == Z_AFFINE  # the same object again: a no-op
  clash = flow_steps.StepKind(name="squeeze", make_bijector=lambda call: tfb.Identity())
  with pytest.raises(ValueError, match="step kind 'squeeze' is already registered"):
    flow_steps.register_step(clash)
  with pytest.raises(ValueError, match=r"name must match \[a-z\]\[a-z0-9_\]\*, got 'Bad-Name'"):
    flow_steps.StepKind(name="Bad-Name", make_bijector=lambda call: tfb.Identity())
  with pytest.raises(ValueError, match="option 'k' has type"):
    flow_steps.StepKind(name="k", make_bijector=lambda call: None, options={"k": list})
  with pytest.raises(ValueError, match="expects a StepKind"):
    flow_steps.register_step("squeeze")


def test_steps_that_change_the_shape_must_be_undone_or_split():
  kind = flow_steps.register_step(flow_steps.StepKind(
      name="test_space_to_depth", make_bijector=lambda call: None,
      output_shape=lambda spec, s: (s[0] // 2, s[1] // 2, 4 * s[2])))
  with pytest.raises(ValueError, match="maps events of shape \\(4, 4, 1\\) to \\(2, 2, 4\\); only "
                                       "steps undone at the scale's end may change it"):
    flow_steps.plan_layout(kind.name, (4, 4, 1))


# --- a kind registered outside the library, used in a flow ---------------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["conditional", "unconditional"])
def custom_flow(request):
  flow = ff.make_flow((4, 4, 1), conditional=request.param, dtype="float64", layout=CUSTOM)
  for layer in flow.step_layers():
    if layer.name.startswith("scale") and "_z_affine" in layer.name:
      ff.perturb_all(layer, seed=4)
  return flow


def test_custom_kind_owns_its_layer_under_the_standard_name(custom_flow):
  assert isinstance(custom_flow.scale0_z_affine0, ff.ZAffineParams)
  assert custom_flow.scale1_z_affine0.channels == 2  # scale 1 acts on (2, 2, 2)
  assert [layer.name for layer in custom_flow.step_layers()] == [
      "scale0_checkerboard0", "scale0_z_affine0", "scale0_channel0", "scale0_channel1",
      "scale1_z_affine0", "scale1_checkerboard0", "scale1_channel0"]
  assert len(custom_flow.coupling_networks()) == 5


def test_custom_kind_round_trips_with_the_cache_bypassed(custom_flow):
  z, x = ff.latents((2,), "float64"), ff.pixels((2, 4, 4, 1), "float64")
  bij = custom_flow.bijector(z)
  y = bij.forward(x)
  assert y.shape == x.shape
  np.testing.assert_allclose(bij.inverse(ff.fresh(y)), x, rtol=1e-9, atol=1e-8)
  x2 = bij.inverse(ff.fresh(y))
  np.testing.assert_allclose(bij.forward(ff.fresh(x2)), y, rtol=1e-9, atol=1e-8)
  fldj = bij.forward_log_det_jacobian(x, event_ndims=3)
  ildj = bij.inverse_log_det_jacobian(ff.fresh(y), event_ndims=3)
  assert fldj.shape == (2,)
  np.testing.assert_allclose(fldj, -ildj, rtol=1e-9)


def test_custom_kind_log_det_matches_the_autodiff_jacobian(custom_flow):
  z, x = ff.latents((1,), "float64"), ff.pixels((1, 4, 4, 1), "float64")
  expected = ff.autodiff_log_det(lambda t: custom_flow.bijector(z).forward(t), x)
  got = custom_flow.bijector(z).forward_log_det_jacobian(x, event_ndims=3).numpy()[0]
  assert abs(got - expected) < 1e-6
  # The step alone: log|det| = H W sum(l(z)), checked against autodiff on a (4, 4, 1) event.
  step = ff.ZAffine(*custom_flow.scale0_z_affine0.params(z if custom_flow.conditional else None))
  u = ff.pixels((1, 4, 4, 1), "float64", low=-2, high=2)
  np.testing.assert_allclose(step.forward_log_det_jacobian(u, 3).numpy()[0],
                             ff.autodiff_log_det(step.forward, u), rtol=1e-9)


def test_custom_kind_depends_on_z_only_when_conditional(custom_flow):
  ff.assert_log_prob_depends_on_z_only_when_conditional(custom_flow, _p_x)


def test_custom_kind_weights_are_trainable_and_get_gradients(custom_flow):
  step_weights = custom_flow.scale0_z_affine0.trainable_variables + \
      custom_flow.scale1_z_affine0.trainable_variables
  assert len(step_weights) == (4 if custom_flow.conditional else 2)
  owned = {id(v) for v in custom_flow.trainable_variables}
  assert all(id(v) in owned for v in step_weights)
  ff.assert_every_flow_weight_gets_a_gradient(custom_flow, _p_x)


def test_custom_kind_trains_a_few_steps_with_finite_loss():
  flow = ff.make_flow((4, 4, 1), layout=CUSTOM)
  z, x = ff.latents((4,)), ff.pixels((4, 4, 4, 1))
  optimizer = keras.optimizers.Adam(1e-3)
  before = [v.numpy() for v in flow.scale0_z_affine0.trainable_variables]
  losses = []
  for _ in range(3):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(_p_x(flow, z).log_prob(x))
    grads = tape.gradient(loss, flow.trainable_variables)
    optimizer.apply_gradients(zip(grads, flow.trainable_variables))
    losses.append(float(loss))
  assert np.all(np.isfinite(losses))
  after = flow.scale0_z_affine0.trainable_variables
  assert all(not np.array_equal(a.numpy(), b) for a, b in zip(after, before))


def test_custom_kind_checkpoint_round_trip(custom_flow, tmp_path):
  path = tf.train.Checkpoint(flow=custom_flow).save(str(tmp_path / "ckpt"))
  names = [name for name, _ in tf.train.list_variables(path)]
  assert any(name.startswith("flow/scale0_z_affine0/") for name in names)
  tf.train.Checkpoint(flow=custom_flow).restore(path).assert_consumed()


def test_couplings_run_once_per_log_prob_in_a_custom_layout(custom_flow, monkeypatch):
  calls = []
  original = ff.ZAffineParams.params
  monkeypatch.setattr(ff.ZAffineParams, "params", lambda *a: calls.append(1) or original(*a))
  original_call = CouplingNetwork.call
  monkeypatch.setattr(CouplingNetwork, "call", lambda *a, **k: calls.append(1) or
                      original_call(*a, **k))
  _p_x(custom_flow, ff.latents((2,), "float64")).log_prob(ff.pixels((2, 4, 4, 1), "float64"))
  assert len(calls) == len(custom_flow.step_layers())
