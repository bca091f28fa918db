"""Small flows and helpers shared by the bijector, flow and model tests."""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import flow_steps
from vapnev_tf.flow import ConditionalRealNVP

LATENT_DIM = 3


def make_flow(image_shape=(4, 4, 1), conditional=True, dtype="float32", num_scales=2,
              num_checkerboard=2, num_channelwise=2, filters=4, seed=0, layout=None):
  keras.utils.set_random_seed(seed)
  flow = ConditionalRealNVP(image_shape, latent_dim=LATENT_DIM, num_scales=num_scales,
                            num_checkerboard=num_checkerboard, num_channelwise=num_channelwise,
                            filters=filters, num_res_blocks=1, conditional=conditional, dtype=dtype,
                            layout=layout)
  perturb_multipliers(flow, seed)
  return flow


def perturb_multipliers(layer, seed=0, stddev=0.3):
  """Moves Eq. 16's zero-initialised multipliers away from 0, so no coupling is the identity."""
  rng = np.random.default_rng(seed)
  for v in layer.trainable_variables:
    if v.path.split("/")[-1].startswith(("alpha_", "beta1_", "beta2_", "b_")):
      v.assign(rng.normal(0.0, stddev, v.shape).astype(str(v.dtype)))


def pixels(shape, dtype="float32", seed=0, low=0.0, high=256.0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.uniform(low, high, shape).astype(dtype) * (1 - 1e-7))


def latents(batch_shape, dtype="float32", seed=1):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.normal(size=tuple(batch_shape) + (LATENT_DIM,)).astype(dtype))


def fresh(t):
  """A new tensor with the same value: bypasses TFP's bijector cache (keyed on tensor identity)."""
  return tf.constant(t.numpy())


def autodiff_log_det(fn, x):
  """log|det d fn(x) / dx| of one event by slogdet of the autodiff Jacobian, float64 numpy."""
  x = tf.convert_to_tensor(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = fn(x)
  d = int(np.prod(x.shape))
  jac = tape.jacobian(y, x).numpy().reshape(d, d).astype(np.float64)
  sign, logdet = np.linalg.slogdet(jac)
  assert sign != 0
  return logdet


# --- A step kind defined outside the library: the one place that registers it ---------------------
# `z_affine`: a per-channel affine step y = x * exp(l(z)) + m(z) whose (m, l) come from a tiny Keras
# layer of z (a learned vector when the flow is unconditional). Tests and training smoke tests call
# `register_z_affine()` and then use the kind in a layout, e.g. "checkerboard z_affine squeeze ...".


class ZAffineParams(keras.layers.Layer):
  """z `(*batch, latent)` -> shift, log-scale `(*batch, 1, 1, C)` each; zero init: the identity."""

  def __init__(self, channels: int, conditional: bool = True, log_scale_bound: float = 3.0,
               **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.conditional = conditional
    self.log_scale_bound = float(log_scale_bound)
    if conditional:
      self.dense = keras.layers.Dense(2 * self.channels, kernel_initializer="zeros",
                                      dtype=self.dtype_policy, name="dense")
    else:
      self.offset = self.add_weight(shape=(2 * self.channels,), initializer="zeros",
                                    name="offset")

  def params(self, z=None):
    out = self.dense(z) if self.conditional else self.offset  # (*batch, 2C) or (2C,)
    shift, log_scale = out[..., :self.channels], out[..., self.channels:]
    log_scale = self.log_scale_bound * tf.tanh(log_scale / self.log_scale_bound)
    return shift[..., None, None, :], log_scale[..., None, None, :]


class ZAffine(tfp.bijectors.Bijector):
  """Forward `x * exp(log_scale) + shift` on `(*batch, H, W, C)` events; log-det sum(log_scale)."""

  def __init__(self, shift, log_scale, name: str = "z_affine"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._shift, self._log_scale = shift, log_scale
      super().__init__(forward_min_event_ndims=3, parameters=parameters, name=name)

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  def _forward(self, x):
    return x * tf.exp(self._log_scale) + self._shift

  def _inverse(self, y):
    return (y - self._shift) * tf.exp(-self._log_scale)

  def _forward_log_det_jacobian(self, x):
    return tf.reduce_sum(tf.broadcast_to(self._log_scale, tf.shape(x)), axis=[-3, -2, -1])

  def _inverse_log_det_jacobian(self, y):
    return -self._forward_log_det_jacobian(y)


Z_AFFINE = flow_steps.StepKind(
    name="z_affine",
    make_layer=lambda ctx: ZAffineParams(ctx.event_shape[-1], ctx.conditional, ctx.log_scale_bound,
                                         dtype=ctx.dtype, name=ctx.name),
    make_bijector=lambda call: ZAffine(*call.layer.params(call.z), name=call.name))


def register_z_affine() -> str:
  """Registers the `z_affine` kind (idempotent) and returns its name."""
  return flow_steps.register_step(Z_AFFINE).name


def perturb_all(layer, seed=0, stddev=0.3):
  """Moves every weight of `layer` by Gaussian noise (e.g. a zero-initialised step)."""
  rng = np.random.default_rng(seed)
  for v in layer.trainable_variables:
    v.assign(v.numpy() + rng.normal(0.0, stddev, v.shape).astype(str(v.dtype)))


def assert_log_prob_depends_on_z_only_when_conditional(flow, p_x):
  """`p_x(flow, z).log_prob(x)` changes with z exactly when `flow.conditional`."""
  x = pixels((1, 4, 4, 1), "float64")
  z1, z2 = latents((1,), "float64", seed=1), latents((1,), "float64", seed=2)
  delta = float((p_x(flow, z1).log_prob(x) - p_x(flow, z2).log_prob(x))[0])
  assert (abs(delta) > 1e-6) == flow.conditional


def assert_every_flow_weight_gets_a_gradient(flow, p_x):
  """Each trainable weight of `flow` gets a non-zero gradient of -log p_x(flow, z)(x)."""
  z, x = latents((2,), "float64"), pixels((2, 4, 4, 1), "float64")
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(p_x(flow, z).log_prob(x))
  grads = tape.gradient(loss, flow.trainable_variables)
  for v, g in zip(flow.trainable_variables, grads):
    assert g is not None and float(tf.norm(g)) > 0, v.path
