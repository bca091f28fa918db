"""Input pipeline: 8-bit images -> dequantised float32 batches in [0, 256) for training and eval.

Sources, chosen by `DataConfig.dataset`:
  "fashion_mnist"  28x28x1; the Debian IDX files in `fashion_mnist_dir` when present (offline),
                   otherwise TFDS `fashion_mnist`.
  "mnist"          28x28x1, TFDS (downloaded when not prepared in `data_dir`).
  "cifar10"        32x32x3, the official binary files in `data_dir`, else a prepared TFDS
                   `cifar10` (see `vapnev_tf.datasets.locate` for the order); never downloaded.
  "celeb_a"        64x64x3, the official `img_align_celeba/` + `list_eval_partition.txt` in
                   `data_dir`, else a prepared TFDS `celeb_a`; never downloaded. Both are
                   cropped and resized as in Real NVP by the same `celeb_a.crop_resize`.
  "npz:PATH"       an `.npz` with a uint8 array `images` (N, H, W[, C]), optionally `test_images`.
  "folder:PATH"    PNG/JPEG files: `PATH/train/<label>/*` (the `tfds.folder_dataset.ImageFolder`
                   layout, with an optional `test`, `validation` or `val` split directory) or files
                   directly in `PATH`. Every file is decode-checked when the source is opened.
A source without a test split gives a fixed, seeded `validation_fraction` of its images to "test".
The files are read by `vapnev_tf.datasets` (`fashion_mnist`, `npz`, `folder`, `celeb_a`,
`cifar10`, `locate`); this module chooses the source and builds the pipeline on it.

`load_labels` gives the class labels of a split where the source has them; only evaluations read
them (the latent figures' probe and judge), never training.

Every element leaves `load_images` as uint8 (H, W, C). `train_dataset` and `eval_dataset` add the
uniform dequantisation x = pixel + u, u ~ U[0, 1), from stateless random ops keyed by the example's
index (and the epoch, for training), so that every stream is reproducible under its seed.
"""
import dataclasses
import hashlib
import logging
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vapnev_tf import seeds
from vapnev_tf import validation
from vapnev_tf.config_fields import RESUMABLE
from vapnev_tf.config_fields import ConfigBase
from vapnev_tf.config_fields import bool_field
from vapnev_tf.config_fields import float_field
from vapnev_tf.config_fields import int_field
from vapnev_tf.config_fields import str_field
from vapnev_tf.datasets import celeb_a as celeb_a_lib
from vapnev_tf.datasets import cifar10 as cifar10_lib
from vapnev_tf.datasets import fashion_mnist as fashion_mnist_lib
from vapnev_tf.datasets import folder as folder_lib
from vapnev_tf.datasets import images as images_lib
from vapnev_tf.datasets import locate as locate_lib
from vapnev_tf.datasets import npz as npz_lib
from vapnev_tf.errors import DatasetUnavailableError

DATASET_NAMES = ("fashion_mnist", "mnist", "cifar10", "celeb_a")
SPLITS = ("train", "test")

_TFDS_IMAGE_SHAPES = {
    "fashion_mnist": (28, 28, 1),
    "mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (64, 64, 3),
}
# The paper flips its two datasets (Sec. 4.1). Mirrored digits are not digits and Fashion-MNIST
# likelihoods are usually reported without augmentation, so flips are off there and for user data.
_FLIP_BY_DEFAULT = ("cifar10", "celeb_a")


# Fixed, so the held-out test images do not change with the training seed.
_HOLDOUT_SEED = 0


_log = logging.getLogger(__name__)


def _check_dataset(value: str, label: str) -> None:
  """Field check of `DataConfig.dataset` (and of --dataset): what `_parse_source` accepts."""
  try:
    _parse_source(value)
  except ValueError:
    kind, sep, _ = value.partition(":")
    if sep and kind in ("npz", "folder"):
      raise ValueError(f"{label}={value!r} names no path; expected '{kind}:PATH'.") from None
    raise ValueError(f"Unknown dataset {value!r}: {label} must be one of {DATASET_NAMES}, "
                     "'npz:PATH' or 'folder:PATH'.") from None


