"""Where CelebA and CIFAR-10 come from: official files, else a prepared TFDS directory, else a
DatasetUnavailableError that says how to fix it. Never downloads (docs/design.md §10).

Detection order in `data_dir` (the `--data_dir` flag):
  celeb_a: `img_align_celeba/` + `list_eval_partition.txt` (official files), then a prepared
           TFDS `celeb_a` (`data_dir/celeb_a/<version>/dataset_info.json`).
  cifar10: `cifar-10-batches-bin/`, `data_dir` itself holding `data_batch_1.bin`,
           `cifar-10-binary.tar.gz`, then a prepared TFDS `cifar10`; the Python version
           (`cifar-10-python.tar.gz`, `cifar-10-batches-py/`) alone is refused.
Without a data_dir only TFDS's default directory is searched for a prepared dataset. All checks
look at the file system only, so a machine without internet fails in well under a second.
"""
import dataclasses
import glob
import os

import tensorflow_datasets as tfds

from vapnev_tf.datasets import celeb_a
from vapnev_tf.datasets import cifar10
from vapnev_tf.errors import DatasetUnavailableError

LOCAL_DATASETS = ("celeb_a", "cifar10")

_OFFICIAL_LAYOUT = {
    "celeb_a": (f"DIR/{celeb_a.IMAGES_DIR}/000001.jpg ... and DIR/{celeb_a.PARTITION_FILE} "
                "(CelebA's aligned-and-cropped images and its Eval partition file)"),
    "cifar10": (f"DIR/{cifar10.ARCHIVE} or its extracted DIR/{cifar10.FOLDER}/ (CIFAR-10's binary "
                "version)"),
}

_OFFICIAL_NAMES = {
    "celeb_a": (celeb_a.IMAGES_DIR + "/", celeb_a.PARTITION_FILE),
    "cifar10": (cifar10.FOLDER + "/", cifar10.ARCHIVE),
}


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a dataset was found: `kind` "celeb_a_files", "cifar10_files" or "tfds"."""

  kind: str
  location: object  # celeb_a.OfficialFiles, a cifar10 path, or a prepared tfds builder


def locate(name: str, data_dir: str | None) -> Source:
  """The source of dataset `name` (in LOCAL_DATASETS) under `data_dir`, by the order above."""
  if name not in LOCAL_DATASETS:
    raise ValueError(f"locate: name must be one of {LOCAL_DATASETS}, got {name!r}.")
  if data_dir is not None:
    data_dir = os.path.expanduser(data_dir)
    if not os.path.isdir(data_dir):
      raise DatasetUnavailableError(f"{name}: data_dir {data_dir!r} is not a directory. "
                                    + _how_to_fix(name))
    if name == "celeb_a":
      files = celeb_a.find_official_files(data_dir)
      if files is not None:
        return Source("celeb_a_files", files)
    else:
      path = cifar10.find_binary(data_dir)
      if path is not None:
        return Source("cifar10_files", path)
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return Source("tfds", builder)
  raise DatasetUnavailableError(_not_found_message(name, data_dir, builder.data_dir))


def _not_found_message(name: str, data_dir: str | None, tfds_dir: str) -> str:
  if data_dir is None:
    where = (f"no --data_dir was given, and TFDS's default directory has no prepared {name} "
             f"(looked for {os.path.join(tfds_dir, 'dataset_info.json')})")
  else:
    official = " and ".join(os.path.join(data_dir, f) for f in _OFFICIAL_NAMES[name])
    where = (f"data_dir {data_dir!r} holds neither the official files (looked for {official}) "
             f"nor a prepared TFDS {name} (looked for "
             f"{os.path.join(tfds_dir, 'dataset_info.json')})")
  other = sorted(glob.glob(os.path.join(os.path.dirname(tfds_dir), "*", "dataset_info.json")))
  if other:
    where += (f"; found other TFDS versions {[os.path.basename(os.path.dirname(p)) for p in other]}"
              f", but this TFDS reads version {os.path.basename(tfds_dir)}")
  return f"dataset {name!r} is not available: {where}. " + _how_to_fix(name)


def _how_to_fix(name: str) -> str:
  return (f"Fix it in one of two ways: (1) put the official files in a directory DIR "
          f"({_OFFICIAL_LAYOUT[name]}) and pass --data_dir=DIR; or (2) prepare TFDS's {name} on a "
          f"machine with internet (tfds.builder('{name}', data_dir=DIR).download_and_prepare()), "
          f"copy DIR here and pass --data_dir=DIR. vapnev_tf never downloads {name} itself.")
