"""SavedModel export: tensor-in/tensor-out signatures of a trained VAPNEV (docs/design.md §11).

    python -m vapnev_tf.export --workdir=DIR [--checkpoint=PREFIX] [--export_dir=OUT] [--overwrite]

The SavedModel is a `VapnevModule`: a `tf.Module` that uses the Keras model and tracks the
tf.Variables under its Keras 3 variables (`model_variables`; see `VapnevModule.__init__` for why not
the Keras objects), with one `tf.function` per endpoint, registered as signatures. Nothing in it is a
Distribution: every endpoint takes and returns tensors, and the artefact loads with TensorFlow alone
(`vapnev_tf`, TFP and Keras need not be importable), in TF2 (`tf.saved_model.load`) and in
TF1-style loaders (`saved_model_cli run`, TF Serving):

  signature             inputs                                 outputs
  sample                num_samples int32 [],                  images uint8 (n, H, W, C),
                        temperature float32 [], seed int64 []  samples float32 (n, H, W, C)
  reconstruct           images uint8 (B, H, W, C),             images uint8, samples float32
                        seed int64 []                          (B, H, W, C)
  log_likelihood_bound  images uint8 (B, H, W, C),             log_likelihood float32 (B,) nats,
                        num_samples int32 [], seed int64 []    bits_per_dim float32 (B,)
  encode                images uint8 (B, H, W, C)              mu_z, sigma_z float32 (B, latent)
  decode                z float32 (B, latent)                  images uint8, samples float32

`likelihood="realnvp"` models have no encoder/decoder: only `sample` and `log_likelihood_bound` (the
exact log p(x); `num_samples` is ignored) are exported. `samples` are the float pixels in [0, 256)
before flooring to uint8. `temperature` scales sigma_y (0 gives the mu_y path of the flow
likelihoods). H, W, C are fixed by the model, the batch is free; a wrong shape or dtype is refused
when the signature is called (dtype on entry, shape by an assertion naming the expected shape).
A SavedModel signature has one dtype per input, so `signatures[...]` take an int64 seed (a Python
int converts); the restored functions (`loaded.sample(...)`, `loaded.reconstruct(...)`,
`loaded.log_likelihood_bound(...)`) also take an int32 one (`tf.constant(0)`), with the same result.

Seeding (so the export gives the in-Python model's numbers for the same seed):
  1. the int64 `seed` becomes a stateless pair: `stateless_seed(seed)` (its two 32-bit halves);
  2. `derive_seeds(seed)` splits that pair into `(dequantize_seed, model_seed)`
     (`tfp.random.split_seed(pair, n=2)`);
  3. uint8 images are dequantised by `vapnev_tf.data.dequantize(images, dequantize_seed)`
     (x = pixel + u, u ~ U[0, 1)); `encode` has no seed and uses the bin centres x = pixel + 0.5;
  4. `model_seed` is the TFP seed of the model's own method: the signatures equal
     `model.sample(n, temperature, seed=model_seed)`, `model.reconstruct(x, seed=model_seed)` and
     `model.log_likelihood_bound(x, k, seed=model_seed)` (k may be a tensor: it is a graph loop).

A JSON file `OUT/vapnev_metadata.json` (`METADATA_FILE`) describes the export: model config, the
restored checkpoint, its own step and its weights' fingerprint ("weights_sha256"), test bits/dim of
a full evaluation of those same weights (else null, with "eval_note" saying why), signatures,
package versions, parameter count, TF's fingerprint.

Overwriting: `--overwrite` only ever replaces a previous export (a directory holding
`saved_model.pb`, `vapnev_metadata.json` and nothing that is not part of a SavedModel); a run
directory, a parent of one, the workdir or an ancestor of it, or any other directory is refused,
naming what is there. `python -m vapnev_tf.export` holds the run directory's lock
(`vapnev_tf.locking`) while it reads it.
"""
import datetime
import json
import os
import platform
import sys
import uuid

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import loading
import vapnev_tf
from vapnev_tf import console
from vapnev_tf import data as data_lib
from vapnev_tf import interrupts
from vapnev_tf import locking
from vapnev_tf import seeds
from vapnev_tf import staging
from vapnev_tf import validation
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.metrics import bits_per_dim
from vapnev_tf.model import VAPNEV
from vapnev_tf.model import to_uint8

