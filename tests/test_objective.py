"""The training objective (`vapnev_tf.training.objective`): the annealed negative ELBO and free
bits, checked against numpy, through autodiff and through one real training step."""

import numpy as np
import pytest
import tensorflow as tf

import model_fixtures as mf
from vapnev_tf.training import TrainConfig
from vapnev_tf.training import TrainState
from vapnev_tf.training import make_train_step
from vapnev_tf.training import objective

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

RNG = np.random.default_rng(7)
LOG_PX = RNG.normal(-500.0, 20.0, size=8)
KL = RNG.uniform(0.5, 3.0, size=8)  # mean ~1.75 nats


def _loss_and_kl_gradient(log_px, kl, weight, free_nats, global_batch_size):
  kl = tf.constant(kl, tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(kl)
    loss = objective.replica_loss(tf.constant(log_px, tf.float64), kl, weight, free_nats,
                                  global_batch_size)
  return float(loss), tape.gradient(loss, kl).numpy()


@pytest.mark.parametrize("weight", [0.0, 0.25, 1.0])
def test_without_free_bits_it_is_the_mean_annealed_negative_elbo(weight):
  loss, grad = _loss_and_kl_gradient(LOG_PX, KL, weight, 0.0, 8)
  np.testing.assert_allclose(loss, np.mean(-(LOG_PX - weight * KL)), rtol=1e-12)
  np.testing.assert_allclose(grad, np.full(8, weight / 8), rtol=1e-12)


def test_below_the_free_nats_the_kl_costs_a_constant_and_has_no_gradient():
  free = 4.0  # > every KL here
  loss, grad = _loss_and_kl_gradient(LOG_PX, KL, 0.5, free, 8)
  np.testing.assert_allclose(loss, np.mean(-LOG_PX) + 0.5 * free, rtol=1e-12)
  np.testing.assert_array_equal(grad, np.zeros(8))


def test_above_the_free_nats_it_is_the_annealed_negative_elbo():
  free = 1.5  # < the batch mean (individual KLs may be below it: the hinge is on the mean)
  assert KL.mean() > free and KL.min() < free
  loss, grad = _loss_and_kl_gradient(LOG_PX, KL, 0.75, free, 8)
  ref_loss, ref_grad = _loss_and_kl_gradient(LOG_PX, KL, 0.75, 0.0, 8)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)


def test_replica_shares_sum_to_the_mean_of_each_replicas_hinge():
  free = 1.8
  halves = [(LOG_PX[:4], KL[:4]), (LOG_PX[4:], KL[4:])]
  total = sum(_loss_and_kl_gradient(lp, kl, 1.0, free, 8)[0] for lp, kl in halves)
  expected = np.mean(-LOG_PX) + np.mean([max(free, kl.mean()) for _, kl in halves])
  np.testing.assert_allclose(total, expected, rtol=1e-12)


def test_negative_free_nats_are_refused():
  with pytest.raises(ValueError, match="free_nats must be >= 0"):
    objective.replica_loss(tf.constant(LOG_PX), tf.constant(KL), 1.0, -1.0, 8)
  with pytest.raises(ValueError, match="kl_free_nats"):
    TrainConfig(kl_free_nats=-0.5)


TINY = mf.tiny_config((8, 8, 1), latent_dim=4, encoder_blocks=2, encoder_layers_per_block=1,
                      flow_scales=1, flow_res_blocks=0)


def _one_step(free_nats):
  train_cfg = TrainConfig(train_steps=1, learning_rate=1e-3, export_at_end=False,
                          kl_free_nats=free_nats)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state = TrainState.create(TINY, train_cfg, strategy)
  images = np.random.default_rng(0).integers(0, 256, size=(8, 8, 8, 1)).astype(np.float32)
  iterator = iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(images).repeat()))
  before = [v.numpy() for v in state.model.trainable_variables]
  assert before, "the model is built by TrainState.create"
  out = make_train_step(strategy, train_cfg, global_batch_size=8)(state, iterator)
  return {k: float(v) for k, v in out.items() if v.shape == ()}, before


def test_the_training_step_optimises_the_free_bits_objective():
  plain, weights_plain = _one_step(0.0)
  free, weights_free = _one_step(1e4)  # far above any KL: the KL term is a constant
  for a, b in zip(weights_plain, weights_free):  # same seed: same start, same z draws
    np.testing.assert_array_equal(a, b)
  assert plain["log_px"] == pytest.approx(free["log_px"], rel=1e-6)
  assert plain["kl"] == pytest.approx(free["kl"], rel=1e-6)  # metrics report the real KL
  assert plain["loss"] == pytest.approx(-plain["log_px"] + plain["kl"], rel=1e-5)
  assert free["loss"] == pytest.approx(-free["log_px"] + 1e4, rel=1e-5)
  # the encoder's gradient lost the KL's part (it keeps log p(x|z)'s, through z)
  assert free["grad_norm/encoder"] != pytest.approx(plain["grad_norm/encoder"], rel=1e-3)
