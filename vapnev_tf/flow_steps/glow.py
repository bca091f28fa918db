"""Glow's steps (Kingma & Dhariwal 2018) as registered flow step kinds, and the Glow recipe.

    actnorm   per-channel affine map y = (x + b) * exp(l), log-det H W sum(l); layer: ActNormLayer,
              the identity until `data_dependent_init` sets b, l from the first training batch
    invconv   invertible 1x1 convolution, W = P L (U + diag(exp(log|s|))), log-det H W sum(log|s|);
              layer: InvConvLayer, starting at a random rotation

Each scale of the Glow recipe (`glow_layout`) is `squeeze (actnorm invconv channel)*K [factor_out]`:
the existing conditional `channel` coupling (Eq. 12-16 on channel halves) plays Glow's affine
coupling, so every step after the two linear ones still depends on z. The squeeze is undone at the
end of each scale, so y keeps the image's shape (docs/design.md §3).

Data-dependent initialisation (who calls what): the TRAINING LOOP of a NEW run calls
`data_dependent_init(flow, x, z, strategy)` once, on its first global batch, before the first
optimizer step. It is a no-op for layers already initialised (restored checkpoints keep their
values), and a model that is never initialised keeps ActNorm at the identity.
"""
import keras
import numpy as np
import tensorflow as tf

from vapnev_tf.bijectors import glow as glow_bijectors
from vapnev_tf.flow_steps.layout import StepSpec
from vapnev_tf.flow_steps.layout import validate_layout
from vapnev_tf.flow_steps.registry import StepKind
from vapnev_tf.flow_steps.registry import register_step

# Written in replica context by the data-dependent init: every replica writes the same all-reduced
# value, so the first replica's is kept.
_AGGREGATION = "only_first_replica"


class ActNormLayer(keras.layers.Layer):
  """Owns ActNorm's per-channel `bias` and `log_scale` `(C,)` (trainable, zero: the identity) and
  the non-trainable, checkpointed flag `initialized` (a bool variable).

  Args:
    channels: C, the events' channel count.
    epsilon: added to the variance in the data-dependent init.
  """

  def __init__(self, channels: int, epsilon: float = 1e-6, **kwargs):
    super().__init__(**kwargs)
    if int(channels) < 1:
      raise ValueError(f"channels must be >= 1, got {channels}.")
    self.channels = int(channels)
    self.epsilon = float(epsilon)
    self.bias = self.add_weight(shape=(self.channels,), initializer="zeros", name="bias",
                                aggregation=_AGGREGATION)
    self.log_scale = self.add_weight(shape=(self.channels,), initializer="zeros",
                                     name="log_scale", aggregation=_AGGREGATION)
    self.initialized = self.add_weight(shape=(), dtype="bool", initializer="zeros",
                                       trainable=False, name="initialized",
                                       aggregation=_AGGREGATION)
    self.init_pending = False  # Set only by `data_dependent_init`, for one forward pass.

  def params(self, x=None):
    """`(bias, log_scale)`, each `(C,)` in x's dtype (the compute dtype when x is None).

    When `init_pending` is set and x `(*batch, H, W, C)` is given, first initialises from x
    (`initialize_from`)."""
    if x is not None and self.init_pending:
      self.initialize_from(x)
    dtype = self.compute_dtype if x is None else x.dtype
    return tf.cast(self.bias, dtype), tf.cast(self.log_scale, dtype)

  def initialize_from(self, x):
    """Sets bias and log_scale so ActNorm maps x to zero mean, unit variance per channel, unless
    `initialized` is already True; then sets `initialized`.

    x: `(*batch, H, W, C)`. Statistics are over every axis but the channel one and over the GLOBAL
    batch: inside `strategy.run` the per-replica sums are all-reduced with the replica context.
    """
    x = tf.convert_to_tensor(x)
    axes = list(range(x.shape.rank - 1))
    context = tf.distribute.get_replica_context()
    distributed = context is not None and context.num_replicas_in_sync > 1
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
    total = tf.reduce_sum(x, axis=axes)
    if distributed:
      count, total = context.all_reduce(tf.distribute.ReduceOp.SUM, [count, total])
    mean = total / count
    squares = tf.reduce_sum(tf.square(x - mean), axis=axes)
    if distributed:
      squares = context.all_reduce(tf.distribute.ReduceOp.SUM, squares)
    variance = squares / count
    done = tf.convert_to_tensor(self.initialized)
    new_bias = tf.cast(-mean, self.bias.dtype)
    new_log_scale = tf.cast(-0.5 * tf.math.log(variance + self.epsilon), self.log_scale.dtype)
    self.bias.assign(tf.where(done, tf.convert_to_tensor(self.bias), new_bias))
    self.log_scale.assign(tf.where(done, tf.convert_to_tensor(self.log_scale), new_log_scale))
    self.initialized.assign(True)


