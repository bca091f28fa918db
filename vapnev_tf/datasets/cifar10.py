"""CIFAR-10 from its official binary version, read with numpy (never unpickled).

Layout: `cifar-10-binary.tar.gz` or its extracted folder `cifar-10-batches-bin/` holding
`data_batch_1.bin` .. `data_batch_5.bin` (train, 10,000 images each) and `test_batch.bin`. Each
record is 1 label byte followed by 3072 pixel bytes: the 32x32 red plane, then green, then blue
(CHW), in the order TFDS's `cifar10` builder reads them. The Python version
(`cifar-10-python.tar.gz`, pickled batches) is refused: unpickling a file can run arbitrary code.
"""
import functools
import os
import tarfile
import zlib

import numpy as np

from vapnev_tf.errors import DatasetUnavailableError

ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
PYTHON_VERSION = ("cifar-10-python.tar.gz", "cifar-10-batches-py")
_RECORD = 1 + 32 * 32 * 3
_NUM_CLASSES = 10
_FIX = f"Download the binary version again ({ARCHIVE}, 170,052,171 bytes) and extract it afresh."


def find_binary(data_dir: str) -> str | None:
  """Path of the binary CIFAR-10 in `data_dir` (a folder or the archive), None when absent.

  Order: `data_dir/cifar-10-batches-bin/`, then `data_dir` itself when it holds
  `data_batch_1.bin`, then `data_dir/cifar-10-binary.tar.gz`. Only the Python version being there
  raises DatasetUnavailableError pointing to the binary version.
  """
  folder = os.path.join(data_dir, FOLDER)
  if os.path.isdir(folder):
    return folder
  if os.path.isfile(os.path.join(data_dir, SPLIT_FILES["train"][0])):
    return data_dir
  archive = os.path.join(data_dir, ARCHIVE)
  if os.path.isfile(archive):
    return archive
  for name in PYTHON_VERSION:
    path = os.path.join(data_dir, name)
    if os.path.exists(path):
      raise DatasetUnavailableError(
          f"cifar10: {path} is CIFAR-10's Python version, whose batches are pickles; vapnev_tf "
          f"never unpickles data (it could run code). Put the binary version ({ARCHIVE}, same "
          f"images, from the same CIFAR page) in {data_dir} instead, as the archive or extracted "
          f"to {FOLDER}/.")
  return None


def read_split(path: str, split: str) -> np.ndarray:
  """uint8 (N, 32, 32, 3) images of `split` ("train" or "test") from a `find_binary` path.

  ValueError naming the file for a missing member, a size that is not whole records, a label
  byte above 9 (a shifted or foreign file) or a damaged archive. Cached per (path, mtime, size).
  """
  if split not in SPLIT_FILES:
    raise ValueError(f"cifar10: split must be one of {tuple(SPLIT_FILES)}, got {split!r}.")
  stat = os.stat(path)
  return _read_split_cached(path, split, (stat.st_mtime_ns, stat.st_size))


def read_labels(path: str, split: str) -> np.ndarray:
  """uint8 (N,) class labels (0..9) of `split`, in the order of `read_split`'s images."""
  if split not in SPLIT_FILES:
    raise ValueError(f"cifar10: split must be one of {tuple(SPLIT_FILES)}, got {split!r}.")
  if os.path.isdir(path):
    blobs = [(os.path.join(path, name), _read_file(os.path.join(path, name)))
             for name in SPLIT_FILES[split]]
  else:
    blobs = _read_archive(path, SPLIT_FILES[split])
  return np.concatenate([_decode_records(where, raw, labels=True) for where, raw in blobs])


@functools.lru_cache(maxsize=4)
def _read_split_cached(path, split, stamp):
  del stamp  # Part of the cache key only.
  if os.path.isdir(path):
    blobs = [(os.path.join(path, name), _read_file(os.path.join(path, name)))
             for name in SPLIT_FILES[split]]
  else:
    blobs = _read_archive(path, SPLIT_FILES[split])
  images = [_decode_records(where, raw) for where, raw in blobs]
  return np.concatenate(images) if len(images) > 1 else images[0]


def _read_file(path: str) -> bytes:
  if not os.path.isfile(path):
    raise ValueError(f"cifar10: {path} does not exist; the binary CIFAR-10 folder holds "
                     f"{', '.join(SPLIT_FILES['train'] + SPLIT_FILES['test'])}. {_FIX}")
  with open(path, "rb") as f:
    return f.read()


def _read_archive(archive: str, names) -> list[tuple[str, bytes]]:
  """[(ARCHIVE!member, bytes)] of the members `FOLDER/name`, in the order of `names`."""
  wanted = {f"{FOLDER}/{name}": name for name in names}
  found = {}
  try:
    with tarfile.open(archive, "r:gz") as tar:
      for member in tar:  # one streaming pass; members are read, never extracted to disk
        name = wanted.get(member.name.lstrip("./"))
        if name is not None and member.isfile():
          found[name] = tar.extractfile(member).read()
  except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
    raise ValueError(f"cifar10: {archive} is damaged or truncated ({type(err).__name__}: {err}). "
                     f"{_FIX}") from err
  missing = [f"{FOLDER}/{name}" for name in names if name not in found]
  if missing:
    raise ValueError(f"cifar10: {archive} has no member {', '.join(missing)}; is it the binary "
                     f"CIFAR-10 archive? {_FIX}")
  return [(f"{archive}!{FOLDER}/{name}", found[name]) for name in names]


def _decode_records(where: str, raw: bytes, labels: bool = False) -> np.ndarray:
  """uint8 (N, 32, 32, 3) from N records of (label byte, CHW pixels); their (N,) labels when
  `labels`."""
  if not raw or len(raw) % _RECORD:
    raise ValueError(f"cifar10: {where} holds {len(raw)} bytes, not a whole number of "
                     f"{_RECORD}-byte records (1 label byte + 3072 pixel bytes). {_FIX}")
  records = np.frombuffer(raw, np.uint8).reshape(-1, _RECORD)
  bad = np.flatnonzero(records[:, 0] >= _NUM_CLASSES)
  if bad.size:
    raise ValueError(f"cifar10: {where}: record {bad[0]} has label byte {records[bad[0], 0]}, "
                     f"expected 0..9; the file is not CIFAR-10 binary data. {_FIX}")
  if labels:
    return records[:, 0].copy()
  return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
