"""Stage 2 of a run: build the training state and restore it from the run directory.

    with build_or_restore(model_cfg, train_cfg, strategy, workdir, chief, before_save) as run:
      run.state, run.checkpoints, run.restored_from, run.start_step, ...

Reads the run directory only; the first write is the first `run.checkpoints.save*`, which calls
`before_save` (the run record's commit) first.
"""
import contextlib
import dataclasses
import os
import re
import shutil
import tempfile

from absl import logging
import numpy as np
import tensorflow as tf

from vapnev_tf import flow_steps
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.config import ModelConfig
from vapnev_tf.training import checkpointing
from vapnev_tf.training import distribute
from vapnev_tf.training import loop
from vapnev_tf.training import rundir
from vapnev_tf.config import TrainConfig
from vapnev_tf.training.step import TrainState

CHECKPOINT_NAME = "ckpt"


class Checkpoints:
  """The run's two checkpoint managers: checkpoints/ (the newest `max_to_keep`) and best/ (the
  lowest test ELBO bits/dim so far, `best_bpd`).

  Non-chief workers of a multi-worker run must save too (the save is collective); they write
  into a private temporary directory that `close()` removes.
  """

  def __init__(self, checkpoint: tf.train.Checkpoint, best_bpd: tf.Variable, write_root: str,
               train_cfg: TrainConfig, before_save, temporary_root: str | None = None):
    self.best_bpd, self._before_save, self._temporary_root = best_bpd, before_save, temporary_root
    self._checkpoint = checkpoint
    self.manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(write_root, workdir_lib.CHECKPOINT_DIR),
        max_to_keep=train_cfg.max_to_keep, checkpoint_name=CHECKPOINT_NAME)
    self.best_manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(write_root, workdir_lib.BEST_DIR), max_to_keep=1,
        checkpoint_name=CHECKPOINT_NAME)
    self.saved_at = None  # the step of the newest checkpoint of this state, if any

  @property
  def latest(self) -> str | None:
    return self.manager.latest_checkpoint

  def save(self, step: int) -> str:
    self._check_finite(step)
    self._before_save()
    path = _save_or_clean_up(self.manager, step, self.latest)
    self.saved_at = step
    return path

  def save_if_best(self, step: int, elbo_bpd: float) -> bool:
    """Saves best/ when `elbo_bpd` beats the best so far (NaN never does); returns whether."""
    if not elbo_bpd < float(self.best_bpd.numpy()):
      return False
    self._check_finite(step)
    self.best_bpd.assign(elbo_bpd)
    self._before_save()
    _save_or_clean_up(self.best_manager, step, self.latest)
    return True

  def _check_finite(self, step: int) -> None:
    """A checkpoint is a state to resume or export from: one with a NaN/inf weight is never
    written (loop.NonFiniteTrainingError naming the weights)."""
    model = self._checkpoint.model
    bad = [v.path if hasattr(v, "path") else v.name for v in model.trainable_variables
           if not bool(tf.reduce_all(tf.math.is_finite(v)))]
    if bad:
      latest = self.latest
      raise loop.NonFiniteTrainingError(
          f"refusing to save the checkpoint of step {step}: {len(bad)} weight(s) are not finite "
          f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}). "
          + (f"The last checkpoint ({latest}) is unaffected; resume from it with a lower "
             "learning rate." if latest else "No checkpoint was written."))

  def close(self) -> None:
    if self._temporary_root:
      shutil.rmtree(self._temporary_root, ignore_errors=True)


class CheckpointWriteError(checkpointing.CheckpointError):
  """A checkpoint could not be written (disk full, file size limit, I/O error)."""


def _save_or_clean_up(manager: tf.train.CheckpointManager, step: int, latest: str | None) -> str:
  """`manager.save(checkpoint_number=step)`; when it fails, removes the files of this save that it
  left (`ckpt-{step}.index`, `.data-*`, `ckpt-{step}_temp/`: only names that were not there
  before) and raises CheckpointWriteError naming the directory and the cause in one line.

  The manager records a checkpoint in its state file only after writing it, so the checkpoints
  saved before stay the run's state.
  """
  directory = manager.directory
  stem = f"{CHECKPOINT_NAME}-{step}"
  before = set(rundir.entries(directory))
  try:
    return manager.save(checkpoint_number=step)
  except (OSError, tf.errors.OpError) as e:
    left = sorted(n for n in set(rundir.entries(directory)) - before
                  if n == stem or n.startswith((stem + ".", stem + "_temp")))
    for name in left:
      target = os.path.join(directory, name)
      try:
        if tf.io.gfile.isdir(target):
          tf.io.gfile.rmtree(target)
        else:
          tf.io.gfile.remove(target)
      except (OSError, tf.errors.OpError) as cleanup_error:
        logging.error("Could not remove the partial checkpoint file %s: %s", target,
                      cleanup_error)
    raise CheckpointWriteError(
        f"could not write the checkpoint of step {step} to {directory}: {_cause(e)}"
        f"{_free_space(directory)}. Removed the partial files of this save "
        f"({', '.join(left) or 'none'}); the newest checkpoint is still {latest or 'none'}. "
        "Free space on that disk (or raise the file size limit) and run the same command to "
        "resume.") from None


