"""User images in an .npz archive (`np.savez(path, images=..., test_images=..., labels=...)`).

    read_npz(source, path)                       -> (images, test_images or None), uint8 NHWC
    checked_labels(source, npz, key, num_images) -> int64 (N,) class labels
"""
import os
import zipfile
import zlib

import numpy as np


def read_npz(source: str, path: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(`images`, `test_images` or None) of an npz file, each uint8 (N, H, W, C)."""
  if not os.path.isfile(path):
    raise ValueError(f"{source}: file {path!r} does not exist.")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{source}: {path!r} is not an .npz archive (np.savez); it must hold a "
                     "uint8 array named 'images'.")
  with np.load(path, allow_pickle=False) as npz:
    if "images" not in npz.files:
      raise ValueError(f"{source}: no array named 'images' (found {sorted(npz.files)}); save "
                       "with np.savez(path, images=uint8_array_NHWC).")
    images = _checked_array(source, npz, "images")
    test_images = _checked_array(source, npz, "test_images") if "test_images" in npz.files else None
  if test_images is not None and test_images.shape[1:] != images.shape[1:]:
    raise ValueError(f"{source}: 'test_images' are {test_images.shape[1:]} but 'images' are "
                     f"{images.shape[1:]}; both must have the same (H, W, C).")
  return images, test_images


def _checked_array(source: str, npz, key: str) -> np.ndarray:
  """npz[key] as uint8 (N, H, W, C), C in (1, 3); (N, H, W) grayscale gains C = 1."""
  try:
    array = npz[key]
  except ValueError as err:  # numpy refuses object arrays when allow_pickle=False
    raise ValueError(f"{source}: cannot read array {key!r} ({err}); only plain uint8 arrays are "
                     "accepted, pickled object arrays are refused.") from err
  except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # a damaged member
    raise ValueError(f"{source}: array {key!r} is damaged ({type(err).__name__}: {err}); save the "
                     "file again with np.savez(path, images=uint8_array_NHWC).") from err
  if not isinstance(array, np.ndarray):  # numpy hands back a member without the .npy header raw
    raise ValueError(f"{source}: member {key!r} is not a numpy array (no .npy header: "
                     f"{type(array).__name__} of {len(array) if hasattr(array, '__len__') else '?'}"
                     " bytes); save the file with np.savez(path, images=uint8_array_NHWC).")
  if array.dtype != np.uint8:
    raise ValueError(f"{source}: array {key!r} has dtype {array.dtype}, expected uint8 pixel "
                     "values 0..255 (convert with np.clip(x, 0, 255).astype(np.uint8)).")
  if array.ndim == 3:
    array = array[..., np.newaxis]
  if array.ndim != 4 or array.shape[-1] not in (1, 3):
    raise ValueError(f"{source}: array {key!r} has shape {array.shape}, expected (N, H, W) or "
                     "(N, H, W, C) with C = 1 (grayscale) or 3 (RGB).")
  if array.shape[0] == 0:
    raise ValueError(f"{source}: array {key!r} is empty.")
  return array


def checked_labels(source: str, npz, key: str, num_images: int) -> np.ndarray:
  """npz[key] as int64 `(N,)`: non-negative integers, one per image of its images array."""
  try:
    labels = npz[key]
  except ValueError as err:  # numpy refuses object arrays when allow_pickle=False
    raise ValueError(f"{source}: cannot read array {key!r} ({err}); only plain integer arrays "
                     "are accepted.") from err
  if labels.dtype.kind not in "iu" or labels.ndim != 1:
    raise ValueError(f"{source}: array {key!r} is {labels.dtype} of shape {labels.shape}, "
                     "expected a 1-D integer array of class labels.")
  if len(labels) != num_images:
    raise ValueError(f"{source}: array {key!r} holds {len(labels)} labels for {num_images} "
                     "images; expected one label per image.")
  if len(labels) and labels.min() < 0:
    raise ValueError(f"{source}: array {key!r} has a negative label ({labels.min()}); expected "
                     "class indices 0, 1, ...")
  return labels.astype(np.int64)
