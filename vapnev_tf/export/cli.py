"""The export CLI: a run's checkpoint as a SavedModel (`saving.export_from_workdir`).

    python -m vapnev_tf.export --workdir=DIR [--checkpoint=PREFIX] [--export_dir=OUT] [--overwrite]

Holds the run directory's lock while it reads it; prints {"export_dir", "signatures"}.
"""
import json
import sys

from absl import app
from absl import flags

from vapnev_tf import console
from vapnev_tf import interrupts
from vapnev_tf import locking
from vapnev_tf.export.metadata import load_metadata
from vapnev_tf.export.saving import export_from_workdir


def _define_flags():
  flags.DEFINE_string("workdir", None, "Run directory written by vapnev_tf.train.")
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export (default: the latest).")
  flags.DEFINE_string("export_dir", None, "Output directory (default: WORKDIR/export).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing export_dir.")
  flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    with interrupts.raising("the export (its partial directory was removed; nothing was "
                            "written to the export directory)"):
      out = export_from_workdir(f.workdir, f.export_dir, f.checkpoint, f.overwrite)
  except (ValueError, OSError, locking.WorkdirLockedError) as e:  # bad input, run in use: 1 line
    print(f"vapnev_tf.export: error: {e}", file=sys.stderr)
    return 1
  except interrupts.Interrupted as e:
    print(f"vapnev_tf.export: {e}", file=sys.stderr)
    return 128 + e.signum
  print(json.dumps({"export_dir": out, "signatures": sorted(load_metadata(out)["signatures"])}))


def run():
  """Console script `vapnev-export`."""
  _define_flags()
  console.run_cli(main, "vapnev_tf.export")