METADATA_FILE = "vapnev_metadata.json"
METADATA_FORMAT = "vapnev_tf.saved_model/1"
VAE_SIGNATURES = ("sample", "reconstruct", "log_likelihood_bound", "encode", "decode")
FLOW_SIGNATURES = ("sample", "log_likelihood_bound")
RESERVED_METADATA_KEYS = ("format", "model_config", "likelihood", "image_shape", "latent_dim",
                          "signatures", "seeding", "log_likelihood_chunk_size", "num_parameters",
                          "versions", "fingerprint", "exported_at")


# --------------------------------------------------------------------------------------- seeding


def stateless_seed(seed) -> tf.Tensor:
  """An int64 or int32 scalar (tensor or Python int) -> a stateless seed, int32 `[2]` (the 32-bit
  halves of its int64 value, so int32 and int64 seeds of the same value agree)."""
  seed = tf.convert_to_tensor(seed)
  if seed.dtype == tf.int32:
    seed = tf.cast(seed, tf.int64)
  seed = tf.convert_to_tensor(seed, dtype=tf.int64)
  if seed.shape.rank != 0:
    raise ValueError(f"seed must be an int64 scalar, got shape {tuple(seed.shape)}.")
  return tf.bitcast(seed, tf.int32)


def derive_seeds(seed):
  """`(dequantize_seed, model_seed)`, each int32 `[2]`, from an int64 scalar `seed`.

  Every signature derives its randomness this way; call it with the same seed to reproduce an
  exported result with the in-Python model (module docstring, "Seeding").
  """
  dequantize_seed, model_seed = tfp.random.split_seed(stateless_seed(seed), n=2)
  return dequantize_seed, model_seed


def bin_centres(images_uint8, dtype=tf.float32):
  """uint8 pixels -> the centres of their dequantisation bins, pixel + 0.5 (deterministic)."""
  return tf.cast(images_uint8, dtype) + tf.constant(0.5, dtype)


# -------------------------------------------------------------------------------- the tf.Module


