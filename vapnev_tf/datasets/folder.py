"""User images in a folder: PNG/JPEG files, flat or with train/ and test/ subfolders.

    split_files(source, root)         -> (train paths, test paths or None), sorted
    common_image_shape(source, files) -> the (H, W, C) every file has (from the headers)
"""
import os
import pathlib

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_SPLIT_DIRS = ("test", "validation", "val")
PIL_MODE_CHANNELS = {"L": 1, "RGB": 3}


def split_files(source: str, root: str) -> tuple[list[str], list[str] | None]:
  """Sorted image paths of the train split and of the test split (None when there is none)."""
  if not os.path.isdir(root):
    raise ValueError(f"{source}: directory {root!r} does not exist.")
  train_dir = os.path.join(root, "train")
  if not os.path.isdir(train_dir):  # flat layout: the images are the files in `root`
    return _image_files(source, root, recursive=False), None
  test_dir = next((os.path.join(root, name) for name in TEST_SPLIT_DIRS
                   if os.path.isdir(os.path.join(root, name))), None)
  test_files = None if test_dir is None else _image_files(source, test_dir, recursive=True)
  return _image_files(source, train_dir, recursive=True), test_files


def _image_files(source: str, directory: str, recursive: bool) -> list[str]:
  paths = pathlib.Path(directory).rglob("*") if recursive else pathlib.Path(directory).iterdir()
  files = sorted(str(p) for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
  if not files:
    raise ValueError(f"{source}: no {'/'.join(IMAGE_SUFFIXES)} images in {directory!r}.")
  for f in files:  # TensorFlow's string tensors take UTF-8 only
    try:
      f.encode("utf-8")
    except UnicodeEncodeError:
      raise ValueError(f"{source}: the file name {os.fsencode(f)!r} is not valid UTF-8; rename "
                       "it (e.g. with convmv or mv) so that its name is UTF-8 text.") from None
  return files


# Images larger than this are refused from their header, before anything is decoded (a decoded
# 20000x20000 RGB image alone needs 1.2 GB, per copy).
MAX_IMAGE_PIXELS = 4096 * 4096


def image_file_shape(source: str, path: str) -> tuple[int, int, int]:
  """(H, W, C) of an image file from its header, without decoding the pixels."""
  try:
    with Image.open(path) as image:
      mode, (width, height) = image.mode, image.size
  except Image.DecompressionBombError as err:  # far larger than any image a VAE trains on
    raise ValueError(f"{source}: image {path!r} is too large to read safely ({err}); resize it "
                     "to the training size first.") from None
  except OSError as err:
    raise ValueError(f"{source}: cannot read image {path!r}: {err}") from err
  if height * width > MAX_IMAGE_PIXELS:
    raise ValueError(f"{source}: image {path!r} is {height}x{width} (HxW), larger than the "
                     f"{MAX_IMAGE_PIXELS} pixels an image may have here; resize it to the "
                     "training size first.")
  if mode not in PIL_MODE_CHANNELS:
    raise ValueError(f"{source}: image {path!r} has mode {mode!r}; only 8-bit grayscale ('L') "
                     "and RGB images are accepted (convert e.g. with Pillow's Image.convert).")
  return height, width, PIL_MODE_CHANNELS[mode]


def common_image_shape(source: str, files: list[str]) -> tuple[int, int, int]:
  """The (H, W, C) shared by all `files`; ValueError naming the first file that differs."""
  first = image_file_shape(source, files[0])
  for path in files[1:]:
    shape = image_file_shape(source, path)
    if shape[2] != first[2]:
      raise ValueError(f"{source}: grayscale/RGB mix: {files[0]!r} has {first[2]} channel(s) but "
                       f"{path!r} has {shape[2]}; convert all images to one mode.")
    if shape != first:
      raise ValueError(f"{source}: mixed image sizes: {files[0]!r} is {first[0]}x{first[1]} but "
                       f"{path!r} is {shape[0]}x{shape[1]} (HxW); resize them to one size.")
  return first
