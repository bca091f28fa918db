"""Input checks shared by every public entry point: clear ValueErrors naming what was expected."""
import numpy as np
import tensorflow as tf


def check_images(x, image_shape, name: str = "x", dtype=tf.float32):
  """Returns `x` as a float tensor `(B, H, W, C)` of dequantised pixels in [0, 256).

  Raises ValueError for a non-float dtype (8-bit images must be dequantised first), a rank other than
  4, a trailing shape other than `image_shape`, an empty batch, or (when the values are known, i.e.
  eagerly) values outside [0, 256). In a graph, range and non-emptiness are assertion ops.
  """
  if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating) or (
      tf.is_tensor(x) and not x.dtype.is_floating):
    raise ValueError(
        f"{name} must be dequantised float pixels in [0, 256), got dtype {x.dtype}; convert 8-bit "
        "images with vapnev_tf.data.dequantize(images, seed).")
  x = tf.convert_to_tensor(x, dtype=dtype)
  if x.shape.rank != 4 or tuple(x.shape[1:]) != tuple(image_shape):
    raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, image_shape))}), got "
                     f"{tuple(x.shape)}.")
  if x.shape[0] == 0:
    raise ValueError(f"{name} must hold at least one image, got an empty batch {tuple(x.shape)}.")
  if tf.executing_eagerly():
    lo, hi = float(tf.reduce_min(x)), float(tf.reduce_max(x))
    if not (lo >= 0.0 and hi < 256.0):
      raise ValueError(f"{name} must lie in [0, 256) (dequantised pixels), got values in "
                       f"[{lo}, {hi}].")
    return x
  with tf.control_dependencies([
      _assert_not_empty(x, f"{name} must hold at least one image"),
      tf.debugging.assert_greater_equal(x, tf.zeros([], x.dtype),
                                        message=f"{name} must lie in [0, 256)"),
      tf.debugging.assert_less(x, tf.constant(256.0, x.dtype),
                               message=f"{name} must lie in [0, 256)")]):
    return tf.identity(x)


def check_latent(z, latent_dim: int, name: str = "z", dtype=tf.float32):
  """Returns z as a float tensor `(B, latent_dim)` with B >= 1; ValueError otherwise (in a graph,
  an assertion op checks B >= 1)."""
  z = tf.convert_to_tensor(z, dtype=dtype)
  if z.shape.rank != 2 or z.shape[-1] != latent_dim:
    raise ValueError(f"{name} must have shape (batch, {latent_dim}), got {tuple(z.shape)}.")
  if z.shape[0] == 0:
    raise ValueError(f"{name} must hold at least one latent code, got an empty batch "
                     f"{tuple(z.shape)}.")
  if tf.executing_eagerly():
    return z
  with tf.control_dependencies([_assert_not_empty(z, f"{name} must hold at least one code")]):
    return tf.identity(z)


def _assert_not_empty(t, message: str):
  """Graph-time guard: convolutions on an empty batch fail with unrelated shape errors on CPU."""
  return tf.debugging.assert_positive(tf.shape(t)[0], message=message)


def check_positive_int(value, name: str):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return int(value)
