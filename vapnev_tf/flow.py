"""The conditional multi-scale flow f_z: pixels -> y (Sec. 3.1, 4.1, 4.2; docs/design.md §1, §3, §4).

`ConditionalRealNVP` is a Keras layer that owns every coupling network; `bijector(z)` builds, per
call, the TFP bijector of f_z closing over z, so that

    p(x | z) = TransformedDistribution(N(mu_y, sigma_y), Invert(f_z))           (Eq. 10-11)

Layout (scale s has input (H_s, W_s, C_s), H_0 = H, C_0 = C):
    checkerboard couplings x num_checkerboard   on (H_s, W_s, C_s), alternating parity
    squeeze                                     -> (H_s/2, W_s/2, 4 C_s)
    channel-wise couplings x num_channelwise    alternating parity
    [not last scale] factor out: channels [2 C_s:] are final; [:2 C_s] go to scale s+1
    unsqueeze                                   -> back to (H_s, W_s, C_s)
Every scale ends with the inverse of its squeeze, so y has the image's shape (H, W, C): the decoder's
convolutional projections of mu_y and sigma_y predict a Gaussian per y coordinate at that layout
(docs/design.md §3). H and W must be divisible by 2**num_scales.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import bijectors as vb
from vapnev_tf.layers import CouplingNetwork

tfb = tfp.bijectors


def check_flow_geometry(image_shape, num_scales: int):
  """Raises ValueError unless the multi-scale flow can split `image_shape = (H, W, C)`."""
  if len(tuple(image_shape)) != 3 or any(int(d) <= 0 for d in image_shape):
    raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {image_shape!r}.")
  if num_scales < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  height, width, _ = image_shape
  factor = 2 ** num_scales
  if height % factor or width % factor:
    raise ValueError(
        f"image_shape {tuple(image_shape)}: a flow with num_scales={num_scales} squeezes "
        f"{num_scales} times, so H and W must be divisible by {factor}; got H={height}, W={width}.")


class ConditionalRealNVP(keras.layers.Layer):
  """Owns the coupling networks of f_z; builds its bijector per call.

  Args:
    image_shape: `(H, W, C)` of the images.
    latent_dim: size of z (ignored when `conditional=False`).
    num_scales: scales of the multi-scale architecture (2 in the paper).
    num_checkerboard, num_channelwise: couplings of each kind per scale (3 and 3 in the paper).
    filters: residual-block filters at the first scale, doubled at each next scale (64 in the paper).
    num_res_blocks: residual blocks in l1/m1 (2 in the paper).
    conditional: whether l_z, m_z depend on z (Eq. 16) or only on x (Fig. 1's dotted line).
    log_scale_bound: bound of the coupling log-scale (docs/design.md §6).
    logit_alpha: alpha of the pre-processing squash (docs/design.md §1).
  """

  def __init__(self, image_shape, latent_dim: int = 256, num_scales: int = 2,
               num_checkerboard: int = 3, num_channelwise: int = 3, filters: int = 64,
               num_res_blocks: int = 2, conditional: bool = True, log_scale_bound: float = 3.0,
               logit_alpha: float = 0.05, **kwargs):
    super().__init__(**kwargs)
    check_flow_geometry(image_shape, num_scales)
    if num_checkerboard < 0 or num_channelwise < 0 or num_checkerboard + num_channelwise == 0:
      raise ValueError("num_checkerboard and num_channelwise must be >= 0 and not both 0, got "
                       f"{num_checkerboard} and {num_channelwise}.")
    self.image_shape = tuple(int(d) for d in image_shape)
    self.latent_dim = int(latent_dim)
    self.num_scales = num_scales
    self.num_checkerboard = num_checkerboard
    self.num_channelwise = num_channelwise
    self.conditional = conditional
    self.logit_alpha = float(logit_alpha)
    height, width, channels = self.image_shape
    for s in range(num_scales):
      scale_filters = filters * 2 ** s
      common = dict(filters=scale_filters, num_res_blocks=num_res_blocks, conditional=conditional,
                    log_scale_bound=log_scale_bound, dtype=self.dtype_policy)
      for i in range(num_checkerboard):
        setattr(self, f"scale{s}_checkerboard{i}", CouplingNetwork(
            channels, height, width, name=f"scale{s}_checkerboard{i}", **common))
      for i in range(num_channelwise):
        setattr(self, f"scale{s}_channel{i}", CouplingNetwork(
            2 * channels, height // 2, width // 2, name=f"scale{s}_channel{i}", **common))
      height, width, channels = height // 2, width // 2, 2 * channels
    self._build_by_tracing()

  def _build_by_tracing(self):
    """Creates every weight now with one tiny forward pass, so the layer is ready to checkpoint."""
    x = tf.fill((1,) + self.image_shape, tf.constant(128.0, self.compute_dtype))
    z = tf.zeros((1, self.latent_dim), self.compute_dtype) if self.conditional else None
    self.bijector(z).forward(x)
    self.built = True

  def coupling_networks(self):
    """All CouplingNetwork layers in the order f_z applies them."""
    nets = []
    for s in range(self.num_scales):
      nets += [getattr(self, f"scale{s}_checkerboard{i}") for i in range(self.num_checkerboard)]
      nets += [getattr(self, f"scale{s}_channel{i}") for i in range(self.num_channelwise)]
    return nets

  def _scale_bijector(self, s: int, z, channels: int):
    """f for scale s and all scales after it; event (H_s, W_s, channels)."""
    height, width = self.image_shape[0] // 2 ** s, self.image_shape[1] // 2 ** s
    steps = []  # in the order they are applied
    for i in range(self.num_checkerboard):
      steps.append(vb.ConditionalAffineCoupling(
          getattr(self, f"scale{s}_checkerboard{i}"), "checkerboard", i % 2, z,
          event_shape=(height, width, channels), name=f"scale{s}_checkerboard{i}"))
    steps.append(vb.Squeeze(name=f"scale{s}_squeeze"))
    for i in range(self.num_channelwise):
      steps.append(vb.ConditionalAffineCoupling(
          getattr(self, f"scale{s}_channel{i}"), "channel", i % 2, z,
          event_shape=(height // 2, width // 2, 4 * channels), name=f"scale{s}_channel{i}"))
    if s + 1 < self.num_scales:
      steps.append(vb.FactorOut(self._scale_bijector(s + 1, z, 2 * channels), 2 * channels,
                                name=f"scale{s}_factor_out"))
    steps.append(tfb.Invert(vb.Squeeze(name=f"scale{s}_squeeze"), name=f"scale{s}_unsqueeze"))
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
    preprocess = vb.pixels_to_logits(self.logit_alpha, dtype=self.compute_dtype)
    return tfb.Chain([self._scale_bijector(0, z, self.image_shape[-1]), preprocess], name="f_z")
