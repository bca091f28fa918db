"""Small flows and helpers shared by the bijector, flow and model tests."""
import keras
import numpy as np
import tensorflow as tf

from vapnev_tf.flow import ConditionalRealNVP

LATENT_DIM = 3


def make_flow(image_shape=(4, 4, 1), conditional=True, dtype="float32", num_scales=2,
              num_checkerboard=2, num_channelwise=2, filters=4, seed=0):
  keras.utils.set_random_seed(seed)
  flow = ConditionalRealNVP(image_shape, latent_dim=LATENT_DIM, num_scales=num_scales,
                            num_checkerboard=num_checkerboard, num_channelwise=num_channelwise,
                            filters=filters, num_res_blocks=1, conditional=conditional, dtype=dtype)
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
