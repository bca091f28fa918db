"""The networks of a conditional coupling layer: l_z and m_z of Eq. 16 (Sec. 3.2, 4.2).

    l_z(x) = alpha * l1(x) * l2(z) + beta1 * l1(x) + beta2 * l2(z) + b          (Eq. 16)

and the same form, with its own networks and multipliers, for m_z. l1/m1 are residual networks of
`num_res_blocks` blocks on the unchanged part of x; l2/m2 are deconvolution networks that grow z from
a 2x2xc map to the spatial size of the transformed part (the rule of `vapnev_tf.sizing`).

Every sub-layer is a separate attribute so that both Keras and `tf.train.Checkpoint` track it.

Options (the defaults are the paper's and create exactly the attributes above):
- `conditioning="shared"` (our extension): no per-coupling deconvolution nets; l2/m2 are 1x1
  convolution heads on the features of the flow's `SharedLatentTrunk` at this coupling's resolution.
- `fused_networks=True` (Real NVP's own design): l1 and m1 are ONE ResidualNet `lm1` with 2C output
  channels split into (l1, m1); l2 and m2 likewise one `lm2` (a LatentDeconvNet, or a 1x1 head).
- `receptive_field="local"` (against posterior collapse, docs/design.md §18): l1/m1 keep their
  first 3x3 convolution and use 1x1 convolutions after it, so each coupling sees a 3x3
  neighbourhood of x only; global structure must come through z (l2/m2 are unchanged).
- `compute_dtype="bfloat16"`: the hidden convolutions of l1/m1/l2/m2 compute in bfloat16
  (`vapnev_tf.layers.precision`); the last, linear layer of each (its output convolution or 1x1
  head) computes in the model dtype on the bfloat16 features, so l1..m2 carry float32 precision
  into Eq. 16, the tanh bound and the log-dets (docs/design.md §25).
"""
import keras
import tensorflow as tf

from vapnev_tf import sizing
from vapnev_tf.layers import precision

CONDITIONINGS = ("per_coupling", "shared")
RECEPTIVE_FIELDS = ("full", "local")


class ResidualNet(keras.layers.Layer):
  """l1 / m1: conv in, `num_blocks` residual blocks, conv out. Shape-preserving in space.

  Input `(B, h, w, c_in)` -> output `(B, h, w, out_channels)` in the layer's dtype. No batch
  statistics are used, so the flow's log-density is identical in training and evaluation
  (docs/design.md §7). conv_in is 3x3, the later convolutions `kernel_size` x `kernel_size`: with 3
  the receptive field is 3 + 2 (2 num_blocks + 1) pixels wide, with 1 it is conv_in's 3x3 alone.
  `compute_dtype="bfloat16"` runs conv_in and the residual blocks in bfloat16; conv_out, whose
  output is l1 / m1, stays in the layer's dtype (docs/design.md §25).
  """

  def __init__(self, filters: int, out_channels: int, num_blocks: int = 2, kernel_size: int = 3,
               compute_dtype: str = "float32", **kwargs):
    super().__init__(**kwargs)
    self.num_blocks = num_blocks
    k = int(kernel_size)
    hidden = precision.network_policy(compute_dtype, self.dtype_policy)
    self.conv_in = keras.layers.Conv2D(filters, 3, padding="same", dtype=hidden, name="conv_in")
    for i in range(num_blocks):
      setattr(self, f"block{i}_conv_a", keras.layers.Conv2D(
          filters, k, padding="same", dtype=hidden, name=f"block{i}_conv_a"))
      setattr(self, f"block{i}_conv_b", keras.layers.Conv2D(
          filters, k, padding="same", dtype=hidden, name=f"block{i}_conv_b"))
    self.conv_out = keras.layers.Conv2D(out_channels, k, padding="same", dtype=self.dtype_policy,
                                        name="conv_out")

  def call(self, x):
    h = self.conv_in(x)
    for i in range(self.num_blocks):
      r = getattr(self, f"block{i}_conv_a")(tf.nn.relu(h))
      r = getattr(self, f"block{i}_conv_b")(tf.nn.relu(r))
      h = h + r
    return self.conv_out(precision.to_model_dtype(self, tf.nn.relu(h)))


