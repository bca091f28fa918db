"""The conditional multi-scale flow f_z: pixels -> y (Sec. 3.1, 4.1, 4.2; docs/design.md §1, §3, §4).

`ConditionalRealNVP` is a Keras layer that owns every step's weights; `bijector(z)` builds, per
call, the TFP bijector of f_z closing over z, so that

    p(x | z) = TransformedDistribution(N(mu_y, sigma_y), to_pixels(z))          (Eq. 10-11)

with `to_pixels(z)` the inverse of f_z as a `tfb.Chain` (forward y -> x, TFP's convention for a
TransformedDistribution's bijector). Every bijector accepts any leading batch shape and broadcasts
x's batch against z's, as TFP's bijectors with batched parameters do.

The layout is data (`vapnev_tf.flow_steps`): per scale, a tuple of `StepSpec`s whose kinds are
registered parts. The default, the paper's (scale s has input (H_s, W_s, C_s), H_0 = H, C_0 = C):
    checkerboard couplings x num_checkerboard   on (H_s, W_s, C_s), alternating parity
    squeeze                                     -> (H_s/2, W_s/2, 4 C_s)
    channel-wise couplings x num_channelwise    alternating parity
    [not last scale] factor out: channels [2 C_s:] are final; [:2 C_s] go to scale s+1
    unsqueeze                                   -> back to (H_s, W_s, C_s)
Every scale ends with the inverse of its squeezes, so y has the image's shape (H, W, C): the
decoder's convolutional projections of mu_y and sigma_y predict a Gaussian per y coordinate at that
layout (docs/design.md §3). With the default layout, H and W must be divisible by 2**num_scales.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import bijectors as vb
from vapnev_tf import flow_steps
from vapnev_tf.layers import CONDITIONINGS
from vapnev_tf.layers import CouplingNetwork
from vapnev_tf.layers import SharedLatentTrunk
from vapnev_tf.layers import precision

tfb = tfp.bijectors


def check_image_shape(image_shape):
  """Raises ValueError unless `image_shape` is `(H, W, C)` with positive sizes."""
  if len(tuple(image_shape)) != 3 or any(int(d) <= 0 for d in image_shape):
    raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape!r}.")


def check_flow_geometry(image_shape, num_scales: int):
  """Raises ValueError unless the default multi-scale flow can split `image_shape = (H, W, C)`."""
  check_image_shape(image_shape)
  if num_scales < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  height, width, _ = image_shape
  factor = 2 ** num_scales
  if height % factor or width % factor:
    raise ValueError(
        f"image_shape {tuple(image_shape)}: a flow with num_scales={num_scales} squeezes "
        f"{num_scales} times, so H and W must be divisible by {factor}; got H={height}, W={width}.")


class ConditionalRealNVP(keras.layers.Layer):
  """Owns the layers of every step of f_z; builds its bijector per call.

  Args:
    image_shape: `(H, W, C)` of the images.
    latent_dim: size of z (ignored when `conditional=False`).
    num_scales: scales of the multi-scale architecture (2 in the paper).
    num_checkerboard, num_channelwise: couplings of each kind per scale (3 and 3 in the paper).
    filters: residual-block filters at the first scale, doubled at each next scale (64 in the
      paper).
    num_res_blocks: residual blocks in l1/m1 (2 in the paper).
    conditional: whether l_z, m_z depend on z (Eq. 16) or only on x (Fig. 1's dotted line).
    log_scale_bound: bound of the coupling log-scale (docs/design.md §6).
    logit_alpha: alpha of the pre-processing squash (docs/design.md §1).
    layout: None for `flow_steps.default_layout(num_scales, num_checkerboard, num_channelwise)`;
      otherwise its string form or a sequence of scales of `StepSpec`s, which then replaces the
      three counts (`num_scales` becomes the layout's; the counts are stored as None).
    conditioning: "per_coupling" (the paper: every coupling deconvolves z for l2 and m2) or
      "shared" (our extension: one z-trunk, attribute `z_trunk`, per `bijector(z)`; 1x1 heads).
    fused_networks: l1/m1 as one two-headed network, l2/m2 likewise (Real NVP's design).
    compute_dtype: "float32" (the flow's dtype) or "bfloat16" for the coupling networks and the
      trunk; the coupling arithmetic and log-dets stay in the flow's dtype.
    receptive_field: "full" (the paper) or "local": l1/m1 of every coupling use 1x1 convolutions
      after their first 3x3 one (`vapnev_tf.layers.CouplingNetwork`; docs/design.md §18).

  Each step whose kind has a layer owns it as the attribute `scale{s}_{kind}{i}` (e.g.
  `scale0_checkerboard1`, `scale1_channel0`), created here in layout order.
  """

  def __init__(self, image_shape, latent_dim: int = 256, num_scales: int = 2,
               num_checkerboard: int = 3, num_channelwise: int = 3, filters: int = 64,
               num_res_blocks: int = 2, conditional: bool = True, log_scale_bound: float = 3.0,
               logit_alpha: float = 0.05, layout=None, conditioning: str = "per_coupling",
               fused_networks: bool = False, compute_dtype: str = "float32",
               receptive_field: str = "full", **kwargs):
    super().__init__(**kwargs)
    if conditioning not in CONDITIONINGS:
      raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}.")
    network_policy = precision.network_policy(compute_dtype, self.dtype_policy)
    if layout is None:
      check_flow_geometry(image_shape, num_scales)
    else:
      check_image_shape(image_shape)
    self.layout = flow_steps.resolve_layout(layout, num_scales, num_checkerboard, num_channelwise)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.latent_dim = int(latent_dim)
    self.num_scales = len(self.layout)
    self.num_checkerboard = num_checkerboard if layout is None else None
    self.num_channelwise = num_channelwise if layout is None else None
    self.conditional = conditional
    self.logit_alpha = float(logit_alpha)
    self.conditioning = conditioning
    self.fused_networks = bool(fused_networks)
    self.compute_dtype_option = compute_dtype
    self._plan = flow_steps.plan_layout(self.layout, self.image_shape)
    for scale in self._plan:
      for step in scale:
        if step.kind.make_layer is None:
          continue
        setattr(self, step.name, step.kind.make_layer(flow_steps.LayerContext(
            spec=step.spec, event_shape=step.event_shape, scale=step.scale,
            filters=filters * 2 ** step.scale, num_res_blocks=num_res_blocks,
            conditional=conditional, latent_dim=self.latent_dim,
            log_scale_bound=log_scale_bound, dtype=self.dtype_policy, name=step.name,
            conditioning=conditioning, fused_networks=self.fused_networks,
            compute_dtype=compute_dtype, receptive_field=receptive_field)))
    self.uses_shared_trunk = conditional and conditioning == "shared"
    if self.uses_shared_trunk:
      resolutions = [step.event_shape[:2] for scale in self._plan for step in scale
                     if isinstance(getattr(self, step.name, None), CouplingNetwork)]
      self.z_trunk = SharedLatentTrunk(filters, resolutions, dtype=network_policy, name="z_trunk")
    self._build_by_tracing()

  def _build_by_tracing(self):
    """Creates every weight now with one tiny forward pass, so the layer is ready to checkpoint."""
    x = tf.fill((1,) + self.image_shape, tf.constant(128.0, self.compute_dtype))
    z = tf.zeros((1, self.latent_dim), self.compute_dtype) if self.conditional else None
    self.bijector(z).forward(x)
    self.built = True

  def layout_string(self) -> str:
    """The layout in its string form (`flow_steps.format_layout`)."""
    return flow_steps.format_layout(self.layout)

  def step_layers(self):
    """Every step's Keras layer, in the order f_z applies them."""
    return [getattr(self, step.name) for scale in self._plan for step in scale
            if step.kind.make_layer is not None]

  def parameter_groups(self) -> dict:
    """The flow's trainable variables by part: {"z_trunk": [...], KIND: [...]} with one entry per
    step kind of the layout (e.g. "checkerboard", "channel", "actnorm", "invconv"), in order."""
    groups = {}
    if self.uses_shared_trunk:
      groups["z_trunk"] = list(self.z_trunk.trainable_variables)
    for scale in self._plan:
      for step in scale:
        if step.kind.make_layer is not None:
          groups.setdefault(step.kind.name, []).extend(
              getattr(self, step.name).trainable_variables)
    return {name: variables for name, variables in groups.items() if variables}

  def coupling_networks(self):
    """All CouplingNetwork layers in the order f_z applies them."""
    return [layer for layer in self.step_layers() if isinstance(layer, CouplingNetwork)]

  def z_features(self, z):
    """The shared trunk's features of z `(*batch, latent_dim)`, computed once:
    `{resolution_key(h, w): (*batch, h, w, F)}` in the flow's dtype."""
    batch_shape = tf.shape(z)[:-1]
    flat = self.z_trunk(tf.reshape(z, [-1, self.latent_dim]))
    out = {}
    for key, features in flat.items():
      features = precision.to_model_dtype(self, features)
      if z.shape.rank != 2:
        features = tf.reshape(features, tf.concat([batch_shape, tf.shape(features)[1:]], axis=0))
      out[key] = features
    return out

  def _scale_bijector(self, s: int, z, z_features=None):
    """f for scale s and all scales after it; events `self._plan[s][0].event_shape`."""
    steps, undone = [], []  # in the order they are applied
    for step in self._plan[s]:
      call = flow_steps.StepCall(
          spec=step.spec, event_shape=step.event_shape, z=z, name=step.name,
          layer=getattr(self, step.name) if step.kind.make_layer is not None else None,
          inner=self._scale_bijector(s + 1, z, z_features) if step.kind.splits else None,
          z_features=z_features)
      steps.append(step.kind.make_bijector(call))
      if step.kind.undone_at_scale_end:
        undone.append((step.kind, call))
    for kind, call in reversed(undone):
      steps.append(tfb.Invert(kind.make_bijector(call), name=f"{call.name}_undo"))
    return tfb.Chain(steps[::-1], name=f"scale{s}")

  def bijector(self, z=None):
    """f_z: dequantised pixels `(*batch, H, W, C)` in [0, 256) -> y of the same shape.

    Args:
      z: `(*batch, latent_dim)`; required when conditional, ignored otherwise.
    """
    if self.conditional:
      if z is None:
        raise ValueError("z is required: this flow is conditional (conditional=True).")
      z = tf.convert_to_tensor(z, dtype=self.compute_dtype)
      if z.shape.rank is not None and (z.shape.rank < 1 or z.shape[-1] != self.latent_dim):
        raise ValueError(f"z must have shape (*batch, {self.latent_dim}), got {z.shape}.")
    else:
      z = None
    z_features = self.z_features(z) if self.uses_shared_trunk else None
    preprocess = vb.pixels_to_logits(self.logit_alpha, dtype=self.compute_dtype)
    return tfb.Chain([self._scale_bijector(0, z, z_features), preprocess], name="f_z")

  def to_pixels(self, z=None):
    """f_z^{-1}: y `(*batch, H, W, C)` -> dequantised pixels, as the bijector of p(x|z).

    A `tfb.Chain` (`vapnev_tf.bijectors.InverseFlow`) `[Invert(pixels_to_logits), Invert(scale0)]`
    of the parts of `bijector(z)`, so
    `forward(y)` is x, `inverse(x)` is y = f_z(x) and `inverse_log_det_jacobian(x, event_ndims=3)`
    is log|det df_z/dx| (Eq. 8, 11); `bijectors[1].bijector` is the flow's scale-0 `tfb.Chain` of
    couplings, squeezes and the factor-out (whose `inner` holds the next scales). x's batch
    broadcasts against z's: z `(k, B, L)` with x `(B, H, W, C)` gives y `(k, B, H, W, C)`.

    Args:
      z: `(*batch, latent_dim)`; required when conditional, ignored otherwise.
    """
    f_z = self.bijector(z)
    return vb.InverseFlow([tfb.Invert(part) for part in reversed(f_z.bijectors)],
                          name="to_pixels")
