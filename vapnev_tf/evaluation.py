"""Test-set bounds of a model and their records: the one evaluation of the package.

    ELBO (Eq. 1, KL weight 1, one z per image)        -> elbo_bpd
    importance-weighted bound with k samples (docs/design.md §2) -> iw_bpd   (only when k > 1)

Both are bounds on -log p(x) of the dequantised test images, in bits/dim (docs/design.md §1).
Results are sums over every test image (partial last batch included) divided by their number, so
the value does not depend on the batch size or the number of replicas (up to the z draws).

`Evaluator` computes them (the training loop's periodic and final evaluations, through
`EvalRunner`, and `evaluate_workdir`); `tightest_bpd` is the one rule for a record's headline
bits/dim; `write_eval_json` keeps WORKDIR/eval.json. `evaluate_workdir` evaluates a run
directory's checkpoint (`vapnev_tf.evaluate` is its CLI) and writes, holding the run's lock:

  - a full evaluation (every test image, or the run's own `eval_take`) to WORKDIR/eval.json (the
    one before it goes to its "history");
  - a partial one (`eval_take` a subset of that) to WORKDIR/evaluations/
    step{S}-images{N}-k{K}-seed{SEED}.json with its scope; it never replaces eval.json, so export
    metadata and a re-run of train (which read eval.json) only ever see full evaluations;
  - an evaluation of a checkpoint from outside the run (not in WORKDIR/checkpoints or
    WORKDIR/best) to WORKDIR/evaluations/foreign-<name>-<sha>-...json, never to eval.json;
  - an evaluation of the raw weights of a run that keeps Polyak averages (`weights="raw"`) to
    WORKDIR/evaluations/step{S}-images{N}-k{K}-seed{SEED}-raw.json, never to eval.json.

Every record carries "weights" ("ema": a run's Polyak averages, "raw": its trained weights;
docs/design.md §23) and "weights_sha256" (`workdir.weights_fingerprint` of the evaluated weights);
export metadata and train's reuse of a final evaluation attach a record to a checkpoint only when
that fingerprint matches the checkpoint's weights, never by step alone. Above the model and
`loading`, below training (docs/design.md §21).
"""
import contextlib
import dataclasses
import math
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from vapnev_tf import console
from vapnev_tf import data as data_lib
from vapnev_tf import loading
from vapnev_tf import locking
from vapnev_tf import seeds
from vapnev_tf import weight_averages
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.metrics import bits_per_dim

_HISTORY_LENGTH = 100