class LatentDeconvNet(keras.layers.Layer):
  """l2 / m2: z `(B, latent_dim)` -> `(B, height, width, out_channels)`.

  A dense projection to a `start x start x filters` map (2x2 for square images), then one stride-2
  transposed convolution per doubling, each centre-cropped to the size the ceil-halving walk
  prescribes (docs/design.md §5), then a linear 1x1 convolution to `out_channels`.
  `compute_dtype="bfloat16"` runs the projection and the transposed convolutions in bfloat16; the
  1x1 output convolution (l2 / m2) stays in the layer's dtype (docs/design.md §25).
  """

  def __init__(self, filters: int, out_channels: int, height: int, width: int,
               compute_dtype: str = "float32", **kwargs):
    super().__init__(**kwargs)
    num_up = sizing.halvings_to_reach(max(height, width))
    self.start, self.targets = sizing.upsampling_plan(height, width, num_up)
    self.filters = filters
    hidden = precision.network_policy(compute_dtype, self.dtype_policy)
    self.project = keras.layers.Dense(self.start[0] * self.start[1] * filters, dtype=hidden,
                                      name="project")
    for i in range(len(self.targets)):
      setattr(self, f"up{i}", keras.layers.Conv2DTranspose(
          filters, 3, strides=2, padding="same", dtype=hidden, name=f"up{i}"))
    self.conv_out = keras.layers.Conv2D(out_channels, 1, dtype=self.dtype_policy, name="conv_out")

  def call(self, z):
    h = tf.nn.relu(self.project(z))
    h = tf.reshape(h, [-1, self.start[0], self.start[1], self.filters])
    for i, (th, tw) in enumerate(self.targets):
      h = tf.nn.relu(getattr(self, f"up{i}")(h))
      h = centre_crop(h, th, tw)
    return self.conv_out(precision.to_model_dtype(self, h))


def centre_crop(x, height: int, width: int):
  """Crops `(B, H, W, C)` to `(B, height, width, C)` around the centre (no-op when equal)."""
  dh = (x.shape[1] - height) // 2
  dw = (x.shape[2] - width) // 2
  return x[:, dh:dh + height, dw:dw + width, :]


