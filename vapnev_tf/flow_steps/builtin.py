"""The built-in step kinds of the paper's flow (Sec. 3.2, 4.2), registered on import.

    checkerboard  conditional affine coupling, checkerboard mask (Eq. 12-16); layer: CouplingNetwork
                  of C output channels on (H, W); parity 0/1
    channel       conditional affine coupling, channel-wise mask; C even; layer: CouplingNetwork
                  of C/2 output channels; parity 0/1
    squeeze       (H, W, C) -> (H/2, W/2, 4C) by space-to-depth; undone at the end of its scale
    factor_out    channels [C/2:] are final coordinates of y, [:C/2] go on to the next scale
"""
from vapnev_tf import bijectors as vb
from vapnev_tf.flow_steps.registry import StepKind
from vapnev_tf.flow_steps.registry import register_step
from vapnev_tf.layers import CouplingNetwork
from vapnev_tf.layers import resolution_key


def _coupling_network(out_channels: int, ctx):
  height, width, _ = ctx.event_shape
  return CouplingNetwork(out_channels, height, width, name=ctx.name, filters=ctx.filters,
                         num_res_blocks=ctx.num_res_blocks, conditional=ctx.conditional,
                         log_scale_bound=ctx.log_scale_bound, conditioning=ctx.conditioning,
                         fused_networks=ctx.fused_networks, compute_dtype=ctx.compute_dtype,
                         receptive_field=ctx.receptive_field, dtype=ctx.dtype)


def _coupling_bijector(mask_type: str):
  def make(call):
    if call.z_features is not None and call.z is not None:
      # Shared z-trunk: the coupling's heads read the features at its resolution.
      features = call.z_features[resolution_key(*call.event_shape[:2])]
      return vb.ConditionalAffineCoupling(call.layer, mask_type, call.spec.parity, features,
                                          event_shape=call.event_shape, name=call.name,
                                          conditioning_event_ndims=3)
    return vb.ConditionalAffineCoupling(call.layer, mask_type, call.spec.parity, call.z,
                                        event_shape=call.event_shape, name=call.name)
  return make


def _even_channels(spec, event_shape):
  if event_shape[-1] % 2:
    raise ValueError(f"{spec.kind} needs an even channel count, got C={event_shape[-1]}.")
  return tuple(event_shape)


def _squeezed(spec, event_shape):
  height, width, channels = event_shape
  if height % 2 or width % 2:
    raise ValueError(f"{spec.kind} needs even height and width, got H={height}, W={width}.")
  return (height // 2, width // 2, 4 * channels)


def _halved_channels(spec, event_shape):
  height, width, channels = _even_channels(spec, event_shape)
  return (height, width, channels // 2)


CHECKERBOARD = register_step(StepKind(
    name="checkerboard", uses_parity=True, make_bijector=_coupling_bijector("checkerboard"),
    make_layer=lambda ctx: _coupling_network(ctx.event_shape[-1], ctx)))

CHANNEL = register_step(StepKind(
    name="channel", uses_parity=True, make_bijector=_coupling_bijector("channel"),
    make_layer=lambda ctx: _coupling_network(ctx.event_shape[-1] // 2, ctx),
    output_shape=_even_channels))

SQUEEZE = register_step(StepKind(
    name="squeeze", make_bijector=lambda call: vb.Squeeze(name=call.name),
    output_shape=_squeezed, undone_at_scale_end=True))

FACTOR_OUT = register_step(StepKind(
    name="factor_out", splits=True, output_shape=_halved_channels,
    make_bijector=lambda call: vb.FactorOut(call.inner, call.event_shape[-1] // 2,
                                            name=call.name)))