class VapnevModule(tf.Module):
  """The exported object: one `tf.function` per signature over a Keras model, and its variables.

  `model` is reachable as an attribute but is not a SavedModel dependency; the tf.Variables are
  (`model_variables`). The functions are also usable in Python (e.g. by `vapnev_tf.figures`), so
  figures made from a run directory and from its export are the same for the same seed.

  Args:
    model: a `VAPNEV`.
  """

  def __init__(self, model: VAPNEV, name: str = "vapnev"):
    if not isinstance(model, VAPNEV):
      raise ValueError(f"model must be a vapnev_tf.VAPNEV, got {type(model).__name__}.")
    super().__init__(name=name)
    self._set_model(model)
    # The SavedModel tracks the tf.Variables under the Keras 3 variables, not the Keras objects:
    # a Keras 3 Variable exports as a *copy* of its tf.Variable, so the functions (which read the
    # tf.Variable) and the saver (which restores the copy) would use different resources and
    # TF1-style loaders (saved_model_cli run, TF Serving) would find the weights uninitialised.
    self.model_variables = [_tf_variable(v) for v in model.variables]
    cfg = model.config
    self.signature_names = VAE_SIGNATURES if cfg.has_vae else FLOW_SIGNATURES
    images = tf.TensorSpec((None,) + cfg.image_shape, tf.uint8, name="images")
    seed = tf.TensorSpec([], tf.int64, name="seed")
    seed32 = tf.TensorSpec([], tf.int32, name="seed")
    num_samples = tf.TensorSpec([], tf.int32, name="num_samples")
    temperature = tf.TensorSpec([], tf.float32, name="temperature")
    # Seeded endpoints are traced for an int64 and an int32 seed, so the restored functions
    # (`loaded.sample(..., seed=tf.constant(0))`) take either; a signature has one dtype per input
    # and uses the int64 trace.
    self.sample = _traced(self._sample, [num_samples, temperature], seed, seed32)
    self.log_likelihood_bound = _traced(self._log_likelihood_bound, [images, num_samples], seed,
                                        seed32)
    if cfg.has_vae:
      z = tf.TensorSpec([None, cfg.latent_dim], tf.float32, name="z")
      self.reconstruct = _traced(self._reconstruct, [images], seed, seed32)
      self.encode = tf.function(self._encode, input_signature=[images])
      self.decode = tf.function(self._decode, input_signature=[z])
    self._signature_specs = {"sample": [num_samples, temperature, seed],
                             "log_likelihood_bound": [images, num_samples, seed],
                             "reconstruct": [images, seed], "encode": [images],
                             "decode": [z] if cfg.has_vae else None}

  @property
  def model(self) -> VAPNEV:
    return self._model

  @tf.__internal__.tracking.no_automatic_dependency_tracking
  def _set_model(self, model):
    self._model = model  # not a SavedModel dependency: see model_variables

  def signatures(self) -> dict:
    """{name: concrete function} for `tf.saved_model.save(..., signatures=...)`."""
    return {name: getattr(self, name).get_concrete_function(*self._signature_specs[name])
            for name in self.signature_names}

  # The bodies. Argument names are the signatures' input names.

  def _sample(self, num_samples, temperature, seed):
    num_samples = _checked(num_samples, tf.debugging.assert_positive, "sample: num_samples >= 1")
    num_samples = validation.check_count(  # n * max(H*W*C, latent) must fit int32
        num_samples, "sample: num_samples", self.model.max_samples)
    temperature = _checked(temperature, tf.debugging.assert_non_negative,
                           "sample: temperature >= 0")
    _, model_seed = derive_seeds(seed)
    x = self.model.sample(num_samples, tf.cast(temperature, self.model.compute_dtype),
                          seed=model_seed)
    return _image_outputs(x)

  def _reconstruct(self, images, seed):
    dequantize_seed, model_seed = derive_seeds(seed)
    x = self._dequantize(images, dequantize_seed)
    return _image_outputs(self.model.reconstruct(x, seed=model_seed))

  def _log_likelihood_bound(self, images, num_samples, seed):
    num_samples = _checked(num_samples, tf.debugging.assert_positive,
                           "log_likelihood_bound: num_samples >= 1")
    dequantize_seed, model_seed = derive_seeds(seed)
    x = self._dequantize(images, dequantize_seed)
    log_likelihood = self.model.log_likelihood_bound(x, num_samples, model_seed)
    return {"log_likelihood": tf.cast(log_likelihood, tf.float32),
            "bits_per_dim": tf.cast(bits_per_dim(log_likelihood, self.model.config.image_shape),
                                    tf.float32)}

  def _encode(self, images):
    # the encoder's Gaussian (Eq. 17-19): q(z|x) itself, or its base before posterior="iaf"'s steps
    mu_z, sigma_z = self.model.encode_moments(
        bin_centres(self._checked_images(images), self.model.compute_dtype))
    return {"mu_z": tf.cast(mu_z, tf.float32), "sigma_z": tf.cast(sigma_z, tf.float32)}

  def _decode(self, z):
    return _image_outputs(self.model.decode_images(tf.cast(z, self.model.compute_dtype)))

  def _dequantize(self, images, seed):
    x = data_lib.dequantize(self._checked_images(images), seed)  # float32 (B, H, W, C)
    return tf.cast(x, self.model.compute_dtype)

  def _checked_images(self, images):
    """Checks the shape at run time too: `signatures[...]` calls bypass the input_signature."""
    expected = self.model.config.image_shape
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]
    ok = tf.logical_and(tf.equal(tf.size(shape), 4),
                        tf.reduce_all(tf.equal(padded[1:], tf.constant(expected, tf.int32))))
    message = f"images must be uint8 of shape (batch, {', '.join(map(str, expected))}), got shape"
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, shape])]):
      return tf.identity(images)


def _traced(body, specs, seed64, seed32):
  """`tf.function(body)` with concrete functions for both seed dtypes (the seed comes last)."""
  function = tf.function(body)
  function.get_concrete_function(*specs, seed64)
  function.get_concrete_function(*specs, seed32)
  return function


def _tf_variable(variable):
  """The `tf.Variable` behind a Keras 3 variable (or `variable` itself)."""
  return getattr(variable, "value", variable) if isinstance(variable, keras.Variable) else variable