def _lu_with_pivoting(a):
  """`a` (n, n) float64 -> (perm, lower, upper) with `a[perm] == lower @ upper`, lower unit
  lower-triangular (partial pivoting)."""
  n = a.shape[0]
  upper, lower, perm = a.copy(), np.eye(n), np.arange(n)
  for k in range(n):
    p = k + int(np.argmax(np.abs(upper[k:, k])))
    upper[[k, p]], perm[[k, p]] = upper[[p, k]], perm[[p, k]]
    lower[[k, p], :k] = lower[[p, k], :k]
    for i in range(k + 1, n):
      lower[i, k] = upper[i, k] / upper[k, k]
      upper[i, k:] -= lower[i, k] * upper[k, k:]
  return perm, lower, np.triu(upper)


def random_rotation_lu(channels: int, seed=None):
  """LU parameters of a random rotation Q (QR of a normal matrix drawn with `keras.random`, so
  `keras.utils.set_random_seed` makes it reproducible; `seed` fixes it).

  Returns `(permutation, lower, upper, log_abs_s)` float64 numpy with
  `W0 = (P L (triu(upper, 1) + diag(exp(log_abs_s))))` orthogonal, `P[i, permutation[i]] = 1`,
  `L = tril(lower, -1) + I`. The columns of Q are sign-flipped so that every s is positive.
  """
  normal = np.asarray(keras.random.normal((channels, channels), dtype="float64", seed=seed))
  q, _ = np.linalg.qr(normal)
  perm, lower, upper = _lu_with_pivoting(q)  # q[perm] = lower @ upper
  signs = np.sign(np.diag(upper))
  upper = upper * signs[None, :]  # q @ diag(signs) is still a rotation, with positive s.
  permutation = np.argsort(perm)  # W[i] = (L U)[permutation[i]]
  return permutation, np.tril(lower, -1), np.triu(upper, 1), np.log(np.abs(np.diag(upper)))


class InvConvLayer(keras.layers.Layer):
  """Owns the LU parametrisation of an invertible `(C, C)` matrix
  `W = P L (U + diag(exp(log_abs_s)))` (Glow's Sec. 3.2 with sign(s) = +1 fixed).

  Trainable: `lower` and `upper` `(C, C)` (only their strict lower / upper triangles are used),
  `log_abs_s` `(C,)`. Non-trainable, checkpointed: `permutation` `(C,)` int32, the fixed P
  (`P[i, permutation[i]] = 1`). Starts at a random rotation (`random_rotation_lu`).

  Args:
    channels: C.
    seed: optional seed of the initial rotation (default: Keras' global seed).
  """

  def __init__(self, channels: int, seed=None, **kwargs):
    super().__init__(**kwargs)
    if int(channels) < 1:
      raise ValueError(f"channels must be >= 1, got {channels}.")
    self.channels = int(channels)
    permutation, lower, upper, log_abs_s = random_rotation_lu(self.channels, seed)
    init = lambda value: (lambda shape, dtype=None: tf.constant(value, dtype=dtype))
    c = self.channels
    self.lower = self.add_weight(shape=(c, c), initializer=init(lower), name="lower")
    self.upper = self.add_weight(shape=(c, c), initializer=init(upper), name="upper")
    self.log_abs_s = self.add_weight(shape=(c,), initializer=init(log_abs_s), name="log_abs_s")
    self.permutation = self.add_weight(shape=(c,), dtype="int32", initializer=init(permutation),
                                       trainable=False, name="permutation")

  def matrices(self):
    """`(w, w_inverse, log_abs_det_w)`: `(C, C)`, `(C, C)`, scalar, in the compute dtype.

    Computed in float64 from the LU factors (the inverse by two triangular solves), then cast.
    """
    c, f64 = self.channels, tf.float64
    eye = tf.eye(c, dtype=f64)
    lower = tf.linalg.band_part(tf.cast(self.lower, f64), -1, 0) * (1 - eye) + eye
    log_abs_s = tf.cast(self.log_abs_s, f64)
    upper = tf.linalg.band_part(tf.cast(self.upper, f64), 0, -1) * (1 - eye) + \
        tf.linalg.diag(tf.exp(log_abs_s))
    permutation = tf.convert_to_tensor(self.permutation)
    w = tf.gather(lower @ upper, permutation)
    lower_inv = tf.linalg.triangular_solve(lower, eye, lower=True)
    upper_inv = tf.linalg.triangular_solve(upper, eye, lower=False)
    w_inverse = tf.gather(upper_inv @ lower_inv, permutation, axis=1)
    dtype = self.compute_dtype
    return tf.cast(w, dtype), tf.cast(w_inverse, dtype), tf.cast(tf.reduce_sum(log_abs_s), dtype)