_FREE_ON_RESUME = dict(resume=RESUMABLE, why="where files are, or how big evaluation batches "
                       "are, does not change what the model is trained on")


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigBase):
  """Everything the input pipeline needs; validated on construction.

  Each field's default, bounds and help live in its declaration below (`vapnev_tf.config_fields`);
  the `--flag`s of `vapnev_tf.train` are generated from them. `seed` has no flag of its own: it is
  the run's --seed.
  """

  dataset: str = str_field("fashion_mnist", f"One of {DATASET_NAMES}, 'npz:PATH' or "
                           "'folder:PATH'.", nonempty=False, check=_check_dataset)
  batch_size: int = int_field(64, "GLOBAL training batch size (split evenly over replicas).",
                              lo=1)
  eval_batch_size: int = int_field(256, "GLOBAL evaluation batch size.", lo=1, **_FREE_ON_RESUME)
  data_dir: str | None = str_field(None, "Where the data set is: the official CelebA/CIFAR-10 "
                                   "files or a TFDS data_dir prepared elsewhere (README: Data; "
                                   "unset: TFDS's default, ~/tensorflow_datasets).",
                                   optional=True, flag_none="", **_FREE_ON_RESUME)
  fashion_mnist_dir: str = str_field("/usr/share/datasets/fashion-mnist", "Directory of the Debian "
                                     "dataset-fashion-mnist IDX files.", **_FREE_ON_RESUME)
  flip: bool | None = bool_field(None, "Random horizontal flips in training: the dataset's default "
                                 "(on for cifar10/celeb_a), on or off.", optional=True,
                                 flag_map={"default": None, "on": True, "off": False})
  shuffle_buffer: int = int_field(10_000, "Shuffle buffer (examples).", lo=1)
  seed: int = int_field(0, "Seed of the training shuffle, flips and dequantisation noise (the "
                        "run's --seed).", lo=0, flag="seed", define_flag=False)
  validation_fraction: float = float_field(0.1, "Share held out as 'test' when the source has "
                                           "no test split.", lo=0.0, lo_open=True, hi=1.0,
                                           hi_open=True)
  train_take: int | None = int_field(
      None, "Use only the first N training images (None, flag 0: all).", lo=1, optional=True,
      flag_none=0)
  eval_take: int | None = int_field(
      None, "Evaluate only the first N test images (None, flag 0: all).", lo=1, optional=True,
      flag_none=0)
  eval_drop_remainder: bool = bool_field(False, "Drop the last partial evaluation batch (default: "
                                         "evaluate every example).", flag=None)


# ----------------------------------------------------------------------------- public entry points


def image_shape(dataset: str, cfg: DataConfig | None = None) -> tuple[int, int, int]:
  """(H, W, C) of the images `load_images` yields for `dataset`.

  Named datasets answer from a table; an npz source reads its `images` array (npz members cannot
  be memory-mapped); a folder source reads the header of its first training image only. `cfg` is
  accepted so callers can pass their config, but no shape depends on its other fields (and
  nothing is looked up: see `check_available`).
  """
  del cfg  # Unused: see the docstring.
  kind, value = _parse_source(dataset)
  if kind == "tfds":
    return _TFDS_IMAGE_SHAPES[value]
  if kind == "npz":
    train_images, _ = npz_lib.read_npz(dataset, value)
    return tuple(int(d) for d in train_images.shape[1:])
  train_files, _ = folder_lib.split_files(dataset, value)
  return folder_lib.image_file_shape(dataset, train_files[0])


