"""The training loop: an outer loop (logging, summaries, evaluation, checkpoints, export) around one
pure, distributed training step.

    train(model_cfg, data_cfg, train_cfg, workdir) -> {"step", "eval", "interrupted", ...}

The step (`make_train_step`) is one `tf.function` running `strategy.run`:
  1. per replica: z ~ q(z|x) with a stateless seed (seed, step, replica), per-example loss
     -(log p(x|z) - w_KL(step) KL), averaged over the GLOBAL batch;
  2. gradients and scalar statistics are all-reduced by the step itself, so every replica holds
     the global gradient, its global norm and one `ok = all finite` flag;
  3. the global gradient is clipped by its global norm (optional) and applied with
     `optimizer.apply_gradients` only when ok. Keras' optimiser sums the per-replica gradients it
     is given, so each replica passes 1/replicas of the global gradient. The conditional apply
     follows Keras' LossScaleOptimizer: a `tf.cond` in a replica context may not contain the
     optimiser's `merge_call`, so under strategies that use merge_call the cond runs in the
     cross-replica context (`merge_call`) and applies through `call_for_each_replica`.
A skipped step changes nothing but the `step` and `skipped_steps` counters (Adam's moments and
iteration count stay as they were).
"""
import hashlib
import os
import shutil
import signal
import tempfile
import threading
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import vapnev_tf
from vapnev_tf import config_run
from vapnev_tf import data as data_lib
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.config import ModelConfig
from vapnev_tf.metrics import bits_per_dim
from vapnev_tf.model import VAPNEV
from vapnev_tf.training import checkpointing
from vapnev_tf.training import distribute
from vapnev_tf.training import evaluation
from vapnev_tf.training import images
from vapnev_tf.training import schedules
from vapnev_tf.training.config import TrainConfig

_TRAIN_STREAM = 1  # tag of the z-sampling seeds of training
_IMAGE_STREAM = 4  # tag of the seeds of TensorBoard/figure images
_CHECKPOINT_NAME = "ckpt"


class NonFiniteTrainingError(RuntimeError):
  """Training produced too many consecutive non-finite steps and was aborted."""


def build_optimizer(train_cfg: TrainConfig) -> keras.optimizers.Optimizer:
  """Adam (Keras 3) with the configured hyper-parameters and learning-rate schedule."""
  lr = train_cfg.learning_rate
  if train_cfg.warmup_steps or train_cfg.lr_decay != "none":
    lr = schedules.WarmupDecay(train_cfg.learning_rate, train_cfg.warmup_steps,
                               train_cfg.lr_decay, train_cfg.train_steps,
                               train_cfg.min_lr_fraction)
  return keras.optimizers.Adam(learning_rate=lr, beta_1=train_cfg.adam_beta1,
                               beta_2=train_cfg.adam_beta2, epsilon=train_cfg.adam_epsilon)


def current_learning_rate(optimizer) -> float:
  lr = optimizer.learning_rate
  return float(lr.numpy() if hasattr(lr, "numpy") else lr)


def _apply_if(ok, optimizer, grads, variables):
  """`optimizer.apply_gradients(zip(grads, variables))` if `ok` (identical on every replica)."""

  def apply(grads_):
    optimizer.apply_gradients(zip(grads_, variables))

  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    tf.cond(ok, lambda: apply(grads), lambda: None)
    return

  def cross_replica(distribution, ok_, grads_):
    ok_ = distribution.experimental_local_results(ok_)[0]
    tf.cond(ok_, lambda: distribution.extended.call_for_each_replica(apply, args=(grads_,)),
            lambda: None)

  tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok, grads))


