"""The run directory: where a run's resolved config, checkpoints, summaries and exports live.

    WORKDIR/config.json        resolved configs {"model": ..., "data": ..., "train": ...}
    WORKDIR/flags.txt          the flags the run was started with
    WORKDIR/checkpoints/       tf.train.CheckpointManager (latest N, atomic)
    WORKDIR/best/              checkpoint with the best test bits/dim
    WORKDIR/tensorboard/       tf.summary event files (train/, eval/)
    WORKDIR/eval.json          latest evaluation
    WORKDIR/export/            SavedModel (tensor signatures)
    WORKDIR/figures/           PNG panels

Every reader/writer of that layout goes through this module.
"""
import json
import math
import os

import numpy as np
import tensorflow as tf

from vapnev_tf.config import ModelConfig

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
TENSORBOARD_DIR = "tensorboard"
EVAL_FILE = "eval.json"
EXPORT_DIR = "export"
FIGURES_DIR = "figures"


def path(workdir: str, *parts: str) -> str:
  return os.path.join(workdir, *parts)


def write_json_atomic(filename: str, payload: dict) -> None:
  """Writes strict JSON through a temporary file and a rename, so readers never see half a file.

  The one JSON writer of the package. Strict: a value that is not a finite number (NaN, +-inf)
  is a missing value and is written as `null` (`allow_nan=False`: no `NaN` tokens, which most
  JSON readers refuse); numpy scalars and arrays become numbers and lists; any other non-JSON
  object is written as its `str`.
  """
  text = json.dumps(_strict(payload), indent=2, sort_keys=True, allow_nan=False, default=str)
  tmp = filename + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  tf.io.gfile.rename(tmp, filename, overwrite=True)


def _strict(value):
  """`value` with non-finite floats as None and numpy values as Python ones (recursively)."""
  if isinstance(value, dict):
    return {k: _strict(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_strict(v) for v in value]
  if isinstance(value, np.ndarray):
    return _strict(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def read_json(filename: str) -> dict:
  if not tf.io.gfile.exists(filename):
    raise FileNotFoundError(f"{filename} does not exist.")
  with tf.io.gfile.GFile(filename) as f:
    try:
      return json.loads(f.read())
    except json.JSONDecodeError as e:
      raise ValueError(f"{filename} is not valid JSON ({e}); the run directory is damaged.") from e


def read_config(workdir: str) -> dict:
  """The resolved config of the run in `workdir`; ValueError if the run directory has none."""
  filename = path(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(filename):
    raise ValueError(f"workdir {workdir!r} has no {CONFIG_FILE}: it is not a vapnev_tf run "
                     "directory (train into it first with python -m vapnev_tf.train).")
  return read_json(filename)


def run_configs(workdir: str, sections=("model", "data", "train")) -> tuple:
  """The configs (ModelConfig, DataConfig, TrainConfig by default) stored in `workdir`'s
  config.json (`config_run.configs_from_run_dict`); ValueError naming a missing section."""
  from vapnev_tf import config_run  # pylint: disable=g-import-not-at-top (training imports us)
  try:
    return config_run.configs_from_run_dict(read_config(workdir), sections)
  except ValueError as e:
    raise ValueError(f"{path(workdir, CONFIG_FILE)}: {e}") from e


def model_config(workdir: str) -> ModelConfig:
  return run_configs(workdir, ("model",))[0]


def latest_checkpoint(workdir: str, subdir: str = CHECKPOINT_DIR) -> str:
  """Path prefix of the newest checkpoint in `workdir/subdir`; ValueError if there is none."""
  ckpt = tf.train.latest_checkpoint(path(workdir, subdir))
  if ckpt is None:
    raise ValueError(f"no checkpoint found in {path(workdir, subdir)!r}.")
  return ckpt


def restore_model(workdir: str, checkpoint: str | None = None):
  """Rebuilds the model from `workdir/config.json` and restores its weights.

  Args:
    workdir: a run directory written by `vapnev_tf.train`.
    checkpoint: a checkpoint path prefix (e.g. `.../checkpoints/ckpt-100`); default the latest.

  Returns:
    `(model, step)`; step is -1 when the checkpoint holds no step counter.
  """
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  model = VAPNEV(model_config(workdir))
  checkpoint = checkpoint or latest_checkpoint(workdir)
  if not tf.io.gfile.exists(checkpoint + ".index"):
    raise ValueError(f"checkpoint {checkpoint!r} does not exist (no {checkpoint}.index).")
  step = tf.Variable(-1, dtype=tf.int64)
  try:
    tf.train.Checkpoint(model=model, step=step).restore(checkpoint).expect_partial()
  except (tf.errors.OpError, ValueError) as e:
    raise ValueError(f"checkpoint {checkpoint!r} could not be read: {e}") from e
  return model, int(step.numpy())
