"""Evaluates a trained run on its test set: ELBO and importance-weighted bound, in bits/dim.

    python -m vapnev_tf.evaluate --workdir=DIR [--num_samples=k] [--checkpoint=PREFIX]
                                 [--eval_take=N] [--data_dir=DIR] [--fashion_mnist_dir=DIR]
    python -m vapnev_tf.evaluate --workdir=DIR --latent [--eval_take=N] [--probe_train_take=M]

`--latent` computes how much the latent carries instead (`vapnev_tf.latent_report`: KL, active
units, I(x; z), conditioning gap, linear probe, judge agreement) and writes WORKDIR/latent.json.

The model is rebuilt from WORKDIR/config.json and restored with `workdir.load_run` (the newest
readable checkpoint: a corrupt newer one is skipped and logged); the test data come from the run's
stored data config (so the bound is computed on the same images with the same dequantisation noise
as during training). Prints the result and writes it, holding the run directory's lock:

  - a full evaluation (every test image, or the run's own `eval_take`) becomes the headline
    WORKDIR/eval.json (the one before it goes to its "history");
  - a partial one (`--eval_take` a subset of that) goes to WORKDIR/evaluations/
    step{S}-images{N}-k{K}-seed{SEED}.json with its scope, and never replaces eval.json, so export
    metadata and a re-run of train (which read eval.json) only ever see full evaluations;
  - an evaluation of a checkpoint from outside the run (`--checkpoint` not in WORKDIR/checkpoints
    or WORKDIR/best, e.g. another run's) goes to WORKDIR/evaluations/foreign-<name>-<sha>-...json,
    labelled with the checkpoint it came from, and never to eval.json.

Every record carries "weights_sha256" (`workdir.weights_fingerprint` of the evaluated weights);
export metadata and train's reuse of a final evaluation attach a record to a checkpoint only when
that fingerprint matches the checkpoint's weights, never by step alone.
"""
import contextlib
import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from vapnev_tf import console
from vapnev_tf import data as data_lib
from vapnev_tf import judge
from vapnev_tf import latent_metrics
from vapnev_tf import latent_report
from vapnev_tf import loading
from vapnev_tf import locking
from vapnev_tf import seeds
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.training import evaluation


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  d = dict(flag_values=fv)
  flags.DEFINE_string("workdir", None, "Run directory written by vapnev_tf.train.", **d)
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (default: the latest in "
                      "WORKDIR/checkpoints), e.g. WORKDIR/best/ckpt-1000.", **d)
  flags.DEFINE_integer("num_samples", None, "k of the importance-weighted bound (default: the "
                       "run's eval_num_samples; 1 = ELBO only).", lower_bound=1, **d)
  flags.DEFINE_integer("eval_take", None, "Evaluate only the first N test images (default: the "
                       "run's setting; 0 = all).", lower_bound=0, **d)
  flags.DEFINE_integer("eval_batch_size", None, "Global evaluation batch size (default: the "
                       "run's).", lower_bound=1, **d)
  flags.DEFINE_integer("seed", None, "Evaluation seed (default: the run's eval_seed).",
                       lower_bound=0, **d)
  flags.DEFINE_integer("chunk_size", None, "Importance samples evaluated at once (default: the "
                       "run's eval_chunk_size).", lower_bound=1, **d)
  flags.DEFINE_string("data_dir", None, "Where the data set is now (default: the run's "
                      "data_dir); as vapnev_tf.train's --data_dir.", **d)
  flags.DEFINE_string("fashion_mnist_dir", None, "Directory of the Fashion-MNIST IDX files "
                      "(default: the run's); as vapnev_tf.train's --fashion_mnist_dir.", **d)
  flags.DEFINE_bool("latent", False, "Compute the latent figures instead of the bounds (KL, "
                    "active units, I(x;z), conditioning gap, linear probe, judge agreement) and "
                    "write WORKDIR/latent.json; --eval_take limits the test images.", **d)
  flags.DEFINE_integer("probe_train_take", 0, "With --latent: train the linear probe on the "
                       "first N training images (0 = all).", lower_bound=0, **d)
  flags.DEFINE_float("temperature", None, "With --latent: temperature of the sampled "
                     "reconstructions (default: the run's sample_temperature, else 0.8).",
                     lower_bound=0.0, **d)
  flags.DEFINE_string("judge_cache_dir", None, "With --latent: where judge classifiers are cached "
                      "(default: $XDG_CACHE_HOME/vapnev_tf/judges, XDG_CACHE_HOME defaulting to "
                      "~/.cache).", **d)
  flags.DEFINE_integer("judge_epochs", 2, "With --latent: epochs of a judge trained because none "
                       "is cached.", lower_bound=1, **d)
  flags.DEFINE_bool("write", True, "Write the result: WORKDIR/eval.json when it covers the "
                    "run's whole test scope, else WORKDIR/evaluations/<scope>.json.", **d)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def evaluate_workdir(workdir: str, checkpoint: str | None = None, num_samples: int | None = None,
                     eval_take: int | None = None, eval_batch_size: int | None = None,
                     seed: int | None = None, chunk_size: int | None = None,
                     write: bool = True, data_dir: str | None = None,
                     fashion_mnist_dir: str | None = None) -> dict:
  """Restores `checkpoint` (default: the newest readable) of the run in `workdir`, evaluates it.

  `None` arguments take the run's own values from config.json; `eval_take=0` means all images.
  `data_dir` / `fashion_mnist_dir` say where the data is now (its location is not part of the
  run; the data set's own error messages name these flags).
  With `write`, holds the run directory's lock (`locking.WorkdirLockedError` if it is in use) and
  writes a full evaluation to WORKDIR/eval.json, a partial one to WORKDIR/evaluations/ (module
  docstring); a checkpoint from outside the run always goes to WORKDIR/evaluations/. Returns the
  evaluation dict plus "step", "checkpoint", "weights_sha256", "full", "foreign" and "written_to".
  """
  stored = workdir_lib.read_config(workdir)
  train_section = stored.get("train", {})
  try:
    data_cfg = data_lib.DataConfig(**stored["data"])
  except (KeyError, TypeError) as e:
    raise ValueError(f"{workdir_lib.path(workdir, workdir_lib.CONFIG_FILE)} has no usable 'data' "
                     f"section ({e}).") from e
  overrides = {}
  if eval_take is not None:
    overrides["eval_take"] = eval_take or None
  if eval_batch_size is not None:
    overrides["eval_batch_size"] = eval_batch_size
  if data_dir is not None:
    overrides["data_dir"] = data_dir or None
  if fashion_mnist_dir is not None:
    overrides["fashion_mnist_dir"] = fashion_mnist_dir
  data_cfg = dataclasses.replace(data_cfg, **overrides)
  num_samples = num_samples or train_section.get("eval_num_samples", 1)
  seed = train_section.get("eval_seed", 0) if seed is None else seed
  chunk_size = chunk_size or train_section.get("eval_chunk_size", seeds.IW_CHUNK_SIZE)
  lock = (locking.workdir_lock(workdir, "evaluation", log=logging.warning) if write
          else contextlib.nullcontext())
  with lock:
    model, info = loading.load_run(workdir, checkpoint)
    checkpoint, step = info["checkpoint"], info["step"]
    fingerprint = workdir_lib.weights_fingerprint(model)
    foreign = not workdir_lib.is_run_checkpoint(workdir, checkpoint)
    if foreign:
      logging.warning("%s is not one of this run's checkpoints (%s): its evaluation goes to %s, "
                      "never to %s.", checkpoint, workdir, workdir_lib.EVALUATIONS_DIR,
                      workdir_lib.EVAL_FILE)
    logging.info("Evaluating %s (step %d) on %s test images with k=%d.", checkpoint, step,
                 data_cfg.eval_take or "all", num_samples)
    result = evaluation.evaluate(model, data_cfg, num_samples=num_samples, seed=seed,
                                 chunk_size=chunk_size)
    result = dict(result, eval_take=data_cfg.eval_take)
    full = workdir_lib.is_full_evaluation(result, stored)
    written_to = None
    if write and foreign:
      written_to = _write_foreign(workdir, result, step, checkpoint, fingerprint, full, stored)
    elif write and full:
      evaluation.write_eval_json(workdir, result, step, checkpoint, fingerprint)
      written_to = workdir_lib.path(workdir, workdir_lib.EVAL_FILE)
    elif write:
      written_to = _write_partial(workdir, result, step, checkpoint, stored, fingerprint)
  return dict(result, step=step, checkpoint=checkpoint, weights_sha256=fingerprint, full=full,
              foreign=foreign, written_to=written_to)


