"""Stage 4 of a run: the final evaluation and the run's result.

    result = finish_run(workdir, run, outcome, train_cfg, evaluate, strategy, at_end)

Interrupted: the result without an evaluation. Otherwise the final evaluation (k =
`eval_num_samples`; reused from eval.json when a finished run is started again), which must be
finite, then the chief's `at_end(checkpoint, final, evaluated_now)` with the checkpoint the loop
saved last: the products built from a trained run (export, figures, latent figures) live above
training (`vapnev_tf.pipeline`), so training hands them the checkpoint instead of importing them.
"""
import math
import signal

from absl import logging
import tensorflow as tf

from vapnev_tf import evaluation
from vapnev_tf import weight_averages
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.errors import NonFiniteTrainingError
from vapnev_tf.training import distribute


def finish_run(workdir: str, run, outcome, train_cfg, evaluate, strategy, at_end=None) -> dict:
  """The run's result dict (see `training.train`).

  `at_end(checkpoint, final, evaluated_now) -> dict` (the chief's; None: nothing) is called after
  a finite final evaluation with the loop's last checkpoint; `evaluated_now` is False when the
  evaluation was reused from eval.json. Its dict is merged into the result (e.g. "latent").
  """
  s = outcome.step
  facts = _facts(workdir, run, outcome, strategy)
  if outcome.interrupted is not None:
    logging.warning("Stopped by %s at step %d; latest checkpoint %s. Run the same command to "
                    "resume.", signal.Signals(outcome.interrupted).name, s,
                    run.checkpoints.latest)
    return dict(facts, eval=None, latent=None, interrupted=int(outcome.interrupted))
  final = None
  if s == run.start_step and run.restored_from:  # a finished run started again: reuse results
    final = _stored_final_eval(workdir, s, train_cfg, facts["weights_sha256"])
  if final is not None:
    _check_finite(final, s)
    logging.info("Step %d was already evaluated (%s): %s", s,
                 workdir_lib.path(workdir, workdir_lib.EVAL_FILE), evaluation.summary_line(final))
  evaluated_now = final is None
  if evaluated_now:
    final = evaluate(s, train_cfg.eval_num_samples)
    _check_finite(final, s)
  result = dict(facts, eval=final, latent=None, interrupted=None)
  if at_end is not None:
    result.update(at_end(run.checkpoints.latest, final, evaluated_now) or {})
  return result


def _check_finite(result: dict, step: int) -> None:
  """NonFiniteTrainingError unless the final ELBO (and IW bound, when computed) are finite."""
  bounds = {"elbo_bpd": result.get("elbo_bpd"), "iw_bpd": result.get("iw_bpd")}
  if result.get("k", 1) == 1:
    bounds.pop("iw_bpd")
  bad = {k: v for k, v in bounds.items() if v is None or not math.isfinite(v)}
  if bad:
    shown = ", ".join(f"{k}={v}" for k, v in bad.items())
    raise NonFiniteTrainingError(
        f"the final evaluation at step {step} is not finite ({shown}; eval.json records it as "
        "null): the model's weights or the test data "
        "produce non-finite bounds. The run is not exported; check the data, lower the learning "
        "rate or enable --clip_grad_norm, and train again from an earlier checkpoint or a new "
        "--workdir.")


def _facts(workdir, run, outcome, strategy) -> dict:
  state, last = run.state, outcome.last_out
  return {"workdir": workdir, "task": distribute.task_label(strategy),
          "num_replicas": strategy.num_replicas_in_sync,
          "per_replica_batch_size": None if last is None else int(last["per_replica_batch_size"]),
          "restored_from": run.restored_from, "start_step": run.start_step,
          "start_optimizer_iterations": run.start_iterations, "step": outcome.step,
          "optimizer_iterations": int(state.optimizer.iterations.numpy()),
          "skipped_steps": int(state.skipped_steps.numpy()),
          "weights_sha256": _evaluated_fingerprint(state),
          "last_loss": None if last is None else float(last["loss"])}


weights_fingerprint = workdir_lib.weights_fingerprint


def _evaluated_fingerprint(state) -> str:
  """The fingerprint of the weights the run evaluates and exports: its Polyak averages when it
  keeps them (`weight_averages`), else its trained weights."""
  with weight_averages.evaluated_weights(state.model, state.optimizer):
    return weights_fingerprint(state.model)


def _stored_final_eval(workdir: str, step: int, train_cfg, weights_sha256: str) -> dict | None:
  """WORKDIR/eval.json if it is the final evaluation of `step` with this k and seed and of these
  very weights (its "weights_sha256"), else None."""
  filename = workdir_lib.path(workdir, workdir_lib.EVAL_FILE)
  if not tf.io.gfile.exists(filename):
    return None
  try:
    stored = workdir_lib.read_json(filename)
  except ValueError:
    return None
  if (stored.get("step") != step or stored.get("k") != train_cfg.eval_num_samples
      or stored.get("seed") != train_cfg.eval_seed
      or stored.get("weights_sha256") != weights_sha256):
    return None
  if train_cfg.export_at_end and not tf.io.gfile.exists(
      workdir_lib.path(workdir, workdir_lib.EXPORT_DIR)):
    return None
  return {k: v for k, v in stored.items() if k not in ("history", "checkpoint", "step",
                                                        "test_bits_per_dim", "weights_sha256")}
