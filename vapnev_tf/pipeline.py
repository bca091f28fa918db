"""A whole training run: `training.train`, then the chief's products of the trained run.

    result = pipeline.train(model_cfg, data_cfg, train_cfg, workdir)

After a finite final evaluation, from the checkpoint the loop saved last (so their step is that
checkpoint's step): with `export_at_end`, WORKDIR/export (SavedModel) and the paper panel
WORKDIR/figures/panel_step{N}.png, when the evaluation is new (a finished run started again keeps
its products); with `latent_eval`, the latent figures (WORKDIR/latent.json). These need export,
figures and the latent report, which sit above training; so this module, not training, joins
them (docs/design.md §21).
"""
import os

from absl import logging
import tensorflow as tf

from vapnev_tf import evaluation
from vapnev_tf import export as export_lib
from vapnev_tf import figures as figures_lib
from vapnev_tf import latent_report
from vapnev_tf import loading
from vapnev_tf import training
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.training import images


def train(model_cfg, data_cfg, train_cfg, workdir: str, **kwargs) -> dict:
  """`training.train` (same arguments and result) with the products of the run as its `at_end`:
  the export and figures (`export_at_end`) and the latent figures (`latent_eval`, the result's
  "latent")."""
  return training.train(model_cfg, data_cfg, train_cfg, workdir,
                        at_end=end_of_run(workdir, data_cfg, train_cfg), **kwargs)


def end_of_run(workdir: str, data_cfg, train_cfg):
  """The `at_end(checkpoint, final, evaluated_now) -> {"latent": ...}` of `training.train`."""

  def at_end(checkpoint: str, final: dict, evaluated_now: bool) -> dict:
    if evaluated_now and train_cfg.export_at_end:
      export_and_figures(workdir, data_cfg, train_cfg, checkpoint, final)
    latent = latent_figures(workdir, checkpoint) if train_cfg.latent_eval else None
    return {"latent": latent}

  return at_end


def latent_figures(workdir: str, checkpoint: str) -> dict | None:
  """The latent figures of `checkpoint` (`vapnev_tf.latent_report`, written to latent.json, or
  reused from it when it holds them for these weights and settings), on a fresh strategy-free copy
  of the model; None (logged) for a likelihood without a latent z."""
  model, step = loading.restore_model(workdir, checkpoint)
  if not model.has_vae:
    logging.info("No latent figures: likelihood=%r has no latent z.", model.config.likelihood)
    return None
  return latent_report.latent_workdir(workdir, checkpoint, model=model, step=step, reuse=True)


def export_and_figures(workdir: str, data_cfg, train_cfg, checkpoint: str, final: dict) -> None:
  """WORKDIR/export (SavedModel) and WORKDIR/figures/panel_step{N}.png from `checkpoint`.

  The model is a fresh, strategy-free copy restored from `checkpoint` (exactly what
  `loading.load_run` gives users: the Polyak averages of a run with `ema_decay` > 0); N is that
  checkpoint's step.
  """
  model, info = loading.load_run(workdir, checkpoint)
  step = info["step"]
  metadata = {"step": int(step), "checkpoint": checkpoint,
              "weights_sha256": workdir_lib.weights_fingerprint(model), "weights": info["weights"],
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
