"""Evaluates a trained run on its test set: ELBO and importance-weighted bound, in bits/dim.

    python -m vapnev_tf.evaluate --workdir=DIR [--num_samples=k] [--checkpoint=PREFIX]
                                 [--eval_take=N]

The model is rebuilt from WORKDIR/config.json and restored with `workdir.restore_model`; the test
data come from the run's stored data config (so the bound is computed on the same images with the
same dequantisation noise as during training). Prints the result and writes WORKDIR/eval.json.
"""
import dataclasses
import json

from absl import app
from absl import flags
from absl import logging

from vapnev_tf import data as data_lib
from vapnev_tf import seeds
from vapnev_tf import workdir as workdir_lib


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
  flags.DEFINE_bool("write", True, "Write WORKDIR/eval.json.", **d)
  flags.mark_flag_as_required("workdir", flag_values=fv)


def evaluate_workdir(workdir: str, checkpoint: str | None = None, num_samples: int | None = None,
                     eval_take: int | None = None, eval_batch_size: int | None = None,
                     seed: int | None = None, chunk_size: int | None = None,
                     write: bool = True) -> dict:
  """Restores `checkpoint` (default: latest) of the run in `workdir` and evaluates it.

  `None` arguments take the run's own values from config.json; `eval_take=0` means all images.
  Returns the evaluation dict plus "step" and "checkpoint".
  """
  from vapnev_tf.training import evaluation  # pylint: disable=g-import-not-at-top
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
  data_cfg = dataclasses.replace(data_cfg, **overrides)
  num_samples = num_samples or train_section.get("eval_num_samples", 1)
  seed = train_section.get("eval_seed", 0) if seed is None else seed
  chunk_size = chunk_size or train_section.get("eval_chunk_size", seeds.IW_CHUNK_SIZE)
  checkpoint = checkpoint or workdir_lib.latest_checkpoint(workdir)
  model, step = workdir_lib.restore_model(workdir, checkpoint)
  logging.info("Evaluating %s (step %d) on %s test images with k=%d.", checkpoint, step,
               data_cfg.eval_take or "all", num_samples)
  result = evaluation.evaluate(model, data_cfg, num_samples=num_samples, seed=seed,
                               chunk_size=chunk_size)
  if write:
    evaluation.write_eval_json(workdir, result, step, checkpoint)
  return dict(result, step=step, checkpoint=checkpoint)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  fv = flags.FLAGS
  from vapnev_tf.training import evaluation  # pylint: disable=g-import-not-at-top
  try:
    result = evaluate_workdir(fv.workdir, fv.checkpoint, fv.num_samples, fv.eval_take,
                              fv.eval_batch_size, fv.seed, fv.chunk_size, fv.write)
  except ValueError as e:
    logging.error("%s", e)
    return 1
  print(json.dumps(result, indent=2))
  print(evaluation.summary_line(result))
  return 0


def run():
  """Console script `vapnev-eval`."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