def source_files(cfg: DataConfig) -> dict | None:
  """What a `folder:` source holds: {"train_files": n, "test_files": m (None without a test
  folder), "sha256": over the sorted relative file names}; None for other sources.

  Recorded in the run directory, so that a resumed run notices images added to or removed from
  the folder: the held-out test split is drawn from the file list, and a changed list would
  silently redraw it (mixing earlier test images into training).
  """
  kind, root = _parse_source(cfg.dataset)
  if kind != "folder":
    return None
  train_files, test_files = folder_lib.split_files(cfg.dataset, root)
  digest = hashlib.sha256()
  for split, files in (("train", train_files), ("test", test_files or [])):
    for f in files:
      name = os.path.relpath(f, root).encode("utf-8", "surrogateescape")
      digest.update(split.encode() + b"\0" + name + b"\0")
  return {"train_files": len(train_files),
          "test_files": None if test_files is None else len(test_files),
          "sha256": digest.hexdigest()}


def check_available(cfg: DataConfig) -> str:
  """Where `cfg.dataset` will be read from; DatasetUnavailableError at once if nowhere.

  For `celeb_a` and `cifar10` this looks at the file system only (official files in
  `cfg.data_dir`, else a prepared TFDS directory; `vapnev_tf.datasets.locate`), so a machine
  without the data fails in well under a second instead of retrying downloads. Trainers call it
  before building anything. Other sources are checked when they are opened (`load_images`).
  """
  kind, value = _parse_source(cfg.dataset)
  if kind == "tfds" and value in locate_lib.LOCAL_DATASETS:
    source = locate_lib.locate(value, cfg.data_dir)
    where = source.location.data_dir if source.kind == "tfds" else source.location
    return f"{value}: {where} ({source.kind})"
  return cfg.dataset


def load_images(cfg: DataConfig, split: str) -> tf.data.Dataset:
  """The raw images of `split` ("train" or "test"): uint8 (H, W, C) each, in a fixed order.

  The order is the source's (sorted file names for folders); `cfg.train_take` / `cfg.eval_take`
  keep only the first examples. Raises ValueError (DatasetUnavailableError when a dataset cannot
  be obtained) with a message naming the source.
  """
  _check_split(split)
  kind, value = _parse_source(cfg.dataset)
  if kind == "npz":
    ds = _npz_dataset(cfg, value, split)
  elif kind == "folder":
    ds = _folder_dataset(cfg, value, split)
  elif value == "fashion_mnist":
    ds = _fashion_mnist_dataset(cfg, split)
  elif value in locate_lib.LOCAL_DATASETS:
    ds = _local_or_prepared_dataset(cfg, value, split)
  else:
    ds = _tfds_dataset(cfg, value, split)
  take = cfg.train_take if split == "train" else cfg.eval_take
  return ds if take is None else ds.take(take)


def load_labels(cfg: DataConfig, split: str) -> np.ndarray | None:
  """The class labels of `split`, int64 `(N,)` aligned with `load_images(cfg, split)`, or None.

  Only evaluations read labels (training is unsupervised). Sources with labels: Fashion-MNIST's
  IDX label files (or TFDS's `label` feature when the IDX files are absent), TFDS datasets with a
  `label` feature, CIFAR-10's binary records, and an npz's optional `labels` / `test_labels`
  arrays (aligned with `images` / `test_images`; held out like the images when there is no test
  split). CelebA and folder sources have none: None. `train_take` / `eval_take` apply.
  """
  _check_split(split)
  kind, value = _parse_source(cfg.dataset)
  if kind == "npz":
    labels = _npz_labels(cfg, value, split)
  elif kind == "folder" or value == "celeb_a":
    labels = None
  elif value == "fashion_mnist":
    labels = _fashion_mnist_labels(cfg, split)
  elif value == "cifar10":
    source = locate_lib.locate(value, cfg.data_dir)
    labels = (cifar10_lib.read_labels(source.location, split) if source.kind == "cifar10_files"
              else _tfds_builder_labels(source.location, split))
  else:
    labels = _tfds_labels(cfg, value, split)
  if labels is None:
    return None
  take = cfg.train_take if split == "train" else cfg.eval_take
  return labels.astype(np.int64) if take is None else labels[:take].astype(np.int64)