def _write_foreign(workdir: str, result: dict, step: int, checkpoint: str, fingerprint: str,
                   full: bool, stored: dict) -> str:
  """WORKDIR/evaluations/foreign-....json: an evaluation of a checkpoint from outside the run,
  with where it came from; eval.json untouched."""
  filename = workdir_lib.foreign_evaluation_path(workdir, checkpoint, fingerprint,
                                                 result["num_images"], result["k"],
                                                 result["seed"])
  source = {"checkpoint": checkpoint if "://" in checkpoint else os.path.abspath(checkpoint),
            "step": int(step), "weights_sha256": fingerprint, "of_this_run": False}
  scope = {"full": full, "images": result["num_images"], "eval_take": result["eval_take"],
           "run_eval_take": stored.get("data", {}).get("eval_take"), "k": result["k"],
           "seed": result["seed"]}
  tf.io.gfile.makedirs(workdir_lib.path(workdir, workdir_lib.EVALUATIONS_DIR))
  workdir_lib.write_json_atomic(filename, dict(
      result, step=int(step), checkpoint=checkpoint, weights_sha256=fingerprint, source=source,
      scope=scope, test_bits_per_dim=evaluation.tightest_bpd(result)))
  logging.info("An evaluation of %s, a checkpoint from outside the run: written to %s, not to "
               "%s.", checkpoint, filename, workdir_lib.EVAL_FILE)
  return filename


