"""Schedules of a run: the KL weight (Bowman et al.) and the learning rate (warm-up + decay)."""
import math

import keras
import tensorflow as tf

from vapnev_tf.config import KL_SCHEDULES
from vapnev_tf.config import LR_DECAYS

_SIGMOID_SHARPNESS = 12.0  # sigmoid schedule: logistic over [-6, 6] across the annealing window


def kl_weight(step, anneal_steps: int, schedule: str = "linear", cycles: int = 1,
              cycle_ratio: float = 0.5):
  """Weight of the KL term at `step` (Bowman et al., 2016), a float32 scalar tensor in [0, 1].

  With s = clip(step / anneal_steps, 0, 1):
    linear:   w = s
    sigmoid:  w = (sigma(12 (s - 1/2)) - sigma(-6)) / (sigma(6) - sigma(-6)), a logistic rescaled
              so that w(0) = 0, w(anneal_steps / 2) = 1/2 and w(anneal_steps) = 1 exactly.
    cyclical: (Fu et al., 2019) the annealing window is split into `cycles` cycles of
              T = anneal_steps / cycles steps; within each, w = min(1, tau / (cycle_ratio T)) with
              tau = step mod T, i.e. a linear ramp 0 -> 1 over the first `cycle_ratio` of the
              cycle, then 1; w = 1 from step anneal_steps on.
  `anneal_steps = 0` gives w = 1 at every step. The reported bound always uses weight 1.
  """
  if schedule not in KL_SCHEDULES:
    raise ValueError(f"kl_schedule must be one of {KL_SCHEDULES}, got {schedule!r}.")
  if isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int) or anneal_steps < 0:
    raise ValueError(f"kl_anneal_steps must be an int >= 0, got {anneal_steps!r}.")
  if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
    raise ValueError(f"kl_cycles must be an int >= 1, got {cycles!r}.")
  if not 0.0 < cycle_ratio <= 1.0:
    raise ValueError(f"kl_cycle_ratio must be in (0, 1], got {cycle_ratio!r}.")
  step = tf.cast(step, tf.float32)
  if anneal_steps == 0:
    return tf.ones_like(step)
  s = tf.clip_by_value(step / float(anneal_steps), 0.0, 1.0)
  if schedule == "linear":
    return s
  if schedule == "cyclical":
    period = float(anneal_steps) / cycles
    tau = tf.math.floormod(step, period)
    ramp = tf.clip_by_value(tau / (cycle_ratio * period), 0.0, 1.0)
    return tf.where(step >= float(anneal_steps), 1.0, ramp)
  half = _SIGMOID_SHARPNESS / 2.0
  lo, hi = _sigmoid(-half), _sigmoid(half)
  w = (tf.sigmoid(_SIGMOID_SHARPNESS * (s - 0.5)) - lo) / (hi - lo)
  return tf.where(s >= 1.0, 1.0, tf.where(s <= 0.0, 0.0, tf.clip_by_value(w, 0.0, 1.0)))


def _sigmoid(v: float) -> float:
  return 1.0 / (1.0 + math.exp(-v))


@keras.saving.register_keras_serializable(package="vapnev_tf")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up to `learning_rate`, then constant ("none") or cosine decay ("cosine").

  At optimiser iteration t (0-based, counting applied updates):
    warm-up (t < warmup_steps): lr * (t + 1) / warmup_steps   (never exactly 0)
    "cosine": lr * (f + (1 - f) * (1 + cos(pi * p)) / 2),
              p = clip((t - warmup_steps) / (decay_steps - warmup_steps), 0, 1), f = min_fraction.
  """

  def __init__(self, learning_rate: float, warmup_steps: int = 0, decay: str = "none",
               decay_steps: int = 1, min_fraction: float = 0.0):
    if decay not in LR_DECAYS:
      raise ValueError(f"lr_decay must be one of {LR_DECAYS}, got {decay!r}.")
    self.learning_rate = float(learning_rate)
    self.warmup_steps = int(warmup_steps)
    self.decay = decay
    self.decay_steps = int(decay_steps)
    self.min_fraction = float(min_fraction)

  def __call__(self, step):
    t = tf.cast(step, tf.float32)
    lr = tf.constant(self.learning_rate, tf.float32)
    if self.decay == "cosine":
      span = float(max(1, self.decay_steps - self.warmup_steps))
      p = tf.clip_by_value((t - float(self.warmup_steps)) / span, 0.0, 1.0)
      f = self.min_fraction
      lr = lr * (f + (1.0 - f) * 0.5 * (1.0 + tf.cos(math.pi * p)))
    if self.warmup_steps > 0:
      lr = lr * tf.minimum(1.0, (t + 1.0) / float(self.warmup_steps))
    return lr

  def get_config(self):
    return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
            "decay": self.decay, "decay_steps": self.decay_steps,
            "min_fraction": self.min_fraction}
