"""Base class for bijectors that compute the output and its log-det in one pass.

TFP calls `forward` and `forward_log_det_jacobian` separately; a plain bijector would run its
coupling networks once for each. Like TFP's own FFJORD, these bijectors use
`BijectorCacheWithGreedyAttrs`: `_augmented_forward(x)` returns `(y, {'fldj', 'ildj'})`, the cache
stores the log-dets beside y, and the log-det methods read them back (TFP internal API, see
docs/internals.md). Every instance is its own cache key: bijectors are built per call and close over
Keras weights that change between calls, so two equal-looking instances must never share results.
"""
import itertools

import tensorflow as tf
from tensorflow_probability.python.bijectors import bijector as bijector_lib
from tensorflow_probability.python.internal import cache_util

_INSTANCE_IDS = itertools.count()


class GreedyLogDetBijector(bijector_lib.Bijector):
  """Subclasses implement `_augmented_forward(x)` and `_augmented_inverse(y)` returning
  `(output, log_det)` where log_det is the forward log-det at x (resp. the inverse log-det at y),
  already summed over the event, shape = batch shape."""

  _cache = cache_util.BijectorCacheWithGreedyAttrs(
      forward_name="_forward_with_attrs", inverse_name="_inverse_with_attrs")

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self._instance_id = next(_INSTANCE_IDS)

  def _get_parameterization(self):
    return self._instance_id

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict()

  def _forward_with_attrs(self, x):
    y, fldj = self._augmented_forward(x)
    return y, {"fldj": fldj, "ildj": -fldj}

  def _inverse_with_attrs(self, y):
    x, ildj = self._augmented_inverse(y)
    return x, {"ildj": ildj, "fldj": -ildj}

  def _forward(self, x):
    return self._augmented_forward(x)[0]

  def _inverse(self, y):
    return self._augmented_inverse(y)[0]

  def _forward_log_det_jacobian(self, x):
    attrs = self._cache.forward_attributes(x)
    if "fldj" not in attrs:  # Reached only when forward(x) was never called on this tensor.
      attrs.update(self._forward_with_attrs(x)[1])
    return attrs["fldj"]

  def _inverse_log_det_jacobian(self, y):
    attrs = self._cache.inverse_attributes(y)
    if "ildj" not in attrs:
      attrs.update(self._inverse_with_attrs(y)[1])
    return attrs["ildj"]


def flatten_batch(x, event_ndims: int = 3):
  """Reshapes `(*batch, *event)` to `(prod(batch), *event)`; returns it and the batch shape."""
  batch_shape = tf.shape(x)[:-event_ndims]
  flat = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-event_ndims:]], axis=0))
  return flat, batch_shape