def actnorm_layers(flow):
  """The flow's `ActNormLayer`s, in the order f_z applies them."""
  if not hasattr(flow, "step_layers"):
    raise ValueError(f"flow must be a ConditionalRealNVP (with step_layers()), got "
                     f"{type(flow).__name__}.")
  return [layer for layer in flow.step_layers() if isinstance(layer, ActNormLayer)]


def data_dependent_init(flow, x, z=None, strategy=None):
  """Initialises every not-yet-initialised ActNorm of `flow` from one batch (Glow's data-dependent
  init): each gets zero mean, unit variance per channel on ITS input, i.e. x after the preceding
  steps (themselves already initialised, in order).

  Who calls it: the training loop, once, on the first global batch of a NEW run, before the first
  optimizer step (a resumed run may call it too: initialised layers are left as they are).
  Without it ActNorm stays the identity. Call it eagerly (not inside a `tf.function`).

  Args:
    flow: a `ConditionalRealNVP`.
    x: dequantised pixels `(B, H, W, C)` in [0, 256); with `strategy`, a distributed value (e.g.
      the first element of `strategy.experimental_distribute_dataset(...)`).
    z: `(B, latent_dim)`, None when unconditional, or a callable `x -> z` run where the flow
      runs (inside `strategy.run` with `strategy`), e.g. `model.encode_center`;
      a tensor z is distributed like x with `strategy`.
    strategy: None to run here (e.g. in cross-replica or default context), or a
      `tf.distribute.Strategy`: then this runs `strategy.run` and the statistics are all-reduced
      over the replicas, so they are those of the global batch.
  Returns:
    The names of the layers this call initialised (those whose `initialized` was False).
  """
  layers = actnorm_layers(flow)
  pending = [layer for layer in layers if not bool(layer.initialized.numpy())]
  if not pending:
    return ()
  forward = lambda x, z: flow.bijector(z(x) if callable(z) else z).forward(x)
  for layer in pending:
    layer.init_pending = True
  try:
    if strategy is None:
      forward(x, z)
    else:
      strategy.run(forward, args=(x, z))
  finally:
    for layer in pending:
      layer.init_pending = False
  return tuple(layer.name for layer in pending)


def glow_layout(num_scales: int = 2, steps_per_scale: int = 4):
  """The Glow recipe as a tuple of scales of `StepSpec`s: per scale

      squeeze (actnorm invconv channel)*steps_per_scale [factor_out]

  (channel parity alternating; factor_out on every scale but the last). Its string form is
  `glow_layout_string(num_scales, steps_per_scale)`."""
  if int(num_scales) < 1:
    raise ValueError(f"num_scales must be >= 1, got {num_scales}.")
  if int(steps_per_scale) < 1:
    raise ValueError(f"steps_per_scale must be >= 1, got {steps_per_scale}.")
  layout = []
  for s in range(num_scales):
    steps = [StepSpec("squeeze")]
    for k in range(steps_per_scale):
      steps += [StepSpec("actnorm"), StepSpec("invconv"), StepSpec("channel", k % 2)]
    if s + 1 < num_scales:
      steps.append(StepSpec("factor_out"))
    layout.append(tuple(steps))
  return validate_layout(layout)


def glow_layout_string(num_scales: int = 2, steps_per_scale: int = 4) -> str:
  """The string form of `glow_layout` with a repeated group, e.g. for a config's flow layout:
  `"squeeze (actnorm invconv channel)*4 factor_out | squeeze (actnorm invconv channel)*4"`."""
  glow_layout(num_scales, steps_per_scale)  # Validates the arguments.
  scale = f"squeeze (actnorm invconv channel)*{int(steps_per_scale)}"
  return " | ".join([scale + " factor_out"] * (int(num_scales) - 1) + [scale])


ACTNORM = register_step(StepKind(
    name="actnorm",
    make_layer=lambda ctx: ActNormLayer(ctx.event_shape[-1], dtype=ctx.dtype, name=ctx.name),
    make_bijector=lambda call: glow_bijectors.ActNorm(call.layer.params, name=call.name)))

INVCONV = register_step(StepKind(
    name="invconv",
    make_layer=lambda ctx: InvConvLayer(ctx.event_shape[-1], dtype=ctx.dtype, name=ctx.name),
    make_bijector=lambda call: glow_bijectors.InvertibleConv1x1(call.layer.matrices,
                                                                name=call.name)))
