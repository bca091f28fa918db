"""Input checks shared by every public entry point: clear ValueErrors naming what was expected."""
import numpy as np
import tensorflow as tf


def check_images(x, image_shape, name: str = "x", dtype=tf.float32):
  """Returns `x` as a float tensor `(B, H, W, C)` of dequantised pixels in [0, 256).

  Raises ValueError for a non-float dtype (8-bit images must be dequantised first), a float tensor
  of another dtype than `dtype`, a rank other than 4, a trailing shape other than `image_shape`, an
  empty batch, or (when the values are known, i.e. eagerly) values outside [0, 256). In a graph,
  range and non-emptiness are assertion ops.
  """
  x = check_pixels(x, image_shape, name, dtype, check_values=False)
  if x.shape.rank != 4:
    raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, image_shape))}), got "
                     f"{tuple(x.shape)}.")
  if x.shape[0] == 0:
    raise ValueError(f"{name} must hold at least one image, got an empty batch {tuple(x.shape)}.")
  x = check_pixel_values(x, name)
  if tf.executing_eagerly():
    return x
  with tf.control_dependencies([_assert_not_empty(x, f"{name} must hold at least one image")]):
    return tf.identity(x)


def check_pixels(x, image_shape, name: str = "x", dtype=tf.float32, check_values: bool = True):
  """Returns `x` as a `dtype` tensor `(*batch, H, W, C)` of dequantised pixels in [0, 256).

  Always (static, free): the dtype (integer images and float tensors of another dtype are refused
  with the fix in the message; float numpy arrays and Python numbers are converted) and the
  trailing shape. With `check_values`: the range [0, 256) (which also refuses NaN), a ValueError
  eagerly and an assertion op in a graph (`check_pixel_values`).
  """
  dtype = tf.as_dtype(dtype)
  is_array = isinstance(x, np.ndarray) or isinstance(x, np.generic)
  if (is_array and not np.issubdtype(x.dtype, np.floating)) or (
      tf.is_tensor(x) and not x.dtype.is_floating):
    got = tf.as_dtype(x.dtype).name
    raise ValueError(
        f"{name} must be dequantised {dtype.name} pixels in [0, 256), got dtype {got}; convert "
        "8-bit images with vapnev_tf.data.dequantize(images, seed).")
  if tf.is_tensor(x) and x.dtype != dtype:
    raise ValueError(
        f"{name} must have this model's dtype {dtype.name}, got a {x.dtype.name} tensor; cast it "
        f"with tf.cast({name}, tf.{dtype.name}) (vapnev_tf.data.dequantize(images, seed) gives "
        "float32 pixels from 8-bit images).")
  x = tf.convert_to_tensor(x, dtype=dtype)
  rank = x.shape.rank
  if rank is None or rank < 3 or tuple(x.shape[-3:]) != tuple(image_shape):
    raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, image_shape))}), got "
                     f"{tuple(x.shape) if rank is not None else 'an unknown shape'}.")
  return check_pixel_values(x, name) if check_values else x


def check_pixel_values(x, name: str = "x"):
  """`x` after checking that every value lies in [0, 256) (NaN fails): ValueError eagerly, an
  assertion op (tf.errors.InvalidArgumentError naming `name`) in a graph."""
  if tf.executing_eagerly():
    if tf.size(x) == 0:
      return x
    lo, hi = float(tf.reduce_min(x)), float(tf.reduce_max(x))
    finite = bool(tf.reduce_all(tf.math.is_finite(x)))
    if not (finite and lo >= 0.0 and hi < 256.0):
      raise ValueError(f"{name} must lie in [0, 256) (dequantised pixels), got values in "
                       f"[{lo}, {hi}]{'' if finite else ' and NaN/inf'}.")
    return x
  in_range = tf.logical_and(x >= tf.zeros([], x.dtype), x < tf.constant(256.0, x.dtype))
  with tf.control_dependencies([tf.debugging.Assert(
      tf.reduce_all(in_range), [f"{name} must lie in [0, 256) (dequantised pixels)"])]):
    return tf.identity(x)


def check_temperature(temperature, name: str = "temperature"):
  """A finite temperature >= 0: a Python/numpy number is checked now (ValueError) and returned as
  a float; a tensor is checked now when eager, else by assertion ops in the graph."""
  if tf.is_tensor(temperature):
    if not temperature.dtype.is_floating:
      raise ValueError(f"{name} must be a float >= 0, got a {temperature.dtype.name} tensor.")
    if hasattr(temperature, "numpy"):  # eager: the value is known
      _check_temperature_value(temperature.numpy(), name)
      return temperature
    message = f"{name} must be a finite number >= 0"
    ok = tf.reduce_all(tf.logical_and(tf.math.is_finite(temperature),
                                      temperature >= tf.zeros([], temperature.dtype)))
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, temperature])]):
      return tf.identity(temperature)
  return _check_temperature_value(temperature, name)


