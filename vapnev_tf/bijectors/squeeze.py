"""`Squeeze`: Real NVP's squeeze, (H, W, C) -> (H/2, W/2, 4C) by space-to-depth.

A permutation of the coordinates, so its log-det is 0.
"""
import tensorflow as tf

from vapnev_tf.bijectors import _greedy


class Squeeze(_greedy.GreedyLogDetBijector):
  """Forward: `(*batch, H, W, C)` -> `(*batch, H/2, W/2, 4C)`; inverse undoes it exactly.

  H and W must be even; anything else raises `ValueError` naming the shape.
  """

  def __init__(self, validate_args: bool = False, name: str = "squeeze"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                       validate_args=validate_args, parameters=parameters, name=name)

  def _augmented_forward(self, x):
    height, width = x.shape[-3], x.shape[-2]
    if height % 2 or width % 2:
      raise ValueError(f"{self.name}: squeeze needs even height and width, got an event of shape "
                       f"{x.shape[-3:]}.")
    flat, batch_shape = _greedy.flatten_batch(x)
    y = tf.nn.space_to_depth(flat, 2)
    y = tf.reshape(y, tf.concat([batch_shape, tf.shape(y)[1:]], axis=0))
    return y, tf.zeros(batch_shape, dtype=x.dtype)

  def _augmented_inverse(self, y):
    if y.shape[-1] % 4:
      raise ValueError(f"{self.name}: unsqueeze needs a channel count divisible by 4, got an "
                       f"event of shape {y.shape[-3:]}.")
    flat, batch_shape = _greedy.flatten_batch(y)
    x = tf.nn.depth_to_space(flat, 2)
    x = tf.reshape(x, tf.concat([batch_shape, tf.shape(x)[1:]], axis=0))
    return x, tf.zeros(batch_shape, dtype=y.dtype)

  def _forward_event_shape(self, input_shape):
    h, w, c = input_shape[-3:]
    return input_shape[:-3].concatenate([h // 2 if h else h, w // 2 if w else w, c * 4 if c else c])

  def _inverse_event_shape(self, output_shape):
    h, w, c = output_shape[-3:]
    return output_shape[:-3].concatenate([h * 2 if h else h, w * 2 if w else w, c // 4 if c else c])

  def _forward_event_shape_tensor(self, input_shape):
    return tf.concat([input_shape[:-3], input_shape[-3:-1] // 2, input_shape[-1:] * 4], axis=0)

  def _inverse_event_shape_tensor(self, output_shape):
    return tf.concat([output_shape[:-3], output_shape[-3:-1] * 2, output_shape[-1:] // 4], axis=0)
