"""Evaluates a trained run on its test set: ELBO and importance-weighted bound, in bits/dim.

    python -m vapnev_tf.evaluate --workdir=DIR [--num_samples=k] [--checkpoint=PREFIX]
                                 [--eval_take=N] [--data_dir=DIR] [--fashion_mnist_dir=DIR]
                                 [--weights=raw|ema]
    python -m vapnev_tf.evaluate --workdir=DIR --latent [--eval_take=N] [--probe_train_take=M]

`--latent` computes how much the latent carries instead (`vapnev_tf.latent_report`: KL, active
units, I(x; z), conditioning gap, linear probe, judge agreement) and writes WORKDIR/latent.json.

The library side is `vapnev_tf.evaluation.evaluate_workdir`: it restores the run's newest readable
checkpoint (or --checkpoint), evaluates it on the run's own test images and dequantisation noise,
and writes a full evaluation to WORKDIR/eval.json, a partial one or one of a foreign checkpoint to
WORKDIR/evaluations/ (never eval.json), holding the run directory's lock.
"""
import json
import sys

from absl import app
from absl import flags

from vapnev_tf import console
from vapnev_tf import evaluation
from vapnev_tf import judge
from vapnev_tf import latent_metrics
from vapnev_tf import latent_report
from vapnev_tf import locking


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  d = dict(flag_values=fv)
  flags.DEFINE_string("workdir", None, "Run directory written by vapnev_tf.train.", **d)
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix (default: the latest in "
                      "WORKDIR/checkpoints), e.g. WORKDIR/best/ckpt-1000.", **d)
  flags.DEFINE_integer("num_samples", None, "k of the importance-weighted bound (default: the "
                       "run's eval_num_samples; 1 = ELBO only).", lower_bound=1, **d)
  flags.DEFINE_integer("eval_take", None, "Evaluate only the first N test images (default: the "
                       "run's setting; 0 = all; with --latent, 0 = the run's setting and N may "
                       "exceed it).", lower_bound=0, **d)
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
  flags.DEFINE_enum("weights", None, ["raw", "ema"], "Which of the checkpoint's weights to "
                    "evaluate (default: the run's own: its Polyak averages when it keeps them); "
                    "'raw' of a run that keeps averages is written to WORKDIR/evaluations/.", **d)
  flags.DEFINE_bool("write", True, "Write the result: WORKDIR/eval.json when it covers the "
                    "run's whole test scope, else WORKDIR/evaluations/<scope>.json.", **d)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def main(argv, fv: flags.FlagValues = flags.FLAGS):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    if fv.latent and fv.weights is not None:
      raise ValueError("--weights applies to the bounds; --latent reports the run's own weights.")
    if fv.latent:
      result = _latent(fv)
    else:
      result = evaluation.evaluate_workdir(
          fv.workdir, fv.checkpoint, fv.num_samples, fv.eval_take, fv.eval_batch_size, fv.seed,
          fv.chunk_size, fv.write, data_dir=fv.data_dir, fashion_mnist_dir=fv.fashion_mnist_dir,
          weights=fv.weights)
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
