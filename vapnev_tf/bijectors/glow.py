"""Glow's per-channel linear steps as TFP bijectors (Kingma & Dhariwal 2018).

Both act on `(*batch, H, W, C)` events, mix only channels (the same map at every pixel), and have a
log-det that does not depend on the input, so it is exact and cheap:

    ActNorm             y = (x + b) * exp(l)       log|det J| = H W sum_c l_c
    InvertibleConv1x1   y_hw = W x_hw (1x1 conv)   log|det J| = H W log|det W|

Like `ConditionalAffineCoupling`, each bijector is a stateless view built per call; a callable
supplies its parameters from the Keras layer that owns them (`vapnev_tf.flow_steps.glow`), and is
called once per forward or inverse pass (greedy cache, `_greedy`).
"""
import tensorflow as tf

from vapnev_tf.bijectors import _greedy


def _constant_log_det(x, per_pixel):
  """`(*batch,)` filled with H * W * per_pixel for `x` of shape `(*batch, H, W, C)`."""
  shape = tf.shape(x)
  pixels = tf.cast(shape[-3] * shape[-2], x.dtype)
  return tf.fill(shape[:-3], pixels * tf.cast(per_pixel, x.dtype))


class ActNorm(_greedy.GreedyLogDetBijector):
  """Activation normalisation: per-channel affine map `y = (x + b) * exp(l)`.

  Args:
    params_fn: callable `x_or_None -> (bias, log_scale)`, each `(C,)`. The forward pass hands it
      its input x `(*batch, H, W, C)` (so the owning layer may initialise from data, see
      `flow_steps.glow.data_dependent_init`), the inverse pass hands it None.
    validate_args: TFP's flag (nothing to validate: the parameters are valid by construction).
    name: the bijector's name.
  Forward log-det: `H W sum(log_scale)` per event, shape `(*batch,)`.
  """

  def __init__(self, params_fn, validate_args: bool = False, name: str = "actnorm"):
    parameters = dict(locals())
    if not callable(params_fn):
      raise ValueError(f"params_fn must be callable x -> (bias, log_scale), got {params_fn!r}.")
    with tf.name_scope(name) as name:
      self._params_fn = params_fn
      super().__init__(forward_min_event_ndims=3, validate_args=validate_args,
                       parameters=parameters, name=name)

  def _augmented_forward(self, x):
    bias, log_scale = self._params_fn(x)
    return (x + bias) * tf.exp(log_scale), _constant_log_det(x, tf.reduce_sum(log_scale))

  def _augmented_inverse(self, y):
    bias, log_scale = self._params_fn(None)
    return y * tf.exp(-log_scale) - bias, -_constant_log_det(y, tf.reduce_sum(log_scale))


class InvertibleConv1x1(_greedy.GreedyLogDetBijector):
  """Invertible 1x1 convolution: `y[..., h, w, :] = W x[..., h, w, :]` with W `(C, C)` invertible.

  Args:
    matrices_fn: callable `() -> (w, w_inverse, log_abs_det_w)`: W `(C, C)`, its inverse and
      log|det W| (a scalar), e.g. `InvConvLayer.matrices` (LU parametrisation).
    validate_args: TFP's flag (nothing to validate: W is invertible by construction).
    name: the bijector's name.
  Forward log-det: `H W log|det W|` per event, shape `(*batch,)`.
  """

  def __init__(self, matrices_fn, validate_args: bool = False, name: str = "invconv"):
    parameters = dict(locals())
    if not callable(matrices_fn):
      raise ValueError(f"matrices_fn must be callable () -> (w, w_inverse, log_abs_det_w), got "
                       f"{matrices_fn!r}.")
    with tf.name_scope(name) as name:
      self._matrices_fn = matrices_fn
      super().__init__(forward_min_event_ndims=3, validate_args=validate_args,
                       parameters=parameters, name=name)

  def _augmented_forward(self, x):
    w, _, log_abs_det = self._matrices_fn()
    y = tf.tensordot(x, tf.cast(w, x.dtype), axes=[[-1], [1]])
    return y, _constant_log_det(x, log_abs_det)

  def _augmented_inverse(self, y):
    _, w_inverse, log_abs_det = self._matrices_fn()
    x = tf.tensordot(y, tf.cast(w_inverse, y.dtype), axes=[[-1], [1]])
    return x, -_constant_log_det(y, log_abs_det)