def _checked(value, assertion, message):
  with tf.control_dependencies([assertion(value, message=message)]):
    return tf.identity(value)


def _image_outputs(x):
  """Float pixels in [0, 256) -> {"images": uint8, "samples": float32}."""
  return {"images": to_uint8(x), "samples": tf.cast(x, tf.float32)}


# ------------------------------------------------------------------------------------ exporting


def export_model(model: VAPNEV, export_dir: str, metadata: dict, overwrite: bool = False,
                 workdir: str | None = None) -> str:
  """Writes `model` as a SavedModel with tensor signatures, plus `METADATA_FILE`, to `export_dir`.

  The SavedModel is written to a staging sibling `EXPORT.tmp-<pid>-<hex>` and renamed into
  place, so `export_dir` never holds half an export; staging siblings left by killed exports are
  swept first (`vapnev_tf.staging`: only a dead process's, holding only what an export writes).

  Args:
    model: a `VAPNEV`.
    export_dir: the output directory. It must not exist (an empty directory is fine) unless
      `overwrite`, in which case a previous export there is replaced; anything that is not an
      export (a run directory, a parent of one, user files) is refused (`check_export_dir`).
    metadata: JSON-serialisable facts about the run to record, e.g. {"step": 1000,
      "test_bits_per_dim": 3.1}; its keys must not clash with the ones this function writes.
    overwrite: replace a previous export in `export_dir`.
    workdir: the run directory the model comes from, if any: `export_dir` must then not be it,
      an ancestor of it, or a non-export inside it.

  Returns:
    `export_dir`.
  """
  if not isinstance(model, VAPNEV):
    raise ValueError(f"model must be a vapnev_tf.VAPNEV, got {type(model).__name__}.")
  if not isinstance(metadata, dict):
    raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}.")
  clash = sorted(set(RESERVED_METADATA_KEYS) & set(metadata))
  if clash:
    raise ValueError(f"metadata keys {clash} are reserved (written by export_model); rename them.")
  try:
    metadata = json.loads(json.dumps(metadata, default=_numpy_to_python))
  except (TypeError, ValueError) as e:
    raise ValueError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts; numpy "
                     f"scalars and arrays are converted): {e}") from e
  export_dir = os.fspath(export_dir).rstrip("/") or "/"
  check_export_dir(export_dir, overwrite, workdir)
  module = VapnevModule(model)
  parent = os.path.dirname(os.path.abspath(export_dir))
  tf.io.gfile.makedirs(parent)
  # Staging directories of exports to this target that a kill left behind (staging.py).
  for stale in staging.sweep_stale(export_dir, STAGED_ENTRIES):
    logging.info("Removed %s, left by an interrupted export.", stale)
  tmp_dir = staging.new_staging_dir(export_dir)
  try:
    signatures = module.signatures()
    tf.saved_model.save(module, tmp_dir, signatures=signatures)
    num_parameters = _check_saved_variables(tmp_dir, model)
    payload = _metadata(model, signatures, metadata, num_parameters, tmp_dir)
    workdir_lib.write_json_atomic(os.path.join(tmp_dir, METADATA_FILE), payload)
    check_export_dir(export_dir, overwrite, workdir)  # again: it may have changed meanwhile
    marker = os.path.join(tmp_dir, staging.STAGING_MARKER)
    if tf.io.gfile.exists(marker):  # an export holds only SAVED_MODEL_ENTRIES
      tf.io.gfile.remove(marker)
    _move_into_place(tmp_dir, export_dir)
  finally:
    if tf.io.gfile.exists(tmp_dir):
      tf.io.gfile.rmtree(tmp_dir)
  logging.info("Exported %s (signatures %s) to %s", model.config.likelihood,
               ", ".join(module.signature_names), export_dir)
  return export_dir


def _numpy_to_python(value):
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


# What `tf.saved_model.save` plus `export_model` write; an export holds these and nothing else.
SAVED_MODEL_ENTRIES = ("saved_model.pb", "saved_model.pbtxt", "variables", "assets",
                       "assets.extra", "fingerprint.pb", "keras_metadata.pb", METADATA_FILE)