class Evaluator:
  """Evaluates `model` on the test split of `data_cfg` (all of it unless `eval_take`).

  Build once, call as often as needed: the compiled evaluation step is traced on the first call
  and reused (the training loop evaluates every `eval_every` steps).

  Args:
    model: a `VAPNEV` (created under `strategy.scope()` when a strategy is given).
    data_cfg: the run's `DataConfig`; `eval_batch_size` and `eval_take` apply.
    num_samples: k of the importance-weighted bound; 1 computes the ELBO only.
    seed: seeds the test set's dequantisation noise and every z drawn.
    chunk_size: importance samples evaluated at once.
    strategy: the strategy whose replicas share the batches (default: the current one). Under
      MultiWorkerMirroredStrategy every worker must call it (the sums are all-reduced).
  """

  def __init__(self, model, data_cfg: data_lib.DataConfig, *, num_samples: int = 1,
               seed: int = 0, chunk_size: int = seeds.IW_CHUNK_SIZE,
               strategy: tf.distribute.Strategy | None = None):
    for name, value, minimum in (("num_samples", num_samples, 1), ("seed", seed, 0),
                                 ("chunk_size", chunk_size, 1)):
      if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    self.model, self.data_cfg, self.num_samples = model, data_cfg, num_samples
    self.seed, self.chunk_size = seed, chunk_size
    self.strategy = strategy or tf.distribute.get_strategy()
    self._step = None

  def _dataset(self):
    return data_lib.distributed_dataset(self.strategy, self.data_cfg, split="test",
                                        seed=self.seed)

  def _build_step(self, element_spec):
    model, seed, num_samples, chunk_size = self.model, self.seed, self.num_samples, self.chunk_size
    strategy = self.strategy
    with_iw = num_samples > 1
    width = 5 if with_iw else 4

    def replica_sums(x, batch_index):
      ctx = tf.distribute.get_replica_context()
      key = tf.random.experimental.stateless_fold_in(
          tf.constant([seed, seeds.EVAL_Z], tf.int64), batch_index)
      key = tf.random.experimental.stateless_fold_in(
          key, tf.cast(ctx.replica_id_in_sync_group, tf.int64))
      elbo_key, iw_key = tf.unstack(tf.cast(tf.random.experimental.stateless_split(key, 2),
                                            tf.int32))  # TFP wants int32 seeds
      terms = model.elbo_terms(x, seed=elbo_key)
      log_px = tf.cast(terms["log_px_given_z"], tf.float64)
      kl = tf.cast(terms["kl"], tf.float64)
      sums = [tf.reduce_sum(log_px - kl), tf.reduce_sum(log_px), tf.reduce_sum(kl),
              tf.cast(tf.shape(x)[0], tf.float64)]
      if with_iw:
        iw = model.log_likelihood_bound(x, num_samples=num_samples, seed=iw_key,
                                        chunk_size=chunk_size)
        sums.append(tf.reduce_sum(tf.cast(iw, tf.float64)))
      return tf.stack(sums)  # (width,)

    def replica_fn(x, batch_index):
      # The last, partial batch can leave a replica with no images; the model's convolutions
      # refuse an empty batch on CPU, so that replica contributes zeros.
      return tf.cond(tf.shape(x)[0] > 0, lambda: replica_sums(x, batch_index),
                     lambda: tf.zeros([width], tf.float64))

    @tf.function(input_signature=[element_spec, tf.TensorSpec([], tf.int64)])
    def eval_step(x, batch_index):
      per_replica = strategy.run(replica_fn, args=(x, batch_index))
      return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return eval_step

  def _progress_line(self, done: int, seconds: float) -> str:
    """`eval k=10: 4500/10000 images | 230 img/s | ETA 0m24s` (the live line on a terminal)."""
    if getattr(self, "_num_images", None) is None:
      self._num_images = data_lib.num_examples(self.data_cfg, "test")
    rate = done / max(seconds, 1e-9)
    eta = (self._num_images - done) / rate if rate > 0 else float("inf")
    return (f"eval k={self.num_samples}: {done}/{self._num_images} images | {rate:.0f} img/s | "
            f"ETA {console.format_duration(eta)}")

  def __call__(self, log_every_seconds: float = 30.0) -> dict:
    """One pass over the test set.

    Returns:
      {"elbo_bpd", "iw_bpd" (None when k == 1), "k", "seed", "num_images", "eval_take" (the
       data config's: None = every test image), "seconds", "recon_bpd", "kl_nats",
       "elbo_nats"}: means over the test images.
    """
    start = last_log = time.time()
    dist = self._dataset()
    if self._step is None:
      self._step = self._build_step(dist.element_spec)
    with_iw = self.num_samples > 1
    total = np.zeros(5 if with_iw else 4, np.float64)
    for batch_index, x in enumerate(dist):
      total += self._step(x, tf.constant(batch_index, tf.int64)).numpy()
      if console.live.enabled:  # a terminal: a live line (vapnev_tf.console)
        if console.live.due():
          console.live.update(self._progress_line(int(total[3]), time.time() - start))
      elif time.time() - last_log > log_every_seconds:
        last_log = time.time()
        logging.info("eval: %d images (k=%d), %.0f s", int(total[3]), self.num_samples,
                     last_log - start)
    count = int(total[3])
    if count == 0:
      raise ValueError(f"{self.data_cfg.dataset}: the test split yielded no images to evaluate.")
    mean = total / count
    image_shape = self.model.config.image_shape
    return {
        "elbo_bpd": float(bits_per_dim(mean[0], image_shape)),
        "iw_bpd": float(bits_per_dim(mean[4], image_shape)) if with_iw else None,
        "k": self.num_samples,
        "seed": self.seed,
        "num_images": count,
        "eval_take": self.data_cfg.eval_take,  # the scope: what makes an evaluation full
        "seconds": round(time.time() - start, 3),
        "recon_bpd": float(bits_per_dim(mean[1], image_shape)),
        "kl_nats": float(mean[2]),
        "elbo_nats": float(mean[0]),
    }


