"""Encoder (psi_1, psi_2 of Eq. 17-18) and decoder (phi_1, phi_2 of Eq. 20-21), Sec. 4.2."""
import keras
import tensorflow as tf

from vapnev_tf import sizing
from vapnev_tf.layers import precision
from vapnev_tf.layers.coupling_network import centre_crop


class Encoder(keras.layers.Layer):
  """Images `(B, H, W, C)` in [0, 256) -> (mu_z, sigma_z), each `(B, latent_dim)`.

  `blocks` blocks of `layers_per_block` 3x3 ReLU convs; the first conv of block k has stride 2 and
  every conv of block k has `filters * 2**k` filters (32, 64, 128, 256 for the paper's 8 layers).
  mu_z and sigma_z are separate dense projections; sigma_z = softplus(.) + min_scale (docs/design.md §6).
  With `context_dim` > 0 a third dense projection gives the context vector h(x) `(B, context_dim)`
  of the IAF posterior (Kingma et al. 2016; `vapnev_tf.posteriors`) and `call` returns
  (mu_z, sigma_z, h). With `fixed_scale` (a float) sigma_z is that constant in every dimension
  and there is no sigma_z projection (the delta-VAE posterior, `posteriors.committed_rate_scale`).
  `compute_dtype="bfloat16"` runs the convs in bfloat16
  (`vapnev_tf.layers.precision`); mu_z, sigma_z and h stay in the model's dtype.
  """

  def __init__(self, latent_dim: int, filters: int = 32, blocks: int = 4,
               layers_per_block: int = 2, min_scale: float = 1e-3, context_dim: int = 0,
               compute_dtype: str = "float32", fixed_scale: float | None = None, **kwargs):
    super().__init__(**kwargs)
    conv_policy = precision.network_policy(compute_dtype, self.dtype_policy)
    self.blocks, self.layers_per_block, self.min_scale = blocks, layers_per_block, min_scale
    for k in range(blocks):
      for j in range(layers_per_block):
        setattr(self, f"conv{k}_{j}", keras.layers.Conv2D(
            filters * 2 ** k, 3, strides=2 if j == 0 else 1, padding="same", activation="relu",
            dtype=conv_policy, name=f"conv{k}_{j}"))
    self.flatten = keras.layers.Flatten(dtype=self.dtype_policy)
    self.mu_z = keras.layers.Dense(latent_dim, dtype=self.dtype_policy, name="mu_z")
    self.fixed_scale = None if fixed_scale is None else float(fixed_scale)
    if self.fixed_scale is None:
      self.sigma_z = keras.layers.Dense(latent_dim, dtype=self.dtype_policy, name="sigma_z")
    self.context_dim = int(context_dim)
    if self.context_dim:
      self.context = keras.layers.Dense(self.context_dim, dtype=self.dtype_policy, name="context")

  def call(self, x):
    h = x / 128.0 - 1.0  # dequantised pixels -> roughly [-1, 1)
    for k in range(self.blocks):
      for j in range(self.layers_per_block):
        h = getattr(self, f"conv{k}_{j}")(h)
    h = precision.to_model_dtype(self, self.flatten(h))
    mu_z = self.mu_z(h)
    if self.fixed_scale is None:
      sigma_z = tf.nn.softplus(self.sigma_z(h)) + self.min_scale
    else:
      sigma_z = tf.fill(tf.shape(mu_z), tf.constant(self.fixed_scale, mu_z.dtype))
    if self.context_dim:
      return mu_z, sigma_z, self.context(h)
    return mu_z, sigma_z


class Decoder(keras.layers.Layer):
  """z `(B, latent_dim)` -> `num_heads` maps `(B, H, W, C)` (e.g. mu_y and raw sigma_y).

  Mirrors the Encoder with `filters` in place of its own (`ModelConfig.decoder_filters`, by
  default the encoder's): a dense projection of z to the encoder's output resolution with
  `filters * 2**(blocks - 1)` channels, then per block (from the widest) a stride-2 transposed
  conv, centre-cropped to the encoder's size at that stage (the `vapnev_tf.sizing` rule,
  docs/design.md §5), and `layers_per_block - 1` 3x3 convs. Each head is a separate linear 3x3
  convolution (Sec. 4.2: "convolutional linear projections").
  `compute_dtype="bfloat16"` runs the projection and deconvs in bfloat16; the heads (mu_y, sigma_y)
  stay in the model's dtype.
  """

  def __init__(self, image_shape, filters: int = 32, blocks: int = 4, layers_per_block: int = 2,
               num_heads: int = 2, compute_dtype: str = "float32", **kwargs):
    super().__init__(**kwargs)
    conv_policy = precision.network_policy(compute_dtype, self.dtype_policy)
    height, width, channels = image_shape
    self.blocks, self.layers_per_block, self.num_heads = blocks, layers_per_block, num_heads
    self.start, self.targets = sizing.upsampling_plan(height, width, blocks)
    self.top_filters = filters * 2 ** (blocks - 1)
    self.project = keras.layers.Dense(self.start[0] * self.start[1] * self.top_filters,
                                      activation="relu", dtype=conv_policy, name="project")
    for i, k in enumerate(reversed(range(blocks))):
      for j in range(layers_per_block):
        layer_cls = keras.layers.Conv2DTranspose if j == 0 else keras.layers.Conv2D
        setattr(self, f"deconv{i}_{j}", layer_cls(
            filters * 2 ** k, 3, strides=2 if j == 0 else 1, padding="same", activation="relu",
            dtype=conv_policy, name=f"deconv{i}_{j}"))
    for head in range(num_heads):
      setattr(self, f"head{head}", keras.layers.Conv2D(channels, 3, padding="same",
                                                       dtype=self.dtype_policy, name=f"head{head}"))

  def call(self, z):
    h = self.project(z)
    h = tf.reshape(h, [-1, self.start[0], self.start[1], self.top_filters])
    for i, (th, tw) in enumerate(self.targets):
      for j in range(self.layers_per_block):
        h = getattr(self, f"deconv{i}_{j}")(h)
        if j == 0:
          h = centre_crop(h, th, tw)
    h = precision.to_model_dtype(self, h)
    return tuple(getattr(self, f"head{head}")(h) for head in range(self.num_heads))