# What a staging directory of `export_model` may hold besides its marker (the metadata's own
# temporary file included): a stale one holding only these is swept.
STAGED_ENTRIES = SAVED_MODEL_ENTRIES + (METADATA_FILE + ".tmp",)


def check_export_dir(export_dir: str, overwrite: bool, workdir: str | None = None) -> None:
  """ValueError unless `export_dir` may be written (the overwrite rule, docs/internals.md).

  Writable: absent, an empty directory, or, with `overwrite`, a previous export (`is_export`).
  Never a run directory, a directory holding anything that is not part of an export, or (given
  the run directory `workdir`) `workdir` itself or one of its ancestors; inside `workdir`, only
  an absent directory, `WORKDIR/export` (empty) or an export.
  """
  if workdir is not None:
    _check_against_workdir(export_dir, workdir)
  if not tf.io.gfile.exists(export_dir):
    return
  if not tf.io.gfile.isdir(export_dir):
    raise ValueError(f"export_dir {export_dir!r} exists and is a file, not a directory.")
  entries = sorted(tf.io.gfile.listdir(export_dir))
  if not entries:
    return
  problem = _not_an_export(export_dir, entries)
  if problem is not None:
    raise ValueError(f"export_dir {export_dir!r} already exists and is not a vapnev_tf export "
                     f"({problem}); refusing to {'replace' if overwrite else 'write into'} it, "
                     "even with --overwrite, which only ever replaces a previous export. Choose a "
                     "new or empty directory.")
  if not overwrite:
    raise ValueError(f"export_dir {export_dir!r} already exists and is not empty (a previous "
                     "export); pass overwrite=True (--overwrite) to replace it, or choose another "
                     "directory.")


def is_export(export_dir: str) -> bool:
  """Whether `export_dir` is a directory holding a vapnev_tf export and nothing else."""
  if not tf.io.gfile.isdir(export_dir):
    return False
  return _not_an_export(export_dir, sorted(tf.io.gfile.listdir(export_dir))) is None


def _not_an_export(export_dir: str, entries: list) -> str | None:
  """None if `entries` (of `export_dir`) make an export, else what is there that should not be."""
  names = [e.rstrip("/") for e in entries]
  shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
  foreign = [n for n in names if n not in SAVED_MODEL_ENTRIES]
  if foreign:
    return f"it holds {shown}; not part of a SavedModel: {', '.join(foreign[:8])}"
  missing = [n for n in ("saved_model.pb", METADATA_FILE) if n not in names]
  if missing:
    return f"it holds {shown} but no {' and no '.join(missing)}"
  for sub, allowed in (("variables", lambda n: n.startswith("variables.")),
                       ("assets", lambda n: True), ("assets.extra", lambda n: True)):
    directory = os.path.join(export_dir, sub)
    if sub not in names:
      continue
    if not tf.io.gfile.isdir(directory):
      return f"{sub} is a file, not a directory"
    for name in tf.io.gfile.listdir(directory):
      if tf.io.gfile.isdir(os.path.join(directory, name)) or not allowed(name):
        return f"{sub}/ holds {name.rstrip('/')}, which a SavedModel does not write there"
  return None


def _real(p: str) -> str:
  return p if "://" in p else os.path.realpath(p)


def _check_against_workdir(export_dir: str, workdir: str) -> None:
  """An export never replaces the run directory, an ancestor of it, or a non-export inside it."""
  export_real, work_real = _real(export_dir).rstrip("/") or "/", _real(workdir).rstrip("/") or "/"
  if export_real == work_real:
    raise ValueError(f"export_dir {export_dir!r} is the run directory {workdir!r} itself; an "
                     "export never replaces a run directory. Leave --export_dir out (default "
                     "WORKDIR/export) or choose a new directory.")
  if work_real.startswith(export_real.rstrip("/") + "/"):
    raise ValueError(f"export_dir {export_dir!r} contains the run directory {workdir!r}; an "
                     "export never replaces a run directory or a parent of one. Leave "
                     "--export_dir out (default WORKDIR/export) or choose a new directory.")
  default = _real(workdir_lib.path(workdir, workdir_lib.EXPORT_DIR)).rstrip("/")
  if (export_real.startswith(work_real.rstrip("/") + "/") and export_real != default
      and tf.io.gfile.exists(export_dir) and not is_export(export_dir)):
    listing = (sorted(e.rstrip("/") for e in tf.io.gfile.listdir(export_dir))
               if tf.io.gfile.isdir(export_dir) else "a file")
    raise ValueError(f"export_dir {export_dir!r} is inside the run directory {workdir!r} and "
                     f"is not a vapnev_tf export (it holds {listing or 'nothing'}); inside a run "
                     "directory an export may only go to WORKDIR/export, a new directory or a "
                     "previous export.")


