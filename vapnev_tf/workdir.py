"""The run directory: where a run's resolved config, checkpoints, summaries and exports live.

    WORKDIR/config.json        resolved configs {"model": ..., "data": ..., "train": ...}
    WORKDIR/flags.txt          the flags the run was started with
    WORKDIR/checkpoints/       tf.train.CheckpointManager (latest N, atomic)
    WORKDIR/best/              checkpoint with the best test bits/dim
    WORKDIR/tensorboard/       tf.summary event files (train/, eval/)
    WORKDIR/eval.json          latest full evaluation (the run's whole test scope), earlier ones
                               under "history"
    WORKDIR/evaluations/       partial evaluations (a subset of the test images), one file a
                               scope, and evaluations of checkpoints from outside the run
    WORKDIR/export/            SavedModel (tensor signatures)
    WORKDIR/figures/           PNG panels

Every reader/writer of that layout goes through this module.
"""
import hashlib
import json
import math
import os

from absl import logging
import numpy as np
import tensorflow as tf

from vapnev_tf.config import ModelConfig

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
TENSORBOARD_DIR = "tensorboard"
EVAL_FILE = "eval.json"
EVALUATIONS_DIR = "evaluations"
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


def load_run(workdir: str, checkpoint: str | None = None):
  """Rebuilds the model of a run directory and restores its trained weights.

  The public way to use a trained run from one's own code (README, "Loading a trained run"):

      model, info = vapnev_tf.load_run("runs/quick")

  Args:
    workdir: a run directory written by `vapnev_tf.train` (it needs `config.json` and a checkpoint).
    checkpoint: a checkpoint path prefix (e.g. `WORKDIR/best/ckpt-100`). Default: the newest
      readable checkpoint of `WORKDIR/checkpoints`; a newer one that cannot be read (truncated,
      corrupt) is skipped with an error in the log naming it and why, like a resumed training run.
      An explicit `checkpoint` is never replaced by another one.

  Returns:
    `(model, info)`: a `VAPNEV` holding the checkpoint's weights, and a dict with "checkpoint"
    (the prefix actually restored), "step" (the checkpoint's own step counter, -1 if it has none),
    "skipped" (newer checkpoints that could not be read: [{"checkpoint", "reason"}]), "config"
    (the run's config.json) and "workdir".

  Raises:
    ValueError: no config.json, no checkpoint, or no readable one (the message names them).
  """
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  # The training loop's candidates (newest first, a damaged state file tolerated) and its rule:
  # an unreadable checkpoint is reported and the previous one tried, never silently nothing.
  from vapnev_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  directory = path(workdir, CHECKPOINT_DIR)
  if checkpoint:
    if not tf.io.gfile.exists(checkpoint + ".index"):
      raise ValueError(f"checkpoint {checkpoint!r} does not exist (no {checkpoint}.index).")
  else:
    candidates = checkpointing.checkpoint_candidates(directory)
    if not candidates:
      raise ValueError(f"no checkpoint found in {directory!r}.")
  config = read_config(workdir)
  model = VAPNEV(model_config(workdir))
  skipped = []
  if checkpoint:
    try:
      _restore_weights(model, checkpoint)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"checkpoint {checkpoint!r} could not be read: {_first_line(e)}") from e
  else:
    for prefix in candidates:
      try:
        _restore_weights(model, prefix)
      # The reader reports damage in many ways (OpError, IndexError, ValueError, AssertionError).
      except Exception as e:  # pylint: disable=broad-except
        reason = _first_line(e)
        logging.error("Skipping checkpoint %s: unreadable (%s).", prefix, reason)
        skipped.append({"checkpoint": prefix, "reason": reason})
        continue
      checkpoint = prefix
      break
    else:
      raise ValueError(
          f"{len(candidates)} checkpoint(s) in {directory!r} but none can be read ("
          f"{'; '.join(os.path.basename(s['checkpoint']) + ': ' + s['reason'] for s in skipped)}).")
    if skipped:
      logging.warning("Restored %s after skipping %d unreadable newer checkpoint(s).", checkpoint,
                      len(skipped))
  info = {"checkpoint": checkpoint, "step": checkpoint_step(checkpoint), "skipped": skipped,
          "config": config, "workdir": workdir}
  return model, info


def _restore_weights(model, checkpoint: str) -> None:
  """Restores every weight of `model` (built) from `checkpoint`; raises if any is missing/bad."""
  status = tf.train.Checkpoint(model=model).restore(checkpoint)
  status.expect_partial()  # the optimizer and counters of a training checkpoint are not needed
  status.assert_existing_objects_matched()


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def checkpoint_step(checkpoint: str) -> int:
  """The step counter stored in `checkpoint` (the training loop's `step` variable), else -1."""
  try:
    reader = tf.train.load_checkpoint(checkpoint)
    if reader.has_tensor(_STEP_KEY):
      return int(reader.get_tensor(_STEP_KEY))
  except (tf.errors.OpError, ValueError):
    pass
  return -1


_STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"


def weights_fingerprint(model) -> str:
  """sha256 of every weight's bytes, in `model.weights` order: equal iff bitwise-equal weights.

  The identity of an evaluated model: an evaluation record carries it ("weights_sha256") and is
  attached to a checkpoint (export metadata, train's final report) only when the checkpoint's
  weights have the same fingerprint; a step number alone never ties a result to weights.
  """
  digest = hashlib.sha256()
  for v in model.weights:
    digest.update(np.ascontiguousarray(np.asarray(v.numpy())).tobytes())
  return digest.hexdigest()


def is_run_checkpoint(workdir: str, checkpoint: str) -> bool:
  """Whether `checkpoint` (a prefix) lies in WORKDIR/checkpoints or WORKDIR/best: the run's own.

  Anything else (another run's checkpoint, a copy elsewhere) is foreign to the run, and its
  evaluation never becomes the run's headline result.
  """
  own = [path(workdir, d).rstrip("/") for d in (CHECKPOINT_DIR, BEST_DIR)]
  if "://" in checkpoint or "://" in workdir:  # remote: compare the paths as written
    return os.path.dirname(checkpoint) in own
  parent = os.path.realpath(os.path.dirname(os.path.abspath(checkpoint)))
  return parent in [os.path.realpath(d) for d in own]


def restore_model(workdir: str, checkpoint: str | None = None):
  """`load_run` returning `(model, step)`; step is -1 when the checkpoint holds no step counter."""
  model, info = load_run(workdir, checkpoint)
  return model, info["step"]


# ----------------------------------------------------------------------------------- evaluations


def is_full_evaluation(record: dict, config: dict) -> bool:
  """Whether an evaluation record covers the run's whole test scope (not a subset of it).

  Full: its `eval_take` is None (every test image) or the run's own `data.eval_take` (the images
  the run itself evaluates on). Records that do not say their `eval_take` (written before scopes
  were recorded) are not taken as full.
  """
  if not isinstance(record, dict) or "eval_take" not in record:
    return False
  return record["eval_take"] is None or record["eval_take"] == config.get("data", {}).get(
      "eval_take")


def full_evaluation(workdir: str, step: int, weights_sha256: str | None):
  """The newest full evaluation (`is_full_evaluation`) of the weights `weights_sha256` at `step`,
  from WORKDIR/eval.json.

  Looks at the headline record, then its "history" (newest first). A record is taken only when
  its step and its "weights_sha256" (`weights_fingerprint`) both match: an evaluation of other
  weights at the same step (another run's checkpoint, a retrained step) is never attached.

  Returns:
    `(record, note)`: the record without its history (None if there is none) and, when None,
    a sentence saying why.
  """
  filename = path(workdir, EVAL_FILE)
  if not tf.io.gfile.exists(filename):
    return None, f"no {EVAL_FILE}: this checkpoint was never evaluated"
  try:
    headline = read_json(filename)
  except ValueError as e:
    return None, str(e)
  config = read_config(workdir)
  history = headline.get("history", []) if isinstance(headline.get("history"), list) else []
  records = [{k: v for k, v in headline.items() if k != "history"}] + list(reversed(history))
  same_step = False
  for record in records:
    if not (isinstance(record, dict) and record.get("step") == step
            and is_full_evaluation(record, config)):
      continue
    same_step = True
    if weights_sha256 is not None and record.get("weights_sha256") == weights_sha256:
      return record, None
  hint = "run python -m vapnev_tf.evaluate --workdir=... to evaluate this checkpoint"
  if same_step:
    return None, (f"{EVAL_FILE}'s full evaluation of step {step} is of other weights (or does "
                  f"not record which: no matching weights_sha256; this checkpoint's is "
                  f"{str(weights_sha256)[:12]}...); {hint}")
  return None, (f"{EVAL_FILE} holds no full evaluation of step {step} (it has step "
                f"{headline.get('step')}); {hint}")


def partial_evaluation_path(workdir: str, step: int, num_images: int, k: int, seed: int) -> str:
  """WORKDIR/evaluations/step{step}-images{n}-k{k}-seed{seed}.json: one file per scope."""
  return path(workdir, EVALUATIONS_DIR, f"step{step}-images{num_images}-k{k}-seed{seed}.json")


def foreign_evaluation_path(workdir: str, checkpoint: str, weights_sha256: str, num_images: int,
                            k: int, seed: int) -> str:
  """WORKDIR/evaluations/foreign-{name}-{sha12}-images{n}-k{k}-seed{seed}.json: an evaluation of
  a checkpoint from outside the run (`is_run_checkpoint`), one file per checkpoint and scope."""
  name = os.path.basename(checkpoint.rstrip("/")) or "checkpoint"
  return path(workdir, EVALUATIONS_DIR, f"foreign-{name}-{weights_sha256[:12]}-images{num_images}"
              f"-k{k}-seed{seed}.json")