class CouplingNetwork(keras.layers.Layer):
  """Computes (shift m_z, bounded log-scale l_z) of one conditional coupling (Eq. 13, 16).

  Args:
    out_channels: channels C of the transformed part (Eq. 16's multipliers live in R^C).
    height, width: spatial size of the transformed part.
    filters: c, the filters of the residual blocks and of the l2/m2 deconvolution nets (Sec. 4.2).
    num_res_blocks: residual blocks in l1 and m1 (2 in the paper).
    conditional: False drops l2/m2 (Fig. 1's dotted line): l = beta1 * l1(x) + b.
    log_scale_bound: l_z is passed through `bound * tanh(l / bound)` so exp(l) cannot overflow
      (docs/design.md §6); the map is the identity to first order near 0.
    conditioning: "per_coupling" (the paper: l2/m2 deconvolve z) or "shared" (l2/m2 are 1x1 heads
      on the shared trunk's features; `call` then takes those features instead of z).
    fused_networks: one network with two heads for (l1, m1) and one for (l2, m2).
    compute_dtype: "float32" (the model's dtype) or "bfloat16" for the hidden layers of
      l1/m1/l2/m2 (their output layers stay in the model's dtype).
    receptive_field: "full" (the paper's 3x3 convolutions throughout l1/m1) or "local" (1x1
      after l1/m1's first 3x3 convolution).

  alpha, beta1, beta2 and b start at zero, so every coupling starts as the identity (the
  zero-initialised last layer of Glow/Real NVP, here the last operation is Eq. 16 itself).
  """

  def __init__(self, out_channels: int, height: int, width: int, filters: int,
               num_res_blocks: int = 2, conditional: bool = True, log_scale_bound: float = 3.0,
               conditioning: str = "per_coupling", fused_networks: bool = False,
               compute_dtype: str = "float32", receptive_field: str = "full", **kwargs):
    super().__init__(**kwargs)
    if conditioning not in CONDITIONINGS:
      raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}.")
    if receptive_field not in RECEPTIVE_FIELDS:
      raise ValueError(f"receptive_field must be one of {RECEPTIVE_FIELDS}, got "
                       f"{receptive_field!r}.")
    kernel = 1 if receptive_field == "local" else 3
    self.out_channels = out_channels
    self.conditional = conditional
    self.conditioning = conditioning
    self.fused_networks = bool(fused_networks)
    self.log_scale_bound = float(log_scale_bound)
    # The networks' hidden layers may compute in bfloat16; every network's output (l1..m2) is
    # computed in this layer's dtype, so Eq. 16 and the log-det see full-precision values.
    own = dict(compute_dtype=compute_dtype, dtype=self.dtype_policy)
    if self.fused_networks:
      self.lm1 = ResidualNet(filters, 2 * out_channels, num_res_blocks, kernel, name="lm1", **own)
    else:
      self.l1 = ResidualNet(filters, out_channels, num_res_blocks, kernel, name="l1", **own)
      self.m1 = ResidualNet(filters, out_channels, num_res_blocks, kernel, name="m1", **own)
    if not conditional:
      return
    heads = ("lm2", 2 * out_channels) if self.fused_networks else None
    for name, channels in ([heads] if heads else [("l2", out_channels), ("m2", out_channels)]):
      if conditioning == "per_coupling":
        net = LatentDeconvNet(filters, channels, height, width, name=name, **own)
      else:  # a linear head on the shared trunk's features (already in this layer's dtype)
        net = keras.layers.Conv2D(channels, 1, dtype=self.dtype_policy, name=name)
      setattr(self, name, net)

  def build(self, input_shape=None):
    for fn in ("l", "m"):
      names = ("alpha", "beta1", "beta2", "b") if self.conditional else ("beta1", "b")
      for name in names:
        setattr(self, f"{name}_{fn}", self.add_weight(
            shape=(self.out_channels,), initializer="zeros", name=f"{name}_{fn}"))
    self.built = True

  def _combine(self, fn: str, net1_out, net2_out):
    """Eq. 16 with per-channel multipliers broadcast over (B, h, w)."""
    beta1, b = getattr(self, f"beta1_{fn}"), getattr(self, f"b_{fn}")
    out = beta1 * net1_out + b
    if self.conditional:
      alpha, beta2 = getattr(self, f"alpha_{fn}"), getattr(self, f"beta2_{fn}")
      out = out + alpha * net1_out * net2_out + beta2 * net2_out
    return out

  def _x_path(self, x_unchanged):
    if self.fused_networks:
      return tf.split(self.lm1(x_unchanged), 2, axis=-1)
    return self.l1(x_unchanged), self.m1(x_unchanged)

  def _z_path(self, z):
    if not self.conditional:
      return None, None
    if self.fused_networks:
      return tf.split(self.lm2(z), 2, axis=-1)
    return self.l2(z), self.m2(z)

  def call(self, x_unchanged, z=None):
    """x_unchanged `(B, h, w, c_in)` -> shift, log_scale `(B, h, w, out_channels)`.

    z: `(B, latent)` ("per_coupling"), or the shared trunk's features at this coupling's
    resolution, `(B, h, w, F)` ("shared"); None when unconditional.
    """
    if self.conditional and z is None:
      raise ValueError(f"{self.name}: a conditional coupling needs z, got None.")
    l2, m2 = self._z_path(z)
    l1, m1 = self._x_path(x_unchanged)
    log_scale = self._combine("l", l1, l2)
    shift = self._combine("m", m1, m2)
    bound = self.log_scale_bound
    return shift, bound * tf.tanh(log_scale / bound)
