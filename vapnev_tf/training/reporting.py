"""What a run reports: log lines (every worker), TensorBoard summaries and eval.json (the chief).

    reporter = make_reporter(chief, workdir, model_cfg, data_cfg, train_cfg, commit)
    reporter.record(metrics, step)         # every step (redraws the live line on a terminal)
    reporter.log_window(step, metrics, skipped_total)   # every log_every steps
    reporter.checkpoint(step, path)        # a checkpoint was saved (logged at a modest cadence)
    reporter.evaluation(step, result, improved, checkpoint, model)
    reporter.close()

The chief/worker split is decided once, here: `ChiefReporter` writes the run directory,
`Reporter` (every other worker) only logs. No caller branches on being the chief.

Console: when stderr is a terminal (`console.live.enabled`), `record` redraws one live line
(step/total, img/s, train ELBO bits/dim, ETA) and the periodic window line is not logged (its
summaries are still written); in a log file the window line is logged every `log_every` steps as
before. Checkpoint saves are logged at most once per `CHECKPOINT_LOG_SECONDS` (and the last one).
"""
import contextlib
import os
import time

from absl import logging
import tensorflow as tf

from vapnev_tf import console
from vapnev_tf import evaluation
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.metrics import bits_per_dim
from vapnev_tf.training import images


class Window:
  """Means of the training scalars over the good steps since the last log line."""

  def __init__(self):
    self.reset(time.time())

  def reset(self, now):
    self.sums, self.maxima, self.good, self.steps, self.start = {}, {}, 0, 0, now
    self.paused = 0.0

  def add(self, out: dict):
    self.steps += 1
    if not out["ok"]:
      return
    self.good += 1
    for k in ("loss", "log_px", "kl", "grad_norm"):
      self.sums[k] = self.sums.get(k, 0.0) + float(out[k])
    for k, v in out.items():
      if k.startswith(GRAD_NORM_PREFIX):
        self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.maxima[k] = max(self.maxima.get(k, 0.0), float(v))

  def means(self):
    return {k: v / self.good for k, v in self.sums.items()} if self.good else {}


format_duration = console.format_duration

# Metrics "grad_norm/GROUP" of the training step: the gradient norm of each part of the model
# (`VAPNEV.parameter_groups`); TensorBoard gets their window means under the same tags and the
# window maxima under "grad_norm_max/GROUP", the log line the part with the largest mean.
GRAD_NORM_PREFIX = "grad_norm/"
GRAD_NORM_MAX_PREFIX = "grad_norm_max/"

CHECKPOINT_LOG_SECONDS = 300.0


class Reporter:
  """Logs the run's progress and writes nothing: the reporter of a non-chief worker."""

  def __init__(self, model_cfg, data_cfg, train_cfg):
    self.model_cfg, self.data_cfg, self.train_cfg = model_cfg, data_cfg, train_cfg
    self.window = Window()
    self._last_checkpoint_log = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  def record(self, out: dict, step: int | None = None) -> None:
    """One step's metrics into the current window; on a terminal, redraws the live line."""
    self.window.add(out)
    if step is not None and console.live.due():
      console.live.update(self.progress_line(step))

  def progress_line(self, s: int) -> str:
    """`step 120/800 | 310 img/s | train 3.412 bits/dim | ETA 2m10s` (window means)."""
    window, total = self.window, self.train_cfg.train_steps
    elapsed = max(1e-9, time.time() - window.start - window.paused)
    steps_per_sec = window.steps / elapsed
    means = window.means()
    bpd = "--"
    if means:
      bpd = f"{float(bits_per_dim(means['log_px'] - means['kl'], self.model_cfg.image_shape)):.3f}"
    eta = (total - s) / steps_per_sec if steps_per_sec > 0 else float("inf")
    images_per_sec = steps_per_sec * self.data_cfg.batch_size
    return (f"step {s}/{total} | {images_per_sec:.0f} img/s | train {bpd} bits/dim | "
            f"ETA {format_duration(eta)}")

  def checkpoint(self, step: int, path: str, final: bool = False) -> None:
    """Logs a checkpoint save: the first, then at most one per CHECKPOINT_LOG_SECONDS, and
    `final` ones (the loop's last save)."""
    now = time.time()
    last = self._last_checkpoint_log
    if final or last is None or now - last >= CHECKPOINT_LOG_SECONDS:
      self._last_checkpoint_log = now
      logging.info("step %d: checkpoint %s", step, path)

  @contextlib.contextmanager
  def paused(self):
    """Time inside the block (an evaluation) does not count towards steps/s."""
    start = time.time()
    try:
      yield
    finally:
      self.window.paused += time.time() - start

  def log_window(self, s: int, out: dict, skipped_total: int) -> None:
    """Logs (and summarises) the means of the window ending at step `s`; starts a new window."""
    window, cfg = self.window, self.train_cfg
    now = time.time()
    elapsed = max(1e-9, now - window.start - window.paused)
    steps_per_sec = window.steps / elapsed
    images_per_sec = steps_per_sec * self.data_cfg.batch_size
    means = window.means()
    eta = (cfg.train_steps - s) / steps_per_sec if steps_per_sec > 0 else float("inf")
    scalars = {"kl_weight": float(out["kl_weight"]), "learning_rate": float(out["learning_rate"]),
               "steps_per_sec": steps_per_sec, "images_per_sec": images_per_sec,
               "skipped_steps": skipped_total}
    if means:
      image_shape = self.model_cfg.image_shape
      scalars.update(
          loss=means["loss"], kl_nats=means["kl"], grad_norm=means["grad_norm"],
          elbo_bpd=float(bits_per_dim(means["log_px"] - means["kl"], image_shape)),
          recon_bpd=float(bits_per_dim(means["log_px"], image_shape)),
          kl_bpd=-float(bits_per_dim(means["kl"], image_shape)))
      groups = {k: v for k, v in means.items() if k.startswith(GRAD_NORM_PREFIX)}
      scalars.update(groups)
      scalars.update({k.replace(GRAD_NORM_PREFIX, GRAD_NORM_MAX_PREFIX, 1): v
                      for k, v in window.maxima.items()})
      largest = ""
      if groups:
        name = max(groups, key=groups.get)
        largest = f" (largest: {name[len(GRAD_NORM_PREFIX):]} {groups[name]:.3g})"
      log = logging.debug if console.live.enabled else logging.info
      log(
          "step %d/%d | %.2f steps/s %.0f img/s | loss %.2f | train ELBO %.4f bpd (recon %.4f, "
          "KL %.2f nats) | kl_w %.3f | lr %.2e | grad norm %.3g%s | skipped %d | ETA %s",
          s, cfg.train_steps, steps_per_sec, images_per_sec, means["loss"], scalars["elbo_bpd"],
          scalars["recon_bpd"], means["kl"], scalars["kl_weight"], scalars["learning_rate"],
          means["grad_norm"], largest, skipped_total, format_duration(eta))
    else:
      logging.warning("step %d/%d | every step of this window was skipped (skipped %d in "
                      "total)", s, cfg.train_steps, skipped_total)
    self._train_summaries(s, scalars)
    window.reset(now)

  def evaluation(self, step: int, result: dict, improved: bool, checkpoint: str | None,
                 model) -> None:
    """Reports an evaluation of `model` at `step` (`checkpoint`: the newest one saved)."""
    logging.info("eval @ step %d: %s%s [%.1f s]", step, evaluation.summary_line(result),
                 " (new best)" if improved else "", result["seconds"])
    del checkpoint, model

  def _train_summaries(self, step: int, scalars: dict) -> None:
    del step, scalars

  def close(self) -> None:
    pass


