"""Image grids: uint8 images tiled with white separators (the one grid of the package).

Used by the figures (`vapnev_tf.figures`) and by the TensorBoard images of a run in training
(`vapnev_tf.training.images`); pure numpy, so it sits below both.
"""
import math

import numpy as np
import tensorflow as tf

from vapnev_tf import validation

PAD_VALUE = 255  # white separators


def image_grid(images, rows: int, cols: int, pad: int = 1) -> np.ndarray:
  """Tiles uint8 images `(N, H, W, C)` row-major into `rows` x `cols`, N <= rows * cols.

  Cells are separated and surrounded by `pad` white pixels; missing cells stay white.

  Returns:
    uint8 `(rows * (H + pad) + pad, cols * (W + pad) + pad, C)`.
  """
  images = as_uint8_images(images, "images")
  for name, value in (("rows", rows), ("cols", cols)):
    validation.check_int(name, value, 1)
  validation.check_int("pad", pad, 0)
  n, height, width, channels = images.shape
  if n > rows * cols:
    raise ValueError(f"{n} images do not fit a {rows}x{cols} grid (rows * cols = {rows * cols}).")
  grid = np.full((rows * (height + pad) + pad, cols * (width + pad) + pad, channels), PAD_VALUE,
                 np.uint8)
  for i, image in enumerate(images):
    top = pad + (i // cols) * (height + pad)
    left = pad + (i % cols) * (width + pad)
    grid[top:top + height, left:left + width] = image
  return grid


def square_grid_shape(n: int):
  """(rows, cols) of the most square grid holding n images, cols = ceil(sqrt(n))."""
  validation.check_int("n", n, 1)
  cols = math.ceil(math.sqrt(n))
  return math.ceil(n / cols), cols


def side_by_side(grids, gap: int) -> np.ndarray:
  """Concatenates uint8 `(H_i, W_i, C)` arrays left to right with `gap` white columns between."""
  validation.check_int("gap", gap, 0)
  height = max(g.shape[0] for g in grids)
  channels = grids[0].shape[2]
  parts = []
  for i, g in enumerate(grids):
    if g.shape[2] != channels:
      raise ValueError(f"grids must share their channel count, got {g.shape[2]} and {channels}.")
    column = np.full((height, g.shape[1], channels), PAD_VALUE, np.uint8)
    column[:g.shape[0]] = g
    parts.append(column)
    if i + 1 < len(grids):
      parts.append(np.full((height, gap, channels), PAD_VALUE, np.uint8))
  return np.concatenate(parts, axis=1)


def as_uint8_images(images, name, image_shape=None) -> np.ndarray:
  """`images` as a uint8 numpy `(N, H, W, C)`, N >= 1 (and `(H, W, C)` = `image_shape` when
  given); ValueError naming `name` otherwise."""
  images = images.numpy() if tf.is_tensor(images) else np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"{name} must be uint8 pixels, got dtype {images.dtype}.")
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f"{name} must have shape (N, H, W, C) with N >= 1, got {images.shape}.")
  if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
    raise ValueError(f"{name} must have shape (N, {', '.join(map(str, image_shape))}) for this "
                     f"model, got {images.shape}.")
  return images