def num_examples(cfg: DataConfig, split: str) -> int:
  """Number of images in `split` after `train_take` / `eval_take`: the size of one epoch."""
  return _count(load_images(cfg, split), cfg.dataset)


def flip_enabled(cfg: DataConfig) -> bool:
  """Whether training images are randomly mirrored: `cfg.flip`, or the dataset's default."""
  if cfg.flip is not None:
    return cfg.flip
  return cfg.dataset in _FLIP_BY_DEFAULT


def dequantize(images_uint8, seed) -> tf.Tensor:
  """Uniform dequantisation: float32 `pixel + u`, u ~ U[0, 1) i.i.d., every value in [0, 256).

  Args:
    images_uint8: uint8 tensor of any shape, e.g. one image (H, W, C) or a batch (B, H, W, C).
    seed: stateless seed, a shape-[2] int tensor, or a non-negative Python int.

  Returns:
    float32 tensor of the same shape whose floor is exactly the input pixel; equal seeds give
    equal noise.
  """
  images = tf.convert_to_tensor(images_uint8)
  if images.dtype != tf.uint8:
    raise ValueError(f"dequantize expects uint8 images, got dtype {images.dtype.name}.")
  pixels = tf.cast(images, tf.float32)
  noise = tf.random.stateless_uniform(tf.shape(pixels), seed=_seed_pair(seed), dtype=tf.float32)
  return _add_noise(pixels, noise)


def train_dataset(cfg: DataConfig, input_context: tf.distribute.InputContext | None = None,
                  start_batch: int = 0) -> tf.data.Dataset:
  """The endless training stream: float32 batches (B, H, W, C) with values in [0, 256).

  Shuffled (buffer `cfg.shuffle_buffer`, reshuffled every epoch), flipped if `flip_enabled(cfg)`,
  dequantised with noise keyed by (cfg.seed, epoch, example index): fresh noise every epoch, the
  same stream for the same seed. B is `cfg.batch_size`, or the per-replica share of it when an
  `input_context` is given, in which case this pipeline reads only its shard. Partial batches are
  dropped so every replica gets equal batches. `start_batch` = n gives exactly the stream of
  `train_dataset(...).skip(n)` (how a resumed run continues), but skips before the per-example
  augmentation, so the skipped images cost only their shuffle.
  """
  validation.check_int("train_dataset.start_batch", start_batch, 0)
  images = load_images(cfg, "train")
  total = _count(images, cfg.dataset)
  if total < cfg.batch_size:
    raise ValueError(f"{cfg.dataset}: only {total} training images, fewer than one global batch "
                     f"(batch_size={cfg.batch_size}); lower batch_size, raise train_take or add "
                     "images.")
  indexed, batch = _shard(images.enumerate(), cfg.batch_size, input_context)
  epoch_size = _count(indexed, cfg.dataset)
  if epoch_size < batch:
    raise ValueError(f"{cfg.dataset}: each input pipeline gets {epoch_size} training images, "
                     f"fewer than one per-replica batch of {batch}.")
  flip = flip_enabled(cfg)

  def augment(position, example):
    index, image = example
    key = _element_key(cfg.seed, seeds.DATA_TRAIN, position // epoch_size, index)
    flip_key, noise_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    if flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=flip_key)
    return dequantize(image, noise_key)

  ds = indexed.shuffle(cfg.shuffle_buffer, seed=cfg.seed, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate()  # (position in the stream, (example index, image))
  if start_batch:
    ds = ds.skip(start_batch * batch)  # positions are numbered first, so the noise is unchanged
  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_deterministic_options())


