"""CelebA: Real NVP's crop and resize, and the official aligned-and-cropped files.

The official files are the folder `img_align_celeba/` (202,599 JPEGs of 218x178x3, extracted from
`img_align_celeba.zip`) and `list_eval_partition.txt`, one line `NAME PARTITION` per image with
PARTITION 0 = train, 1 = validation, 2 = test. vapnev_tf's "train" split is partition 0 and its
"test" split partition 2, as TFDS's `celeb_a` train/test splits; validation is not used.
"""
import dataclasses
import functools
import os

import tensorflow as tf

from vapnev_tf.datasets import images as images_lib
from vapnev_tf.errors import DatasetUnavailableError

IMAGES_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
PARTITIONS = {"train": 0, "validation": 1, "test": 2}
RAW_SHAPE = (218, 178, 3)

# Real NVP's CelebA window (research/real_nvp/real_nvp_multiscale_dataset.py: image[40:188, 15:163])
# 148x148 out of 218x178, centred horizontally and 5 rows below the vertical centre, on the face.
CROP = (40, 15, 148, 148)  # (offset_height, offset_width, height, width)
SIZE = (64, 64)

_FIX = (f"Re-extract it from img_align_celeba.zip, or remove its line from {PARTITION_FILE}.")


def crop_resize(image):
  """(218, 178, 3) uint8 -> (64, 64, 3) uint8: Real NVP's 148x148 window, antialiased resize.

  The one function both CelebA sources (TFDS and the official files) apply (docs/design.md §10).
  """
  image = tf.image.crop_to_bounding_box(image, *CROP)
  image = tf.image.resize(image, SIZE, method="bilinear", antialias=True)  # float32
  return tf.saturate_cast(tf.round(image), tf.uint8)


@dataclasses.dataclass(frozen=True)
class OfficialFiles:
  """CelebA's official files found in one directory."""

  images_dir: str
  partition_file: str

  def __str__(self):
    return f"{self.images_dir}/ with {self.partition_file}"

  def split_files(self, split: str) -> list[str]:
    """Paths of the images of `split` ("train", "validation" or "test"), in file-name order.

    Parses the partition file and checks that every image it names exists (ValueError naming the
    file otherwise); the images themselves are decode-checked by `dataset`.
    """
    if split not in PARTITIONS:
      raise ValueError(f"celeb_a: split must be one of {tuple(PARTITIONS)}, got {split!r}.")
    names = _read_partition(self.images_dir, self.partition_file,
                            _stamp(self.partition_file))[PARTITIONS[split]]
    if not names:
      raise ValueError(f"celeb_a: {self.partition_file} assigns no image to partition "
                       f"{PARTITIONS[split]} ({split}).")
    return [os.path.join(self.images_dir, name) for name in names]

  def dataset(self, split: str) -> tf.data.Dataset:
    """uint8 (64, 64, 3) images of `split`: decoded, cropped and resized like the TFDS path."""
    files = self.split_files(split)
    images_lib.check_decodable("celeb_a", files, channels=3, shape=RAW_SHAPE, fix=_FIX)
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.map(lambda path: tf.ensure_shape(images_lib.decode_file(path, 3), RAW_SHAPE),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(crop_resize, num_parallel_calls=tf.data.AUTOTUNE)


def find_official_files(data_dir: str) -> OfficialFiles | None:
  """The official files in `data_dir`, None when neither is there.

  DatasetUnavailableError when only one of the two is there (or only the zip), naming what is
  missing, because that is a mistake rather than another layout.
  """
  images_dir = os.path.join(data_dir, IMAGES_DIR)
  partition_file = os.path.join(data_dir, PARTITION_FILE)
  has_images, has_partition = os.path.isdir(images_dir), os.path.isfile(partition_file)
  if has_images and has_partition:
    return OfficialFiles(images_dir, partition_file)
  zip_path = images_dir + ".zip"
  if not has_images and os.path.isfile(zip_path):
    raise DatasetUnavailableError(
        f"celeb_a: found {zip_path} but not the folder {images_dir}/; extract it there first "
        f"(`cd {data_dir} && unzip {IMAGES_DIR}.zip`).")
  if has_images != has_partition:
    missing, found = ((partition_file, images_dir) if has_images else (images_dir, partition_file))
    raise DatasetUnavailableError(
        f"celeb_a: found {found} but not {missing}; CelebA's official files need both "
        f"{IMAGES_DIR}/ and {PARTITION_FILE} (from the dataset's Eval folder) in --data_dir.")
  return None


def _stamp(path: str) -> tuple[int, int]:
  stat = os.stat(path)
  return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _read_partition(images_dir: str, partition_file: str, stamp) -> dict[int, list[str]]:
  """{partition: sorted image names} from the partition file; every named image must exist."""
  del stamp  # Part of the cache key only: a rewritten file is read again.
  by_partition = {0: [], 1: [], 2: []}
  seen = set()
  with open(partition_file, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
        raise ValueError(f"celeb_a: {partition_file}, line {number}: expected 'NAME PARTITION' "
                         f"with PARTITION 0 (train), 1 (validation) or 2 (test), got "
                         f"{line.strip()!r}.")
      name = fields[0]
      if os.path.basename(name) != name or name in (".", ".."):
        raise ValueError(f"celeb_a: {partition_file}, line {number}: {name!r} is not a file name "
                         f"inside {IMAGES_DIR}/.")
      if name in seen:
        raise ValueError(f"celeb_a: {partition_file}, line {number}: {name!r} is listed twice.")
      seen.add(name)
      by_partition[int(fields[1])].append(name)
  if not seen:
    raise ValueError(f"celeb_a: {partition_file} lists no images.")
  present = {entry.name for entry in os.scandir(images_dir) if entry.is_file()}
  missing = sorted(seen - present)
  if missing:
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    raise ValueError(f"celeb_a: {partition_file} names {len(missing)} image(s) that are not in "
                     f"{images_dir}: {shown}. Re-extract img_align_celeba.zip there, or use the "
                     "partition file that came with your copy of the images.")
  return {partition: sorted(names) for partition, names in by_partition.items()}
