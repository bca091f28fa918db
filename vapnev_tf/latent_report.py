"""The latent figures of a run directory: WORKDIR/latent.json, TensorBoard scalars, one line.

    result = latent_workdir(workdir, num_images=1000)     # `vapnev_tf.evaluate --latent`
    print(latent_metrics.summary_line(result))

Restores the run (`workdir.load_run`), reads its test images (dequantised with the run's
eval_seed, as its evaluation), their labels and the train split from the run's data config, gets
the judge from its cache (trained on the train split when absent or unusable), computes
`latent_metrics.evaluate_latent` and writes, holding the run directory's lock:
  - WORKDIR/latent.json: the figures with their step, checkpoint, scope, the weights'
    "weights_sha256" and the "settings" they were computed with (a finished run started again
    reuses the file when both match: `stored_latent`);
  - WORKDIR/tensorboard/eval: every scalar figure as `latent/<name>` at the checkpoint's step.
"""
import contextlib
import dataclasses
import os

from absl import logging
import numpy as np
import tensorflow as tf

from vapnev_tf import data as data_lib
from vapnev_tf import judge as judge_lib
from vapnev_tf import latent_metrics
from vapnev_tf import likelihoods
from vapnev_tf import loading
from vapnev_tf import locking
from vapnev_tf import workdir as workdir_lib

LATENT_FILE = "latent.json"
DEFAULT_TEMPERATURE = 0.8
_SCALARS = ("kl_nats", "active_units", "active_fraction", "mi_nats", "own_bpd", "other_bpd",
            "conditioning_gap_bpd", "probe_latent_accuracy", "probe_pixels_accuracy",
            "judge_test_accuracy", "agreement_mean_y", "agreement_sampled")


def check_latent_run(stored: dict, workdir: str) -> data_lib.DataConfig:
  """The run's DataConfig; ValueError naming the reason when the run has no latent z or its data
  config (e.g. an unknown dataset) is unusable."""
  likelihood = stored.get("model", {}).get("likelihood")
  if likelihood in likelihoods.LIKELIHOODS and likelihood not in likelihoods.VAE_LIKELIHOODS:
    raise ValueError(f"{workdir}: likelihood={likelihood!r} has no latent z (no encoder); latent "
                     "figures need a VAE likelihood such as 'vapnev'.")
  try:
    return data_lib.DataConfig(**stored["data"])
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{workdir_lib.path(workdir, workdir_lib.CONFIG_FILE)}: unusable 'data' "
                     f"section: {e}") from e


def latent_workdir(workdir: str, checkpoint: str | None = None, num_images: int = 0,
                   probe_train_take: int = 0, temperature: float | None = None,
                   seed: int | None = None, judge_cache_dir: str | None = None,
                   judge_epochs: int = 2, batch_size: int | None = None,
                   write: bool = True, model=None, step: int | None = None,
                   reuse: bool = False) -> dict:
  """The latent figures of the run in `workdir` (module docstring); returns them with "step",
  "checkpoint" and "written_to".

  Args:
    checkpoint: checkpoint prefix (default: the newest readable).
    num_images: the first N test images, also beyond the run's own test scope (its eval_take;
      the test split's size caps it); 0: every image of the run's test scope.
    probe_train_take: the probe's first N training images (0: the whole train split).
    temperature: of the sampled reconstructions (default: the run's sample_temperature, else 0.8).
    seed: default the run's eval_seed.
    judge_cache_dir: default `judge.default_cache_dir()`.
    judge_epochs: epochs of a judge trained here.
    batch_size: default the run's eval_batch_size.
    write: write latent.json and the scalars (holding the run's lock).
    model, step: an already restored model and its step (the training run's finish stage, which
      holds the lock itself); `checkpoint` then only labels the result.
    reuse: with `model`, return WORKDIR/latent.json as it is when it holds the figures of these
      very weights (its "weights_sha256") at `step` with the same settings (`stored_latent`).
  """
  judge_cache_dir = judge_lib.check_cache_dir(judge_cache_dir)
  stored = workdir_lib.read_config(workdir)
  data_cfg = check_latent_run(stored, workdir)
  for name, value in (("num_images", num_images), ("probe_train_take", probe_train_take)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"{name} must be an int >= 0 (0 = all), got {value!r}.")
  if num_images == 1:
    raise ValueError("num_images=1: the latent figures need at least 2 test images.")
  train_section = stored.get("train", {})
  if temperature is None:
    temperature = train_section.get("sample_temperature", DEFAULT_TEMPERATURE)
  seed = train_section.get("eval_seed", 0) if seed is None else seed
  batch_size = batch_size or data_cfg.eval_batch_size
  if num_images:
    data_cfg = dataclasses.replace(data_cfg, eval_take=num_images)
  data_cfg = dataclasses.replace(data_cfg, eval_batch_size=batch_size)
  # Everything besides the weights that the figures depend on, recorded with them.
  settings = {"num_images": num_images, "probe_train_take": probe_train_take,
              "temperature": temperature, "seed": seed, "judge_epochs": judge_epochs,
              "batch_size": batch_size}
  if reuse and model is not None:
    stored_result = stored_latent(workdir, step, workdir_lib.weights_fingerprint(model), settings)
    if stored_result is not None:
      logging.info("The latent figures of step %s were already computed for these weights (%s).",
                   step, workdir_lib.path(workdir, LATENT_FILE))
      return stored_result
  lock = (locking.workdir_lock(workdir, "latent evaluation", log=logging.warning)
          if write and model is None else contextlib.nullcontext())
  with lock:
    if model is None:
      model, info = loading.load_run(workdir, checkpoint)
      checkpoint, step = info["checkpoint"], info["step"]
    inputs = _inputs(data_cfg, seed, probe_train_take)
    judge = None
    if inputs["test_labels"] is not None and inputs["all_train_labels"] is not None:
      judge = judge_lib.load_or_train_judge(
          inputs["all_train_images"], inputs["all_train_labels"], inputs["all_test_images"],
          inputs["all_test_labels"], dataset=data_cfg.dataset, cache_dir=judge_cache_dir,
          epochs=judge_epochs, seed=seed)
    logging.info("Latent figures of %s (step %s) on %d test images.", checkpoint, step,
                 len(inputs["test_x"]))
    result = latent_metrics.evaluate_latent(
        model, inputs["test_x"], test_labels=inputs["test_labels"],
        train_images=inputs["train_images"], train_labels=inputs["train_labels"], judge=judge,
        seed=seed, temperature=temperature, batch_size=batch_size,
        pixel_probe_cache={"dataset": data_cfg.dataset, "cache_dir": judge_cache_dir})
    result.update(step=int(step), checkpoint=checkpoint, seed=seed, dataset=data_cfg.dataset,
                  judge_cache=None if judge is None else judge.path, written_to=None,
                  weights_sha256=workdir_lib.weights_fingerprint(model), settings=settings)
    if write:
      result["written_to"] = _write(workdir, result)
  return result