def eval_dataset(cfg: DataConfig, seed: int = 0,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
  """One pass over the test split: float32 batches (B, H, W, C) in [0, 256), never flipped.

  The noise of each example is keyed by (seed, example index), so two passes with the same seed
  give identical tensors. B is `cfg.eval_batch_size` (or its per-replica share); the last partial
  batch is kept unless `cfg.eval_drop_remainder`.
  """
  validation.check_int("eval_dataset.seed", seed, 0)
  indexed, batch = _shard(load_images(cfg, "test").enumerate(), cfg.eval_batch_size,
                          input_context)
  if cfg.eval_drop_remainder and _count(indexed, cfg.dataset) < batch:
    raise ValueError(f"{cfg.dataset}: fewer test images than one evaluation batch of {batch} "
                     "with eval_drop_remainder=True; nothing would be evaluated.")
  ds = indexed.map(
      lambda index, image: dequantize(image, _element_key(seed, seeds.DATA_TEST, index)),
      num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch, drop_remainder=cfg.eval_drop_remainder)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_deterministic_options())


def distributed_dataset(strategy: tf.distribute.Strategy, cfg: DataConfig, split: str = "train",
                        seed: int = 0):
  """`train_dataset` or `eval_dataset` (split "test", noise `seed`) spread over `strategy`.

  Each input pipeline reads its own shard and batches its replica's share of the global batch.
  """
  _check_split(split)
  field = "batch_size" if split == "train" else "eval_batch_size"
  global_batch = getattr(cfg, field)
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise ValueError(f"DataConfig.{field}={global_batch} must be divisible by the number of "
                     f"replicas ({replicas}) so every replica gets an equal share.")
  if split == "train":
    return strategy.distribute_datasets_from_function(lambda ctx: train_dataset(cfg, ctx))
  return strategy.distribute_datasets_from_function(lambda ctx: eval_dataset(cfg, seed, ctx))


# ------------------------------------------------------------------------------ pipeline helpers


def _add_noise(pixels, noise):
  """pixels + noise, clamped below pixels + 1 (both float32, same shape)."""
  # In float32, p + u can round up to p + 1 (255 + 0.99999994 == 256.0); the largest float32
  # below p + 1 keeps floor(x) == p and x < 256.
  return tf.minimum(pixels + noise, tf.math.nextafter(pixels + 1.0, pixels))


def _seed_pair(seed) -> tf.Tensor:
  """A stateless-op seed (shape [2], int64) from a Python int or a shape-[2] tensor."""
  if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
    validation.check_int("dequantize.seed", int(seed), 0)
    return tf.constant([int(seed), 0], tf.int64)
  return tf.cast(seed, tf.int64)


def _element_key(seed: int, stream: int, *counters) -> tf.Tensor:
  """A shape-[2] stateless seed unique to (seed, stream, *counters)."""
  key = tf.constant([seed, stream], tf.int64)
  for counter in counters:
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(counter, tf.int64))
  return key


def _shard(ds, global_batch, input_context):
  """(this pipeline's shard of `ds`, its batch size): the whole of both without a context."""
  if input_context is None:
    return ds, global_batch
  batch = input_context.get_per_replica_batch_size(global_batch)
  return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id), batch


def _count(ds: tf.data.Dataset, source: str) -> int:
  n = int(ds.cardinality())
  if n < 0:
    raise ValueError(f"{source}: the number of examples is unknown (cardinality {n}).")
  if n == 0:
    raise ValueError(f"{source}: the dataset is empty.")
  return n


def _deterministic_options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


# ------------------------------------------------------------------------------------- sources


def _local_or_prepared_dataset(cfg: DataConfig, name: str, split: str) -> tf.data.Dataset:
  """celeb_a / cifar10 from official files or a prepared TFDS directory; never a download."""
  source = locate_lib.locate(name, cfg.data_dir)
  where = source.location.data_dir if source.kind == "tfds" else source.location
  _log.info("%s/%s: reading %s (%s)", name, split, where, source.kind)
  if source.kind == "celeb_a_files":
    return source.location.dataset(split)
  if source.kind == "cifar10_files":
    return tf.data.Dataset.from_tensor_slices(cifar10_lib.read_split(source.location, split))
  ds = source.location.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda example: example["image"], num_parallel_calls=tf.data.AUTOTUNE)
  if name == "celeb_a":
    ds = ds.map(celeb_a_lib.crop_resize, num_parallel_calls=tf.data.AUTOTUNE)
  return ds


