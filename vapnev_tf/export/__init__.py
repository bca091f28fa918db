"""SavedModel export of a trained VAPNEV (docs/design.md §11).

    python -m vapnev_tf.export --workdir=DIR [--checkpoint=PREFIX] [--export_dir=OUT] [--overwrite]

Modules, one job each: `module` (the exported `tf.Module`, its signatures and seeding),
`safety` (what an export directory may be), `metadata` (vapnev_metadata.json, from the model and
its run), `saving` (`export_model`, `export_from_workdir`), `cli` (the command line).
"""
from vapnev_tf.export.cli import run
from vapnev_tf.export.metadata import METADATA_FILE
from vapnev_tf.export.metadata import METADATA_FORMAT
from vapnev_tf.export.metadata import RESERVED_METADATA_KEYS
from vapnev_tf.export.metadata import load_metadata
from vapnev_tf.export.metadata import workdir_metadata
from vapnev_tf.export.module import FLOW_SIGNATURES
from vapnev_tf.export.module import VAE_SIGNATURES
from vapnev_tf.export.module import VapnevModule
from vapnev_tf.export.module import bin_centres
from vapnev_tf.export.module import derive_seeds
from vapnev_tf.export.module import stateless_seed
from vapnev_tf.export.safety import SAVED_MODEL_ENTRIES
from vapnev_tf.export.safety import STAGED_ENTRIES
from vapnev_tf.export.safety import check_export_dir
from vapnev_tf.export.safety import is_export
from vapnev_tf.export.saving import export_from_workdir
from vapnev_tf.export.saving import export_model

__all__ = ["FLOW_SIGNATURES", "METADATA_FILE", "METADATA_FORMAT", "RESERVED_METADATA_KEYS",
           "SAVED_MODEL_ENTRIES", "STAGED_ENTRIES", "VAE_SIGNATURES", "VapnevModule", "bin_centres",
           "check_export_dir", "derive_seeds", "export_from_workdir", "export_model", "is_export",
           "load_metadata", "run", "stateless_seed", "workdir_metadata"]