def make_train_step(model: VAPNEV, optimizer, strategy: tf.distribute.Strategy,
                    train_cfg: TrainConfig, global_batch_size: int, step: tf.Variable,
                    skipped: tf.Variable):
  """Returns `train_step(iterator) -> dict` of global scalars; one call = one global step."""
  variables = list(model.trainable_variables)
  replicas = strategy.num_replicas_in_sync
  nan_from = train_cfg.debug_inject_nan_at_step
  nan_to = nan_from + train_cfg.debug_inject_nan_num_steps

  def loss_and_grads(x, step_value, seed):
    with tf.GradientTape() as tape:
      terms = model.elbo_terms(x, seed=seed)
      log_px, kl = terms["log_px_given_z"], terms["kl"]  # (B,) each
      kl_w = schedules.kl_weight(step_value, train_cfg.kl_anneal_steps, train_cfg.kl_schedule)
      per_example_loss = -(log_px - tf.cast(kl_w, kl.dtype) * kl)
      loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
      if nan_from >= 0:  # test hook: loss (and so every gradient) becomes NaN
        number = step_value + 1  # this step's number as logged (the counter after it)
        bad = (number >= nan_from) & (number < nan_to)
        loss = loss * tf.where(bad, tf.constant(np.nan, loss.dtype), tf.ones([], loss.dtype))
    grads = tape.gradient(loss, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    stats = tf.stack([loss, tf.reduce_sum(log_px) / global_batch_size,
                      tf.reduce_sum(kl) / global_batch_size])
    return grads, stats, kl_w

  if train_cfg.jit_compile:
    loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

  def replica_step(x):
    trace_info["per_replica_batch_size"] = int(x.shape[0])  # static: batches drop remainders
    ctx = tf.distribute.get_replica_context()
    step_value = step.read_value()
    key = tf.random.experimental.stateless_fold_in(
        tf.constant([train_cfg.seed, _TRAIN_STREAM], tf.int64), step_value)
    key = tf.random.experimental.stateless_fold_in(
        key, tf.cast(ctx.replica_id_in_sync_group, tf.int64))
    grads, stats, kl_w = loss_and_grads(x, step_value, tf.cast(key, tf.int32))  # TFP: int32 seeds
    grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    stats = ctx.all_reduce(tf.distribute.ReduceOp.SUM, stats)  # (loss, log p(x|z), KL) global means
    grad_norm = tf.linalg.global_norm(grads)
    ok = tf.math.is_finite(stats[0]) & tf.math.is_finite(grad_norm)
    if train_cfg.clip_grad_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, train_cfg.clip_grad_norm, use_norm=grad_norm)
    if replicas > 1:
      grads = [g / replicas for g in grads]
    learning_rate = optimizer.learning_rate  # at the iteration this update uses
    _apply_if(ok, optimizer, grads, variables)
    return {"loss": stats[0], "log_px": stats[1], "kl": stats[2], "grad_norm": grad_norm,
            "ok": ok, "kl_weight": kl_w, "learning_rate": tf.cast(learning_rate, tf.float32)}

  trace_info = {}

  @tf.function
  def train_step(iterator):
    x = next(iterator)
    out = strategy.run(replica_step, args=(x,))
    out = {k: strategy.experimental_local_results(v)[0] for k, v in out.items()}
    step.assign_add(1)
    skipped.assign_add(tf.cast(tf.logical_not(out["ok"]), tf.int64))
    return out

  train_step.trace_info = trace_info  # filled when the step is traced
  return train_step


