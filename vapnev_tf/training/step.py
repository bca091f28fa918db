"""One distributed training step: `metrics = train_step(state, iterator)`.

    state = TrainState.create(model_cfg, train_cfg, strategy)   # or TrainState(model, opt, ...)
    train_step = make_train_step(strategy, train_cfg, global_batch_size)
    metrics = train_step(state, iterator)                       # one global step

The step is one `tf.function` running `strategy.run`:
  1. per replica: z ~ q(z|x) with a stateless seed (seed, `seeds.TRAIN_Z`, step, replica),
     per-example loss -(log p(x|z) - w_KL(step) KL) (Eq. 1 with the KL weight; free bits
     optional: `objective.replica_loss`), averaged over the GLOBAL batch;
  2. gradients and scalar statistics are all-reduced by the step itself, so every replica holds
     the global gradient, its global norm and one `ok = all finite` flag;
  3. the global gradient is clipped by its global norm (optional) and applied with
     `optimizer.apply_gradients` only when ok (loss, norm and every clipped gradient finite);
     the step then reports whether every weight is still finite (a finite update can still
     overflow a weight; the loop stops the run before such weights are saved). Keras'
     optimiser sums the per-replica gradients it is given, so each replica passes 1/replicas of
     the global gradient. The conditional apply
     follows Keras' LossScaleOptimizer: a `tf.cond` in a replica context may not contain the
     optimiser's `merge_call`, so under strategies that use merge_call the cond runs in the
     cross-replica context (`merge_call`) and applies through `call_for_each_replica`.
A skipped step changes nothing but the `step` and `skipped_steps` counters (Adam's moments and
iteration count stay as they were). Everything the step produces is in the metrics it returns.

Aggressive inference (`TrainConfig.aggressive_steps` = N > 0; He et al. 2019, simplified): a step
whose `step` counter is below N first applies `aggressive_encoder_updates` updates of the same
loss on the same batch to the encoder's (and IAF's) variables only, each with fresh z
(`seeds.AGGRESSIVE_Z`), then the usual joint update. They use the same Adam and do not count as
optimiser iterations (the learning-rate schedule and `iterations = step - skipped_steps` are kept).
The choice between the two compiled steps is made in Python from the `step` counter.
"""
import dataclasses

import keras
import tensorflow as tf

from vapnev_tf import seeds
from vapnev_tf import weight_averages
from vapnev_tf.config import ModelConfig
from vapnev_tf.model import VAPNEV
from vapnev_tf.training import objective
from vapnev_tf.training import schedules
from vapnev_tf.config import TrainConfig


def build_optimizer(train_cfg: TrainConfig) -> keras.optimizers.Optimizer:
  """Adam (Keras 3) with the configured hyper-parameters and learning-rate schedule; with
  `ema_decay` > 0 it also keeps the Polyak averages of the weights (`weight_averages`)."""
  lr = train_cfg.learning_rate
  if train_cfg.warmup_steps or train_cfg.lr_decay != "none":
    lr = schedules.WarmupDecay(train_cfg.learning_rate, train_cfg.warmup_steps,
                               train_cfg.lr_decay, train_cfg.train_steps,
                               train_cfg.min_lr_fraction)
  return weight_averages.Adam(learning_rate=lr, beta_1=train_cfg.adam_beta1,
                              beta_2=train_cfg.adam_beta2, epsilon=train_cfg.adam_epsilon,
                              **weight_averages.optimizer_options(train_cfg.ema_decay))


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: one trace per state
class TrainState:
  """What a training step reads and updates; create it under the strategy's scope.

  Attributes:
    model: the `VAPNEV` being trained.
    optimizer: a built Keras optimiser over `model.trainable_variables` (it also keeps the
      Polyak averages of those weights when `ema_decay` > 0: `weight_averages`).
    step: int64 variable, global steps run (good or skipped); the step's seeds fold it in.
    skipped_steps: int64 variable, steps whose update was skipped (non-finite loss or gradient).
  """
  model: VAPNEV
  optimizer: keras.optimizers.Optimizer
  step: tf.Variable
  skipped_steps: tf.Variable

  @classmethod
  def create(cls, model_cfg: ModelConfig, train_cfg: TrainConfig,
             strategy: tf.distribute.Strategy) -> "TrainState":
    """A new model (weights from `train_cfg.seed`), `build_optimizer(train_cfg)`, zero counters."""
    keras.utils.set_random_seed(train_cfg.seed)
    with strategy.scope():
      model = VAPNEV(model_cfg)
      optimizer = build_optimizer(train_cfg)
      optimizer.build(model.trainable_variables)
      return cls(model, optimizer, counter("step"), counter("skipped_steps"))


