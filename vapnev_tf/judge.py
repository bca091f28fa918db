"""The judge: a small image classifier trained once per labelled dataset and cached on disk.

    judge = load_or_train_judge(train_images, train_labels, test_images, test_labels,
                                dataset="fashion_mnist")
    judge.predict(images)           # int64 (N,) classes of uint8 or float [0, 256) images

It decides whether a reconstruction lands in its original's class (`vapnev_tf.latent_metrics`).
`cached_score` caches other figures that depend on the data only (the pixel probe's accuracy) in
the same directory, under the same rule.
The network is a two-layer MLP on pixels / 256 (docs/design.md §13: cheap enough to train inside
`make train`, ~85% on Fashion-MNIST after 2 epochs). The cache entry is
`CACHE_DIR/<dataset>-<fingerprint[:16]>/{judge.weights.h5, judge.json}`, with the fingerprint a
sha256 of the training images, labels, test images, test labels and the recipe (architecture,
epochs, seed). An entry is used only when judge.json parses, names the same fingerprint, image
shape and class count, and the weights load into the network with finite outputs; anything else is
logged and the judge is trained again (a cache is never trusted on its word).
"""
import hashlib
import json
import os
import re

from absl import logging
import keras
import numpy as np

RECIPE = "mlp256-adam1e-3-batch128-v1"  # part of the fingerprint: a new recipe never reuses a judge
_WEIGHTS_FILE = "judge.weights.h5"
_META_FILE = "judge.json"
_HIDDEN = 256
_BATCH = 128