def _move_into_place(tmp_dir: str, export_dir: str) -> None:
  old_dir = None
  if tf.io.gfile.exists(export_dir):
    old_dir = f"{export_dir}.old-{uuid.uuid4().hex[:8]}"
    tf.io.gfile.rename(export_dir, old_dir)
  tf.io.gfile.rename(tmp_dir, export_dir)
  if old_dir is not None:
    tf.io.gfile.rmtree(old_dir)


def _check_saved_variables(saved_model_dir: str, model: VAPNEV) -> int:
  """The SavedModel must hold every weight of `model`; returns the number of parameters."""
  reader = tf.train.load_checkpoint(os.path.join(saved_model_dir, "variables", "variables"))
  shapes = reader.get_variable_to_shape_map()
  saved = sum(int(np.prod(shape)) for key, shape in shapes.items()
              if key.endswith("/.ATTRIBUTES/VARIABLE_VALUE"))
  unique = {id(v): v for v in model.variables}.values()
  expected = sum(int(np.prod(v.shape)) for v in unique)
  if saved != expected:
    raise RuntimeError(f"the SavedModel in {saved_model_dir} holds {saved} parameters but the "
                       f"model has {expected}: some variables were not tracked by the module.")
  return expected


def _signature_specs(signatures: dict) -> dict:
  """{name: {"inputs": {arg: {"dtype", "shape"}}, "outputs": {...}}} of concrete functions."""
  spec = lambda t: {"dtype": t.dtype.name, "shape": t.shape.as_list()}
  return {name: {"inputs": {k: spec(s) for k, s in sorted(fn.structured_input_signature[1].items())}
                 if fn.structured_input_signature[1] else
                 {s.name: spec(s) for s in fn.structured_input_signature[0]},
                 "outputs": {k: spec(t) for k, t in sorted(fn.structured_outputs.items())}}
          for name, fn in sorted(signatures.items())}


