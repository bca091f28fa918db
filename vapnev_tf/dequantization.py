"""Dequantisation of 8-bit images: uniform (Real NVP) or variational (Flow++, Ho et al. 2019).

The data pipeline feeds x = x_int + u0 with u0 ~ U[0, 1)^D; the model recovers the integer image
exactly as x_int = floor(x). For any density q(u | x_int) on [0, 1)^D (Jensen):

    log P(x_int) = log int_[0,1)^D p(x_int + u) du
                >= E_{u ~ q(u|x_int)} [ log p(x_int + u) - log q(u | x_int) ]

  * "uniform":      q = U[0, 1)^D, log q = 0 and u = x - floor(x) is the pipeline's own noise, so
                    the model's bounds are exactly the plain continuous ones (`VAPNEV` does not
                    even call this module then).
  * "variational":  q(u | x_int) is a small conditional flow (Flow++ Sec. 3.1):
                        eps ~ N(mu(x_int), sigma(x_int))                       (B, H, W, C)
                        v   = c_1 o c_0 (eps),  c_k affine checkerboard couplings (Eq. 12-16)
                              whose transforms see a conv feature map of x_int
                        u   = EDGE + (1 - 2 EDGE) sigmoid(v)
                    so u lies in [EDGE, 1 - EDGE]^D, strictly inside (0, 1)^D even when the sigmoid
                    saturates, and x_int + u < 256 stays exact in float32 (EDGE = 2^-10). The
                    log-density is exact: log q(u) = log N(eps) - log|det d u / d eps|.

`VariationalDequantizer` is a Keras layer that owns every weight of q(u | x_int); its TFP
distribution is built per call and calls those layers (like `ConditionalRealNVP`).
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf.bijectors.coupling import ConditionalAffineCoupling

tfb = tfp.bijectors
tfd = tfp.distributions

DEQUANTIZATIONS = ("uniform", "variational")
EDGE = 2.0 ** -10  # u in [EDGE, 1 - EDGE]: 255 + (1 - EDGE) = 256 - 2^-10 is exact in float32


def integer_image(x):
  """x_int = floor(x) `(..., H, W, C)`: exact for dequantised pixels in [0, 256)."""
  return tf.floor(x)


def _scaled_pixels(x_int):
  return x_int / 127.5 - 1.0  # 0..255 -> [-1, 1]


class _ContextNet(keras.layers.Layer):
  """x_int `(N, H, W, C)` -> features `(N, H, W, filters)`: two 3x3 ReLU convolutions."""

  def __init__(self, filters: int, **kwargs):
    super().__init__(**kwargs)
    self.conv0 = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                     dtype=self.dtype_policy, name="conv0")
    self.conv1 = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                     dtype=self.dtype_policy, name="conv1")

  def call(self, x_int):
    return self.conv1(self.conv0(_scaled_pixels(x_int)))


class _DequantCouplingNet(keras.layers.Layer):
  """The transform of one coupling of q(u|x_int): `(net_in, context) -> (shift, log_scale)`.

  net_in `(N, H, W, C + 1)` (the checkerboard's kept part and its mask; see
  `ConditionalAffineCoupling`),
  context `(N, H * W * filters)` (the flattened features of x_int, the coupling's conditioning).
  Returns two `(N, H, W, C)` maps; log_scale = b tanh(l / b) (docs/design.md §6). The output conv
  starts at zero, so each coupling starts at the identity.
  """

  def __init__(self, image_shape, filters: int, log_scale_bound: float, **kwargs):
    super().__init__(**kwargs)
    self.image_shape = tuple(image_shape)
    self.filters, self.log_scale_bound = filters, log_scale_bound
    self.hidden = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                      dtype=self.dtype_policy, name="hidden")
    self.out = keras.layers.Conv2D(2 * self.image_shape[-1], 3, padding="same",
                                   kernel_initializer="zeros", dtype=self.dtype_policy,
                                   name="out")

  def call(self, net_in, context):
    height, width, _ = self.image_shape
    features = tf.reshape(context, [-1, height, width, self.filters])
    h = self.hidden(tf.concat([net_in, features], axis=-1))
    shift, raw = tf.split(self.out(h), 2, axis=-1)
    b = self.log_scale_bound
    return shift, b * tf.tanh(raw / b)


class VariationalDequantizer(keras.layers.Layer):
  """q(u | x_int) over [EDGE, 1 - EDGE]^(H, W, C) (module docstring; Flow++ Sec. 3.1).

  Args:
    image_shape: `(H, W, C)`.
    filters: channels of the feature net of x_int and of each coupling's hidden layer.
    num_couplings: affine checkerboard couplings (alternating parity).
    log_scale_bound: b of the couplings' log-scales.
  """

  def __init__(self, image_shape, filters: int = 16, num_couplings: int = 2,
               log_scale_bound: float = 3.0, **kwargs):
    super().__init__(**kwargs)
    self.image_shape = tuple(int(d) for d in image_shape)
    self.filters, self.num_couplings = int(filters), int(num_couplings)
    self.context = _ContextNet(self.filters, dtype=self.dtype_policy, name="context")
    self.base = keras.layers.Conv2D(2 * self.image_shape[-1], 3, padding="same",
                                    kernel_initializer="zeros", dtype=self.dtype_policy,
                                    name="base")
    for k in range(self.num_couplings):
      setattr(self, f"coupling{k}", _DequantCouplingNet(
          self.image_shape, self.filters, log_scale_bound, dtype=self.dtype_policy,
          name=f"coupling{k}"))

  def call(self, x_int):
    """Builds the weights; returns the (B,) log q of one sample (seeded (0, 0))."""
    return self.distribution(x_int).experimental_sample_and_log_prob(seed=(0, 0))[1]

  def bijector(self, features):
    """eps -> u: the couplings conditioned on `features` `(B, H, W, filters)`, then the sigmoid."""
    height, width, _ = self.image_shape
    context = tf.reshape(features, [-1, height * width * self.filters])  # static size for graphs
    steps = [ConditionalAffineCoupling(getattr(self, f"coupling{k}"), "checkerboard", k % 2,
                                       conditioning=context, event_shape=self.image_shape,
                                       name=f"dequant_coupling{k}")
             for k in range(self.num_couplings)]
    dtype = features.dtype
    squash = tfb.Sigmoid(low=tf.constant(EDGE, dtype), high=tf.constant(1.0 - EDGE, dtype),
                         name="to_unit_interval")
    return tfb.Chain([squash] + steps[::-1], name="q_u_bijector")  # Chain applies right to left

  def distribution(self, x_int):
    """q(u | x_int): batch `[B]`, event `(H, W, C)`, for integer-valued x_int `(B, H, W, C)`."""
    features = self.context(x_int)
    loc, raw_scale = tf.split(self.base(_scaled_pixels(x_int)), 2, axis=-1)
    scale = tf.exp(3.0 * tf.tanh(raw_scale / 3.0))  # starts at 1
    base = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=3, name="q_eps")
    return tfd.TransformedDistribution(base, self.bijector(features), name="q_u_given_x")

  def sample_and_log_prob(self, x_int, n=None, seed=None):
    """u ~ q(u | x_int) and log q(u | x_int) (reparametrised, exact log-det of the forward pass).

    x_int `(B, H, W, C)`; returns u `(B, H, W, C)` and `(B,)` (n None) or `(n, B, H, W, C)` and
    `(n, B)`.
    """
    q = self.distribution(x_int)
    if n is None:
      return q.experimental_sample_and_log_prob(seed=seed)
    return q.experimental_sample_and_log_prob(n, seed=seed)