def counter(name: str) -> tf.Variable:
  """A non-trainable int64 scalar variable starting at 0."""
  return tf.Variable(0, dtype=tf.int64, trainable=False, name=name)


def all_finite(tensors) -> tf.Tensor:
  """Scalar bool: every element of every tensor (or variable) in `tensors` is finite."""
  return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))


def _group_indices(model: VAPNEV, variables) -> dict:
  """{group: positions in `variables`} of `model.parameter_groups()` (traced once per step)."""
  position = {id(v): i for i, v in enumerate(variables)}
  return {name: [position[id(v)] for v in group]
          for name, group in model.parameter_groups().items()}


def _apply_if(ok, optimizer, grads, variables, count: bool = True):
  """`optimizer.apply_gradients(zip(grads, variables))` if `ok` (identical on every replica);
  `count=False` leaves `optimizer.iterations` as it was."""

  def apply(grads_):
    optimizer.apply_gradients(zip(grads_, variables))
    if not count:
      optimizer.iterations.assign_sub(1)

  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    tf.cond(ok, lambda: apply(grads), lambda: None)
    return

  def cross_replica(distribution, ok_, grads_):
    ok_ = distribution.experimental_local_results(ok_)[0]
    tf.cond(ok_, lambda: distribution.extended.call_for_each_replica(apply, args=(grads_,)),
            lambda: None)

  tf.distribute.get_replica_context().merge_call(cross_replica, args=(ok, grads))


