"""The run directory's safety checks: writability, config compatibility, robust restore."""
import os
import shutil
import uuid

from absl import logging
import tensorflow as tf

from vapnev_tf import data as data_lib
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.errors import CheckpointError
from vapnev_tf.errors import ConfigError
from vapnev_tf import config_run


# A run needs room for a few checkpoints, summaries and an export; refuse to start below this.
MIN_FREE_BYTES = 256 * 2 ** 20


def prepare_workdir(workdir: str, min_free_bytes: int = MIN_FREE_BYTES) -> None:
  """Creates `workdir`, proves it is writable and that its (local) disk has `min_free_bytes`
  free; ConfigError (a ValueError) otherwise, before anything is built."""
  if not workdir:
    raise ConfigError("workdir must be a non-empty path.")
  if tf.io.gfile.exists(workdir) and not tf.io.gfile.isdir(workdir):
    raise ConfigError(f"workdir {workdir!r} exists and is a file, not a directory.")
  probe = os.path.join(workdir, f".write_probe_{uuid.uuid4().hex[:8]}")
  try:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("ok")
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    raise ConfigError(f"workdir {workdir!r} is not writable ({type(e).__name__}: {e}); choose "
                     "another --workdir or fix its permissions.") from e
  if "://" not in workdir:  # local disk; remote filesystems report no free space
    free = shutil.disk_usage(workdir).free
    if free < min_free_bytes:
      raise ConfigError(f"workdir {workdir!r} has {free / 2 ** 20:.0f} MiB free, fewer than the "
                        f"{min_free_bytes / 2 ** 20:.0f} MiB a run needs for checkpoints and "
                        "summaries; free space or choose another --workdir.")


def check_resume_config(workdir: str, model_cfg, data_cfg, train_cfg,
                        force: bool = False) -> dict | None:
  """Refuses to reuse a run directory written with different run-defining config values
  (`config_run.config_differences`: every model field, the data and train fields whose metadata
  says RUN_DEFINING).

  Returns the stored config (None for a fresh directory). With `force`, differences are logged
  and accepted (the caller then overwrites config.json).
  """
  filename = workdir_lib.path(workdir, workdir_lib.CONFIG_FILE)
  if not tf.io.gfile.exists(filename):
    return None
  stored = workdir_lib.read_json(filename)
  diffs = config_run.config_differences(
      stored, config_run.run_config_dict(model_cfg, data_cfg, train_cfg))
  if diffs and not force:
    raise ConfigError(
        f"workdir {workdir!r} holds a run with a different configuration ({filename}); refusing "
        f"to resume it with these flags. Differing fields: {'; '.join(diffs)}. Use a new "
        "--workdir, or pass --force_config to resume with the new values anyway.")
  if diffs:
    logging.warning("--force_config: resuming %s despite differences: %s", workdir,
                    "; ".join(diffs))
  _check_source_files(workdir, stored, data_cfg, force)
  return stored


def _check_source_files(workdir: str, stored: dict, data_cfg, force: bool) -> None:
  """ConfigError (unless `force`) if a `folder:` source's file list changed since the run
  recorded it (`data.source_files`): its held-out test split would be drawn anew."""
  recorded = stored.get("data_source")
  if recorded is None:
    return
  current = data_lib.source_files(data_cfg)
  if current == recorded:
    return
  count = lambda d: "none" if d is None else (
      f"{d.get('train_files')} train" + (f" + {d['test_files']} test" if d.get("test_files")
                                         is not None else " (test held out from them)"))
  message = (f"{data_cfg.dataset}: the source's files changed since the run in {workdir!r} "
             f"started ({count(recorded)} files then, {count(current)} now; file list sha256 "
             f"{str(recorded.get('sha256'))[:12]} vs {str((current or {}).get('sha256'))[:12]})"
             "; resuming would train and test on other images (a source without a test folder "
             "redraws its held-out test split)")
  if not force:
    raise ConfigError(message + ". Restore the folder as it was, use a new --workdir, or pass "
                      "--force_config to resume on the new files anyway.")
  logging.warning("--force_config: %s.", message)


def _is_mismatch(error: Exception) -> bool:
  """Whether a restore failed because the checkpoint holds other variables than the objects
  built (a different model), not because its files are damaged: `assert_existing_objects_matched`
  found objects without values, or a stored value has another shape than its variable."""
  text = str(error)
  return ((isinstance(error, AssertionError) and "not bound to checkpointed values" in text)
          or (isinstance(error, ValueError) and "shape of the target variable" in text))


def restore_with_fallback(checkpoint: tf.train.Checkpoint, directory: str) -> str | None:
  """Restores the newest readable checkpoint of `directory` into `checkpoint`.

  Every object of `checkpoint` must already exist (model built, optimizer built) so the restore is
  immediate and complete. A checkpoint that fails (missing/truncated/corrupt files) is reported
  and the previous one is tried. Returns the prefix restored, None when there is no checkpoint at
  all; raises CheckpointError when checkpoints exist but none can be read (never silently starts
  from scratch).
  """
  candidates = workdir_lib.checkpoint_candidates(directory)
  if not candidates:
    return None
  describe = lambda e: "does not match this model" if _is_mismatch(e) else "is unreadable"
  prefix, failed = workdir_lib.restore_newest(
      candidates, lambda p: checkpoint.restore(p).assert_existing_objects_matched(), describe)
  if prefix is not None:
    return prefix
  failures = [f"{os.path.basename(p)}: {workdir_lib.first_line(e)}" for p, e in failed]
  if all(_is_mismatch(e) for _, e in failed):
    raise CheckpointError(
        f"the {len(candidates)} checkpoint(s) in {directory!r} are intact but do not hold the "
        f"variables this configuration builds ({'; '.join(failures)}): the model asked for "
        "differs from the one that wrote them (a model change forced with --force_config that "
        "the checkpoints cannot hold). Nothing was changed; the run's checkpoints and "
        "config.json are as they were. Drop --force_config (and the changed model flags) to "
        "resume the run, or start the new configuration in a new --workdir.")
  raise CheckpointError(
      f"{len(candidates)} checkpoint(s) in {directory!r} but none can be read "
      f"({'; '.join(failures)}). Refusing to start from scratch over them: repair or delete the "
      "directory, or use a new --workdir.")
