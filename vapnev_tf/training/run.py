"""`train()`: a run read as its stages, each a function in a module of its own.

    1. prepare the run directory   rundir.prepared        (checks, WORKDIR/.lock)
    2. build or restore            restore.build_or_restore, restore.initialize_from_data
    3. loop                        loop.run_loop          (training.step, reporting, signals)
    4. finish                      finish.finish_run      (final evaluation, then `at_end`)

The products of a trained run (export, figures, latent figures) are above training:
`vapnev_tf.pipeline.train` is this function with them as its `at_end`.
"""
from absl import logging
import tensorflow as tf

from vapnev_tf import data as data_lib
from vapnev_tf import evaluation
from vapnev_tf import interrupts
from vapnev_tf.config import ModelConfig
from vapnev_tf.training import checkpointing
from vapnev_tf.training import distribute
from vapnev_tf.training import finish
from vapnev_tf.training import loop
from vapnev_tf.training import reporting
from vapnev_tf.training import restore
from vapnev_tf.training import rundir
from vapnev_tf.training import signals
from vapnev_tf.training import step as step_lib
from vapnev_tf.training import threads
from vapnev_tf.config import TrainConfig


def train(model_cfg: ModelConfig, data_cfg: data_lib.DataConfig, train_cfg: TrainConfig,
          workdir: str, *, strategy: tf.distribute.Strategy | None = None,
          force_config: bool = False, flags_text: str | None = None, at_end=None) -> dict:
  """Trains (or resumes) the run in `workdir` up to `train_cfg.train_steps`, then evaluates.

  Args:
    model_cfg, data_cfg, train_cfg: the frozen configs of the run.
    workdir: the run directory (`vapnev_tf.workdir` layout); an existing one is resumed.
    strategy: default `distribute.make_strategy(train_cfg.strategy)`.
    force_config: resume even if config.json holds a different run-defining config
      (`config_run.config_differences`).
    flags_text: written to WORKDIR/flags.txt with config.json.
    at_end: `at_end(checkpoint, final, evaluated_now) -> dict`, run by the chief after a finite
      final evaluation (`finish.finish_run`); its dict is merged into the result.
      `vapnev_tf.pipeline.train` passes the export, figures and latent figures.

  The chief holds WORKDIR/.lock for the whole run. config.json and flags.txt are written only
  when the run first writes state (a checkpoint or eval.json): a start that fails leaves the
  run directory as it was.

  Returns:
    {"step", "skipped_steps", "eval" (final evaluation dict, None when interrupted), "latent"
     (the latent figures with `latent_eval` when run by `pipeline.train`, else None),
     "interrupted" (signal number or None), "restored_from" (checkpoint or None), "start_step",
     "start_optimizer_iterations", "optimizer_iterations", "num_replicas",
     "per_replica_batch_size", "weights_sha256", "last_loss", "task", "workdir"}.

  Raises:
    checkpointing.ConfigError (a ValueError): bad or contradicting configuration, unwritable
      workdir, batch sizes not divisible by the replicas, data too small for a batch.
    checkpointing.CheckpointError: checkpoints exist but none is readable;
      rundir.UnrestorableRunError (a CheckpointError): a run is there but nothing restorable.
    locking.WorkdirLockedError: another process holds the run directory.
    interrupts.Interrupted: SIGTERM/SIGINT during the final evaluation or export (the loop's
      last checkpoint is saved; a partial export is removed).
    loop.NonFiniteTrainingError: `max_consecutive_bad_steps` consecutive non-finite steps, every
      step skipped, or a non-finite final bound.
  """
  _check_configs(model_cfg, data_cfg, train_cfg)
  thread_choice = threads.configure_threads(train_cfg.intra_op_threads,
                                            train_cfg.inter_op_threads)
  logging.info("Threads: %s", thread_choice.describe())
  strategy = strategy or distribute.make_strategy(train_cfg.strategy)
  distribute.check_batch_sizes(data_cfg, strategy)
  chief = distribute.is_chief(strategy)
  record = rundir.RunRecord(
      workdir, rundir.run_config(model_cfg, data_cfg, train_cfg, strategy, thread_choice),
      flags_text, enabled=chief)
  with rundir.prepared(workdir, chief):
    checkpointing.check_resume_config(workdir, model_cfg, data_cfg, train_cfg, force=force_config)
    with restore.build_or_restore(model_cfg, train_cfg, strategy, workdir, chief,
                                  before_save=record.commit) as run:
      restore.initialize_from_data(run, data_cfg, strategy)
      iterator = iter(distribute.train_dataset_from_step(strategy, data_cfg, run.start_step))
      train_step = step_lib.make_train_step(strategy, train_cfg, data_cfg.batch_size)
      with reporting.make_reporter(chief, workdir, model_cfg, data_cfg, train_cfg,
                                   commit=record.commit) as reporter:
        evaluate = evaluation.EvalRunner(run, data_cfg, train_cfg, strategy, reporter)
        with signals.make_stop_request(strategy) as stop:
          outcome = loop.run_loop(run, train_step, iterator, train_cfg, reporter, evaluate, stop)
        # A signal now raises: the export's temporary directory is removed on the way out.
        with interrupts.raising(f"the final evaluation and export of step {outcome.step} (its "
                                "checkpoint is saved; run the same command to finish)"):
          return finish.finish_run(workdir, run, outcome, train_cfg, evaluate, strategy,
                                   at_end=at_end if chief else None)


def _check_configs(model_cfg, data_cfg, train_cfg) -> None:
  """ConfigError unless the configs have their types and the model fits the data's images."""
  for name, value, cls in (("model_cfg", model_cfg, ModelConfig),
                           ("data_cfg", data_cfg, data_lib.DataConfig),
                           ("train_cfg", train_cfg, TrainConfig)):
    if not isinstance(value, cls):
      raise checkpointing.ConfigError(
          f"{name} must be a {cls.__name__}, got {type(value).__name__}.")
  data_shape = tuple(data_lib.image_shape(data_cfg.dataset, data_cfg))
  if tuple(model_cfg.image_shape) != data_shape:
    raise checkpointing.ConfigError(
        f"model image_shape {tuple(model_cfg.image_shape)} does not match dataset "
        f"{data_cfg.dataset!r}, whose images are {data_shape}.")
  try:  # a dataset that is not there fails now, before the workdir or the model (never downloads)
    logging.info("Data: %s", data_lib.check_available(data_cfg))
  except data_lib.DatasetUnavailableError as e:
    raise checkpointing.ConfigError(str(e)) from e
