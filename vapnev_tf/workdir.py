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

Every reader/writer of that layout goes through this module, and so does every restore of a
checkpoint (`checkpoint_candidates`, `restore_newest`). It sits in the bottom layer: it knows
files, not models (`vapnev_tf.loading` rebuilds a model from a run).
"""
import glob
import hashlib
import json
import math
import os
import re

from absl import logging
import numpy as np
import tensorflow as tf

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


def latest_checkpoint(workdir: str, subdir: str = CHECKPOINT_DIR) -> str:
  """Path prefix of the newest checkpoint in `workdir/subdir`; ValueError if there is none."""
  ckpt = tf.train.latest_checkpoint(path(workdir, subdir))
  if ckpt is None:
    raise ValueError(f"no checkpoint found in {path(workdir, subdir)!r}.")
  return ckpt


def _checkpoint_number(prefix: str) -> int:
  match = re.search(r"-(\d+)$", prefix)
  return int(match.group(1)) if match else -1


def checkpoint_candidates(directory: str) -> list[str]:
  """Checkpoint prefixes in `directory`, newest first: the CheckpointManager's list, plus any
  `*.index` file it does not know (e.g. when the `checkpoint` state file is damaged).

  A listed prefix without its `.index` file is left out: CheckpointManager records the new state
  before deleting the oldest checkpoint (index first, then data), so a process killed during that
  clean-up leaves the state file listing a half-deleted checkpoint that was being discarded.
  """
  prefixes = set()
  try:
    state = tf.train.get_checkpoint_state(directory)
  except (tf.errors.OpError, ValueError) as e:  # a damaged state file
    logging.error("checkpoint state file in %s is unreadable (%s); scanning for *.index files",
                  directory, e)
    state = None
  if state is not None:
    for p in state.all_model_checkpoint_paths:
      prefixes.add(p if os.path.isabs(p) else os.path.join(directory, p))
  for index in glob.glob(os.path.join(glob.escape(directory), "*.index")):
    prefixes.add(index[:-len(".index")])
  present = {p for p in prefixes if tf.io.gfile.exists(p + ".index")}
  for p in sorted(prefixes - present):
    logging.info("Ignoring %s: its .index file is gone (deleted by max_to_keep).", p)
  return sorted(present, key=lambda p: (_checkpoint_number(p), p), reverse=True)


def restore_newest(candidates: list[str], restore, what="is unreadable"):
  """The fallback rule for every restore of the package: `restore(prefix)` on each of
  `candidates` (newest first) until one succeeds; a failure is logged and the previous one tried.

  Args:
    candidates: checkpoint prefixes, newest first (`checkpoint_candidates`).
    restore: restores one prefix; any exception means the checkpoint cannot be used.
    what: classifies a failure for the log, `what(error) -> str`, or a fixed phrase.

  Returns:
    `(prefix, failures)`: the prefix restored (None when none could be) and the
    `(prefix, error)` of every newer one that failed, newest first.
  """
  failures = []
  for prefix in candidates:
    try:
      restore(prefix)
    # The checkpoint reader reports damage in many ways (OpError, IndexError, ValueError,
    # AssertionError from the match check...): any failure means "try the previous one".
    except Exception as e:  # pylint: disable=broad-except
      logging.error("Checkpoint %s %s (%s)%s", prefix, what(e) if callable(what) else what,
                    first_line(e), "; falling back to the previous one."
                    if prefix != candidates[-1] else ".")
      failures.append((prefix, e))
      continue
    if failures:
      logging.warning("Restored %s after skipping %d unreadable checkpoint(s).", prefix,
                      len(failures))
    return prefix, failures
  return None, failures


def first_line(error: Exception) -> str:
  """`Type: first line of the message` of `error`, for one-line reports."""
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


def partial_evaluation_path(workdir: str, step: int, num_images: int, k: int, seed: int,
                            weights: str | None = None) -> str:
  """WORKDIR/evaluations/step{step}-images{n}-k{k}-seed{seed}[-{weights}].json: one file per
  scope; `weights` names weights other than the run's own (e.g. "raw" of a run keeping averages)."""
  suffix = f"-{weights}" if weights else ""
  return path(workdir, EVALUATIONS_DIR,
              f"step{step}-images{num_images}-k{k}-seed{seed}{suffix}.json")


def foreign_evaluation_path(workdir: str, checkpoint: str, weights_sha256: str, num_images: int,
                            k: int, seed: int) -> str:
  """WORKDIR/evaluations/foreign-{name}-{sha12}-images{n}-k{k}-seed{seed}.json: an evaluation of
  a checkpoint from outside the run (`is_run_checkpoint`), one file per checkpoint and scope."""
  name = os.path.basename(checkpoint.rstrip("/")) or "checkpoint"
  return path(workdir, EVALUATIONS_DIR, f"foreign-{name}-{weights_sha256[:12]}-images{num_images}"
              f"-k{k}-seed{seed}.json")