class _StopRequest:
  """SIGTERM/SIGINT set a flag that the loop polls; the loop then checkpoints and stops.

  A second SIGINT while stopping raises KeyboardInterrupt (the usual way out of a stuck run).
  Handlers are installed only in the main thread and restored on exit.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = signals
    self.received = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = signum
    logging.warning("Received %s: will checkpoint and stop after the current step.",
                    signal.Signals(signum).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False


class _Window:
  """Means of the training scalars over the good steps since the last log line."""

  def __init__(self):
    self.reset(time.time())

  def reset(self, now):
    self.sums, self.good, self.steps, self.start = {}, 0, 0, now
    self.paused = 0.0

  def add(self, out: dict):
    self.steps += 1
    if not out["ok"]:
      return
    self.good += 1
    for k in ("loss", "log_px", "kl", "grad_norm"):
      self.sums[k] = self.sums.get(k, 0.0) + float(out[k])

  def means(self):
    return {k: v / self.good for k, v in self.sums.items()} if self.good else {}


def _format_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def train(model_cfg: ModelConfig, data_cfg: data_lib.DataConfig, train_cfg: TrainConfig,
          workdir: str, *, strategy: tf.distribute.Strategy | None = None,
          force_config: bool = False, flags_text: str | None = None) -> dict:
  """Trains (or resumes) the run in `workdir` up to `train_cfg.train_steps`, then evaluates.

  Args:
    model_cfg, data_cfg, train_cfg: the frozen configs of the run.
    workdir: the run directory (`vapnev_tf.workdir` layout); an existing one is resumed.
    strategy: default `distribute.make_strategy(train_cfg.strategy)`.
    force_config: resume even if config.json holds different run-defining values.
    flags_text: written to WORKDIR/flags.txt when given.

  Returns:
    {"step", "skipped_steps", "eval" (final evaluation dict, None when interrupted),
     "interrupted" (signal number or None), "restored_from" (checkpoint or None), "start_step",
     "start_optimizer_iterations", "optimizer_iterations", "num_replicas",
     "per_replica_batch_size", "weights_sha256", "task", "workdir"}.

  Raises:
    checkpointing.ConfigError (a ValueError): bad or contradicting configuration, unwritable
      workdir, batch sizes not divisible by the replicas.
    checkpointing.CheckpointError: checkpoints exist but none is readable.
    NonFiniteTrainingError: `max_consecutive_bad_steps` consecutive non-finite steps.
  """
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
  strategy = strategy or distribute.make_strategy(train_cfg.strategy)
  distribute.check_batch_sizes(data_cfg, strategy)
  chief = distribute.is_chief(strategy)

  # --- run directory: checks before anything expensive ---------------------------------------
  if chief:
    checkpointing.prepare_workdir(workdir)
  checkpointing.check_resume_config(workdir, model_cfg, data_cfg, train_cfg, force=force_config)
  if chief:
    workdir_lib.write_json_atomic(workdir_lib.path(workdir, workdir_lib.CONFIG_FILE), {
        **config_run.run_config_dict(model_cfg, data_cfg, train_cfg),
        "version": vapnev_tf.__version__, "tensorflow": tf.__version__,
        "keras": keras.__version__, "strategy": type(strategy).__name__,
        "num_replicas": strategy.num_replicas_in_sync})
    if flags_text is not None:
      with tf.io.gfile.GFile(workdir_lib.path(workdir, "flags.txt"), "w") as f:
        f.write(flags_text)
  worker_tmp = (None if chief else
                tempfile.mkdtemp(prefix=f"vapnev_{distribute.task_label(strategy)}_"))
  write_root = workdir if chief else worker_tmp

  # --- model, optimizer, state ----------------------------------------------------------------
  keras.utils.set_random_seed(train_cfg.seed)
  with strategy.scope():
    model = VAPNEV(model_cfg)
    optimizer = build_optimizer(train_cfg)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
    best_bpd = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_elbo_bpd")
  checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step,
                                   skipped_steps=skipped, best_elbo_bpd=best_bpd)
  ckpt_dir = workdir_lib.path(workdir, workdir_lib.CHECKPOINT_DIR)
  restored_from = None
  if tf.io.gfile.isdir(ckpt_dir):
    restored_from = checkpointing.restore_with_fallback(checkpoint, ckpt_dir)
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(write_root, workdir_lib.CHECKPOINT_DIR),
      max_to_keep=train_cfg.max_to_keep, checkpoint_name=_CHECKPOINT_NAME)
  best_manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(write_root, workdir_lib.BEST_DIR), max_to_keep=1,
      checkpoint_name=_CHECKPOINT_NAME)
  start_step = int(step.numpy())
  start_iterations = int(optimizer.iterations.numpy())
  if restored_from:
    logging.info("Resumed from %s: step %d, optimizer iterations %d, skipped steps %d.",
                 restored_from, start_step, int(optimizer.iterations.numpy()),
                 int(skipped.numpy()))
  else:
    logging.info("Starting a new run in %s (%s, %d replica(s), %d parameters).", workdir,
                 type(strategy).__name__, strategy.num_replicas_in_sync, model.count_params())

  if chief:
    tb_root = workdir_lib.path(workdir, workdir_lib.TENSORBOARD_DIR)
    train_writer = tf.summary.create_file_writer(os.path.join(tb_root, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(tb_root, "eval"))
  else:
    train_writer = eval_writer = tf.summary.create_noop_writer()

  evaluators = {}  # k -> Evaluator, so periodic evaluations reuse one traced step

  def run_eval(step_now: int, num_samples: int) -> dict:
    if num_samples not in evaluators:
      evaluators[num_samples] = evaluation.Evaluator(
          model, data_cfg, num_samples=num_samples, seed=train_cfg.eval_seed,
          chunk_size=train_cfg.eval_chunk_size, strategy=strategy)
    result = evaluators[num_samples]()
    improved = result["elbo_bpd"] < float(best_bpd.numpy())
    if improved:
      best_bpd.assign(result["elbo_bpd"])
      best_manager.save(checkpoint_number=step_now)
    logging.info("eval @ step %d: %s%s [%.1f s]", step_now, evaluation.summary_line(result),
                 " (new best)" if improved else "", result["seconds"])
    if chief:
      with eval_writer.as_default(step=step_now):
        tf.summary.scalar("elbo_bpd", result["elbo_bpd"])
        tf.summary.scalar("recon_bpd", result["recon_bpd"])
        tf.summary.scalar("kl_nats", result["kl_nats"])
        if result["iw_bpd"] is not None:
          tf.summary.scalar(f"iw_bpd_k{result['k']}", result["iw_bpd"])
          tf.summary.scalar("iw_bpd", result["iw_bpd"])
        _image_summaries(model, data_cfg, train_cfg, step_now)
      eval_writer.flush()
      evaluation.write_eval_json(workdir, result, step_now, manager.latest_checkpoint)
    return result

  def run_facts() -> dict:
    return {"workdir": workdir, "task": distribute.task_label(strategy),
            "num_replicas": strategy.num_replicas_in_sync,
            "per_replica_batch_size": train_step.trace_info.get("per_replica_batch_size"),
            "restored_from": restored_from, "start_step": start_step,
            "start_optimizer_iterations": start_iterations, "step": s,
            "optimizer_iterations": int(optimizer.iterations.numpy()),
            "skipped_steps": int(skipped.numpy()), "weights_sha256": weights_fingerprint(model),
            "last_loss": None if last_out is None else float(last_out["loss"])}

  # --- the loop ---------------------------------------------------------------------------------
  train_step = make_train_step(model, optimizer, strategy, train_cfg, data_cfg.batch_size, step,
                               skipped)
  iterator = iter(distribute.train_dataset_from_step(strategy, data_cfg, start_step))
  images_per_step = data_cfg.batch_size
  window = _Window()
  consecutive_bad = 0
  saved_at = start_step if restored_from else None
  s = start_step
  last_out = None
  interrupted = None
  if s >= train_cfg.train_steps:
    logging.info("Step %d >= train_steps=%d: nothing to train.", s, train_cfg.train_steps)
  with _StopRequest() as stop:
    while s < train_cfg.train_steps:
      if stop.received is not None:
        interrupted = stop.received
        break
      out = {k: v.numpy() for k, v in train_step(iterator).items()}
      s += 1
      last_out = out
      window.add(out)
      if not out["ok"]:
        consecutive_bad += 1
        logging.warning("step %d: non-finite loss or gradient (loss %s, grad norm %s); update "
                        "skipped (%d consecutive, %d in total).", s, out["loss"],
                        out["grad_norm"], consecutive_bad, int(skipped.numpy()))
        if consecutive_bad >= train_cfg.max_consecutive_bad_steps:
          last = manager.latest_checkpoint or "none"
          _cleanup(worker_tmp, train_writer, eval_writer)
          raise NonFiniteTrainingError(
              f"aborting at step {s}: {consecutive_bad} consecutive steps had a non-finite loss "
              f"or gradient (max_consecutive_bad_steps={train_cfg.max_consecutive_bad_steps}). "
              f"Nothing was saved after the last good checkpoint ({last}); lower the learning "
              "rate, enable --clip_grad_norm or check the data, then resume from it.")
      else:
        consecutive_bad = 0
      if s % train_cfg.log_every == 0 or s == train_cfg.train_steps:
        _log_window(window, s, train_cfg, images_per_step, out, int(skipped.numpy()),
                    model_cfg.image_shape, train_writer if chief else None)
      if (train_cfg.eval_every and s % train_cfg.eval_every == 0
          and s < train_cfg.train_steps):
        paused = time.time()
        run_eval(s, 1)
        window.paused += time.time() - paused
      if s % train_cfg.checkpoint_every == 0 and consecutive_bad == 0:
        manager.save(checkpoint_number=s)
        saved_at = s
    if interrupted is None and stop.received is not None:
      interrupted = stop.received
    if saved_at != s and consecutive_bad == 0:
      manager.save(checkpoint_number=s)
      saved_at = s
  if interrupted is not None:
    logging.warning("Stopped by %s at step %d; latest checkpoint %s. Run the same command to "
                    "resume.", signal.Signals(interrupted).name, s, manager.latest_checkpoint)
    _cleanup(worker_tmp, train_writer, eval_writer)
    return dict(run_facts(), eval=None, interrupted=int(interrupted))

  # --- final evaluation, export, figures -------------------------------------------------------
  final = None
  if s == start_step and restored_from:  # a finished run started again: reuse its results
    final = _stored_final_eval(workdir, s, train_cfg)
  if final is not None:
    logging.info("Step %d was already evaluated (%s): %s", s,
                 workdir_lib.path(workdir, workdir_lib.EVAL_FILE), evaluation.summary_line(final))
  else:
    final = run_eval(s, train_cfg.eval_num_samples)
    if chief and train_cfg.export_at_end:
      _export_and_figures(workdir, data_cfg, train_cfg, s, manager.latest_checkpoint, final)
  _cleanup(worker_tmp, train_writer, eval_writer)
  return dict(run_facts(), eval=final, interrupted=None)


def _stored_final_eval(workdir: str, step: int, train_cfg: TrainConfig) -> dict | None:
  """WORKDIR/eval.json if it is the final evaluation of `step` with this k and seed, else None."""
  filename = workdir_lib.path(workdir, workdir_lib.EVAL_FILE)
  if not tf.io.gfile.exists(filename):
    return None
  try:
    stored = workdir_lib.read_json(filename)
  except ValueError:
    return None
  if (stored.get("step") != step or stored.get("k") != train_cfg.eval_num_samples
      or stored.get("seed") != train_cfg.eval_seed):
    return None
  if train_cfg.export_at_end and not tf.io.gfile.exists(
      workdir_lib.path(workdir, workdir_lib.EXPORT_DIR)):
    return None
  return {k: v for k, v in stored.items() if k not in ("history", "checkpoint", "step",
                                                        "test_bits_per_dim")}


def weights_fingerprint(model) -> str:
  """sha256 of every weight's bytes, in `model.weights` order: equal iff bitwise-equal weights."""
  digest = hashlib.sha256()
  for v in model.weights:
    digest.update(np.ascontiguousarray(np.asarray(v.numpy())).tobytes())
  return digest.hexdigest()