def stored_latent(workdir: str, step: int, weights_sha256: str, settings: dict) -> dict | None:
  """WORKDIR/latent.json (with "written_to" its path) if it holds the figures of `step`, of the
  weights with this `weights_sha256` and with these `settings`; else None (absent, unreadable,
  of other weights, or written before the file recorded its weights and settings)."""
  filename = workdir_lib.path(workdir, LATENT_FILE)
  if not tf.io.gfile.exists(filename):
    return None
  try:
    stored = workdir_lib.read_json(filename)
  except (OSError, ValueError):
    return None
  if (not isinstance(stored, dict) or stored.get("step") != step
      or stored.get("weights_sha256") != weights_sha256 or stored.get("settings") != settings):
    return None
  return dict(stored, written_to=filename)


def _inputs(data_cfg, seed: int, probe_train_take: int) -> dict:
  """Test images (dequantised as the run's evaluation), labels, and the train split."""
  test_x = np.concatenate(list(data_lib.eval_dataset(data_cfg, seed=seed).as_numpy_iterator()))
  test_labels = data_lib.load_labels(data_cfg, "test")
  train_labels = None if test_labels is None else data_lib.load_labels(data_cfg, "train")
  if train_labels is None:  # both splits need labels: "no labels"
    return {"test_x": test_x, "test_labels": None, "train_images": None, "train_labels": None,
            "all_train_labels": None}
  full_test = dataclasses.replace(data_cfg, eval_take=None)
  train_images = _uint8_images(data_cfg, "train")
  take = probe_train_take or len(train_images)
  return {"test_x": test_x, "test_labels": test_labels[:len(test_x)],
          "train_images": train_images[:take], "train_labels": train_labels[:take],
          "all_train_images": train_images, "all_train_labels": train_labels,
          "all_test_images": _uint8_images(full_test, "test"),
          "all_test_labels": data_lib.load_labels(full_test, "test")}


def _uint8_images(data_cfg, split: str) -> np.ndarray:
  batches = data_lib.load_images(data_cfg, split).batch(10_000).as_numpy_iterator()
  return np.concatenate(list(batches))


def _write(workdir: str, result: dict) -> str:
  filename = workdir_lib.path(workdir, LATENT_FILE)
  workdir_lib.write_json_atomic(filename, result)
  writer = tf.summary.create_file_writer(
      os.path.join(workdir_lib.path(workdir, workdir_lib.TENSORBOARD_DIR), "eval"))
  with writer.as_default(step=result["step"]):
    for name in _SCALARS:
      if result.get(name) is not None:
        tf.summary.scalar(f"latent/{name}", result[name])
  writer.close()
  logging.info("Latent figures written to %s.", filename)
  return filename
