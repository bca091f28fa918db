"""`ConditionalAffineCoupling`: the conditional coupling layer of Sec. 3.2 (Eq. 12-16).

Forward is the paper's data -> latent direction f_z:
    y_{1:d}   = x_{1:d}                                         (Eq. 12)
    y_{d+1:D} = x_{d+1:D} * exp(l_z(x_{1:d})) + m_z(x_{1:d})    (Eq. 13)
inverse:
    x_{d+1:D} = (y_{d+1:D} - m_z(y_{1:d})) * exp(-l_z(y_{1:d}))  (Eq. 15)
log|det J| = sum(l_z(x_{1:d}))                                  (Eq. 8)

Like TFP's `RealNVP(shift_and_log_scale_fn=...)`, the bijector and its transform are separate parts:
the bijector owns the split {1:d} / {d+1:D} (a checkerboard or channel-wise mask of Real NVP [3],
each with a complement, `parity`), both directions from one definition, and the log-det; a
`transform_fn(x_kept, z) -> (shift m_z, log_scale l_z)` supplies the affine parameters (Eq. 16). In
the flow that callable is a Keras `CouplingNetwork` layer, which owns every weight, starts at the
identity and bounds the log-scale (docs/design.md §6); this bijector is a stateless view built per
call, closing over the conditioning z.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf.bijectors import _greedy

MASK_TYPES = ("checkerboard", "channel")


def checkerboard_mask(height: int, width: int, parity: int, dtype):
  """`(height, width, 1)`: 1 where (h + w + parity) is even (kept, conditions the rest), else 0."""
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  mask = tf.cast(tf.equal((rows + cols + parity) % 2, 0), dtype)
  return mask[:, :, None]


class ConditionalAffineCoupling(_greedy.GreedyLogDetBijector):
  """Affine coupling whose l_z, m_z depend on the kept part of x and on z (Eq. 13, 16).

  Event shape `(H, W, C)`; any batch shape. The kept part conditions `transform_fn`:
  - `"checkerboard"`: kept = pixels with (h + w + parity) even, all channels; `transform_fn` sees
    the masked image and the mask as an extra channel, `(N, H, W, C + 1)`, and returns shift and
    log-scale of shape `(N, H, W, C)`; only the complementary pixels use them.
  - `"channel"`: C must be even; kept = first half of the channels when `parity == 0`, else the
    second half; `transform_fn` sees `(N, H, W, C/2)` and returns `(N, H, W, C/2)` each.
  Batch shapes follow TFP's bijectors with batched parameters: x `(*x_batch, H, W, C)` and the
  conditioning `(*z_batch, ...)` broadcast against each other, and the output and log-det have the
  broadcast batch shape (z `(k, B, L)` with x `(B, H, W, C)` gives `(k, B, H, W, C)` and `(k, B)`).
  The convolutional `transform_fn` sees that batch flattened to one dimension, N = its size.

  Args:
    transform_fn: callable `(x_kept, z) -> (shift, log_scale)`, z `(N, latent_dim)` or None; e.g. a
      `vapnev_tf.layers.CouplingNetwork` built for this mask. It is called once per forward or
      inverse pass, and the greedy cache (`_greedy`) makes that once per `log_prob` or `sample`.
    mask_type: one of `MASK_TYPES`.
    parity: 0 or 1; 1 selects the complement mask.
    conditioning: z, `(*batch, latent_dim)` broadcastable against x's batch shape, or None when
      the transform is unconditional; a parameter in TFP's sense (`experimental_batch_shape`,
      batch slicing). With `conditioning_event_ndims=3` it is a feature map
      `(*batch, h, w, F)` (the shared z-trunk's), passed on as `(N, h, w, F)`.
    conditioning_event_ndims: trailing dimensions of `conditioning` that are not batch (1 for z).
    event_shape: optional `(H, W, C)` the transform was built for; inputs of another event shape
      raise a ValueError naming both.
  """

  def __init__(self, transform_fn, mask_type: str, parity: int, conditioning=None,
               event_shape=None, validate_args: bool = False, name: str | None = None,
               conditioning_event_ndims: int = 1):
    parameters = dict(locals())
    if not callable(transform_fn):
      raise ValueError(f"transform_fn must be callable (x_kept, z) -> (shift, log_scale), got "
                       f"{transform_fn!r}.")
    if mask_type not in MASK_TYPES:
      raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}.")
    if parity not in (0, 1):
      raise ValueError(f"parity must be 0 or 1, got {parity!r}.")
    if conditioning_event_ndims not in (1, 3):
      raise ValueError(f"conditioning_event_ndims must be 1 (z) or 3 (feature maps), got "
                       f"{conditioning_event_ndims!r}.")
    name = name or f"{mask_type}_coupling_{parity}"
    with tf.name_scope(name) as name:
      self._transform_fn = transform_fn
      self._mask_type = mask_type
      self._parity = parity
      self._conditioning = conditioning
      self._conditioning_event_ndims = int(conditioning_event_ndims)
      self._event_shape = None if event_shape is None else tuple(int(d) for d in event_shape)
      super().__init__(forward_min_event_ndims=3, validate_args=validate_args,
                       parameters=parameters, name=name)

  @property
  def transform_fn(self):
    return self._transform_fn

  @property
  def network(self):
    """The transform, under the name it has when it is a `CouplingNetwork`."""
    return self._transform_fn

  def _check_event(self, x):
    if x.shape.rank is not None and x.shape.rank < 3:
      raise ValueError(f"{self.name}: expected x of shape (*batch, H, W, C), got {x.shape}.")
    if self._event_shape is not None and tuple(x.shape[-3:]) != self._event_shape:
      raise ValueError(f"{self.name}: expected events of shape {self._event_shape}, got "
                       f"{tuple(x.shape[-3:])} (input shape {tuple(x.shape)}).")
    channels = x.shape[-1]
    if self._mask_type == "channel" and channels is not None and channels % 2:
      raise ValueError(f"{self.name}: channel-wise masking needs an even channel count, "
                       f"got C={channels}.")

  @property
  def conditioning(self):
    """z `(*batch, latent_dim)`, the shared trunk's features `(*batch, h, w, F)`, or None."""
    return self._conditioning

  @classmethod
  def _parameter_properties(cls, dtype):
    # The conditioning carries the bijector's batch shape (as a TFP bijector's parameters do), so
    # `experimental_batch_shape` and batch slicing (e.g. of a TransformedDistribution) see it.
    return dict(conditioning=tfp.util.ParameterProperties(
        event_ndims=lambda self, x_event_ndims: self._conditioning_event_ndims + x_event_ndims - 3))

  def _flat_inputs(self, x):
    """x and the conditioning broadcast against each other's batch shape and flattened.

    Returns `(flat_x (N, H, W, C), flat_z (N, *cond_event) or None, batch_shape, static_batch)`
    with `batch_shape` the broadcast batch shape (a tensor) and `static_batch` its static form.
    """
    if self._conditioning is None:
      flat, batch_shape = _greedy.flatten_batch(x)
      return flat, None, batch_shape, x.shape[:-3]
    k = self._conditioning_event_ndims
    z = tf.convert_to_tensor(self._conditioning, dtype=x.dtype)
    static_batch = _broadcast_static(self.name, z.shape[:-k], x.shape[:-3])
    if x.shape[:-3].is_fully_defined() and x.shape[:-3] == z.shape[:-k]:
      batch_shape = tf.shape(x)[:-3]  # Equal batches (the training path): no broadcast ops.
    else:
      batch_shape = tf.broadcast_dynamic_shape(tf.shape(x)[:-3], tf.shape(z)[:-k])
      x = tf.broadcast_to(x, tf.concat([batch_shape, tf.shape(x)[-3:]], axis=0))
      z = tf.broadcast_to(z, tf.concat([batch_shape, tf.shape(z)[-k:]], axis=0))
    flat_x, _ = _greedy.flatten_batch(x)
    flat_z = tf.reshape(z, [-1] + z.shape[-k:].as_list())
    return flat_x, flat_z, batch_shape, static_batch

  def _split(self, flat):
    """`(N, H, W, C)` -> (input of transform_fn, the part it changes, mask or None)."""
    if self._mask_type == "checkerboard":
      mask = checkerboard_mask(flat.shape[1], flat.shape[2], self._parity, flat.dtype)
      kept = flat * mask
      net_in = tf.concat([kept, tf.broadcast_to(mask, tf.shape(kept[..., :1]))], axis=-1)
      return net_in, flat, mask
    half = flat.shape[-1] // 2
    first, second = flat[..., :half], flat[..., half:]
    kept, changed = (first, second) if self._parity == 0 else (second, first)
    return kept, changed, None

  def _merge(self, net_in, out):
    """Puts the kept part back beside the changed one (inverse of `_split`)."""
    if self._mask_type == "channel":
      return tf.concat([net_in, out] if self._parity == 0 else [out, net_in], axis=-1)
    # For the checkerboard, kept positions have log_scale = shift = 0: `out` already equals x there.
    return out

  def _couple(self, x, direction: str):
    """Applies Eq. 13 (`direction="forward"`) or Eq. 15 (`"inverse"`) and returns the log-det.

    Both directions share one definition: the kept part is identical in x and y, so l and m are
    computed from it the same way.
    """
    self._check_event(x)
    flat, z, batch_shape, static_batch = self._flat_inputs(x)  # (N, H, W, C), (N, latent) / None
    net_in, changed, mask = self._split(flat)
    shift, log_scale = self._transform_fn(net_in, z)
    if mask is not None:
      shift, log_scale = shift * (1. - mask), log_scale * (1. - mask)

    if direction == "forward":
      out = changed * tf.exp(log_scale) + shift
      log_det = tf.reduce_sum(log_scale, axis=[1, 2, 3])
    else:
      out = (changed - shift) * tf.exp(-log_scale)
      log_det = -tf.reduce_sum(log_scale, axis=[1, 2, 3])

    out = tf.reshape(self._merge(net_in, out), tf.concat([batch_shape, tf.shape(x)[-3:]], axis=0))
    out.set_shape(static_batch.concatenate(x.shape[-3:]))
    log_det = tf.reshape(log_det, batch_shape)
    log_det.set_shape(static_batch)
    return out, log_det

  def _augmented_forward(self, x):
    return self._couple(x, "forward")

  def _augmented_inverse(self, y):
    return self._couple(y, "inverse")


def _broadcast_static(name, z_batch, x_batch):
  """The static broadcast of z's and x's batch shapes; ValueError when they cannot broadcast."""
  if z_batch.rank is None or x_batch.rank is None:
    return tf.TensorShape(None)
  try:
    return tf.broadcast_static_shape(z_batch, x_batch)
  except ValueError:
    raise ValueError(f"{name}: z with batch shape {z_batch} does not broadcast against the batch "
                     f"shape {x_batch} of x.") from None