def _log_window(window: _Window, s: int, train_cfg: TrainConfig, images_per_step: int, out: dict,
                skipped_total: int, image_shape, writer):
  now = time.time()
  elapsed = max(1e-9, now - window.start - window.paused)
  steps_per_sec = window.steps / elapsed
  means = window.means()
  eta = (train_cfg.train_steps - s) / steps_per_sec if steps_per_sec > 0 else float("inf")
  lr, kl_w = float(out["learning_rate"]), float(out["kl_weight"])
  if means:
    elbo = means["log_px"] - means["kl"]
    elbo_bpd = float(bits_per_dim(elbo, image_shape))
    recon_bpd = float(bits_per_dim(means["log_px"], image_shape))
    kl_bpd = -float(bits_per_dim(means["kl"], image_shape))
    logging.info(
        "step %d/%d | %.2f steps/s %.0f img/s | loss %.2f | train ELBO %.4f bpd (recon %.4f, "
        "KL %.2f nats) | kl_w %.3f | lr %.2e | grad norm %.3g | skipped %d | ETA %s",
        s, train_cfg.train_steps, steps_per_sec, steps_per_sec * images_per_step,
        means["loss"], elbo_bpd, recon_bpd, means["kl"], kl_w, lr, means["grad_norm"],
        skipped_total, _format_duration(eta))
  else:
    logging.info("step %d/%d | every step of this window was skipped (skipped %d in total)",
                 s, train_cfg.train_steps, skipped_total)
  if writer is not None:
    with writer.as_default(step=s):
      if means:
        tf.summary.scalar("loss", means["loss"])
        tf.summary.scalar("elbo_bpd", elbo_bpd)
        tf.summary.scalar("recon_bpd", recon_bpd)
        tf.summary.scalar("kl_nats", means["kl"])
        tf.summary.scalar("kl_bpd", kl_bpd)
        tf.summary.scalar("grad_norm", means["grad_norm"])
      tf.summary.scalar("kl_weight", kl_w)
      tf.summary.scalar("learning_rate", lr)
      tf.summary.scalar("steps_per_sec", steps_per_sec)
      tf.summary.scalar("images_per_sec", steps_per_sec * images_per_step)
      tf.summary.scalar("skipped_steps", skipped_total)
    writer.flush()
  window.reset(now)


