"""Tests for vapnev_tf.data: every source, dequantisation, flips, distribution and bad input."""
import contextlib
import dataclasses
import gzip
import os
import pathlib
import subprocess
import sys
import textwrap
import types
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vapnev_tf import data
from vapnev_tf.datasets import fashion_mnist as fashion_mnist_lib

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
# Mean pixel of the 60000 training images, measured independently of vapnev_tf with
# gzip + numpy.frombuffer(offset=16) on Debian dataset-fashion-mnist 0.0~git20200523.55506a9-1
# (train-images-idx3-ubyte.gz sha256 b0564c3e...8300c7): 72.94035223214286 = 0.28604 * 255,
# consistent with the well-known Fashion-MNIST mean of 0.2860.
FASHION_TRAIN_MEAN = 72.940
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ helpers


def _config(tmp_path, dataset, **kwargs):
  """A DataConfig that can never reach the network or the real Fashion-MNIST files by accident."""
  kwargs.setdefault("data_dir", str(tmp_path / "tfds"))
  kwargs.setdefault("fashion_mnist_dir", str(tmp_path / "no-fashion-mnist"))
  return data.DataConfig(dataset=dataset, **kwargs)


def _indexed_images(n, height=4, width=8, channels=1):
  """uint8 (n, H, W, C), image i holds i * 16 + column: left-right asymmetric, index readable."""
  assert n <= 15 and width <= 16
  columns = np.arange(width, dtype=np.uint8)[None, None, :, None]
  index = (np.arange(n, dtype=np.uint8) * 16)[:, None, None, None]
  return np.broadcast_to(index + columns, (n, height, width, channels)).copy()


