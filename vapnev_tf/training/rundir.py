"""Stage 1 of a run, the run directory: made ready and locked, never a run started over, and the
one place that records the run's configuration.

    with rundir.prepared(workdir, chief):        # writable, enough disk, WORKDIR/.lock held
      ...
      rundir.refuse_unrestorable(workdir)         # a run is there but nothing can be restored
      record = rundir.RunRecord(workdir, payload, flags_text, enabled=chief)
      record.commit()                             # config.json + flags.txt, once, before the
                                                  # first checkpoint / eval.json of this process

Why `commit` is deferred: a start that fails (a restore that does not match a --force_config'd
model, a batch larger than the data, ...) must leave the run directory exactly as it was, so the
corrected command works; and a directory whose config.json describes a run that has no state
would be refused by `refuse_unrestorable`. The configuration is therefore written only when this
process first writes run state, i.e. once model, optimizer, restore and data have all succeeded;
and if the first checkpoint itself fails (disk full), `prepared` removes what the start created.
"""
import contextlib

from absl import logging
import keras
import tensorflow as tf

import vapnev_tf
from vapnev_tf import data as data_lib
from vapnev_tf import locking
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.training import checkpointing
from vapnev_tf import config_run

LOCK_PURPOSE = "training"


class UnrestorableRunError(checkpointing.CheckpointError):
  """The run directory holds a run (config.json or checkpoint files) but nothing restorable."""


@contextlib.contextmanager
def prepared(workdir: str, chief: bool):
  """The chief checks `workdir` (`checkpointing.prepare_workdir`) and holds its lock for the block.

  Raises:
    checkpointing.ConfigError: unusable workdir (before anything is written).
    locking.WorkdirLockedError: another process (training, evaluation, export) holds the lock.
  """
  if not chief:  # only the chief writes the run directory, so only it locks
    yield
    return
  checkpointing.prepare_workdir(workdir)
  if "://" in workdir:  # flock is local; remote file systems are not locked
    logging.warning("workdir %s is not on a local disk: it is not locked against other runs.",
                    workdir)
    with _undone_if_stateless(workdir):
      yield
    return
  with locking.workdir_lock(workdir, LOCK_PURPOSE, log=logging.warning):
    with _undone_if_stateless(workdir):
      yield


@contextlib.contextmanager
def _undone_if_stateless(workdir: str):
  """A block that fails while WORKDIR/checkpoints and WORKDIR/best hold no file (the first
  checkpoint failed, or the run failed before it) removes the entries of `workdir` it created
  (config.json, flags.txt, tensorboard/, an empty checkpoints/ ...), so the corrected command
  starts cleanly instead of meeting `refuse_unrestorable`. Entries that were there before stay.
  """
  before = set(entries(workdir))
  try:
    yield
  except BaseException:
    if not _has_checkpoint_files(workdir):
      created = sorted(set(entries(workdir)) - before - {locking.LOCK_FILE})
      for name in created:
        target = workdir_lib.path(workdir, name)
        try:
          if tf.io.gfile.isdir(target):
            tf.io.gfile.rmtree(target)
          else:
            tf.io.gfile.remove(target)
        except (OSError, tf.errors.OpError) as e:
          logging.error("Could not remove %s: %s", target, e)
      if created:
        logging.warning("The run failed before writing a checkpoint: removed what this start "
                        "created in %s (%s), which is as it was before.", workdir,
                        ", ".join(created))
    raise


def entries(directory: str) -> list:
  """The names in `directory` (none if it cannot be listed)."""
  try:
    return [n.rstrip("/") for n in tf.io.gfile.listdir(directory)]
  except (OSError, tf.errors.OpError):
    return []


def _has_checkpoint_files(workdir: str) -> bool:
  for sub in (workdir_lib.CHECKPOINT_DIR, workdir_lib.BEST_DIR):
    directory = workdir_lib.path(workdir, sub)
    if tf.io.gfile.isdir(directory) and tf.io.gfile.listdir(directory):
      return True
  return False


def refuse_unrestorable(workdir: str) -> None:
  """Raises UnrestorableRunError if `workdir` holds a run that no checkpoint can restore.

  A run is there when config.json exists or checkpoints/ or best/ hold any file. Call it only
  when no checkpoint could be restored: starting a new run would then overwrite that run's
  config, its `ckpt-*` files and `best/`. Nothing is deleted; the message says how to start over.
  """
  found = []
  if tf.io.gfile.exists(workdir_lib.path(workdir, workdir_lib.CONFIG_FILE)):
    found.append(workdir_lib.CONFIG_FILE)
  for sub in (workdir_lib.CHECKPOINT_DIR, workdir_lib.BEST_DIR):
    directory = workdir_lib.path(workdir, sub)
    names = sorted(tf.io.gfile.listdir(directory)) if tf.io.gfile.isdir(directory) else []
    if names:
      shown = ", ".join(n.rstrip("/") for n in names[:4]) + (", ..." if len(names) > 4 else "")
      found.append(f"{sub}/ ({shown})")
  if found:
    raise UnrestorableRunError(
        f"workdir {workdir!r} holds a run ({'; '.join(found)}) but no checkpoint that can be "
        f"restored (no {workdir_lib.CHECKPOINT_DIR}/*.index). Refusing to start a new run over "
        "it, which would overwrite that run's files. To start over, use a new --workdir (or move "
        "or delete this one yourself); to continue that run, restore its checkpoint files.")


def run_config(model_cfg, data_cfg, train_cfg, strategy: tf.distribute.Strategy,
               thread_choice=None) -> dict:
  """The content of WORKDIR/config.json: the resolved configs and the software that ran them.

  `thread_choice` (a `threads.ThreadChoice`) becomes the "threads" entry: the pool sizes in
  effect for this process and where each came from; it is environment, not configuration, so
  each start of the run records its own.
  """
  out = {**config_run.run_config_dict(model_cfg, data_cfg, train_cfg),
         "version": vapnev_tf.__version__,
         "tensorflow": tf.__version__, "keras": keras.__version__,
         "strategy": type(strategy).__name__, "num_replicas": strategy.num_replicas_in_sync,
         "data_source": data_lib.source_files(data_cfg)}
  if thread_choice is not None:
    out["threads"] = thread_choice.record()
  return out


class RunRecord:
  """Writes WORKDIR/config.json (and flags.txt) once, on the first `commit()`; a no-op when not
  `enabled` (non-chief workers)."""

  def __init__(self, workdir: str, config: dict, flags_text: str | None, enabled: bool):
    self.workdir, self.config, self.flags_text = workdir, config, flags_text
    self.committed = not enabled

  def commit(self) -> None:
    if self.committed:
      return
    workdir_lib.write_json_atomic(workdir_lib.path(self.workdir, workdir_lib.CONFIG_FILE),
                                  self.config)
    if self.flags_text is not None:
      with tf.io.gfile.GFile(workdir_lib.path(self.workdir, "flags.txt"), "w") as f:
        f.write(self.flags_text)
    self.committed = True