def _image_seed(train_cfg: TrainConfig, step: int):
  return tf.cast(tf.random.experimental.stateless_fold_in(
      tf.constant([train_cfg.seed, _IMAGE_STREAM], tf.int64), step), tf.int32)


def _test_images_uint8(data_cfg, n: int) -> np.ndarray:
  return np.stack([x.numpy() for x in data_lib.load_images(data_cfg, "test").take(n)])


def _image_summaries(model, data_cfg, train_cfg: TrainConfig, step: int) -> None:
  """Sample grid and originals|reconstructions grid in the current (eval) writer."""
  n = train_cfg.num_image_samples
  seed = _image_seed(train_cfg, step)
  sample_seed, recon_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  tf.summary.image("samples", images.sample_grid(model, n, train_cfg.sample_temperature,
                                                 sample_seed)[None], step=step)
  x = data_lib.dequantize(_test_images_uint8(data_cfg, n), noise_seed)
  tf.summary.image("originals_reconstructions",
                   images.reconstruction_grid(model, x, recon_seed)[None], step=step)


def _export_and_figures(workdir, data_cfg, train_cfg, step, checkpoint, final) -> None:
  """WORKDIR/export (SavedModel) and WORKDIR/figures (paper panel), when those modules exist."""
  try:
    from vapnev_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    export_lib = None
    logging.warning("vapnev_tf.export is not available (%s): no export written.", e)
  try:
    from vapnev_tf import figures as figures_lib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    figures_lib = None
    logging.warning("vapnev_tf.figures is not available (%s): no figures written.", e)
  if export_lib is None and figures_lib is None:
    return
  # A fresh, strategy-free copy of the final weights, exactly what `restore_model` gives users.
  model, _ = workdir_lib.restore_model(workdir, checkpoint)
  if export_lib is not None:
    metadata = {"step": int(step), "checkpoint": checkpoint,
                "test_bits_per_dim": evaluation.tightest_bpd(final), "eval": final,
                "run_config": workdir_lib.read_config(workdir)}
    out = export_lib.export_model(model, workdir_lib.path(workdir, workdir_lib.EXPORT_DIR),
                                  metadata, overwrite=True)
    logging.info("Exported the final model to %s", out)
  if figures_lib is not None:
    originals = _test_images_uint8(data_cfg, train_cfg.num_image_samples)
    panel = figures_lib.paper_panel(model, originals, seed=train_cfg.seed,
                                    temperature=train_cfg.sample_temperature)
    filename = workdir_lib.path(workdir, workdir_lib.FIGURES_DIR, f"panel_step{step}.png")
    tf.io.gfile.makedirs(os.path.dirname(filename))
    figures_lib.save_png(panel, filename)
    logging.info("Wrote %s", filename)


def _cleanup(worker_tmp, *writers) -> None:
  for writer in writers:
    writer.close()
  if worker_tmp:
    shutil.rmtree(worker_tmp, ignore_errors=True)