def _write_npz(tmp_path, name="images.npz", **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return f"npz:{path}"


def _write_png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(path)


def _write_idx(path, magic, array):
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@contextlib.contextmanager
def _mock_prepared_tfds(tmp_path, num_examples):
  """tfds.testing.mock_data, with every TFDS dataset reported prepared in tmp_path / "tfds".

  celeb_a and cifar10 are read only when prepared (never downloaded), and mock_data does not mock
  the on-disk preparedness check.
  """
  (tmp_path / "tfds").mkdir(exist_ok=True)
  with tfds.testing.mock_data(num_examples=num_examples), mock.patch.object(
      tfds.core.DatasetBuilder, "is_prepared", lambda self: True):
    yield


def _first_batches(ds, count):
  return [batch.numpy() for batch in ds.take(count)]


def _all_images(cfg, split):
  return np.stack([image.numpy() for image in data.load_images(cfg, split)])


# ----------------------------------------------------------------------------- TFDS (mocked)


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("celeb_a", (64, 64, 3)),
                                         ("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1))])
def test_tfds_sources_under_mock_data(tmp_path, name, shape):
  # fashion_mnist_dir points nowhere (see _config), so fashion_mnist takes its TFDS path too.
  cfg = _config(tmp_path, name, batch_size=4, eval_batch_size=3, shuffle_buffer=8)
  with _mock_prepared_tfds(tmp_path, num_examples=6):
    assert data.image_shape(name) == shape
    for split in data.SPLITS:
      images = _all_images(cfg, split)
      assert images.shape == (6,) + shape and images.dtype == np.uint8
      assert data.num_examples(cfg, split) == 6
    train = _first_batches(data.train_dataset(cfg), 3)
    evaluation = _first_batches(data.eval_dataset(cfg), 10)
  for batch in train + evaluation:
    assert batch.dtype == np.float32 and batch.shape[1:] == shape
    assert batch.min() >= 0.0 and batch.max() < 256.0
  assert [b.shape[0] for b in train] == [4, 4, 4]
  assert [b.shape[0] for b in evaluation] == [3, 3]


def test_celeb_a_uses_real_nvp_crop_window():
  # Pixel value = row (resp. column) index of the 218x178 image. Real NVP keeps rows 40..187 and
  # columns 15..162; a geometric centre crop would start at row 35.
  rows = np.broadcast_to(np.arange(218, dtype=np.uint8)[:, None, None], (218, 178, 3))
  cols = np.broadcast_to(np.arange(178, dtype=np.uint8)[None, :, None], (218, 178, 3))
  by_row = data._celeb_a_crop_resize(tf.constant(rows)).numpy()
  by_col = data._celeb_a_crop_resize(tf.constant(cols)).numpy()
  assert by_row.shape == (64, 64, 3) and by_row.dtype == np.uint8
  assert 40 <= by_row[0, 0, 0] <= 42 and 185 <= by_row[-1, 0, 0] <= 187
  assert 15 <= by_col[0, 0, 0] <= 17 and 160 <= by_col[0, -1, 0] <= 162


def test_tfds_failure_names_dataset_and_data_dir(tmp_path, monkeypatch):
  def offline(*args, **kwargs):
    raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

  monkeypatch.setattr(data.tfds, "load", offline)
  cfg = _config(tmp_path, "cifar10")
  with pytest.raises(data.DatasetUnavailableError, match="cifar10") as info:
    data.load_images(cfg, "train")
  assert cfg.data_dir in str(info.value)
  with pytest.raises(data.DatasetUnavailableError,
                     match="apt-get install -y dataset-fashion-mnist") as info:
    data.load_images(_config(tmp_path, "fashion_mnist"), "test")
  assert "no-fashion-mnist" in str(info.value) and "internet" in str(info.value)


# --------------------------------------------------------------------- Fashion-MNIST IDX files


def test_local_fashion_mnist_reads_the_real_debian_files(monkeypatch):
  if not os.path.isfile(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")):
    pytest.fail(f"Fashion-MNIST is missing from {FASHION_DIR}: run `make data` "
                "(apt-get install -y dataset-fashion-mnist).")
  monkeypatch.setattr(data.tfds, "load", None)  # the local files must suffice: no TFDS
  cfg = data.DataConfig()
  assert cfg.dataset == "fashion_mnist" and cfg.fashion_mnist_dir == FASHION_DIR
  assert data.num_examples(cfg, "train") == 60000
  assert data.num_examples(cfg, "test") == 10000
  train = data.load_images(cfg, "train")
  assert train.element_spec == tf.TensorSpec((28, 28, 1), tf.uint8)
  total = train.batch(20000).reduce(tf.constant(0, tf.int64),
                                    lambda acc, x: acc + tf.reduce_sum(tf.cast(x, tf.int64)))
  mean = int(total) / (60000 * 28 * 28)
  assert round(mean, 3) == FASHION_TRAIN_MEAN
  assert abs(mean / 255 - 0.2860) < 1e-4


def _write_fashion_split(directory, split, images, labels):
  images_name, labels_name = fashion_mnist_lib.FILES[split]
  _write_idx(directory / images_name, 2051, images)
  _write_idx(directory / labels_name, 2049, labels)


def test_local_fashion_mnist_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
  test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
  _write_fashion_split(tmp_path, "train", train, np.arange(7, dtype=np.uint8))
  _write_fashion_split(tmp_path, "test", test, np.arange(3, dtype=np.uint8))
  cfg = data.DataConfig(fashion_mnist_dir=str(tmp_path), data_dir=str(tmp_path / "tfds"))
  np.testing.assert_array_equal(_all_images(cfg, "train"), train[..., None])
  np.testing.assert_array_equal(_all_images(cfg, "test"), test[..., None])


@pytest.mark.parametrize("corruption, message", [
    ("magic", "magic number 2049, expected 2051"),
    ("truncated", "bytes, but its header"),
    ("not_gzip", "not a readable gzip file"),
    ("label_count", "holds 4 images but"),
])
def test_corrupt_fashion_mnist_file_raises(tmp_path, corruption, message):
  images = np.zeros((4, 28, 28), np.uint8)
  _write_fashion_split(tmp_path, "train", images, np.zeros(4 if corruption != "label_count" else 3,
                                                           np.uint8))
  images_path = tmp_path / fashion_mnist_lib.FILES["train"][0]
  if corruption == "magic":
    _write_idx(images_path, 2049, images)
  elif corruption == "truncated":
    with gzip.open(images_path, "wb") as f:
      f.write((2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
              + images.tobytes()[:-5])
  elif corruption == "not_gzip":
    images_path.write_bytes(b"this is not gzip")
  cfg = data.DataConfig(fashion_mnist_dir=str(tmp_path))
  with pytest.raises(ValueError, match=message) as info:
    data.load_images(cfg, "train")
  assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------------------- user sources


def test_npz_round_trip_with_test_split(tmp_path):
  rng = np.random.default_rng(1)
  train = rng.integers(0, 256, (9, 5, 6, 3), dtype=np.uint8)
  test = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
  source = _write_npz(tmp_path, images=train, test_images=test)
  cfg = _config(tmp_path, source)
  assert data.image_shape(source) == (5, 6, 3)
  np.testing.assert_array_equal(_all_images(cfg, "train"), train)
  np.testing.assert_array_equal(_all_images(cfg, "test"), test)


def test_npz_grayscale_holdout_is_a_deterministic_partition(tmp_path):
  images = np.random.default_rng(2).integers(0, 256, (20, 3, 4), dtype=np.uint8)
  source = _write_npz(tmp_path, images=images)
  cfg = _config(tmp_path, source, validation_fraction=0.25)
  assert data.image_shape(source) == (3, 4, 1)
  train, test = _all_images(cfg, "train"), _all_images(cfg, "test")
  assert train.shape == (15, 3, 4, 1) and test.shape == (5, 3, 4, 1)
  combined = np.concatenate([train, test])[..., 0]
  # Every original image appears exactly once across the two splits.
  assert sorted(map(bytes, combined)) == sorted(map(bytes, images))
  np.testing.assert_array_equal(_all_images(cfg, "test"), test)  # same split on every call
  # The held-out images do not depend on the training seed.
  np.testing.assert_array_equal(_all_images(_config(tmp_path, source, validation_fraction=0.25,
                                                    seed=7), "test"), test)


def test_folder_image_folder_layout_round_trip(tmp_path):
  rng = np.random.default_rng(3)
  written = {"train": {}, "test": {}}
  for split, count in (("train", 6), ("test", 3)):
    for i in range(count):
      path = tmp_path / "images" / split / ("cat" if i % 2 else "dog") / f"{i:02d}.png"
      written[split][str(path)] = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
      _write_png(path, written[split][str(path)])
  source = f"folder:{tmp_path / 'images'}"
  cfg = _config(tmp_path, source)
  assert data.image_shape(source) == (5, 7, 3)
  for split in data.SPLITS:
    expected = np.stack([written[split][p] for p in sorted(written[split])])
    np.testing.assert_array_equal(_all_images(cfg, split), expected)


def test_flat_folder_round_trip_with_holdout(tmp_path):
  images = np.random.default_rng(4).integers(0, 256, (10, 6, 5, 1), dtype=np.uint8)
  for i, image in enumerate(images):
    _write_png(tmp_path / "flat" / f"{i:02d}.png", image)
  (tmp_path / "flat" / "README.txt").write_text("not an image")
  cfg = _config(tmp_path, f"folder:{tmp_path / 'flat'}", validation_fraction=0.2)
  assert data.image_shape(cfg.dataset) == (6, 5, 1)
  indices = data._holdout_indices(cfg.dataset, 10, 0.2)
  np.testing.assert_array_equal(_all_images(cfg, "train"), images[indices["train"]])
  np.testing.assert_array_equal(_all_images(cfg, "test"), images[indices["test"]])
  assert len(indices["test"]) == 2


def test_folder_reads_jpeg(tmp_path):
  image = np.full((8, 8, 3), 120, np.uint8)
  for i in range(2):
    Image.fromarray(image).save(tmp_path / f"{i}.JPG", quality=95)
  cfg = _config(tmp_path, f"folder:{tmp_path}")
  decoded = _all_images(cfg, "train")
  assert decoded.shape == (1, 8, 8, 3)
  assert np.abs(decoded.astype(int) - 120).max() <= 2


# ----------------------------------------------------------------------------- dequantisation


def test_add_noise_keeps_the_floor_even_for_the_largest_noise():
  pixels = tf.range(256, dtype=tf.float32)
  largest_noise = tf.fill([256], np.float32(1 - 2**-24))  # the largest float32 below 1
  assert float(tf.reduce_max(pixels + largest_noise)) == 256.0  # what the clamp prevents
  x = data._add_noise(pixels, largest_noise).numpy()
  np.testing.assert_array_equal(np.floor(x), np.arange(256))
  assert x.max() < 256.0
  np.testing.assert_array_equal(data._add_noise(pixels, tf.zeros([256])).numpy(), np.arange(256))


def test_dequantize_range_floor_and_seed():
  images = np.tile(np.arange(256, dtype=np.uint8), 8).reshape(4, 16, 16, 2)  # a batch
  x = data.dequantize(images, seed=3).numpy()
  assert x.dtype == np.float32 and x.shape == images.shape
  assert x.min() >= 0.0 and x.max() < 256.0
  np.testing.assert_array_equal(np.floor(x), images)
  np.testing.assert_array_equal(data.dequantize(images, seed=3).numpy(), x)
  assert not np.array_equal(data.dequantize(images, seed=4).numpy(), x)
  graph = tf.function(data.dequantize)(tf.constant(images), tf.constant([3, 0], tf.int64))
  np.testing.assert_array_equal(graph.numpy(), x)  # graph and eager agree
  with pytest.raises(ValueError, match="uint8"):
    data.dequantize(images.astype(np.float32), seed=0)


def _by_index(batch):
  """Dequantised batch of `_indexed_images` -> {image index: array}, index read from the floor."""
  return {int(np.floor(image).min()) // 16: image for image in batch}


def test_training_noise_is_fresh_each_epoch_and_reproducible(tmp_path):
  source = _write_npz(tmp_path, images=_indexed_images(8), test_images=_indexed_images(2))
  cfg = _config(tmp_path, source, batch_size=8, flip=False, seed=5)
  epochs = _first_batches(data.train_dataset(cfg), 3)  # one batch = one epoch here
  first, second = _by_index(epochs[0]), _by_index(epochs[1])
  assert sorted(first) == sorted(second) == list(range(8))
  for i in range(8):
    np.testing.assert_array_equal(np.floor(first[i]), _indexed_images(8)[i])
    assert not np.array_equal(first[i], second[i])  # new noise in the new epoch
  again = _first_batches(data.train_dataset(cfg), 3)
  np.testing.assert_array_equal(np.stack(again), np.stack(epochs))
  other_seed = _first_batches(data.train_dataset(dataclasses.replace(cfg, seed=6)), 3)
  assert not np.array_equal(np.stack(other_seed), np.stack(epochs))


@pytest.mark.parametrize("start_batch", [1, 3, 7])
def test_starting_the_stream_later_equals_skipping_batches(tmp_path, start_batch):
  # Batches straddle epochs (12 images, batch 5) so the epoch keys of the noise are exercised.
  source = _write_npz(tmp_path, images=_indexed_images(12), test_images=_indexed_images(2))
  cfg = _config(tmp_path, source, batch_size=5, flip=True, seed=2)
  skipped = _first_batches(data.train_dataset(cfg).skip(start_batch), 4)
  started = _first_batches(data.train_dataset(cfg, start_batch=start_batch), 4)
  np.testing.assert_array_equal(np.stack(started), np.stack(skipped))
  assert not np.array_equal(np.stack(started), np.stack(_first_batches(data.train_dataset(cfg), 4)))
  with pytest.raises(ValueError, match="train_dataset.start_batch must be an int >= 0, got -1"):
    data.train_dataset(cfg, start_batch=-1)


def test_eval_noise_is_fixed_by_its_seed(tmp_path):
  images = _indexed_images(10, channels=3)
  source = _write_npz(tmp_path, images=images[:2], test_images=images)
  cfg = _config(tmp_path, source, eval_batch_size=4, flip=True)
  first = np.concatenate(_first_batches(data.eval_dataset(cfg, seed=1), 10))
  second = np.concatenate(_first_batches(data.eval_dataset(cfg, seed=1), 10))
  other = np.concatenate(_first_batches(data.eval_dataset(cfg, seed=2), 10))
  assert first.shape == (10, 4, 8, 3)  # 4 + 4 + 2: the remainder is kept
  np.testing.assert_array_equal(first, second)
  assert not np.array_equal(first, other)
  np.testing.assert_array_equal(np.floor(first), images)  # in order, never flipped
  dropped = _first_batches(data.eval_dataset(dataclasses.replace(cfg, eval_drop_remainder=True)),
                           10)
  assert [b.shape[0] for b in dropped] == [4, 4]


# ------------------------------------------------------------------------------------- flips


@pytest.mark.parametrize("flip", [True, False])
def test_training_flips_follow_the_flag(tmp_path, flip):
  images = _indexed_images(12, channels=3)
  cfg = _config(tmp_path, _write_npz(tmp_path, images=images), batch_size=4, flip=flip,
                validation_fraction=0.1)
  mirrored = []
  for batch in _first_batches(data.train_dataset(cfg), 12):
    for i, image in _by_index(batch).items():
      pixels = np.floor(image)
      if np.array_equal(pixels, images[i]):
        mirrored.append(False)
      else:
        np.testing.assert_array_equal(pixels, images[i][:, ::-1])
        mirrored.append(True)
  assert any(mirrored) == flip
  assert not all(mirrored)


def test_flip_defaults():
  assert data.flip_enabled(data.DataConfig(dataset="cifar10"))
  assert data.flip_enabled(data.DataConfig(dataset="celeb_a"))
  assert not data.flip_enabled(data.DataConfig(dataset="fashion_mnist"))
  assert not data.flip_enabled(data.DataConfig(dataset="mnist"))
  assert not data.flip_enabled(data.DataConfig(dataset="npz:/x.npz"))
  assert not data.flip_enabled(data.DataConfig(dataset="cifar10", flip=False))
  assert data.flip_enabled(data.DataConfig(dataset="mnist", flip=True))


# ------------------------------------------------------------------------------- distribution


def test_input_context_gives_per_replica_batches_and_shards(tmp_path):
  images = _indexed_images(12)
  source = _write_npz(tmp_path, images=images, test_images=images)
  cfg = _config(tmp_path, source, batch_size=4, eval_batch_size=4)
  seen = []
  for pipeline in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
    assert _first_batches(data.train_dataset(cfg, context), 1)[0].shape == (2, 4, 8, 1)
    for batch in _first_batches(data.eval_dataset(cfg, input_context=context), 10):
      assert batch.shape[0] <= 2
      seen.extend(_by_index(batch))
  assert sorted(seen) == list(range(12))  # the shards cover the test set exactly once


def test_distributed_dataset_rejects_indivisible_batch(tmp_path):
  strategy = types.SimpleNamespace(num_replicas_in_sync=2)
  cfg = _config(tmp_path, "fashion_mnist", batch_size=5)
  with pytest.raises(ValueError, match=r"batch_size=5 must be divisible .* \(2\)"):
    data.distributed_dataset(strategy, cfg)
  with pytest.raises(ValueError, match="eval_batch_size=3"):
    data.distributed_dataset(strategy, _config(tmp_path, "fashion_mnist", eval_batch_size=3),
                             split="test")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
  # Logical devices must be configured before TF initialises them, which other tests in this
  # process may already have done: run in a fresh interpreter.
  source = _write_npz(tmp_path, images=_indexed_images(12, channels=3),
                      test_images=_indexed_images(5, channels=3))
  code = textwrap.dedent(f"""
      import tensorflow as tf
      cpu = tf.config.list_physical_devices("CPU")[0]
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
      from vapnev_tf import data
      strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
      assert strategy.num_replicas_in_sync == 2
      cfg = data.DataConfig(dataset={source!r}, batch_size=6, eval_batch_size=4)
      batch = next(iter(data.distributed_dataset(strategy, cfg)))
      shapes = [tuple(t.shape) for t in strategy.experimental_local_results(batch)]
      assert shapes == [(3, 4, 8, 3)] * 2, shapes
      first = next(iter(data.distributed_dataset(strategy, cfg, split="test", seed=1)))
      shapes = [tuple(t.shape) for t in strategy.experimental_local_results(first)]
      assert shapes == [(2, 4, 8, 3)] * 2, shapes
      try:
        data.distributed_dataset(strategy, data.DataConfig(dataset={source!r}, batch_size=5))
        raise AssertionError("no ValueError for batch_size=5 on 2 replicas")
      except ValueError as err:
        assert "divisible" in str(err), err
      print("OK")
      """)
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", -1, "batch_size must be an int >= 1, got -1"),
    ("batch_size", 0, "batch_size must be an int >= 1"),
    ("eval_batch_size", 2.5, "eval_batch_size must be an int"),
    ("shuffle_buffer", 0, "shuffle_buffer"),
    ("seed", -3, "seed must be an int >= 0"),
    ("train_take", 0, "train_take"),
    ("validation_fraction", 0.0, r"validation_fraction must be .* \(0, 1\), got 0.0"),
    ("validation_fraction", 1.0, "validation_fraction"),
    ("validation_fraction", 1.5, "validation_fraction"),
    ("flip", "yes", "flip must be True, False or None"),
    ("dataset", "", "Unknown dataset"),
    ("dataset", "npz:", "names no path"),
])
def test_config_validation(field, value, message):
  with pytest.raises(ValueError, match=message):
    data.DataConfig(**{field: value})


def test_unknown_dataset_lists_the_valid_forms():
  with pytest.raises(ValueError, match="imagenet") as info:
    data.DataConfig(dataset="imagenet")
  for form in data.DATASET_NAMES + ("npz:PATH", "folder:PATH"):
    assert form in str(info.value)
  with pytest.raises(ValueError, match="imagenet"):
    data.image_shape("imagenet")


def test_unknown_split(tmp_path):
  with pytest.raises(ValueError, match="split must be one of"):
    data.load_images(_config(tmp_path, "mnist"), "validation")


def _save_pngs(directory, arrays):
  for i, array in enumerate(arrays):
    _write_png(directory / f"{i}.png", array)
  return f"folder:{directory}"


@pytest.mark.parametrize("case, message", [
    ("missing_npz", "does not exist"),
    ("missing_folder", "does not exist"),
    ("no_images_key", "no array named 'images'"),
    ("object_dtype", "pickled object arrays are refused"),
    ("float_dtype", "dtype float32, expected uint8"),
    ("bad_rank", "expected .N, H, W. or"),
    ("empty_npz", "is empty"),
    ("not_npz", "not an .npz archive"),
    ("empty_folder", "no .png/.jpg/.jpeg images"),
    ("mixed_sizes", "mixed image sizes"),
    ("gray_rgb_mix", "grayscale/RGB mix"),
    ("rgba", "mode 'RGBA'"),
])
def test_bad_sources_raise_naming_the_source(tmp_path, case, message):
  gray, rgb = np.zeros((4, 4, 1), np.uint8), np.zeros((4, 4, 3), np.uint8)
  if case == "missing_npz":
    source = f"npz:{tmp_path / 'absent.npz'}"
  elif case == "missing_folder":
    source = f"folder:{tmp_path / 'absent'}"
  elif case == "no_images_key":
    source = _write_npz(tmp_path, pixels=np.zeros((3, 4, 4), np.uint8))
  elif case == "object_dtype":
    source = _write_npz(tmp_path, images=np.array([gray, None], dtype=object))
  elif case == "float_dtype":
    source = _write_npz(tmp_path, images=np.zeros((3, 4, 4), np.float32))
  elif case == "bad_rank":
    source = _write_npz(tmp_path, images=np.zeros((3, 4), np.uint8))
  elif case == "empty_npz":
    source = _write_npz(tmp_path, images=np.zeros((0, 4, 4), np.uint8))
  elif case == "not_npz":
    np.save(tmp_path / "plain.npy", np.zeros((3, 4, 4), np.uint8))
    source = f"npz:{tmp_path / 'plain.npy'}"
  elif case == "empty_folder":
    (tmp_path / "empty").mkdir()
    source = f"folder:{tmp_path / 'empty'}"
  elif case == "mixed_sizes":
    source = _save_pngs(tmp_path / "sizes", [rgb, np.zeros((5, 4, 3), np.uint8)])
  elif case == "gray_rgb_mix":
    source = _save_pngs(tmp_path / "modes", [rgb, gray, rgb])
  else:
    source = _save_pngs(tmp_path / "rgba", [np.zeros((4, 4, 4), np.uint8)])
  cfg = _config(tmp_path, source)
  with pytest.raises(ValueError, match=message) as info:
    data.load_images(cfg, "train")
  assert str(info.value).startswith(source)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_in_a_folder_is_named_when_the_source_is_opened(tmp_path, suffix):
  # A truncated file passes the header checks; unchecked, it would crash training at step 1 with a
  # TensorFlow error that names no file.
  arrays = [np.random.default_rng(i).integers(0, 256, (64, 64, 3), np.uint8) for i in range(4)]
  for i, array in enumerate(arrays):
    _write_png(tmp_path / "imgs" / "train" / "a" / f"{i}{suffix}", array)
  _write_png(tmp_path / "imgs" / "test" / "a" / f"t{suffix}", arrays[0])
  damaged = tmp_path / "imgs" / "train" / "a" / f"2{suffix}"
  raw = damaged.read_bytes()
  damaged.write_bytes(raw[:len(raw) // 2])
  source = f"folder:{tmp_path / 'imgs'}"
  assert data.image_shape(source) == (64, 64, 3)  # the header is intact
  cfg = _config(tmp_path, source, batch_size=2)
  for split in data.SPLITS:  # either split checks every file of the source
    with pytest.raises(ValueError, match="does not decode") as info:
      data.load_images(cfg, split)
    assert str(info.value).startswith(source) and repr(str(damaged)) in str(info.value)
  damaged.write_bytes(raw)
  assert data.num_examples(cfg, "train") == 4


def test_fewer_images_than_one_global_batch(tmp_path):
  cfg = _config(tmp_path, _write_npz(tmp_path, images=_indexed_images(5)), batch_size=8)
  with pytest.raises(ValueError, match="fewer than one global batch") as info:
    data.train_dataset(cfg)
  assert cfg.dataset in str(info.value)
  cfg = _config(tmp_path, _write_npz(tmp_path, "big.npz", images=_indexed_images(12)),
                batch_size=8, train_take=4)
  with pytest.raises(ValueError, match="4 training images"):
    data.train_dataset(cfg)


def _png_claiming_size(path, height, width):
  """An 8x8 grayscale PNG whose header claims height x width (the pixels are never decoded)."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  _write_png(path, np.zeros((8, 8, 1), np.uint8))
  raw = bytearray(path.read_bytes())
  start = raw.index(b"IHDR")
  raw[start + 4:start + 12] = struct.pack(">II", width, height)
  raw[start + 17:start + 21] = struct.pack(">I", zlib.crc32(bytes(raw[start:start + 17])))
  path.write_bytes(bytes(raw))


@pytest.mark.parametrize("size", [20000, 5000])
def test_a_huge_image_in_a_folder_is_refused_in_one_line(tmp_path, size):
  folder = tmp_path / "images"
  _save_pngs(folder, [np.zeros((8, 8, 1), np.uint8)] * 3)
  _png_claiming_size(folder / "huge.png", size, size)
  with pytest.raises(ValueError, match=r"huge.png' is (too large to read safely|"
                                       r"5000x5000 \(HxW\), larger than)"):
    data.load_images(_config(tmp_path, f"folder:{folder}"), "train")


def test_a_damaged_or_foreign_npz_member_is_refused_in_one_line(tmp_path):
  import zipfile  # pylint: disable=g-import-not-at-top
  source = _write_npz(tmp_path, images=np.full((4, 8, 8), 7, np.uint8))
  path = tmp_path / "images.npz"
  raw = bytearray(path.read_bytes())
  at = raw.index(b"\x07" * 64)
  raw[at:at + 64] = b"\x08" * 64  # the member's CRC no longer matches
  path.write_bytes(bytes(raw))
  with pytest.raises(ValueError, match="array 'images' is damaged .*BadZipFile"):
    data.load_images(_config(tmp_path, source), "train")
  with zipfile.ZipFile(tmp_path / "pickled.npz", "w") as z:  # a pickle where an .npy belongs
    import pickle  # pylint: disable=g-import-not-at-top
    z.writestr("images.npy", pickle.dumps([1, 2, 3]))
  with pytest.raises(ValueError, match="member 'images' is not a numpy array"):
    data.load_images(_config(tmp_path, f"npz:{tmp_path / 'pickled.npz'}"), "train")


def test_a_non_utf8_file_name_in_a_folder_is_named_in_one_line(tmp_path):
  folder = tmp_path / "images"
  _save_pngs(folder, [np.zeros((8, 8, 1), np.uint8)] * 3)
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(os.fsencode(folder), b"\xff.png"))
  with pytest.raises(ValueError, match=r"the file name b'.*\\xff.png' is not valid UTF-8"):
    data.load_images(_config(tmp_path, f"folder:{folder}"), "train")
