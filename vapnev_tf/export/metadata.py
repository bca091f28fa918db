"""The metadata of an export: `vapnev_metadata.json`, assembled from the model and its run.

A JSON file `OUT/vapnev_metadata.json` (`METADATA_FILE`) describes the export: model config, the
restored checkpoint, its own step and its weights' fingerprint ("weights_sha256"), test bits/dim of
a full evaluation of those same weights (else null, with "eval_note" saying why), signatures,
package versions, parameter count, TF's fingerprint.
"""
import datetime
import os
import platform

from absl import logging
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import vapnev_tf
from vapnev_tf import evaluation
from vapnev_tf import seeds
from vapnev_tf import workdir as workdir_lib

METADATA_FILE = "vapnev_metadata.json"
METADATA_FORMAT = "vapnev_tf.saved_model/1"
RESERVED_METADATA_KEYS = ("format", "model_config", "likelihood", "image_shape", "latent_dim",
                          "signatures", "seeding", "log_likelihood_chunk_size", "num_parameters",
                          "versions", "fingerprint", "exported_at")


def _signature_specs(signatures: dict) -> dict:
  """{name: {"inputs": {arg: {"dtype", "shape"}}, "outputs": {...}}} of concrete functions."""
  spec = lambda t: {"dtype": t.dtype.name, "shape": t.shape.as_list()}
  return {name: {"inputs": {k: spec(s) for k, s in sorted(fn.structured_input_signature[1].items())}
                 if fn.structured_input_signature[1] else
                 {s.name: spec(s) for s in fn.structured_input_signature[0]},
                 "outputs": {k: spec(t) for k, t in sorted(fn.structured_outputs.items())}}
          for name, fn in sorted(signatures.items())}


def assemble(model, signatures, metadata, num_parameters, saved_model_dir) -> dict:
  """`metadata` plus what the export itself records (`RESERVED_METADATA_KEYS`)."""
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
                     weights_sha256: str | None = None, weights: str = "raw") -> dict:
  """What a run directory knows about the checkpoint `checkpoint` at step `step`, whose weights
  have the fingerprint `weights_sha256` (`workdir.weights_fingerprint`); `weights` says which of
  the checkpoint's weights were exported ("ema": its Polyak averages, "raw": the trained ones;
  `loading.load_run`).

  The run config, and the run's full evaluation of those same weights at that step
  (`workdir.full_evaluation`): a partial evaluation, or one of other weights at the same step,
  is never attached. Without one, "test_bits_per_dim" and "eval" are None and "eval_note" says
  why.
  """
  payload = {"workdir": os.path.abspath(workdir), "checkpoint": checkpoint, "step": step,
             "weights_sha256": weights_sha256, "weights": weights, "run_config": workdir_lib.read_config(workdir)}
  record, note = workdir_lib.full_evaluation(workdir, step, weights_sha256)
  payload["eval"] = record
  payload["test_bits_per_dim"] = None if record is None else evaluation.tightest_bpd(record)
  if note is not None:
    payload["eval_note"] = note
    logging.warning("Export metadata has no test bits/dim: %s.", note)
  if skipped:
    payload["skipped_checkpoints"] = list(skipped)
  return payload