def default_cache_dir() -> str:
  """`$XDG_CACHE_HOME/vapnev_tf/judges` (XDG_CACHE_HOME defaulting to ~/.cache)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "vapnev_tf", "judges")


def check_cache_dir(cache_dir: str | None, name: str = "judge_cache_dir") -> str:
  """The judge cache directory to use: `cache_dir`, else `default_cache_dir()`.

  ValueError naming `name` (the flag or argument that set it) and the path when the path, or the
  nearest of its ancestors that exists, is not a directory (the cache is created on first use,
  so an absent directory is fine).
  """
  path = cache_dir or default_cache_dir()
  where = (f"{name}={path!r}" if cache_dir else
           f"the judge cache directory {path!r} ($XDG_CACHE_HOME/vapnev_tf/judges, "
           "XDG_CACHE_HOME defaulting to ~/.cache)")
  probe = os.path.abspath(path)
  while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    kind = "an existing file" if os.path.isfile(probe) else "not a directory"
    what = (f"is {kind}" if probe == os.path.abspath(path) else
            f"cannot be created: {probe!r} on its path is {kind}")
    fix = ("give a directory (created if absent)" if cache_dir else
           "set XDG_CACHE_HOME to another directory or move that file")
    raise ValueError(f"{where} {what}; judges are cached in a directory: {fix}.")
  return path


class Judge:
  """A trained classifier of images `(N, H, W, C)` with values in [0, 256) (uint8 or float).

  Attributes: `network` (the Keras model), `test_accuracy` (on the test split it was given when
  trained), `fingerprint`, `path` (its cache directory) and `trained` (False when loaded).
  """

  def __init__(self, network, test_accuracy: float, fingerprint: str, path: str, trained: bool):
    self.network, self.test_accuracy = network, test_accuracy
    self.fingerprint, self.path, self.trained = fingerprint, path, trained

  def predict(self, images, batch_size: int = 1000) -> np.ndarray:
    """The most probable class of each image, int64 `(N,)`."""
    logits = self.network.predict(_inputs(images), batch_size=batch_size, verbose=0)
    return np.argmax(logits, axis=-1).astype(np.int64)


def fingerprint(train_images, train_labels, test_images, test_labels, epochs: int,
                seed: int) -> str:
  """sha256 (hex) of the data the judge learns from and is scored on, and of its recipe."""
  digest = hashlib.sha256(f"{RECIPE}|epochs={epochs}|seed={seed}".encode())
  for array in (train_images, train_labels, test_images, test_labels):
    array = np.ascontiguousarray(array)
    digest.update(f"|{array.dtype.str}{array.shape}|".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def load_or_train_judge(train_images, train_labels, test_images, test_labels, *, dataset: str,
                        cache_dir: str | None = None, epochs: int = 2, seed: int = 0) -> Judge:
  """The cached judge for this data and recipe, else a newly trained (and cached) one.

  Args:
    train_images, test_images: uint8 `(N, H, W, C)`.
    train_labels, test_labels: integer `(N,)` class indices 0..K-1.
    dataset: the dataset's name (the cache entry's readable prefix).
    cache_dir: where judges are cached (default `default_cache_dir()`).
    epochs: training epochs (Adam, batch 128).
    seed: seeds the initial weights and the shuffling.
  """
  train_images, test_images = np.asarray(train_images), np.asarray(test_images)
  train_labels = np.asarray(train_labels, np.int64)
  test_labels = np.asarray(test_labels, np.int64)
  for name, images, labels in (("train", train_images, train_labels),
                               ("test", test_images, test_labels)):
    if images.ndim != 4 or len(images) != len(labels) or not len(images):
      raise ValueError(f"{name}_images {images.shape} and {name}_labels {labels.shape}: expected "
                       "(N, H, W, C) images and (N,) labels with the same N > 0.")
  if epochs < 1:
    raise ValueError(f"epochs must be >= 1, got {epochs!r}.")
  num_classes = int(max(train_labels.max(), test_labels.max())) + 1
  key = fingerprint(train_images, train_labels, test_images, test_labels, epochs, seed)
  directory = os.path.join(cache_dir or default_cache_dir(),
                           f"{_safe(dataset)}-{key[:16]}")
  shape = tuple(int(d) for d in train_images.shape[1:])
  network, why = _load(directory, key, shape, num_classes)
  if network is not None:
    meta = _read_meta(directory)
    logging.info("Judge loaded from %s (test accuracy %.4f).", directory, meta["test_accuracy"])
    return Judge(network, float(meta["test_accuracy"]), key, directory, trained=False)
  if why != "absent":
    logging.warning("Judge cache %s is not usable (%s): training the judge again.", directory, why)
  keras.utils.set_random_seed(seed)
  network = _network(shape, num_classes)
  network.fit(_inputs(train_images), train_labels, batch_size=_BATCH, epochs=epochs, verbose=0,
              shuffle=True)
  _, accuracy = network.evaluate(_inputs(test_images), test_labels, batch_size=1000, verbose=0)
  os.makedirs(directory, exist_ok=True)
  served = _network(shape, num_classes, compile_for_training=False)
  served.set_weights(network.get_weights())
  served.save_weights(os.path.join(directory, _WEIGHTS_FILE))
  meta = {"fingerprint": key, "dataset": dataset, "image_shape": list(shape),
          "num_classes": num_classes, "test_accuracy": float(accuracy), "epochs": epochs,
          "seed": seed, "recipe": RECIPE, "train_images": len(train_images),
          "test_images": len(test_images)}
  tmp = os.path.join(directory, _META_FILE + ".tmp")
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2)
  os.replace(tmp, os.path.join(directory, _META_FILE))  # written last: its presence vouches
  logging.info("Judge trained (%d epochs, test accuracy %.4f) and cached in %s.", epochs, accuracy,
               directory)
  return Judge(served, float(accuracy), key, directory, trained=True)


def cached_score(compute, arrays, *, name: str, dataset: str, cache_dir: str | None = None,
                 recipe: str = "") -> float:
  """`compute()` (a number that depends on `arrays` and `recipe` only, e.g. the pixel probe's
  accuracy), cached as CACHE_DIR/<dataset>-<name>-<sha256[:16]>.json.

  The file is used when it parses and names the same sha256 over `arrays` and `recipe` and holds
  a finite number; otherwise (absent, unreadable, mismatched) the score is computed and rewritten.
  """
  digest = hashlib.sha256(f"{name}|{recipe}".encode())
  for array in arrays:
    array = np.ascontiguousarray(array)
    digest.update(f"|{array.dtype.str}{array.shape}|".encode())
    digest.update(array.tobytes())
  key = digest.hexdigest()
  directory = cache_dir or default_cache_dir()
  filename = os.path.join(directory, f"{_safe(dataset)}-{name}-{key[:16]}.json")
  try:
    with open(filename, encoding="utf-8") as f:
      stored = json.load(f)
    if (isinstance(stored, dict) and stored.get("fingerprint") == key
        and isinstance(stored.get("score"), (int, float)) and np.isfinite(stored["score"])):
      return float(stored["score"])
    logging.warning("Cached %s score %s does not match its data: computing it again.", name,
                    filename)
  except FileNotFoundError:
    pass
  except (OSError, ValueError) as err:
    logging.warning("Cached %s score %s is unreadable (%s): computing it again.", name, filename,
                    err)
  score = float(compute())
  os.makedirs(directory, exist_ok=True)
  tmp = filename + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({"fingerprint": key, "score": score, "name": name, "recipe": recipe}, f)
  os.replace(tmp, filename)
  return score


def _safe(dataset: str) -> str:
  """A file-name-safe form of a dataset name (e.g. of an npz: path)."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[-64:]