def evaluate(model, data_cfg: data_lib.DataConfig, *, num_samples: int = 1, seed: int = 0,
             chunk_size: int = seeds.IW_CHUNK_SIZE,
             strategy: tf.distribute.Strategy | None = None) -> dict:
  """`Evaluator(model, data_cfg, ...)()`: one evaluation (see `Evaluator`)."""
  return Evaluator(model, data_cfg, num_samples=num_samples, seed=seed, chunk_size=chunk_size,
                   strategy=strategy)()


def tightest_bpd(result: dict):
  """The headline bits/dim of an evaluation, for eval.json's "test_bits_per_dim" (when it is
  written) and the export metadata (when a record is read back): the first finite number of
  "test_bits_per_dim" (a stored record's headline, written by this rule), the IW bound, the ELBO;
  None when there is none (a bound stored as null was not finite)."""
  for key in ("test_bits_per_dim", "iw_bpd", "elbo_bpd"):
    value = result.get(key)
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)):
      return float(value)
  return None


def summary_line(result: dict) -> str:
  """`test bits/dim: ELBO 3.123, IW(k=10) 3.100 (10000 images)`."""
  parts = [f"ELBO {result['elbo_bpd']:.3f}"]
  if result.get("iw_bpd") is not None:
    parts.append(f"IW(k={result['k']}) {result['iw_bpd']:.3f}")
  return f"test bits/dim: {', '.join(parts)} ({result['num_images']} images)"


def write_eval_json(workdir: str, result: dict, step: int, checkpoint: str | None = None,
                    weights_sha256: str | None = None) -> dict:
  """Writes WORKDIR/eval.json: this evaluation at the top level, earlier ones under "history".

  `weights_sha256` (`workdir.weights_fingerprint` of the evaluated weights) is what ties the
  record to a checkpoint for its readers (`workdir.full_evaluation`); only evaluations of the
  run's own weights are written here.
  """
  filename = workdir_lib.path(workdir, workdir_lib.EVAL_FILE)
  history = []
  if tf.io.gfile.exists(filename):
    try:
      previous = workdir_lib.read_json(filename)
      history = previous.pop("history", [])
      history.append(previous)
    except ValueError as e:
      logging.warning("ignoring the unreadable %s (%s)", filename, e)
  payload = dict(result, step=int(step), checkpoint=checkpoint, weights_sha256=weights_sha256,
                 test_bits_per_dim=tightest_bpd(result))
  payload["history"] = history[-_HISTORY_LENGTH:]
  workdir_lib.write_json_atomic(filename, payload)
  return payload


class EvalRunner:
  """`runner(step, num_samples) -> result`: evaluates the model being trained on the test set.

  One `Evaluator` per k, so periodic evaluations reuse one traced step. A result whose
  ELBO beats the best so far is saved to best/ (`Checkpoints.save_if_best`); every result goes to
  the reporter (log line; the chief's TensorBoard, sample grids and eval.json). A run that keeps
  Polyak averages is evaluated and reported with them swapped in (result "weights": "ema"); the
  checkpoints are saved with the raw weights in place (they hold both).
  """

  def __init__(self, run, data_cfg, train_cfg, strategy, reporter):
    self.run, self.data_cfg, self.train_cfg = run, data_cfg, train_cfg
    self.strategy, self.reporter = strategy, reporter
    self._evaluators = {}

  def __call__(self, step: int, num_samples: int) -> dict:
    model, optimizer = self.run.state.model, self.run.state.optimizer
    if num_samples not in self._evaluators:
      self._evaluators[num_samples] = Evaluator(
          model, self.data_cfg, num_samples=num_samples, seed=self.train_cfg.eval_seed,
          chunk_size=self.train_cfg.eval_chunk_size, strategy=self.strategy)
    with weight_averages.evaluated_weights(model, optimizer) as weights:
      result = dict(self._evaluators[num_samples](), weights=weights)
    improved = self.run.checkpoints.save_if_best(step, result["elbo_bpd"])
    checkpoints = self.run.checkpoints
    # The record names a checkpoint only when one holds these weights (a periodic evaluation can
    # come before the step's save); its weights_sha256 identifies the weights either way.
    checkpoint = checkpoints.latest if checkpoints.saved_at == step else None
    with weight_averages.evaluated_weights(model, optimizer):
      self.reporter.evaluation(step, result, improved, checkpoint, model)
    return result


