"""Bits per dimension: the one conversion from nats to the literature's unit."""
import math

import numpy as np
import tensorflow as tf


def bits_per_dim(log_likelihood_nats, image_shape):
  """Returns `-log_likelihood / (D ln 2)`, D = prod(image_shape).

  `log_likelihood_nats` is log p(x) of dequantised pixels x in [0, 256)^D (or a lower bound on it,
  e.g. the ELBO of Eq. 1), as returned by the model; every pre-processing log-det is already in it,
  so no offset is added here (docs/design.md §1).

  Args:
    log_likelihood_nats: float tensor or array of any shape, one value per image.
    image_shape: `(H, W, C)`.
  """
  num_dims = int(np.prod(image_shape))
  if num_dims <= 0:
    raise ValueError(f"image_shape must have positive entries, got {tuple(image_shape)}.")
  if tf.is_tensor(log_likelihood_nats):
    return -log_likelihood_nats / tf.cast(num_dims * math.log(2.0), log_likelihood_nats.dtype)
  return -np.asarray(log_likelihood_nats) / (num_dims * math.log(2.0))