def _tfds_dataset(cfg: DataConfig, name: str, split: str) -> tf.data.Dataset:
  """TFDS `name`/`split` as uint8 images, downloaded if needed (mnist, fashion_mnist)."""
  try:
    ds = tfds.load(name, split=split, data_dir=cfg.data_dir, download=True, shuffle_files=False)
  except Exception as err:  # TFDS raises many types (network, checksum, manual download...).
    raise DatasetUnavailableError(
        f"dataset {name!r}: TFDS could not provide split {split!r} (data_dir={cfg.data_dir!r}): "
        f"{type(err).__name__}: {err}. Run once on a machine with internet access so TFDS can "
        "download and prepare it, then copy that data_dir here.") from err
  return ds.map(lambda example: example["image"], num_parallel_calls=tf.data.AUTOTUNE)


# The one crop-and-resize of both CelebA sources (the name the tests and older code use).
_celeb_a_crop_resize = celeb_a_lib.crop_resize


def _fashion_mnist_dataset(cfg: DataConfig, split: str) -> tf.data.Dataset:
  """Fashion-MNIST from the Debian IDX files when present, else from TFDS."""
  images_name, labels_name = fashion_mnist_lib.FILES[split]
  images_path = os.path.join(cfg.fashion_mnist_dir, images_name)
  labels_path = os.path.join(cfg.fashion_mnist_dir, labels_name)
  if os.path.isfile(images_path) and os.path.isfile(labels_path):
    _log.info("fashion_mnist/%s: reading IDX files in %s", split, cfg.fashion_mnist_dir)
    return tf.data.Dataset.from_tensor_slices(
        fashion_mnist_lib.read_split(images_path, labels_path))
  _log.info("fashion_mnist/%s: no IDX files in %s, trying TFDS", split, cfg.fashion_mnist_dir)
  try:
    return _tfds_dataset(cfg, "fashion_mnist", split)
  except DatasetUnavailableError as err:
    raise DatasetUnavailableError(
        f"dataset 'fashion_mnist': {images_path} and {labels_path} do not both exist and TFDS "
        f"could not download it (data_dir={cfg.data_dir!r}). Install the files with "
        "`apt-get install -y dataset-fashion-mnist` (or set fashion_mnist_dir to a copy), or use "
        f"a machine with internet access for TFDS. TFDS said: {err.__cause__}") from err


def _fashion_mnist_labels(cfg: DataConfig, split: str) -> np.ndarray:
  """Fashion-MNIST labels from the IDX file beside the images (else TFDS, as the images)."""
  images_name, labels_name = fashion_mnist_lib.FILES[split]
  labels_path = os.path.join(cfg.fashion_mnist_dir, labels_name)
  if os.path.isfile(os.path.join(cfg.fashion_mnist_dir, images_name)) and os.path.isfile(
      labels_path):
    return fashion_mnist_lib.read_idx(labels_path, fashion_mnist_lib.LABELS_MAGIC)
  return _tfds_labels(cfg, "fashion_mnist", split)


def _tfds_labels(cfg: DataConfig, name: str, split: str) -> np.ndarray | None:
  """TFDS `name`/`split`'s `label` feature in the images' order, None without one."""
  try:
    builder = tfds.builder(name, data_dir=cfg.data_dir)
    builder.download_and_prepare()
  except Exception as err:  # TFDS raises many types (network, checksum, manual download...).
    raise DatasetUnavailableError(
        f"dataset {name!r}: TFDS could not provide the labels of split {split!r} "
        f"(data_dir={cfg.data_dir!r}): {type(err).__name__}: {err}.") from err
  return _tfds_builder_labels(builder, split)


