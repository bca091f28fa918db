"""A trained model from a run directory: `load_run`, the public way to use a run from code.

Above the model and below training: it rebuilds `VAPNEV` from WORKDIR/config.json's "model"
section and restores a checkpoint with the package's one fallback rule
(`workdir.restore_newest`), so loading a run never imports training, export or figures.
"""
import os

import tensorflow as tf

from vapnev_tf import weight_averages
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.config import ModelConfig
from vapnev_tf.model import VAPNEV


def model_config(workdir: str) -> ModelConfig:
  """The `ModelConfig` stored in `workdir`'s config.json; ValueError naming a missing section."""
  stored = workdir_lib.read_config(workdir)
  filename = workdir_lib.path(workdir, workdir_lib.CONFIG_FILE)
  if "model" not in stored:
    raise ValueError(f"{filename}: the run config has no 'model' section (keys: "
                     f"{sorted(stored)}).")
  try:
    return ModelConfig.from_dict(stored["model"])
  except ValueError as e:
    raise ValueError(f"{filename}: {e}") from e


def load_run(workdir: str, checkpoint: str | None = None, weights: str | None = None):
  """Rebuilds the model of a run directory and restores its trained weights.

  The public way to use a trained run from one's own code (README, "Loading a trained run"):

      model, info = vapnev_tf.load_run("runs/quick")

  Args:
    workdir: a run directory written by `vapnev_tf.train` (it needs `config.json` and a checkpoint).
    checkpoint: a checkpoint path prefix (e.g. `WORKDIR/best/ckpt-100`). Default: the newest
      readable checkpoint of `WORKDIR/checkpoints`; a newer one that cannot be read (truncated,
      corrupt) is skipped with an error in the log naming it and why, like a resumed training run.
      An explicit `checkpoint` is never replaced by another one.

    weights: which of the checkpoint's weights to load: None (the run's own choice: its Polyak
      averages when it was trained with `ema_decay` > 0, what its evaluation, export and figures
      use; docs/design.md §23), "raw" (the trained weights themselves, also of a run that keeps
      averages) or "ema" (the averages; an error for a run that keeps none).

  Returns:
    `(model, info)`: a `VAPNEV` holding the checkpoint's weights, and a dict with "weights"
    ("ema": the averages, "raw": the trained weights themselves), "checkpoint"
    (the prefix actually restored), "step" (the checkpoint's own step counter, -1 if it has none),
    "skipped" (newer checkpoints that could not be read: [{"checkpoint", "reason"}]), "config"
    (the run's config.json) and "workdir".

  Raises:
    ValueError: no config.json, no checkpoint, or no readable one (the message names them);
      `weights` not one of None, "raw", "ema", or "ema" for a run without averages.
  """
  if weights not in (None, weight_averages.RAW, weight_averages.EMA):
    raise ValueError(f"weights must be None (the run's own), {weight_averages.RAW!r} or "
                     f"{weight_averages.EMA!r}, got {weights!r}.")
  directory = workdir_lib.path(workdir, workdir_lib.CHECKPOINT_DIR)
  if checkpoint:
    if not tf.io.gfile.exists(checkpoint + ".index"):
      raise ValueError(f"checkpoint {checkpoint!r} does not exist (no {checkpoint}.index).")
  else:
    candidates = workdir_lib.checkpoint_candidates(directory)
    if not candidates:
      raise ValueError(f"no checkpoint found in {directory!r}.")
  config = workdir_lib.read_config(workdir)
  model = VAPNEV(model_config(workdir))
  ema_decay = float(config.get("train", {}).get("ema_decay", 0.0))
  if weights == weight_averages.EMA and ema_decay == 0.0:
    raise ValueError(f"{workdir!r} keeps no Polyak averages (trained with ema_decay=0): only its "
                     f"{weight_averages.RAW!r} weights can be loaded.")
  if weights == weight_averages.RAW:
    ema_decay = 0.0  # the checkpoint holds the raw weights in the model's own slots
  restore = lambda prefix: _restore_weights(model, prefix, ema_decay)
  skipped = []
  if checkpoint:
    try:
      restore(checkpoint)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"checkpoint {checkpoint!r} could not be read: "
                       f"{workdir_lib.first_line(e)}") from e
  else:
    checkpoint, failed = workdir_lib.restore_newest(
        candidates, restore)
    skipped = [{"checkpoint": p, "reason": workdir_lib.first_line(e)} for p, e in failed]
    if checkpoint is None:
      raise ValueError(
          f"{len(candidates)} checkpoint(s) in {directory!r} but none can be read ("
          f"{'; '.join(os.path.basename(s['checkpoint']) + ': ' + s['reason'] for s in skipped)}).")
  info = {"weights": weight_averages.EMA if ema_decay > 0 else weight_averages.RAW,
          "checkpoint": checkpoint, "step": workdir_lib.checkpoint_step(checkpoint),
          "skipped": skipped, "config": config, "workdir": workdir}
  return model, info


def _restore_weights(model, checkpoint: str, ema_decay: float = 0.0) -> None:
  """Restores every weight of `model` (built) from `checkpoint`, its Polyak averages when
  `ema_decay` > 0; raises if any is missing/bad."""
  if ema_decay > 0:
    weight_averages.restore_averaged(model, checkpoint, ema_decay)
    return
  status = tf.train.Checkpoint(model=model).restore(checkpoint)
  status.expect_partial()  # the optimizer and counters of a training checkpoint are not needed
  status.assert_existing_objects_matched()


def restore_model(workdir: str, checkpoint: str | None = None):
  """`load_run` returning `(model, step)`; step is -1 when the checkpoint holds no step counter."""
  model, info = load_run(workdir, checkpoint)
  return model, info["step"]
