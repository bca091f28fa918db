"""`TrainConfig`: the frozen, validated description of a training run (all but model and data)."""
import dataclasses
import math

STRATEGIES = ("mirrored", "multi_worker", "one_device")
KL_SCHEDULES = ("linear", "sigmoid")
LR_DECAYS = ("none", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train: optimiser, schedules, loop cadence, evaluation, robustness.

  Step counting: `step` counts training batches consumed, including skipped (non-finite) ones, so
  `train_steps` is the number of batches a run reads. The optimiser's own `iterations` counts only
  the updates it applied (`step - skipped_steps`); the learning-rate schedule follows `iterations`,
  the KL weight follows `step`.

  seed:                      seeds weights init, data order, dequantisation noise and z sampling.
  train_steps:               total steps of the run (a resumed run continues up to it).
  strategy:                  "mirrored" (all local devices), "multi_worker" (TF_CONFIG) or
                             "one_device".
  jit_compile:               XLA-compile the per-replica loss-and-gradient computation.
  learning_rate, adam_*:     keras.optimizers.Adam hyper-parameters (defaults are Adam's/Keras').
  warmup_steps:              linear warm-up from 0 to `learning_rate` over this many updates.
  lr_decay:                  "none" or "cosine" (to `min_lr_fraction * learning_rate` at
                             `train_steps`), applied after warm-up.
  clip_grad_norm:            clip the (global-batch) gradient by its global norm; 0 = off.
  kl_anneal_steps:           steps over which the KL weight rises from 0 to 1; 0 = always 1.
  kl_schedule:               "linear" or "sigmoid" (see `schedules.kl_weight`).
  log_every:                 steps between log lines / TensorBoard training scalars.
  eval_every:                steps between test-set ELBO evaluations; 0 = only at the end.
  eval_num_samples:          k of the importance-weighted bound computed at the end (1 = ELBO only).
  eval_chunk_size:           importance samples evaluated at once (memory bound).
  eval_seed:                 seed of the test set's dequantisation noise and of z in evaluation.
  checkpoint_every:          steps between checkpoints (one is also written at the end).
  max_to_keep:               checkpoints kept in WORKDIR/checkpoints.
  max_consecutive_bad_steps: abort after this many consecutive non-finite steps.
  sample_temperature:        temperature of the sample grids (TensorBoard and figures).
  num_image_samples:         images in each TensorBoard grid.
  export_at_end:             write WORKDIR/export and WORKDIR/figures at the end.
  debug_inject_nan_at_step:  FOR TESTS: the loss of steps N .. N + debug_inject_nan_num_steps - 1
  debug_inject_nan_num_steps   (numbered as logged: step 1 is the first) is made NaN (-1 = never).
  """

  seed: int = 0
  train_steps: int = 1000
  strategy: str = "mirrored"
  jit_compile: bool = False
  learning_rate: float = 1e-3
  adam_beta1: float = 0.9
  adam_beta2: float = 0.999
  adam_epsilon: float = 1e-7
  warmup_steps: int = 0
  lr_decay: str = "none"
  min_lr_fraction: float = 0.0
  clip_grad_norm: float = 0.0
  kl_anneal_steps: int = 0
  kl_schedule: str = "linear"
  log_every: int = 100
  eval_every: int = 0
  eval_num_samples: int = 1
  eval_chunk_size: int = 16
  eval_seed: int = 0
  checkpoint_every: int = 1000
  max_to_keep: int = 3
  max_consecutive_bad_steps: int = 10
  sample_temperature: float = 0.8
  num_image_samples: int = 36
  export_at_end: bool = True
  debug_inject_nan_at_step: int = -1
  debug_inject_nan_num_steps: int = 1

  def __post_init__(self):
    for name, minimum in (("seed", 0), ("train_steps", 1), ("warmup_steps", 0),
                          ("kl_anneal_steps", 0), ("log_every", 1), ("eval_every", 0),
                          ("eval_num_samples", 1), ("eval_chunk_size", 1), ("eval_seed", 0),
                          ("checkpoint_every", 1), ("max_to_keep", 1),
                          ("max_consecutive_bad_steps", 1), ("num_image_samples", 1),
                          ("debug_inject_nan_at_step", -1), ("debug_inject_nan_num_steps", 1)):
      _check_int(name, getattr(self, name), minimum)
    _check_choice("strategy", self.strategy, STRATEGIES)
    _check_choice("kl_schedule", self.kl_schedule, KL_SCHEDULES)
    _check_choice("lr_decay", self.lr_decay, LR_DECAYS)
    for name in ("jit_compile", "export_at_end"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"TrainConfig.{name} must be a bool, got {getattr(self, name)!r}.")
    _check_float("learning_rate", self.learning_rate, lo=0.0, lo_open=True)
    _check_float("adam_beta1", self.adam_beta1, lo=0.0, hi=1.0, hi_open=True)
    _check_float("adam_beta2", self.adam_beta2, lo=0.0, hi=1.0, hi_open=True)
    _check_float("adam_epsilon", self.adam_epsilon, lo=0.0, lo_open=True)
    _check_float("min_lr_fraction", self.min_lr_fraction, lo=0.0, hi=1.0)
    _check_float("clip_grad_norm", self.clip_grad_norm, lo=0.0)
    _check_float("sample_temperature", self.sample_temperature, lo=0.0)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> "TrainConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
      raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}; expected a subset of "
                       f"{sorted(known)}.")
    return cls(**values)


def _check_int(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"TrainConfig.{name} must be an int >= {minimum}, got {value!r}.")


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"TrainConfig.{name} must be one of {choices}, got {value!r}.")


def _check_float(name, value, lo=None, hi=None, lo_open=False, hi_open=False):
  ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value))
  if ok and lo is not None:
    ok = value > lo if lo_open else value >= lo
  if ok and hi is not None:
    ok = value < hi if hi_open else value <= hi
  if not ok:
    left = "(" if lo_open else "["
    right = ")" if hi_open or hi is None else "]"
    interval = f"{left}{lo}, {hi if hi is not None else 'inf'}{right}"
    raise ValueError(f"TrainConfig.{name} must be a finite number in {interval}, got {value!r}.")
