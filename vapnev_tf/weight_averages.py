"""Polyak averages of a model's trainable weights (docs/design.md §23).

Keras' optimiser keeps them (`use_ema=True`, `ema_momentum` = the decay d): after the update of
index t = 0, 1, ... it applies,
    average = d_t * average + (1 - d_t) * weight,    d_t = 0 for t = 0 (average = weight),
                                                      d_t = min(d, (1 + t) / (10 + t)) after,
as optimiser variables. The warm-up d_t (`tf.train.ExponentialMovingAverage`'s `num_updates`
rule) is ours (`Adam`): with Keras' constant d the average after t updates still holds d^t of
the initial weights (37% after 1,000 updates at d = 0.999), so a short run or an early evaluation
would report mostly untrained weights. They are therefore created with the optimiser (under the strategy's
scope, mirrored like Adam's moments), updated only when `apply_gradients` runs (a skipped step
leaves them as they are) and saved and restored with the optimiser by `tf.train.Checkpoint`.
This module reads them and lends them to the model:

    with evaluated_weights(model, optimizer) as weights:   # weights: "ema" or "raw"
      ...   # the model computes with the averages; its raw weights are back afterwards
"""
import contextlib

import keras
import tensorflow as tf

RAW, EMA = "raw", "ema"
# The key of a constant learning rate in a checkpoint of `tf.train.Checkpoint(optimizer=...)`.
_LEARNING_RATE_KEY = "optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE"


def warmed_up_decay(decay: float, update_index):
  """d_t of the update of index t (`update_index`, int or int tensor): 0 for t = 0, else
  min(decay, (1 + t) / (10 + t)); a float32 tensor."""
  t = tf.cast(update_index, tf.float32)
  return tf.where(tf.equal(t, 0.0), tf.constant(0.0, tf.float32),
                  tf.minimum(tf.constant(decay, tf.float32), (1.0 + t) / (10.0 + t)))


class Adam(keras.optimizers.Adam):
  """Keras' Adam whose Polyak averages (`use_ema=True`) warm up: decay `warmed_up_decay(d, t)`.

  Same variables, checkpoints and distributed path as Keras' own: only the per-update decay of
  the averages differs (Keras' method is replaced, called where Keras calls it, inside
  `apply_gradients` after the weights' update and before `iterations` counts it).
  """

  def _update_model_variables_moving_average(self, trainable_variables):
    if not self.use_ema:
      return
    decay = warmed_up_decay(self.ema_momentum, self.iterations)
    for variable, average in zip(trainable_variables, self._model_variables_moving_average):
      if average is not None:
        d = tf.cast(decay, variable.dtype)
        average.assign(d * average + (1.0 - d) * variable)


def optimizer_options(ema_decay: float) -> dict:
  """Keyword arguments of a Keras optimiser that keeps the averages with decay `ema_decay`
  (0: none)."""
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}.")
  if ema_decay == 0.0:
    return {}
  return {"use_ema": True, "ema_momentum": float(ema_decay)}


def averages(optimizer) -> list | None:
  """The averages of a built `optimizer`, one per trainable variable in its build order (the
  model's `trainable_variables`), or None when it keeps none."""
  if not getattr(optimizer, "use_ema", False):
    return None
  # Keras keeps no public accessor for them; this is the list its own EMA update writes.
  return list(optimizer._model_variables_moving_average)  # pylint: disable=protected-access


@contextlib.contextmanager
def swapped_in(variables, values):
  """Assigns `values` to `variables` for the body of the `with`, then their own values again
  (also when the body raises)."""
  variables, values = list(variables), list(values)
  if len(variables) != len(values):
    raise ValueError(f"values must hold one tensor per variable ({len(variables)}), got "
                     f"{len(values)}.")
  raw = [tf.identity(v) for v in variables]
  for variable, value in zip(variables, values):
    variable.assign(value)
  try:
    yield
  finally:
    for variable, value in zip(variables, raw):
      variable.assign(value)


@contextlib.contextmanager
def evaluated_weights(model, optimizer):
  """Yields the label of the weights `model` computes with in the body: EMA with `optimizer`'s
  averages swapped in when it keeps them, else RAW (the model as it is)."""
  averaged = averages(optimizer)
  if averaged is None:
    yield RAW
    return
  with swapped_in(model.trainable_variables, averaged):
    yield EMA


def restore_averaged(model, checkpoint: str, ema_decay: float):
  """Restores `model` (built) and the averages of a training checkpoint written with `ema_decay`
  > 0, and leaves the averages in `model`'s trainable variables. Returns the restore status
  (`expect_partial`: Adam's moments and the counters are read but not needed)."""
  # Keras checkpoints an optimiser's variables by position, and a constant learning rate is one
  # of them (a schedule is not): the optimiser built here must have the same list as the one that
  # wrote `checkpoint`, so it takes a schedule exactly when that one had no learning-rate variable.
  keys = {name for name, _ in tf.train.list_variables(checkpoint)}
  learning_rate = (1e-3 if _LEARNING_RATE_KEY in keys
                   else keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=1))
  optimizer = Adam(learning_rate=learning_rate, **optimizer_options(ema_decay))
  optimizer.build(model.trainable_variables)
  status = tf.train.Checkpoint(model=model, optimizer=optimizer).restore(checkpoint)
  status.expect_partial()
  status.assert_existing_objects_matched()
  for variable, value in zip(model.trainable_variables, averages(optimizer)):
    variable.assign(value)
  return status