def _check_temperature_value(value, name):
  is_number = isinstance(value, (int, float, np.integer, np.floating)) or (
      isinstance(value, np.ndarray) and value.shape == () and np.issubdtype(value.dtype, np.number))
  if isinstance(value, bool) or not is_number or not (np.isfinite(value) and value >= 0):
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
  return float(value)


def check_latent(z, latent_dim: int, name: str = "z", dtype=tf.float32,
                 batch_ranks: bool = False, check_values: bool = True):
  """Returns z as a float tensor `(B, latent_dim)` with B >= 1; ValueError otherwise (in a graph,
  an assertion op checks B >= 1). With `batch_ranks`, `(*batch, latent_dim)` with at least one
  batch dimension is accepted, every batch dimension >= 1. A tensor of another dtype than `dtype`
  is refused (cast it first), not converted. With `check_values`, every value must be finite
  (NaN/inf would pass the decoder's saturating heads as an ordinary-looking image): a ValueError
  eagerly, an assertion op (tf.errors.InvalidArgumentError naming `name`) in a graph. Internal
  callers whose z comes from the model itself pass False, so a non-finite training step stays a
  skipped step rather than an error."""
  dtype = tf.as_dtype(dtype)
  if tf.is_tensor(z) and z.dtype != dtype:
    raise ValueError(f"{name} must have this model's dtype {dtype.name}, got a {z.dtype.name} "
                     f"tensor; cast it with tf.cast({name}, tf.{dtype.name}).")
  z = tf.convert_to_tensor(z, dtype=dtype)
  rank = z.shape.rank
  if rank is None or z.shape[-1] != latent_dim or (rank < 2 if batch_ranks else rank != 2):
    more = f", or (*batch, {latent_dim})" if batch_ranks else ""
    raise ValueError(f"{name} must have shape (batch, {latent_dim}){more}, got "
                     f"{tuple(z.shape) if rank is not None else 'an unknown shape'}.")
  if 0 in z.shape[:-1]:
    raise ValueError(f"{name} must hold at least one latent code, got an empty batch "
                     f"{tuple(z.shape)}.")
  if tf.executing_eagerly():
    if check_values and not bool(tf.reduce_all(tf.math.is_finite(z))):
      bad = int(tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(z)), tf.int32)))
      raise ValueError(f"{name} must be finite, got {bad} NaN/inf value(s) in a tensor of shape "
                       f"{tuple(z.shape)}.")
    return z
  checks = [tf.debugging.assert_positive(
      tf.reduce_prod(tf.shape(z)[:-1]), message=f"{name} must hold at least one code")]
  if check_values:
    checks.append(tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(z)),
                                      [f"{name} must be finite (got NaN/inf)"]))
  with tf.control_dependencies(checks):
    return tf.identity(z)


def _assert_not_empty(t, message: str):
  """Graph-time guard: convolutions on an empty batch fail with unrelated shape errors on CPU."""
  return tf.debugging.assert_positive(tf.shape(t)[0], message=message)


# Counts become int32 tensor dimensions (TF's shape arithmetic, TFP's sample shapes): a larger
# Python int would wrap around (2**32 + 2 samples would silently be 2).
INT32_MAX = 2 ** 31 - 1


def max_count(values_per_item: int) -> int:
  """The largest count n of items of `values_per_item` values each whose n * values_per_item
  still fits int32 (the sampler's flat shape arithmetic wraps around beyond it)."""
  return INT32_MAX // max(1, int(values_per_item))


def check_int(name: str, value, minimum: int) -> int:
  """`value` (a Python or numpy int, not a bool) as an int >= `minimum`; ValueError naming `name`
  (e.g. "DataConfig.seed") otherwise."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
  return int(value)


def check_positive_int(value, name: str, hi: int = INT32_MAX, why: str = ""):
  """`value` as an int in [1, hi]; ValueError naming `name` otherwise (`why` explains `hi`)."""
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
      or value > hi):
    raise ValueError(f"{name} must be a positive int <= {hi}{why}, got {value!r}.")
  return int(value)


def check_count(value, name: str, hi: int = INT32_MAX, why: str = ""):
  """A count in [1, hi]: a Python/numpy int is checked now (`check_positive_int`, returned as an
  int); an integer scalar tensor now when eager, else by an assertion op naming `name` in the
  graph (returned as int32, after the check, so it never wraps around)."""
  if not tf.is_tensor(value):
    return check_positive_int(value, name, hi, why)
  if not value.dtype.is_integer or value.shape.rank not in (None, 0):
    raise ValueError(f"{name} must be a positive int or an integer scalar tensor, got a "
                     f"{value.dtype.name} tensor of shape {tuple(value.shape)}.")
  if hasattr(value, "numpy"):  # eager: the value is known
    check_positive_int(int(value.numpy()), name, hi, why)
    return tf.cast(value, tf.int32)
  wide = tf.cast(value, tf.int64)
  ok = tf.logical_and(wide >= 1, wide <= hi)
  with tf.control_dependencies([tf.debugging.Assert(
      ok, [f"{name} must be a positive int <= {hi}{why}, got", value])]):
    return tf.cast(tf.identity(value), tf.int32)
