"""Stage 4 of a run: the end-of-run work and the run's result.

    result = finish_run(workdir, run, outcome, data_cfg, train_cfg, evaluate, strategy, export)

Interrupted: the result without an evaluation. Otherwise the final evaluation (k =
`eval_num_samples`; reused from eval.json when a finished run is started again), which must be
finite, then (chief, `export_at_end`) WORKDIR/export and the paper panel in WORKDIR/figures, both
from the checkpoint the loop saved last, so their step is that checkpoint's step; with
`latent_eval`, the latent figures of that checkpoint (WORKDIR/latent.json).
"""
import math
import os
import signal

from absl import logging
import tensorflow as tf

from vapnev_tf import export as export_lib
from vapnev_tf import figures as figures_lib
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.training import distribute
from vapnev_tf.training import evaluation
from vapnev_tf.training import images
from vapnev_tf.training.loop import NonFiniteTrainingError


def finish_run(workdir: str, run, outcome, data_cfg, train_cfg, evaluate, strategy,
               export: bool) -> dict:
  """The run's result dict (see `training.train`); exports when `export` (the chief's job)."""
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
  else:
    final = evaluate(s, train_cfg.eval_num_samples)
    _check_finite(final, s)
    if export and train_cfg.export_at_end:
      export_and_figures(workdir, data_cfg, train_cfg, run.checkpoints.latest, final)
  latent = None
  if export and train_cfg.latent_eval:
    latent = latent_figures(workdir, run.checkpoints.latest)
  return dict(facts, eval=final, latent=latent, interrupted=None)


def latent_figures(workdir: str, checkpoint: str) -> dict | None:
  """The latent figures of `checkpoint` (`vapnev_tf.latent_report`, written to latent.json), on a
  fresh strategy-free copy of the model; None (logged) for a likelihood without a latent z."""
  from vapnev_tf import latent_report  # pylint: disable=g-import-not-at-top
  model, step = workdir_lib.restore_model(workdir, checkpoint)
  if not model.has_vae:
    logging.info("No latent figures: likelihood=%r has no latent z.", model.config.likelihood)
    return None
  return latent_report.latent_workdir(workdir, checkpoint, model=model, step=step, reuse=True)


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
          "weights_sha256": weights_fingerprint(state.model),
          "last_loss": None if last is None else float(last["loss"])}


weights_fingerprint = workdir_lib.weights_fingerprint


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


def export_and_figures(workdir: str, data_cfg, train_cfg, checkpoint: str, final: dict) -> None:
  """WORKDIR/export (SavedModel) and WORKDIR/figures/panel_step{N}.png from `checkpoint`.

  The model is a fresh, strategy-free copy restored from `checkpoint` (exactly what
  `workdir.restore_model` gives users); N is that checkpoint's step.
  """
  model, step = workdir_lib.restore_model(workdir, checkpoint)
  metadata = {"step": int(step), "checkpoint": checkpoint,
              "weights_sha256": workdir_lib.weights_fingerprint(model),
              "test_bits_per_dim": evaluation.tightest_bpd(final), "eval": final,
              "run_config": workdir_lib.read_config(workdir)}
  out = export_lib.export_model(model, workdir_lib.path(workdir, workdir_lib.EXPORT_DIR),
                                metadata, overwrite=True)
  logging.info("Exported %s (step %d) to %s", checkpoint, step, out)
  originals = images.first_test_images(data_cfg, train_cfg.num_image_samples)
  panel = figures_lib.paper_panel(model, originals, seed=train_cfg.seed,
                                  temperature=train_cfg.sample_temperature)
  filename = workdir_lib.path(workdir, workdir_lib.FIGURES_DIR, f"panel_step{step}.png")
  tf.io.gfile.makedirs(os.path.dirname(filename))
  figures_lib.save_png(panel, filename)
  logging.info("Wrote %s", filename)
