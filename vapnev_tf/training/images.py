"""Image grids for TensorBoard: samples, and originals beside their reconstructions."""
import math

import numpy as np
import tensorflow as tf

from vapnev_tf.model import to_uint8


def image_grid(images, columns: int | None = None, pad: int = 1) -> np.ndarray:
  """uint8 `(N, H, W, C)` -> one uint8 image `(rows*(H+pad)+pad, cols*(W+pad)+pad, C)`."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = images[i]
  return grid


def sample_grid(model, n: int, temperature: float, seed) -> np.ndarray:
  """A grid of n samples (Sec. 3.4) at `temperature`."""
  return image_grid(to_uint8(model.sample(n, temperature=temperature, seed=seed)).numpy())


def reconstruction_grid(model, x, seed) -> np.ndarray:
  """Pairs (original | reconstruction), one pair per row-slot: x `(B, H, W, C)` floats."""
  if not model.config.has_vae:
    return image_grid(to_uint8(x).numpy())
  recon = model.reconstruct(x, seed=seed)
  pairs = tf.reshape(tf.stack([to_uint8(x), to_uint8(recon)], axis=1),
                     (-1,) + tuple(model.config.image_shape))  # (2B, H, W, C), interleaved
  return image_grid(pairs.numpy(), columns=2 * max(1, int(math.ceil(math.sqrt(x.shape[0])))))