def make_train_step(strategy: tf.distribute.Strategy, train_cfg: TrainConfig,
                    global_batch_size: int):
  """Returns `train_step(state, iterator) -> metrics`; one call = one global step.

  Args:
    strategy: the strategy `state` was created under and `iterator` distributes over.
    train_cfg: seed, KL schedule, clipping and `jit_compile`.
    global_batch_size: the global batch the loss is averaged over.

  The returned function reads one global batch from `iterator` (each replica gets
  `(global_batch_size / replicas, H, W, C)`), updates `state` (weights, Adam and, with
  `ema_decay`, the Polyak averages unless the step is skipped; the counters) and returns global scalars: {"loss", "log_px", "kl" (means over
  the global batch), "grad_norm", "ok" (the update was applied), "weights_finite" (every
  trainable weight is finite after the step), "kl_weight", "learning_rate"
  (the one this update used), "per_replica_batch_size", and "grad_norm/GROUP" for each group of
  `model.parameter_groups()` (the global norm of that part's gradient, before clipping)}.
  """
  replicas = strategy.num_replicas_in_sync

  per_dim = train_cfg.kl_free_nats > 0 and train_cfg.kl_free_nats_mode == "per_dim"

  def loss_and_grads(model, x, step_value, seed, variables=None):
    variables = model.trainable_variables if variables is None else variables
    with tf.GradientTape() as tape:
      terms = model.elbo_terms(x, seed=seed, per_dim_kl=per_dim)
      log_px, kl = terms["log_px_given_z"], terms["kl"]  # (B,) each
      kl_w = schedules.kl_weight(step_value, train_cfg.kl_anneal_steps, train_cfg.kl_schedule,
                                 train_cfg.kl_cycles, train_cfg.kl_cycle_ratio)
      loss = objective.replica_loss(log_px, kl, kl_w, train_cfg.kl_free_nats, global_batch_size,
                                    kl_per_dim=terms.get("kl_per_dim"))
    grads = tape.gradient(loss, variables)
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    stats = tf.stack([loss, tf.reduce_sum(log_px) / global_batch_size,
                      tf.reduce_sum(kl) / global_batch_size])
    return grads, stats, kl_w

  if train_cfg.jit_compile:
    loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

  def encoder_updates(state: TrainState, x, step_value, replica):
    """`aggressive_encoder_updates` updates of the encoder's (and IAF's) variables alone."""
    model = state.model
    variables = [v for part in ("encoder", "iaf")
                 for v in model.parameter_groups().get(part, [])]
    for j in range(train_cfg.aggressive_encoder_updates):
      key = tf.constant([train_cfg.seed, seeds.AGGRESSIVE_Z], tf.int64)
      for counter_value in (step_value, replica, tf.constant(j, tf.int64)):
        key = tf.random.experimental.stateless_fold_in(key, counter_value)
      grads, stats, _ = loss_and_grads(model, x, step_value, tf.cast(key, tf.int32), variables)
      grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
      loss = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, stats[0])
      norm = tf.linalg.global_norm(grads)
      if train_cfg.clip_grad_norm > 0:
        grads, _ = tf.clip_by_global_norm(grads, train_cfg.clip_grad_norm, use_norm=norm)
      if replicas > 1:
        grads = [g / replicas for g in grads]
      ok = tf.math.is_finite(loss) & tf.math.is_finite(norm) & all_finite(grads)
      _apply_if(ok, state.optimizer, grads, variables, count=False)

  def replica_step(state: TrainState, x, aggressive: bool = False):
    ctx = tf.distribute.get_replica_context()
    variables = list(state.model.trainable_variables)
    step_value = state.step.read_value()
    replica = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
    if aggressive:
      encoder_updates(state, x, step_value, replica)
    key = tf.random.experimental.stateless_fold_in(
        tf.constant([train_cfg.seed, seeds.TRAIN_Z], tf.int64), step_value)
    key = tf.random.experimental.stateless_fold_in(key, replica)
    grads, stats, kl_w = loss_and_grads(state.model, x, step_value,
                                        tf.cast(key, tf.int32))  # TFP: int32 seeds
    grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    stats = ctx.all_reduce(tf.distribute.ReduceOp.SUM, stats)  # (loss, log p(x|z), KL) global means
    grad_norm = tf.linalg.global_norm(grads)
    group_norms = {f"grad_norm/{name}": tf.linalg.global_norm([grads[i] for i in indices])
                   for name, indices in _group_indices(state.model, variables).items()}
    if train_cfg.clip_grad_norm > 0:
      grads, _ = tf.clip_by_global_norm(grads, train_cfg.clip_grad_norm, use_norm=grad_norm)
    if replicas > 1:
      grads = [g / replicas for g in grads]
    # The guard looks at the gradients as applied (after clipping), not only at their norm.
    ok = (tf.math.is_finite(stats[0]) & tf.math.is_finite(grad_norm)
          & all_finite(grads))
    learning_rate = state.optimizer.learning_rate  # at the iteration this update uses
    _apply_if(ok, state.optimizer, grads, variables)
    return {"loss": stats[0], "log_px": stats[1], "kl": stats[2], "grad_norm": grad_norm,
            "ok": ok, "weights_finite": all_finite(variables),
            "kl_weight": kl_w, "learning_rate": tf.cast(learning_rate, tf.float32),
            "per_replica_batch_size": tf.constant(int(x.shape[0]), tf.int64),  # static shape
            **group_norms}

  def make_step(aggressive: bool):
    @tf.function
    def train_step(state: TrainState, iterator):
      x = next(iterator)
      out = strategy.run(lambda batch: replica_step(state, batch, aggressive), args=(x,))
      out = {k: strategy.experimental_local_results(v)[0] for k, v in out.items()}
      state.step.assign_add(1)
      state.skipped_steps.assign_add(tf.cast(tf.logical_not(out["ok"]), tf.int64))
      return out
    return train_step

  train_step = make_step(False)
  if train_cfg.aggressive_steps == 0:
    return train_step
  aggressive_step = make_step(True)

  def dispatch(state: TrainState, iterator):
    if int(state.step.numpy()) < train_cfg.aggressive_steps:
      return aggressive_step(state, iterator)
    return train_step(state, iterator)

  return dispatch