def evaluate_workdir(workdir: str, checkpoint: str | None = None, num_samples: int | None = None,
                     eval_take: int | None = None, eval_batch_size: int | None = None,
                     seed: int | None = None, chunk_size: int | None = None,
                     write: bool = True, data_dir: str | None = None,
                     fashion_mnist_dir: str | None = None, weights: str | None = None) -> dict:
  """Restores `checkpoint` (default: the newest readable) of the run in `workdir`, evaluates it.

  `None` arguments take the run's own values from config.json; `eval_take=0` means all images.
  `data_dir` / `fashion_mnist_dir` say where the data is now (its location is not part of the
  run; the data set's own error messages name these flags). `weights` picks the checkpoint's
  weights (`loading.load_run`: None is the run's own choice); an evaluation of weights other than
  the run's own (the raw weights of a run that keeps Polyak averages) is written to
  WORKDIR/evaluations/, named by its weights, never to eval.json.
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
    model, info = loading.load_run(workdir, checkpoint, weights)
    checkpoint, step = info["checkpoint"], info["step"]
    own_weights = (weight_averages.EMA if float(train_section.get("ema_decay", 0.0)) > 0
                   else weight_averages.RAW)
    other_weights = info["weights"] != own_weights
    fingerprint = workdir_lib.weights_fingerprint(model)
    foreign = not workdir_lib.is_run_checkpoint(workdir, checkpoint)
    if foreign:
      logging.warning("%s is not one of this run's checkpoints (%s): its evaluation goes to %s, "
                      "never to %s.", checkpoint, workdir, workdir_lib.EVALUATIONS_DIR,
                      workdir_lib.EVAL_FILE)
    logging.info("Evaluating %s (step %d) on %s test images with k=%d.", checkpoint, step,
                 data_cfg.eval_take or "all", num_samples)
    result = evaluate(model, data_cfg, num_samples=num_samples, seed=seed,
                                 chunk_size=chunk_size)
    result = dict(result, eval_take=data_cfg.eval_take, weights=info["weights"])
    full = workdir_lib.is_full_evaluation(result, stored)
    written_to = None
    if write and foreign:
      written_to = _write_foreign(workdir, result, step, checkpoint, fingerprint, full, stored)
    elif write and full and not other_weights:
      write_eval_json(workdir, result, step, checkpoint, fingerprint)
      written_to = workdir_lib.path(workdir, workdir_lib.EVAL_FILE)
    elif write:
      written_to = _write_partial(workdir, result, step, checkpoint, stored, fingerprint,
                                  info["weights"] if other_weights else None, full)
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
      scope=scope, test_bits_per_dim=tightest_bpd(result)))
  logging.info("An evaluation of %s, a checkpoint from outside the run: written to %s, not to "
               "%s.", checkpoint, filename, workdir_lib.EVAL_FILE)
  return filename


def _write_partial(workdir: str, result: dict, step: int, checkpoint: str, stored: dict,
                   fingerprint: str, other_weights: str | None = None, full: bool = False) -> str:
  """WORKDIR/evaluations/<scope>.json: a partial evaluation, or one of weights other than the
  run's own (`other_weights`, named in the file name), with its scope; eval.json untouched."""
  filename = workdir_lib.partial_evaluation_path(workdir, step, result["num_images"],
                                                 result["k"], result["seed"], other_weights)
  scope = {"full": full, "images": result["num_images"], "eval_take": result["eval_take"],
           "run_eval_take": stored.get("data", {}).get("eval_take"), "k": result["k"],
           "seed": result["seed"], "checkpoint": checkpoint, "step": step}
  tf.io.gfile.makedirs(workdir_lib.path(workdir, workdir_lib.EVALUATIONS_DIR))
  workdir_lib.write_json_atomic(filename, dict(
      result, step=int(step), checkpoint=checkpoint, weights_sha256=fingerprint, scope=scope,
      test_bits_per_dim=tightest_bpd(result)))
  if other_weights:
    logging.info("An evaluation of the run's %s weights (not its own): written to %s, not to %s.",
                 other_weights, filename, workdir_lib.EVAL_FILE)
  else:
    logging.info("A partial evaluation (%d of the run's test images): written to %s, not to %s.",
                 result["num_images"], filename, workdir_lib.EVAL_FILE)
  return filename
