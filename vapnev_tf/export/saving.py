"""Writing an export: a model (`export_model`) or a run's checkpoint (`export_from_workdir`).

The SavedModel is written to a staging sibling, checked (every weight saved), completed with its
metadata and renamed into place (`safety`), so `export_dir` never holds half an export.
"""
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from vapnev_tf import loading
from vapnev_tf import locking
from vapnev_tf import staging
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.export import metadata as metadata_lib
from vapnev_tf.export import safety
from vapnev_tf.export.module import VapnevModule
from vapnev_tf.model import VAPNEV


def export_model(model: VAPNEV, export_dir: str, metadata: dict, overwrite: bool = False,
                 workdir: str | None = None) -> str:
  """Writes `model` as a SavedModel with tensor signatures, plus `METADATA_FILE`, to `export_dir`.

  The SavedModel is written to a staging sibling `EXPORT.tmp-<pid>-<hex>` and renamed into
  place, so `export_dir` never holds half an export; staging siblings left by killed exports are
  swept first (`vapnev_tf.staging`: only a dead process's, holding only what an export writes).

  Args:
    model: a `VAPNEV`.
    export_dir: the output directory. It must not exist (an empty directory is fine) unless
      `overwrite`, in which case a previous export there is replaced; anything that is not an
      export (a run directory, a parent of one, user files) is refused (`check_export_dir`).
    metadata: JSON-serialisable facts about the run to record, e.g. {"step": 1000,
      "test_bits_per_dim": 3.1}; its keys must not clash with the ones this function writes.
    overwrite: replace a previous export in `export_dir`.
    workdir: the run directory the model comes from, if any: `export_dir` must then not be it,
      an ancestor of it, or a non-export inside it.

  Returns:
    `export_dir`.
  """
  if not isinstance(model, VAPNEV):
    raise ValueError(f"model must be a vapnev_tf.VAPNEV, got {type(model).__name__}.")
  if not isinstance(metadata, dict):
    raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}.")
  clash = sorted(set(metadata_lib.RESERVED_METADATA_KEYS) & set(metadata))
  if clash:
    raise ValueError(f"metadata keys {clash} are reserved (written by export_model); rename them.")
  try:
    metadata = json.loads(json.dumps(metadata, default=_numpy_to_python))
  except (TypeError, ValueError) as e:
    raise ValueError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts; numpy "
                     f"scalars and arrays are converted): {e}") from e
  export_dir = os.fspath(export_dir).rstrip("/") or "/"
  safety.check_export_dir(export_dir, overwrite, workdir)
  module = VapnevModule(model)
  parent = os.path.dirname(os.path.abspath(export_dir))
  tf.io.gfile.makedirs(parent)
  # Staging directories of exports to this target that a kill left behind (staging.py).
  for stale in staging.sweep_stale(export_dir, safety.STAGED_ENTRIES):
    logging.info("Removed %s, left by an interrupted export.", stale)
  tmp_dir = staging.new_staging_dir(export_dir)
  try:
    signatures = module.signatures()
    tf.saved_model.save(module, tmp_dir, signatures=signatures)
    num_parameters = _check_saved_variables(tmp_dir, model)
    payload = metadata_lib.assemble(model, signatures, metadata, num_parameters, tmp_dir)
    workdir_lib.write_json_atomic(os.path.join(tmp_dir, metadata_lib.METADATA_FILE), payload)
    safety.check_export_dir(export_dir, overwrite, workdir)  # again: it may have changed meanwhile
    marker = os.path.join(tmp_dir, staging.STAGING_MARKER)
    if tf.io.gfile.exists(marker):  # an export holds only safety.SAVED_MODEL_ENTRIES
      tf.io.gfile.remove(marker)
    safety.move_into_place(tmp_dir, export_dir)
  finally:
    if tf.io.gfile.exists(tmp_dir):
      tf.io.gfile.rmtree(tmp_dir)
  logging.info("Exported %s (signatures %s) to %s", model.config.likelihood,
               ", ".join(module.signature_names), export_dir)
  return export_dir


def _numpy_to_python(value):
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def _check_saved_variables(saved_model_dir: str, model: VAPNEV) -> int:
  """The SavedModel must hold every weight of `model`; returns the number of parameters."""
  reader = tf.train.load_checkpoint(os.path.join(saved_model_dir, "variables", "variables"))
  shapes = reader.get_variable_to_shape_map()
  saved = sum(int(np.prod(shape)) for key, shape in shapes.items()
              if key.endswith("/.ATTRIBUTES/VARIABLE_VALUE"))
  unique = {id(v): v for v in model.variables}.values()
  expected = sum(int(np.prod(v.shape)) for v in unique)
  if saved != expected:
    raise RuntimeError(f"the SavedModel in {saved_model_dir} holds {saved} parameters but the "
                       f"model has {expected}: some variables were not tracked by the module.")
  return expected


def export_from_workdir(workdir: str, export_dir: str | None = None,
                        checkpoint: str | None = None, overwrite: bool = False) -> str:
  """Restores a run's checkpoint and exports it (default `WORKDIR/export`), holding the run's lock.

  Default checkpoint: the newest readable one (`workdir.load_run`). The metadata's step is that
  checkpoint's own, and its bits/dim that of a full evaluation of the same weights (else None).
  Raises ValueError on bad input, `locking.WorkdirLockedError` when the run is in use.
  """
  if not tf.io.gfile.isdir(workdir):
    raise ValueError(f"workdir {workdir!r} does not exist or is not a directory.")
  export_dir = export_dir or workdir_lib.path(workdir, workdir_lib.EXPORT_DIR)
  # Bad input fails before the lock and the (slow) restore.
  safety.check_export_dir(export_dir, overwrite, workdir)
  if checkpoint and not tf.io.gfile.exists(checkpoint + ".index"):
    raise ValueError(f"checkpoint {checkpoint!r} does not exist (no {checkpoint}.index).")
  with locking.workdir_lock(workdir, "export", log=logging.warning):
    model, info = loading.load_run(workdir, checkpoint)
    metadata = metadata_lib.workdir_metadata(workdir, info["step"], info["checkpoint"],
                                             info["skipped"],
                                             workdir_lib.weights_fingerprint(model),
                                             info["weights"])
    return export_model(model, export_dir, metadata, overwrite, workdir=workdir)
