"""`FactorOut`: the multi-scale split of Real NVP [3] (Sec. 4.2).

After each scale but the last, half of the channels are factored out: they are final coordinates
of y, and only the other half goes through the next scale. As a bijector on the whole event this is
"apply `inner` to the leading channels, identity on the rest", so y keeps the event's shape.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf.bijectors import _greedy


class FactorOut(_greedy.GreedyLogDetBijector):
  """Applies `inner` to channels `[:num_channels]` of a `(*batch, H, W, C)` event.

  `inner` must map `(H, W, num_channels)` events to the same shape. Log-det = inner's log-det.
  When `inner` has a batch shape of its own (a conditional flow's z), the output has x's batch
  broadcast against it, as `inner`'s output does; the factored channels are broadcast along.
  """

  def __init__(self, inner, num_channels: int, validate_args: bool = False,
               name: str = "factor_out"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._inner = inner
      self._num_channels = int(num_channels)
      super().__init__(forward_min_event_ndims=3, validate_args=validate_args,
                       parameters=parameters, name=name)

  @property
  def inner(self):
    return self._inner

  @classmethod
  def _parameter_properties(cls, dtype):
    return dict(inner=tfp.util.BatchedComponentProperties(
        event_ndims=lambda self, x_event_ndims: x_event_ndims))

  def _apply(self, x, direction: str):
    k = self._num_channels
    active, factored = x[..., :k], x[..., k:]
    if direction == "forward":
      out = self._inner.forward(active)
      log_det = self._inner.forward_log_det_jacobian(active, event_ndims=3)
    else:
      out = self._inner.inverse(active)
      log_det = self._inner.inverse_log_det_jacobian(active, event_ndims=3)
    if out.shape[:-3] != factored.shape[:-3] or not out.shape[:-3].is_fully_defined():
      factored = tf.broadcast_to(factored, tf.concat([tf.shape(out)[:-3], tf.shape(factored)[-3:]],
                                                     axis=0))
    log_det = tf.broadcast_to(log_det, tf.shape(out)[:-3])
    return tf.concat([out, factored], axis=-1), log_det

  def _augmented_forward(self, x):
    return self._apply(x, "forward")

  def _augmented_inverse(self, y):
    return self._apply(y, "inverse")