def _metadata(model, signatures, metadata, num_parameters, saved_model_dir) -> dict:
  fingerprint = tf.saved_model.experimental.read_fingerprint(saved_model_dir)
  ours = {
      "format": METADATA_FORMAT,
      "model_config": model.config.to_dict(),
      "likelihood": model.config.likelihood,
      "image_shape": list(model.config.image_shape),
      "latent_dim": model.config.latent_dim if model.config.has_vae else None,
      "signatures": _signature_specs(signatures),
      "seeding": ("int64 seed -> int32 pair (bitcast) -> tfp.random.split_seed(pair, 2) = "
                  "(dequantize_seed, model_seed); uint8 images -> vapnev_tf.data.dequantize("
                  "images, dequantize_seed); model methods get seed=model_seed; encode uses "
                  "pixel + 0.5."),
      "log_likelihood_chunk_size": seeds.IW_CHUNK_SIZE,
      "num_parameters": num_parameters,
      "versions": {"vapnev_tf": vapnev_tf.__version__, "tensorflow": tf.__version__,
                   "tensorflow_probability": tfp.__version__, "keras": keras.__version__,
                   "numpy": np.__version__, "python": platform.python_version()},
      "fingerprint": {"singleprint": fingerprint.singleprint(),
                      "saved_model_checksum": str(fingerprint.saved_model_checksum)},
      "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  assert set(ours) == set(RESERVED_METADATA_KEYS), sorted(set(ours) ^ set(RESERVED_METADATA_KEYS))
  return {**metadata, **ours}


def load_metadata(export_dir: str) -> dict:
  """The `METADATA_FILE` of an export; ValueError if `export_dir` is not a vapnev_tf export."""
  filename = os.path.join(export_dir, METADATA_FILE)
  if not tf.io.gfile.exists(filename):
    raise ValueError(f"{export_dir!r} is not a vapnev_tf export (no {METADATA_FILE}).")
  return workdir_lib.read_json(filename)


def workdir_metadata(workdir: str, step: int, checkpoint: str, skipped=(),
                     weights_sha256: str | None = None) -> dict:
  """What a run directory knows about the checkpoint `checkpoint` at step `step`, whose weights
  have the fingerprint `weights_sha256` (`workdir.weights_fingerprint`).

  The run config, and the run's full evaluation of those same weights at that step
  (`workdir.full_evaluation`): a partial evaluation, or one of other weights at the same step,
  is never attached. Without one, "test_bits_per_dim" and "eval" are None and "eval_note" says
  why.
  """
  payload = {"workdir": os.path.abspath(workdir), "checkpoint": checkpoint, "step": step,
             "weights_sha256": weights_sha256, "run_config": workdir_lib.read_config(workdir)}
  record, note = workdir_lib.full_evaluation(workdir, step, weights_sha256)
  payload["eval"] = record
  payload["test_bits_per_dim"] = None if record is None else _tightest_bpd(record)
  if note is not None:
    payload["eval_note"] = note
    logging.warning("Export metadata has no test bits/dim: %s.", note)
  if skipped:
    payload["skipped_checkpoints"] = list(skipped)
  return payload


def _tightest_bpd(record: dict):
  """The record's headline bits/dim: test_bits_per_dim, else the IW bound, else the ELBO."""
  for key in ("test_bits_per_dim", "iw_bpd", "elbo_bpd"):
    value = record.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return value
  return None


def export_from_workdir(workdir: str, export_dir: str | None = None,
                        checkpoint: str | None = None, overwrite: bool = False) -> str:
  """Restores a run's checkpoint and exports it (default `WORKDIR/export`), holding the run's lock.

  Default checkpoint: the newest readable one (`workdir.load_run`). The metadata's step is that
  checkpoint's own, and its bits/dim that of a full evaluation of the same weights (else None).
  Raises ValueError on bad input, `locking.WorkdirLockedError` when the run is in use.
  """
  if not tf.io.gfile.isdir(workdir):
    raise ValueError(f"workdir {workdir!r} does not exist or is not a directory.")
  export_dir = export_dir or workdir_lib.path(workdir, workdir_lib.EXPORT_DIR)
  # Bad input fails before the lock and the (slow) restore.
  check_export_dir(export_dir, overwrite, workdir)
  if checkpoint and not tf.io.gfile.exists(checkpoint + ".index"):
    raise ValueError(f"checkpoint {checkpoint!r} does not exist (no {checkpoint}.index).")
  with locking.workdir_lock(workdir, "export", log=logging.warning):
    model, info = loading.load_run(workdir, checkpoint)
    metadata = workdir_metadata(workdir, info["step"], info["checkpoint"], info["skipped"],
                                workdir_lib.weights_fingerprint(model))
    return export_model(model, export_dir, metadata, overwrite, workdir=workdir)


# ------------------------------------------------------------------------------------------ CLI


def _define_flags():
  flags.DEFINE_string("workdir", None, "Run directory written by vapnev_tf.train.")
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to export (default: the latest).")
  flags.DEFINE_string("export_dir", None, "Output directory (default: WORKDIR/export).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing export_dir.")
  flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    with interrupts.raising("the export (its partial directory was removed; nothing was "
                            "written to the export directory)"):
      out = export_from_workdir(f.workdir, f.export_dir, f.checkpoint, f.overwrite)
  except (ValueError, OSError, locking.WorkdirLockedError) as e:  # bad input, run in use: 1 line
    print(f"vapnev_tf.export: error: {e}", file=sys.stderr)
    return 1
  except interrupts.Interrupted as e:
    print(f"vapnev_tf.export: {e}", file=sys.stderr)
    return 128 + e.signum
  print(json.dumps({"export_dir": out, "signatures": sorted(load_metadata(out)["signatures"])}))


def run():
  """Console script `vapnev-export`."""
  _define_flags()
  console.run_cli(main, "vapnev_tf.export")


if __name__ == "__main__":
  run()
