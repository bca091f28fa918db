"""Fashion-MNIST's IDX files (as the Debian package `dataset-fashion-mnist` installs them).

    read_split(images_path, labels_path) -> uint8 (N, 28, 28, 1)
    read_idx(path, magic)                -> the uint8 array of one gzip-compressed IDX file
"""
import gzip
import zlib

import numpy as np

# File names of each split (images, labels) in the directory `DataConfig.fashion_mnist_dir`.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension (count)


def read_split(images_path: str, labels_path: str) -> np.ndarray:
  """uint8 (N, 28, 28, 1) images of one IDX split; the labels file is read only to validate N."""
  images = read_idx(images_path, IMAGES_MAGIC)  # (N, rows, cols)
  labels = read_idx(labels_path, LABELS_MAGIC)  # (N,)
  if images.shape[1:] != (28, 28):
    raise ValueError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                     "expected 28x28 Fashion-MNIST images.")
  if labels.shape[0] != images.shape[0]:
    raise ValueError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                     f"{labels.shape[0]} labels; one of the files is corrupt.")
  return images[..., np.newaxis]


def read_idx(path: str, magic: int) -> np.ndarray:
  """The uint8 array of a gzip-compressed IDX file, shaped by its header."""
  fix = "Reinstall with `apt-get install --reinstall dataset-fashion-mnist`."
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as err:
    raise ValueError(f"{path}: not a readable gzip file ({err}). {fix}") from err
  ndim = magic & 0xFF
  offset = 4 + 4 * ndim  # 16 bytes for images, 8 for labels
  found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
  if found != magic or len(raw) < offset:
    raise ValueError(f"{path}: IDX magic number {found}, expected {magic}. {fix}")
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  expected_size = offset + int(np.prod(shape))
  if len(raw) != expected_size:
    raise ValueError(f"{path}: {len(raw)} bytes, but its header {shape} needs {expected_size}. "
                     f"{fix}")
  return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)
