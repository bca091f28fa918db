"""Exports a run's checkpoint as a SavedModel with tensor signatures (`vapnev_tf.export.cli`).

    python -m vapnev_tf.export --workdir=DIR [--checkpoint=PREFIX] [--export_dir=OUT] [--overwrite]

Default checkpoint: the newest readable one; default --export_dir: WORKDIR/export. --overwrite only
ever replaces a previous export. Holds the run directory's lock while it reads it.
"""
from vapnev_tf.export import cli

if __name__ == "__main__":
  cli.run()