def _network(shape, num_classes: int, compile_for_training: bool = True) -> keras.Model:
  """The MLP: pixels / 256 -> 256 ReLU units -> class logits (compiled with Adam when trained;
  a loaded judge has no optimizer, so its weights file holds the network's alone)."""
  network = keras.Sequential([
      keras.Input(shape),
      keras.layers.Flatten(),
      keras.layers.Dense(_HIDDEN, activation="relu"),
      keras.layers.Dense(num_classes),
  ], name="judge")
  if not compile_for_training:
    return network
  network.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
  return network


def _inputs(images) -> np.ndarray:
  """float32 pixels / 256 in [0, 1)."""
  return np.asarray(images, np.float32) / 256.0


def _read_meta(directory: str) -> dict:
  with open(os.path.join(directory, _META_FILE), encoding="utf-8") as f:
    return json.load(f)


def _load(directory: str, key: str, shape, num_classes: int):
  """(network, None) from a valid cache entry, else (None, why it is not usable)."""
  meta_path = os.path.join(directory, _META_FILE)
  weights_path = os.path.join(directory, _WEIGHTS_FILE)
  if not os.path.exists(meta_path) and not os.path.exists(weights_path):
    return None, "absent"
  try:
    meta = _read_meta(directory)
  except (OSError, ValueError) as err:
    return None, f"{_META_FILE} unreadable: {err}"
  if not isinstance(meta, dict):
    return None, f"{_META_FILE} is not an object"
  if meta.get("fingerprint") != key:
    return None, "fingerprint mismatch"
  if meta.get("image_shape") != list(shape) or meta.get("num_classes") != num_classes:
    return None, (f"made for images {meta.get('image_shape')} and {meta.get('num_classes')} "
                  f"classes, not {list(shape)} and {num_classes}")
  if not isinstance(meta.get("test_accuracy"), (int, float)):
    return None, "no test accuracy"
  network = _network(shape, num_classes, compile_for_training=False)
  try:
    network.load_weights(weights_path)
  except Exception as err:  # pylint: disable=broad-except  # h5py and Keras raise many types
    return None, f"weights unreadable: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
  probe = network(np.zeros((1,) + tuple(shape), np.float32), training=False)
  if not np.all(np.isfinite(np.asarray(probe))):
    return None, "weights give non-finite outputs"
  return network, None
