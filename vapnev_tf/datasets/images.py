"""Image files -> uint8 tensors, and a check that every file decodes before training starts.

The check runs the very decoder the input pipeline uses (`decode_file`), so a file that passes it
cannot fail later inside `tf.data`, where TensorFlow's error would name no file.
"""
import functools

import numpy as np
import tensorflow as tf


def decode_file(path, channels: int) -> tf.Tensor:
  """The uint8 (H, W, `channels`) pixels of the PNG/JPEG file at `path` (a scalar string tensor)."""
  return tf.io.decode_image(tf.io.read_file(path), channels=channels, dtype=tf.uint8,
                            expand_animations=False)


def check_decodable(source: str, files, channels: int, shape=None, fix: str = "") -> None:
  """Decodes every file once; ValueError naming the first file that fails or has another shape.

  Args:
    source: the dataset's name, which starts every message.
    files: paths of image files.
    channels: channels to decode to (1 or 3).
    shape: the (H, W, C) every image must have, or None for any.
    fix: a sentence appended to the message (how to repair the data).

  The pass runs in parallel through `tf.data` and is cached per process (same files, channels and
  shape), so the several datasets built from one source in a run pay for it once.
  """
  _check_cached(source, tuple(files), channels, None if shape is None else tuple(shape), fix)


@functools.lru_cache(maxsize=16)
def _check_cached(source, files, channels, shape, fix):
  bad, shapes = _decode_all(files, channels)
  if bad:
    path = files[bad[0]]
    try:
      decode_file(tf.constant(path), channels)
      reason = "it failed to decode in the batch check"
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnknownError) as err:
      reason = err.message.split("[Op:")[0].strip().split("}}")[-1].strip()
    others = f" (and {len(bad) - 1} other file(s))" if len(bad) > 1 else ""
    raise ValueError(f"{source}: image file {path!r}{others} does not decode: {reason}. The file "
                     f"is damaged or truncated. {fix}".rstrip())
  if shape is not None:
    wrong = np.flatnonzero(np.any(shapes != np.array(shape), axis=1))
    if wrong.size:
      found = tuple(int(d) for d in shapes[wrong[0]])
      raise ValueError(f"{source}: image file {files[wrong[0]]!r} is {found[0]}x{found[1]}x"
                       f"{found[2]} (HxWxC), expected {shape[0]}x{shape[1]}x{shape[2]}. {fix}"
                       .rstrip())


def _decode_all(files, channels):
  """(sorted indices of the files that fail to decode, int (N, 3) shapes of the others)."""
  n = len(files)
  ds = tf.data.Dataset.from_tensor_slices(list(files)).enumerate()
  ds = ds.map(lambda i, path: (i, tf.shape(decode_file(path, channels))),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.ignore_errors().batch(4096)
  decoded = np.zeros(n, bool)
  shapes = np.zeros((n, 3), np.int64)
  for indices, sizes in ds.as_numpy_iterator():
    decoded[indices] = True
    shapes[indices] = sizes
  return [int(i) for i in np.flatnonzero(~decoded)], shapes