def _cause(error: Exception) -> str:
  """The first line of `error`'s message (TensorFlow's can span dozens of lines)."""
  text = getattr(error, "message", None) or str(error)
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(text))  # TF's op-location prefix
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _free_space(directory: str) -> str:
  if "://" in directory:
    return ""
  try:
    return f" ({shutil.disk_usage(directory).free / 2 ** 20:.0f} MiB free on its disk)"
  except OSError:
    return ""


@dataclasses.dataclass
class Run:
  """The state a run starts from."""
  state: TrainState
  checkpoints: Checkpoints
  restored_from: str | None  # checkpoint prefix, None for a new run
  start_step: int
  start_iterations: int  # optimizer iterations at the start


@contextlib.contextmanager
def build_or_restore(model_cfg: ModelConfig, train_cfg: TrainConfig,
                     strategy: tf.distribute.Strategy, workdir: str, chief: bool, before_save):
  """Builds model, optimizer and counters and restores the newest readable checkpoint.

  Raises:
    checkpointing.CheckpointError: checkpoints exist but none can be read.
    rundir.UnrestorableRunError: the workdir holds a run but no checkpoint index at all.
  """
  state = TrainState.create(model_cfg, train_cfg, strategy)
  with strategy.scope():
    best_bpd = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_elbo_bpd")
  checkpoint = tf.train.Checkpoint(model=state.model, optimizer=state.optimizer, step=state.step,
                                   skipped_steps=state.skipped_steps, best_elbo_bpd=best_bpd)
  ckpt_dir = workdir_lib.path(workdir, workdir_lib.CHECKPOINT_DIR)
  restored_from = None
  if tf.io.gfile.isdir(ckpt_dir):
    restored_from = checkpointing.restore_with_fallback(checkpoint, ckpt_dir)
  if restored_from is None:
    rundir.refuse_unrestorable(workdir)
  temporary_root = (None if chief else
                    tempfile.mkdtemp(prefix=f"vapnev_{distribute.task_label(strategy)}_"))
  checkpoints = Checkpoints(checkpoint, best_bpd, temporary_root or workdir, train_cfg,
                            before_save, temporary_root)
  run = Run(state, checkpoints, restored_from, int(state.step.numpy()),
            int(state.optimizer.iterations.numpy()))
  if restored_from:
    checkpoints.saved_at = run.start_step
    logging.info("Resumed from %s: step %d, optimizer iterations %d, skipped steps %d.",
                 restored_from, run.start_step, run.start_iterations,
                 int(state.skipped_steps.numpy()))
  else:
    logging.info("Starting a new run in %s (%s, %d replica(s), %d parameters).", workdir,
                 type(strategy).__name__, strategy.num_replicas_in_sync,
                 state.model.count_params())
  try:
    yield run
  finally:
    checkpoints.close()


def initialize_from_data(run: Run, data_cfg, strategy: tf.distribute.Strategy) -> tuple:
  """Glow's data-dependent initialisation of a NEW run's ActNorm steps (`flow_steps.glow`).

  Uses the first global batch of the training stream (a pipeline of its own, so the training
  iterator, and with it exact resumption, is untouched); z is `model.flow_latent(x)` for
  conditional flows. A restored run, or a model without ActNorm steps, is left as it is. The
  initialised values are part of the first checkpoint, so a resumed run never initialises again.

  Returns:
    The names of the layers initialised.
  """
  model = run.state.model
  if run.restored_from is not None or not needs_data_dependent_init(model):
    return ()
  first = next(iter(distribute.train_dataset_from_step(strategy, data_cfg, 0)))
  return initialize_from_batch(model, first, strategy)


def needs_data_dependent_init(model) -> bool:
  """Whether `model`'s flow has ActNorm steps (which want `initialize_from_batch` once)."""
  flow = getattr(model, "flow", None)
  return flow is not None and bool(flow_steps.glow.actnorm_layers(flow))


def initialize_from_batch(model, batch, strategy: tf.distribute.Strategy) -> tuple:
  """Initialises `model`'s ActNorm steps from `batch` (a global batch of dequantised pixels, or a
  distributed one); z is `model.flow_latent(x)` for conditional flows. Returns the layer names."""
  if not needs_data_dependent_init(model):
    return ()
  z = model.flow_latent if model.likelihood.conditional_flow else None
  names = flow_steps.data_dependent_init(model.flow, batch, z=z, strategy=strategy)
  logging.info("Initialised %d ActNorm step(s) from the first batch: %s", len(names),
               ", ".join(names))
  return names