def _write_partial(workdir: str, result: dict, step: int, checkpoint: str, stored: dict,
                   fingerprint: str) -> str:
  """WORKDIR/evaluations/<scope>.json: a partial evaluation with its scope; eval.json untouched."""
  filename = workdir_lib.partial_evaluation_path(workdir, step, result["num_images"],
                                                 result["k"], result["seed"])
  scope = {"full": False, "images": result["num_images"], "eval_take": result["eval_take"],
           "run_eval_take": stored.get("data", {}).get("eval_take"), "k": result["k"],
           "seed": result["seed"], "checkpoint": checkpoint, "step": step}
  tf.io.gfile.makedirs(workdir_lib.path(workdir, workdir_lib.EVALUATIONS_DIR))
  workdir_lib.write_json_atomic(filename, dict(
      result, step=int(step), checkpoint=checkpoint, weights_sha256=fingerprint, scope=scope,
      test_bits_per_dim=evaluation.tightest_bpd(result)))
  logging.info("A partial evaluation (%d of the run's test images): written to %s, not to %s.",
               result["num_images"], filename, workdir_lib.EVAL_FILE)
  return filename


def main(argv, fv: flags.FlagValues = flags.FLAGS):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    if fv.latent:
      result = _latent(fv)
    else:
      result = evaluate_workdir(fv.workdir, fv.checkpoint, fv.num_samples, fv.eval_take,
                                fv.eval_batch_size, fv.seed, fv.chunk_size, fv.write,
                                data_dir=fv.data_dir,
                                fashion_mnist_dir=fv.fashion_mnist_dir)
  except (ValueError, OSError, locking.WorkdirLockedError) as e:  # bad input, run in use: 1 line
    print(f"vapnev_tf.evaluate: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 1
  if fv.latent:
    print(latent_metrics.summary_line(result))
    return 0
  print(json.dumps(result, indent=2))
  print(evaluation.summary_line(result))
  return 0


def _latent(fv: flags.FlagValues) -> dict:
  """`--latent`: the run's latent figures (`vapnev_tf.latent_report`)."""
  judge.check_cache_dir(fv.judge_cache_dir, "--judge_cache_dir")
  return latent_report.latent_workdir(
      fv.workdir, fv.checkpoint, num_images=fv.eval_take or 0,
      probe_train_take=fv.probe_train_take, temperature=fv.temperature, seed=fv.seed,
      judge_cache_dir=fv.judge_cache_dir, judge_epochs=fv.judge_epochs,
      batch_size=fv.eval_batch_size, write=fv.write)


def run():
  """Console script `vapnev-eval`."""
  define_flags()
  console.run_cli(main, "vapnev_tf.evaluate")


if __name__ == "__main__":
  run()