def _tfds_builder_labels(builder, split: str) -> np.ndarray | None:
  if "label" not in builder.info.features:
    return None
  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(lambda example: example["label"], num_parallel_calls=tf.data.AUTOTUNE)
  return np.concatenate(list(ds.batch(10_000).as_numpy_iterator()))





def _npz_dataset(cfg: DataConfig, path: str, split: str) -> tf.data.Dataset:
  train_images, test_images = npz_lib.read_npz(cfg.dataset, path)
  if test_images is None:
    indices = _holdout_indices(cfg.dataset, len(train_images), cfg.validation_fraction)[split]
    images = train_images[indices]
  else:
    images = train_images if split == "train" else test_images
  return tf.data.Dataset.from_tensor_slices(images)


def _npz_labels(cfg: DataConfig, path: str, split: str) -> np.ndarray | None:
  """An npz's `labels` (of `images`) / `test_labels` (of `test_images`) for `split`, or None."""
  train_images, test_images = npz_lib.read_npz(cfg.dataset, path)
  with np.load(path, allow_pickle=False) as npz:
    labels = {key: npz_lib.checked_labels(cfg.dataset, npz, key, len(images))
              for key, images in (("labels", train_images), ("test_labels", test_images))
              if key in npz.files and images is not None}
  if test_images is None:
    if "labels" not in labels:
      return None
    return labels["labels"][_holdout_indices(cfg.dataset, len(train_images),
                                             cfg.validation_fraction)[split]]
  return labels.get("labels" if split == "train" else "test_labels")


def _folder_dataset(cfg: DataConfig, root: str, split: str) -> tf.data.Dataset:
  train_files, test_files = folder_lib.split_files(cfg.dataset, root)
  shape = folder_lib.common_image_shape(cfg.dataset, train_files + (test_files or []))
  if test_files is None:
    indices = _holdout_indices(cfg.dataset, len(train_files), cfg.validation_fraction)[split]
    files = [train_files[i] for i in indices]
  else:
    files = train_files if split == "train" else test_files

  images_lib.check_decodable(cfg.dataset, train_files + (test_files or []), channels=shape[2],
                             fix="Re-export or remove it.")

  def decode(path):
    return tf.ensure_shape(images_lib.decode_file(path, shape[2]), shape)

  return tf.data.Dataset.from_tensor_slices(files).map(decode, num_parallel_calls=tf.data.AUTOTUNE)


def _holdout_indices(source: str, n: int, fraction: float) -> dict[str, np.ndarray]:
  """Sorted example indices of "train" and "test": test is the last `fraction` of a seeded
  permutation of range(n), at least one example and never all of them."""
  if n < 2:
    raise ValueError(f"{source}: {n} image(s) cannot be split into train and a held-out test set "
                     "(validation_fraction); add images.")
  n_test = min(n - 1, max(1, round(n * fraction)))
  permutation = np.random.default_rng(_HOLDOUT_SEED).permutation(n)
  return {"train": np.sort(permutation[:n - n_test]), "test": np.sort(permutation[n - n_test:])}


# ---------------------------------------------------------------------------------- validation


def _parse_source(dataset) -> tuple[str, str]:
  """("tfds", name), ("npz", path) or ("folder", path); ValueError for anything else."""
  forms = f"one of {DATASET_NAMES}, 'npz:PATH' or 'folder:PATH'"
  if not isinstance(dataset, str):
    raise ValueError(f"DataConfig.dataset must be a str ({forms}), got {dataset!r}.")
  if dataset in DATASET_NAMES:
    return "tfds", dataset
  kind, sep, path = dataset.partition(":")
  if sep and kind in ("npz", "folder"):
    if not path:
      raise ValueError(f"DataConfig.dataset={dataset!r} names no path; expected '{kind}:PATH'.")
    return kind, os.path.expanduser(path)
  raise ValueError(f"Unknown dataset {dataset!r}: expected {forms}.")


def _check_split(split):
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
