"""The directory-safety policy of an export: what `export_dir` may be, and the move into it.

Overwriting: `--overwrite` only ever replaces a previous export (a directory holding
`saved_model.pb`, `vapnev_metadata.json` and nothing that is not part of a SavedModel); a run
directory, a parent of one, the workdir or an ancestor of it, or any other directory is refused,
naming what is there. `python -m vapnev_tf.export` holds the run directory's lock
(`vapnev_tf.locking`) while it reads it.
"""
import os
import uuid

import tensorflow as tf

from vapnev_tf import workdir as workdir_lib
from vapnev_tf.export.metadata import METADATA_FILE


# What `tf.saved_model.save` plus `export_model` write; an export holds these and nothing else.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "saved_model.pbtxt", "variables", "assets",
                       "assets.extra", "fingerprint.pb", "keras_metadata.pb", METADATA_FILE)
# What a staging directory of `export_model` may hold besides its marker (the metadata's own
# temporary file included): a stale one holding only these is swept.
STAGED_ENTRIES = SAVED_MODEL_ENTRIES + (METADATA_FILE + ".tmp",)


def check_export_dir(export_dir: str, overwrite: bool, workdir: str | None = None) -> None:
  """ValueError unless `export_dir` may be written (the overwrite rule, docs/internals.md).

  Writable: absent, an empty directory, or, with `overwrite`, a previous export (`is_export`).
  Never a run directory, a directory holding anything that is not part of an export, or (given
  the run directory `workdir`) `workdir` itself or one of its ancestors; inside `workdir`, only
  an absent directory, `WORKDIR/export` (empty) or an export.
  """
  if workdir is not None:
    _check_against_workdir(export_dir, workdir)
  if not tf.io.gfile.exists(export_dir):
    return
  if not tf.io.gfile.isdir(export_dir):
    raise ValueError(f"export_dir {export_dir!r} exists and is a file, not a directory.")
  entries = sorted(tf.io.gfile.listdir(export_dir))
  if not entries:
    return
  problem = _not_an_export(export_dir, entries)
  if problem is not None:
    raise ValueError(f"export_dir {export_dir!r} already exists and is not a vapnev_tf export "
                     f"({problem}); refusing to {'replace' if overwrite else 'write into'} it, "
                     "even with --overwrite, which only ever replaces a previous export. Choose a "
                     "new or empty directory.")
  if not overwrite:
    raise ValueError(f"export_dir {export_dir!r} already exists and is not empty (a previous "
                     "export); pass overwrite=True (--overwrite) to replace it, or choose another "
                     "directory.")


def is_export(export_dir: str) -> bool:
  """Whether `export_dir` is a directory holding a vapnev_tf export and nothing else."""
  if not tf.io.gfile.isdir(export_dir):
    return False
  return _not_an_export(export_dir, sorted(tf.io.gfile.listdir(export_dir))) is None


def _not_an_export(export_dir: str, entries: list) -> str | None:
  """None if `entries` (of `export_dir`) make an export, else what is there that should not be."""
  names = [e.rstrip("/") for e in entries]
  shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
  foreign = [n for n in names if n not in SAVED_MODEL_ENTRIES]
  if foreign:
    return f"it holds {shown}; not part of a SavedModel: {', '.join(foreign[:8])}"
  missing = [n for n in ("saved_model.pb", METADATA_FILE) if n not in names]
  if missing:
    return f"it holds {shown} but no {' and no '.join(missing)}"
  for sub, allowed in (("variables", lambda n: n.startswith("variables.")),
                       ("assets", lambda n: True), ("assets.extra", lambda n: True)):
    directory = os.path.join(export_dir, sub)
    if sub not in names:
      continue
    if not tf.io.gfile.isdir(directory):
      return f"{sub} is a file, not a directory"
    for name in tf.io.gfile.listdir(directory):
      if tf.io.gfile.isdir(os.path.join(directory, name)) or not allowed(name):
        return f"{sub}/ holds {name.rstrip('/')}, which a SavedModel does not write there"
  return None


def _real(p: str) -> str:
  return p if "://" in p else os.path.realpath(p)


def _check_against_workdir(export_dir: str, workdir: str) -> None:
  """An export never replaces the run directory, an ancestor of it, or a non-export inside it."""
  export_real, work_real = _real(export_dir).rstrip("/") or "/", _real(workdir).rstrip("/") or "/"
  if export_real == work_real:
    raise ValueError(f"export_dir {export_dir!r} is the run directory {workdir!r} itself; an "
                     "export never replaces a run directory. Leave --export_dir out (default "
                     "WORKDIR/export) or choose a new directory.")
  if work_real.startswith(export_real.rstrip("/") + "/"):
    raise ValueError(f"export_dir {export_dir!r} contains the run directory {workdir!r}; an "
                     "export never replaces a run directory or a parent of one. Leave "
                     "--export_dir out (default WORKDIR/export) or choose a new directory.")
  default = _real(workdir_lib.path(workdir, workdir_lib.EXPORT_DIR)).rstrip("/")
  if (export_real.startswith(work_real.rstrip("/") + "/") and export_real != default
      and tf.io.gfile.exists(export_dir) and not is_export(export_dir)):
    listing = (sorted(e.rstrip("/") for e in tf.io.gfile.listdir(export_dir))
               if tf.io.gfile.isdir(export_dir) else "a file")
    raise ValueError(f"export_dir {export_dir!r} is inside the run directory {workdir!r} and "
                     f"is not a vapnev_tf export (it holds {listing or 'nothing'}); inside a run "
                     "directory an export may only go to WORKDIR/export, a new directory or a "
                     "previous export.")


def move_into_place(tmp_dir: str, export_dir: str) -> None:
  """Renames the finished export `tmp_dir` to `export_dir`, replacing a previous export there
  (moved aside first, removed after), so `export_dir` never holds half an export."""
  old_dir = None
  if tf.io.gfile.exists(export_dir):
    old_dir = f"{export_dir}.old-{uuid.uuid4().hex[:8]}"
    tf.io.gfile.rename(export_dir, old_dir)
  tf.io.gfile.rename(tmp_dir, export_dir)
  if old_dir is not None:
    tf.io.gfile.rmtree(old_dir)
