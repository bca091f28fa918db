"""TensorBoard images of a model in training: samples, and originals beside their reconstructions.

The grids are `vapnev_tf.image_grids.image_grid` (the one grid of the package); this module only
chooses what goes into them and the seeds (`seeds.IMAGES`, folded with the step).
"""
import math

import numpy as np
import tensorflow as tf

from vapnev_tf import data as data_lib
from vapnev_tf import image_grids
from vapnev_tf import seeds
from vapnev_tf.model import to_uint8


def sample_grid(model, n: int, temperature: float, seed) -> np.ndarray:
  """A square grid of n samples (Sec. 3.4) at `temperature`: uint8 `(H', W', C)`."""
  samples = to_uint8(model.sample(n, temperature=temperature, seed=seed)).numpy()
  return image_grids.image_grid(samples, *image_grids.square_grid_shape(n))


def reconstruction_grid(model, x, seed) -> np.ndarray:
  """Pairs (original | reconstruction), one pair per row-slot: x `(B, H, W, C)` floats."""
  if not model.config.has_vae:
    return image_grids.image_grid(to_uint8(x).numpy(), *image_grids.square_grid_shape(x.shape[0]))
  recon = model.reconstruct(x, seed=seed)
  pairs = tf.reshape(tf.stack([to_uint8(x), to_uint8(recon)], axis=1),
                     (-1,) + tuple(model.config.image_shape))  # (2B, H, W, C), interleaved
  columns = 2 * max(1, int(math.ceil(math.sqrt(x.shape[0]))))
  return image_grids.image_grid(pairs.numpy(), int(math.ceil(pairs.shape[0] / columns)), columns)


def first_test_images(data_cfg, n: int) -> np.ndarray:
  """The first n test images, uint8 `(n, H, W, C)`."""
  return np.stack([x.numpy() for x in data_lib.load_images(data_cfg, "test").take(n)])


def write_summaries(model, data_cfg, train_cfg, step: int) -> None:
  """Sample grid and originals|reconstructions grid into the current default summary writer."""
  n = train_cfg.num_image_samples
  seed = tf.cast(tf.random.experimental.stateless_fold_in(
      tf.constant([train_cfg.seed, seeds.IMAGES], tf.int64), step), tf.int32)
  sample_seed, recon_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  tf.summary.image("samples", sample_grid(model, n, train_cfg.sample_temperature,
                                          sample_seed)[None], step=step)
  x = data_lib.dequantize(first_test_images(data_cfg, n), noise_seed)
  tf.summary.image("originals_reconstructions",
                   reconstruction_grid(model, x, recon_seed)[None], step=step)