# TensorBoard tag order of the training scalars (as the loop has always written them).
_TRAIN_TAGS = ("loss", "elbo_bpd", "recon_bpd", "kl_nats", "kl_bpd", "grad_norm", "kl_weight",
               "learning_rate", "steps_per_sec", "images_per_sec", "skipped_steps")


class ChiefReporter(Reporter):
  """Logs like `Reporter` and writes the run directory: tensorboard/{train,eval} and eval.json.

  `commit` (the run record's) is called before eval.json is written. Summary writers are created
  on first use, so a run that fails before reporting anything writes nothing.
  """

  def __init__(self, workdir: str, model_cfg, data_cfg, train_cfg, commit):
    super().__init__(model_cfg, data_cfg, train_cfg)
    self.workdir, self._commit, self._writers = workdir, commit, {}

  def _writer(self, split: str):
    if split not in self._writers:
      self._writers[split] = tf.summary.create_file_writer(
          os.path.join(workdir_lib.path(self.workdir, workdir_lib.TENSORBOARD_DIR), split))
    return self._writers[split]

  def _train_summaries(self, step: int, scalars: dict) -> None:
    writer = self._writer("train")
    with writer.as_default(step=step):
      for tag in _TRAIN_TAGS:
        if tag in scalars:
          tf.summary.scalar(tag, scalars[tag])
      for tag in sorted(scalars):
        if tag.startswith((GRAD_NORM_PREFIX, GRAD_NORM_MAX_PREFIX)):
          tf.summary.scalar(tag, scalars[tag])
    writer.flush()

  def evaluation(self, step: int, result: dict, improved: bool, checkpoint: str | None,
                 model) -> None:
    super().evaluation(step, result, improved, checkpoint, model)
    writer = self._writer("eval")
    with writer.as_default(step=step):
      for tag in ("elbo_bpd", "recon_bpd", "kl_nats"):
        tf.summary.scalar(tag, result[tag])
      if result["iw_bpd"] is not None:
        tf.summary.scalar(f"iw_bpd_k{result['k']}", result["iw_bpd"])
        tf.summary.scalar("iw_bpd", result["iw_bpd"])
      images.write_summaries(model, self.data_cfg, self.train_cfg, step)
    writer.flush()
    self._commit()
    evaluation.write_eval_json(self.workdir, result, step, checkpoint,
                               workdir_lib.weights_fingerprint(model))

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()


def make_reporter(chief: bool, workdir: str, model_cfg, data_cfg, train_cfg, commit) -> Reporter:
  """`ChiefReporter` for the worker that writes the run directory, else a log-only `Reporter`."""
  if chief:
    return ChiefReporter(workdir, model_cfg, data_cfg, train_cfg, commit)
  return Reporter(model_cfg, data_cfg, train_cfg)
