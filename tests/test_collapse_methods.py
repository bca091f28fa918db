"""Methods against posterior collapse (docs/design.md §18): the cyclical KL schedule, per-dimension
free bits, the delta-VAE committed rate, the learned flow prior and aggressive encoder updates.

Each: its exact formula, the reported bounds stay the model's true ELBO / IW bound, gradients reach
every weight, checkpoints round-trip, and a resumed run refuses a changed setting.
"""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
import model_fixtures as mf
from vapnev_tf import config_run
import vapnev_tf
from vapnev_tf.config import ModelConfig
from vapnev_tf.data import DataConfig
from vapnev_tf.flow import ConditionalRealNVP
from vapnev_tf.layers import CouplingNetwork
from vapnev_tf.layers import ResidualNet
from vapnev_tf.posteriors import committed_rate_scale
from vapnev_tf.priors import FlowPrior
from vapnev_tf.training import TrainConfig
from vapnev_tf.training import TrainState
from vapnev_tf.training import make_train_step
from vapnev_tf.training import objective
from vapnev_tf.training import schedules

tfd = tfp.distributions

SHAPE = (8, 8, 1)


def model(**overrides):
  return vapnev_tf.VAPNEV(mf.tiny_config(SHAPE, encoder_blocks=2, **overrides))


def perturb_zero_kernels(layer, seed=0, stddev=0.3):
  """Random values for the zero-initialised MADE output kernels (a fresh flow is the identity)."""
  rng = np.random.default_rng(seed)
  for v in layer.trainable_variables:
    if v.path.endswith("kernel") and not np.any(v.numpy()):
      v.assign(rng.normal(0.0, stddev, v.shape).astype(str(v.dtype)))


def batch(n=4, seed=1):
  return ff.pixels((n,) + SHAPE, seed=seed)


# --- cyclical KL annealing ---------------------------------------------------------------------


@pytest.mark.parametrize("step, expected", [
    (0, 0.0), (5, 0.4), (12.5, 1.0), (20, 1.0), (25, 0.0), (30, 0.4), (74, 1.0), (75, 0.0),
    (99, 1.0), (100, 1.0), (1000, 1.0)])
def test_cyclical_weight_ramps_over_the_ratio_of_each_cycle(step, expected):
  # 100 steps in 4 cycles of 25; the weight rises over the first 0.5 * 25 = 12.5 steps of each
  w = schedules.kl_weight(tf.constant(step, tf.float32), 100, "cyclical", cycles=4,
                          cycle_ratio=0.5)
  assert float(w) == pytest.approx(expected, abs=1e-6)


def test_cyclical_is_one_without_annealing_and_one_cycle_of_ratio_one_is_linear():
  steps = tf.range(0, 130)
  assert np.all(schedules.kl_weight(steps, 0, "cyclical", 3, 0.2).numpy() == 1.0)
  np.testing.assert_allclose(schedules.kl_weight(steps, 100, "cyclical", 1, 1.0),
                             schedules.kl_weight(steps, 100, "linear"), atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(cycles=0), "kl_cycles must be an int >= 1, got 0"),
    (dict(cycle_ratio=0.0), r"kl_cycle_ratio must be in \(0, 1\], got 0.0"),
    (dict(cycle_ratio=1.5), r"kl_cycle_ratio must be in \(0, 1\], got 1.5")])
def test_cyclical_refuses_bad_cycles(kwargs, message):
  with pytest.raises(ValueError, match=message):
    schedules.kl_weight(3, 100, "cyclical", **kwargs)


# --- per-dimension free bits -------------------------------------------------------------------

RNG = np.random.default_rng(3)
LOG_PX = RNG.normal(-500.0, 20.0, size=6)
KL_DIMS = RNG.uniform(0.0, 1.0, size=(6, 4)) * np.array([0.05, 0.5, 1.0, 2.0])  # (B, L)


def _per_dim_loss_and_gradient(kl_dims, weight, free_nats, global_batch_size, log_px=LOG_PX):
  kl_dims = tf.constant(kl_dims, tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(kl_dims)
    loss = objective.replica_loss(tf.constant(log_px, tf.float64),
                                  tf.reduce_sum(kl_dims, -1), weight, free_nats,
                                  global_batch_size, kl_per_dim=kl_dims)
  return float(loss), tape.gradient(loss, kl_dims).numpy()


def test_per_dim_free_bits_hinge_each_dimensions_batch_mean():
  free = 1.2  # lambda / L = 0.3 nats per dimension
  means = KL_DIMS.mean(0)
  above = means > 0.3  # only those dimensions' KL has a gradient (w / B each)
  assert list(above) == [False, False, True, True]
  loss, grad = _per_dim_loss_and_gradient(KL_DIMS, 0.75, free, 6)
  expected = np.mean(-LOG_PX) + 0.75 * np.sum(np.maximum(means, 0.3))
  np.testing.assert_allclose(loss, expected, rtol=1e-12)
  np.testing.assert_allclose(grad, np.broadcast_to(np.where(above, 0.75 / 6, 0.0), grad.shape),
                             rtol=1e-12)


def test_per_dim_free_bits_differ_from_the_total_hinge_and_vanish_at_zero():
  # total KL mean > lambda: the total hinge is inactive, the per-dimension one is not
  free = 1.2
  assert KL_DIMS.sum(1).mean() > free
  per_dim, _ = _per_dim_loss_and_gradient(KL_DIMS, 1.0, free, 6)
  total = float(objective.replica_loss(tf.constant(LOG_PX), tf.constant(KL_DIMS.sum(1)), 1.0,
                                       free, 6))
  assert per_dim > total + 1e-3
  plain, grad = _per_dim_loss_and_gradient(KL_DIMS, 1.0, 0.0, 6)
  np.testing.assert_allclose(plain, np.mean(-LOG_PX + KL_DIMS.sum(1)), rtol=1e-12)
  np.testing.assert_allclose(grad, np.full(KL_DIMS.shape, 1 / 6), rtol=1e-12)


def test_per_dim_replica_shares_sum_to_the_mean_of_each_replicas_hinge():
  halves = [(KL_DIMS[:3], LOG_PX[:3]), (KL_DIMS[3:], LOG_PX[3:])]
  total = sum(_per_dim_loss_and_gradient(kl, 1.0, 1.2, 6, lp)[0] for kl, lp in halves)
  expected = np.mean(-LOG_PX) + np.mean([np.sum(np.maximum(kl.mean(0), 0.3)) for kl, _ in halves])
  np.testing.assert_allclose(total, expected, rtol=1e-12)


def test_model_per_dim_kl_sums_to_the_analytic_kl_and_needs_a_factorised_kl():
  m = model()
  terms = m.elbo_terms(batch(), seed=(1, 2), per_dim_kl=True)
  mu, sigma = m.encode_moments(batch())
  expected = tfd.kl_divergence(tfd.Normal(mu, sigma), tfd.Normal(0.0, 1.0))
  np.testing.assert_allclose(terms["kl_per_dim"], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(tf.reduce_sum(terms["kl_per_dim"], -1), terms["kl"], rtol=1e-5)
  assert set(m.elbo_terms(batch(), seed=(1, 2))) == {"log_px_given_z", "kl"}
  with pytest.raises(ValueError, match=r"per_dim_kl=True needs posterior='gaussian'.*'iaf'"):
    model(posterior="iaf", iaf_hidden=16).elbo_terms(batch(), per_dim_kl=True)


# --- committed rate (delta-VAE) ----------------------------------------------------------------


@pytest.mark.parametrize("delta, latent_dim", [(8.0, 32), (0.01, 4), (100.0, 8), (3.0, 256)])
def test_committed_rate_scale_puts_the_minimum_kl_at_delta(delta, latent_dim):
  sigma = committed_rate_scale(delta, latent_dim)
  assert 0 < sigma < 1
  per_dim = 0.5 * (sigma ** 2 - 1.0 - np.log(sigma ** 2))
  np.testing.assert_allclose(per_dim * latent_dim, delta, rtol=1e-10)


@pytest.mark.parametrize("delta, latent_dim, message", [
    (0.0, 4, "committed_rate must be > 0 and finite, got 0.0"),
    (float("inf"), 4, "committed_rate must be > 0 and finite"),
    (1.0, 0, "latent_dim must be an int >= 1, got 0")])
def test_committed_rate_scale_refuses_bad_arguments(delta, latent_dim, message):
  with pytest.raises(ValueError, match=message):
    committed_rate_scale(delta, latent_dim)


def test_committed_rate_fixes_the_posterior_scale_and_the_kl_never_falls_below_delta():
  m = model(committed_rate=3.0)
  assert not hasattr(m.encoder, "sigma_z")  # no projection whose output would be ignored
  sigma = committed_rate_scale(3.0, 8)
  x = batch(6, seed=5)
  q = m.encode(x)
  np.testing.assert_allclose(q.stddev(), np.full((6, 8), sigma), rtol=1e-6)
  terms = m.elbo_terms(x, seed=(3, 4))
  # the reported KL is the true KL of this q: analytic, and >= delta for every x
  np.testing.assert_allclose(terms["kl"], tfd.kl_divergence(q, m.prior), rtol=1e-6)
  assert np.all(terms["kl"].numpy() >= 3.0 - 1e-4)
  m.encoder.mu_z.kernel.assign(tf.zeros_like(m.encoder.mu_z.kernel))  # mu_z = bias only
  m.encoder.mu_z.bias.assign(tf.zeros_like(m.encoder.mu_z.bias))
  np.testing.assert_allclose(m.elbo_terms(x, seed=(3, 4))["kl"], np.full(6, 3.0), rtol=1e-5)


def test_committed_rate_every_weight_trains_and_survives_a_checkpoint(tmp_path):
  m = model(committed_rate=2.0)
  assert len(m.trainable_variables) == len(model().trainable_variables) - 2  # no sigma_z kernel/bias
  ff.perturb_multipliers(m, seed=1)
  mf.assert_every_weight_trains_and_survives_a_checkpoint(m, lambda: model(committed_rate=2.0),
                                                          batch(3, seed=3), tmp_path)


def test_committed_rate_needs_the_gaussian_posterior_and_the_standard_prior():
  with pytest.raises(ValueError, match=r"committed_rate=1.0 needs a VAE.*posterior='iaf'"):
    mf.tiny_config(SHAPE, committed_rate=1.0, posterior="iaf")
  with pytest.raises(ValueError, match=r"committed_rate=1.0 needs.*prior='flow'"):
    mf.tiny_config(SHAPE, committed_rate=1.0, prior="flow")
  with pytest.raises(ValueError, match="committed_rate must be >= 0 and finite"):
    mf.tiny_config(SHAPE, committed_rate=-1.0)


# --- learned flow prior --------------------------------------------------------------------------


def flow_prior(latent_dim=5, num_steps=2, dtype="float64", perturb=True):
  layer = FlowPrior(latent_dim, num_steps, hidden=12, dtype=dtype)
  layer(tf.zeros([1, latent_dim], dtype))
  if perturb:
    perturb_zero_kernels(layer, seed=2)
  return layer


def test_a_fresh_flow_prior_is_the_standard_normal():
  p = flow_prior(perturb=False).distribution()
  z = tf.constant(np.random.default_rng(1).normal(size=(3, 4, 5)), tf.float64)
  expected = np.sum(-0.5 * z.numpy() ** 2 - 0.5 * np.log(2 * np.pi), -1)
  np.testing.assert_allclose(p.log_prob(z), expected, rtol=1e-12)


def test_flow_prior_log_prob_is_the_exact_change_of_variables_float64():
  layer = flow_prior()
  p, bijector = layer.distribution(), layer.bijector()
  u = tf.constant(np.random.default_rng(4).normal(size=(6, 5)), tf.float64)
  with tf.GradientTape() as tape:
    tape.watch(u)
    z = bijector.forward(u)
  jacobian = tape.batch_jacobian(z, u).numpy()  # (B, L, L)
  log_det = np.linalg.slogdet(jacobian)[1]
  expected = tfd.Normal(tf.constant(0.0, tf.float64), 1.0).log_prob(u).numpy().sum(-1) - log_det
  np.testing.assert_allclose(p.log_prob(z), expected, rtol=1e-9, atol=1e-9)
  assert not np.allclose(log_det, 0.0)  # the perturbed prior is not the identity
  # samples (L sequential passes per step) are the forward image of the base samples
  np.testing.assert_allclose(p.sample(3, seed=(1, 2)),
                             bijector.forward(p.distribution.sample(3, seed=(1, 2))), rtol=1e-9)


def test_model_flow_prior_gives_the_monte_carlo_kl_and_its_iw_bound_and_samples():
  m = model(prior="flow")
  perturb_zero_kernels(m.prior_flow, seed=5, stddev=0.2)
  x = batch()
  assert "TransformedDistribution" in type(m.prior).__name__
  seed = tf.constant([7, 8])
  terms = m.elbo_terms(x, seed=seed)
  q = m.encode(x)
  z = q.sample(seed=seed)
  np.testing.assert_allclose(terms["kl"], q.log_prob(z) - m.prior.log_prob(z), rtol=1e-5,
                             atol=1e-4)
  assert not np.allclose(m.prior.log_prob(z), model().prior.log_prob(z), atol=1e-3)
  # the IW bound (one chunk: the seed as is) uses the learned log p(z)
  zk = q.sample(3, seed=tfp.random.sanitize_seed((4, 5)))
  log_w = (m.p_x_given_z(zk).log_prob(x) + m.prior.log_prob(zk) - q.log_prob(zk)).numpy()
  expected = np.log(np.mean(np.exp(log_w - log_w.max(0)), 0)) + log_w.max(0)
  np.testing.assert_allclose(m.log_likelihood_bound(x, 3, seed=(4, 5)), expected, rtol=1e-5)
  # generation draws z from the learned prior
  z_seed, _ = tfp.random.split_seed((9, 9))
  np.testing.assert_allclose(m.sample(2, use_mean_y=True, seed=(9, 9)),
                             m.decode_images(m.prior.sample(2, seed=z_seed)), atol=1e-3)


def test_flow_prior_every_weight_trains_and_survives_a_checkpoint(tmp_path):
  m = model(prior="flow", prior_steps=2)
  per_step = 2 + 2 + 2 + 2  # masked_in, masked_hidden, shift, log-scale (no context)
  assert len(m.prior_flow.trainable_variables) == 2 * per_step
  assert m.parameter_groups()["prior"] == list(m.prior_flow.trainable_variables)
  ff.perturb_multipliers(m, seed=1)
  perturb_zero_kernels(m.prior_flow, seed=4, stddev=0.1)
  mf.assert_every_weight_trains_and_survives_a_checkpoint(
      m, lambda: model(prior="flow", prior_steps=2), batch(3, seed=3), tmp_path)


def test_flow_prior_needs_a_vae():
  with pytest.raises(ValueError, match=r"prior='flow' needs a VAE.*realnvp"):
    ModelConfig(likelihood="realnvp", prior="flow")


# --- local receptive field of the coupling networks ---------------------------------------------


def _dependence(net, x):
  """|d out[:, 4, 4, :] / d x| summed over batch and channels, `(H, W)`: where the centre output
  pixel looks."""
  with tf.GradientTape() as tape:
    tape.watch(x)
    out = net(x)[:, 4, 4, :]
  return tf.reduce_sum(tf.abs(tape.gradient(out, x)), axis=[0, 3]).numpy()


@pytest.mark.parametrize("kernel_size, radius", [(1, 1), (3, 4)])
def test_residual_net_receptive_field(kernel_size, radius):
  # kernel 1: conv_in's 3x3 only (radius 1); kernel 3: 3 + 2 (2 blocks + 1) = 13 wide, the image
  net = ResidualNet(4, 2, num_blocks=2, kernel_size=kernel_size)
  x = tf.constant(np.random.default_rng(0).normal(size=(2, 9, 9, 3)), tf.float32)
  net(x)
  ff.perturb_all(net, seed=1)
  seen = _dependence(net, x) > 0
  rows, cols = np.nonzero(seen)
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4 - radius, 4 + radius,
                                                              4 - radius, 4 + radius)


@pytest.mark.parametrize("conditioning", ["per_coupling", "shared"])
def test_a_local_coupling_sees_a_3x3_neighbourhood_of_x_and_still_all_of_z(conditioning):
  net = CouplingNetwork(2, 9, 9, filters=4, num_res_blocks=2, conditioning=conditioning,
                        receptive_field="local")
  x = tf.constant(np.random.default_rng(0).normal(size=(2, 9, 9, 2)), tf.float32)
  z = (tf.constant(np.random.default_rng(1).normal(size=(2, 6)), tf.float32)
       if conditioning == "per_coupling" else
       tf.constant(np.random.default_rng(1).normal(size=(2, 9, 9, 5)), tf.float32))
  net(x, z)
  ff.perturb_all(net, seed=2)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([x, z])
    shift, log_scale = net(x, z)
    centre = tf.reduce_sum(shift[:, 4, 4, :] + log_scale[:, 4, 4, :])
  dx = tf.reduce_sum(tf.abs(tape.gradient(centre, x)), axis=[0, 3]).numpy()
  rows, cols = np.nonzero(dx)
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 5, 3, 5)
  assert float(tf.reduce_sum(tf.abs(tape.gradient(centre, z)))) > 0
  with pytest.raises(ValueError, match="receptive_field must be one of"):
    CouplingNetwork(2, 9, 9, filters=4, receptive_field="tiny")


@pytest.mark.parametrize("overrides", [dict(), dict(conditioning="shared", fused_networks=True)])
def test_local_receptive_field_every_weight_trains_and_survives_a_checkpoint(tmp_path, overrides):
  m = model(flow_receptive_field="local", **overrides)
  kernels = {v.path: v.shape for v in m.flow.trainable_variables if "block0_conv_a" in v.path
             or "conv_out" in v.path and ("l1" in v.path or "lm1" in v.path)}
  assert kernels and all(shape[:2] == (1, 1) for p, shape in kernels.items() if "kernel" in p)
  ff.perturb_multipliers(m, seed=1)
  mf.assert_every_weight_trains_and_survives_a_checkpoint(
      m, lambda: model(flow_receptive_field="local", **overrides), batch(3, seed=3), tmp_path)


def _flow_dependence(layout, size=12):
  """Where the centre coordinate of y = f_z(x) looks in x: a boolean `(size, size)` map."""
  flow = ConditionalRealNVP((size, size, 1), latent_dim=3, layout=layout,
                            filters=4, num_res_blocks=1, conditioning="shared",
                            fused_networks=True, receptive_field="local")
  ff.perturb_all(flow, seed=4)
  x = ff.pixels((1, size, size, 1), seed=5)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = flow.bijector(ff.latents((1,), seed=6)).forward(x)
    centre = y[0, size // 2, size // 2, 0]
  return np.abs(tape.gradient(centre, x).numpy()[0, :, :, 0]) > 0


def test_a_flow_of_local_couplings_at_one_resolution_is_local_and_squeezes_are_not():
  # k local checkerboard couplings at the image's resolution: y at a pixel depends on x within
  # k pixels (each coupling adds its 3x3 neighbourhood); global structure must come from z.
  rows, cols = np.nonzero(_flow_dependence("checkerboard*2"))
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 8, 4, 8)
  # A squeeze doubles the reach of every later 3x3 convolution: local couplings then see far.
  rows, cols = np.nonzero(_flow_dependence("checkerboard*2 squeeze channel*2 factor_out | "
                                           "checkerboard*2 squeeze channel*2"))
  assert rows.max() - rows.min() > 8 and cols.max() - cols.min() > 8


def test_local_receptive_field_needs_a_flow():
  with pytest.raises(ValueError, match=r"flow_receptive_field='local' needs a flow likelihood"):
    mf.tiny_config(SHAPE, likelihood="pixel_gaussian", flow_receptive_field="local")


# --- training steps ------------------------------------------------------------------------------

TINY = mf.tiny_config(SHAPE, encoder_blocks=2, latent_dim=4, flow_res_blocks=0)


def _state_and_step(model_cfg=TINY, **train_overrides):
  train_cfg = TrainConfig(train_steps=3, learning_rate=1e-3, export_at_end=False,
                          **train_overrides)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state = TrainState.create(model_cfg, train_cfg, strategy)
  images = np.random.default_rng(0).integers(0, 256, size=(8,) + SHAPE).astype(np.float32)
  iterator = iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(images).repeat()))
  step = make_train_step(strategy, train_cfg, global_batch_size=8)
  return state, lambda: {k: float(v) for k, v in step(state, iterator).items() if v.shape == ()}


def test_the_training_step_optimises_per_dimension_free_bits():
  _, plain_step = _state_and_step()
  _, free_step = _state_and_step(kl_free_nats=1e4, kl_free_nats_mode="per_dim")
  plain, free = plain_step(), free_step()
  assert plain["kl"] == pytest.approx(free["kl"], rel=1e-6)  # metrics report the real KL
  assert free["loss"] == pytest.approx(-free["log_px"] + 1e4, rel=1e-5)  # every dim below 1e4/4
  assert free["grad_norm/encoder"] != pytest.approx(plain["grad_norm/encoder"], rel=1e-3)


@pytest.mark.parametrize("overrides", [dict(prior="flow"), dict(committed_rate=2.0)])
def test_a_training_step_of_each_model_method_is_finite_and_trains_every_group(overrides):
  state, step = _state_and_step(dataclasses.replace(TINY, **overrides), kl_schedule="cyclical",
                                kl_anneal_steps=4, kl_cycles=2, kl_cycle_ratio=1.0)
  step()
  out = step()
  assert out["ok"] and np.isfinite(out["loss"]) and out["kl_weight"] == pytest.approx(0.5)
  if "prior" in overrides:
    assert out["grad_norm/prior"] > 0  # after one update the MADE output layers are non-zero
  assert int(state.optimizer.iterations) == 2


def _adam_moments(optimizer, variable):
  index = optimizer._get_variable_index(variable)  # pylint: disable=protected-access
  return (optimizer._momentums[index].numpy(),  # pylint: disable=protected-access
          optimizer._velocities[index].numpy())  # pylint: disable=protected-access


def _updates_seen(optimizer, variable, beta1=0.9, beta2=0.999):
  """Whether Adam's moments of `variable` are those of exactly one update from zero:
  v = (1 - beta2) (m / (1 - beta1))^2 holds after one update and not after several (different)
  gradients."""
  m, v = _adam_moments(optimizer, variable)
  return np.allclose(v, (1 - beta2) * (m / (1 - beta1)) ** 2, rtol=1e-4, atol=1e-20)


def test_aggressive_steps_update_the_encoder_alone_first_and_keep_the_iteration_count():
  state, step = _state_and_step(aggressive_steps=1, aggressive_encoder_updates=2)
  groups = state.model.parameter_groups()
  step()
  opt = state.optimizer
  assert int(opt.iterations) == 1 and int(state.step) == 1  # encoder-only updates do not count
  encoder_kernels = [v for v in groups["encoder"] if v.path.endswith("kernel")]
  others = [v for name, vs in groups.items() if name != "encoder" for v in vs
            if v.path.endswith("kernel") and np.any(_adam_moments(opt, v)[0])]
  assert others  # decoder and flow kernels that got a gradient
  assert all(_updates_seen(opt, v) for v in others)  # one (the joint) update
  assert not any(_updates_seen(opt, v) for v in encoder_kernels)  # 1 + 2 updates
  # from step aggressive_steps on, steps are plain: every moment sees one more update, iterations 2
  step()
  assert int(opt.iterations) == 2


# --- configs -------------------------------------------------------------------------------------

CHANGES = [("model", "committed_rate", 4.0), ("model", "prior", "flow"),
           ("model", "flow_receptive_field", "local"),
           ("model", "prior_steps", 3), ("train", "kl_schedule", "cyclical"),
           ("train", "kl_cycles", 2), ("train", "kl_cycle_ratio", 0.25),
           ("train", "kl_free_nats_mode", "per_dim"), ("train", "aggressive_steps", 100),
           ("train", "aggressive_encoder_updates", 10), ("model", "decoder_filters", 2)]
DEFAULTS = {"flow_receptive_field": "full", "committed_rate": 0.0, "prior": "standard",
            "prior_steps": 2, "kl_cycles": 4, "kl_cycle_ratio": 0.5, "kl_free_nats_mode": "total",
            "aggressive_steps": 0, "aggressive_encoder_updates": 5, "decoder_filters": 0}


def _run_config(model_cfg=TINY, **train_overrides):
  return config_run.run_config_dict(model_cfg, DataConfig(), TrainConfig(**train_overrides))


@pytest.mark.parametrize("section, field, value", CHANGES)
def test_a_resumed_run_refuses_a_changed_method_setting(section, field, value):
  stored = _run_config()
  if section == "model":
    requested = _run_config(dataclasses.replace(TINY, **{field: value}))
  else:
    requested = _run_config(**{field: value})
  old = stored[section][field]
  assert config_run.config_differences(stored, requested) == [
      f"{section}.{field}: stored {old!r}, requested {value!r}"]


@pytest.mark.parametrize("section, field", [(s, f) for s, f, _ in CHANGES
                                            if f != "kl_schedule"])
def test_a_run_stored_before_a_method_existed_resumes_at_its_default(section, field):
  stored = _run_config()
  del stored[section][field]
  assert config_run.config_differences(stored, _run_config()) == []
  assert DEFAULTS[field] == dataclasses.asdict(
      TINY if section == "model" else TrainConfig())[field]


@pytest.mark.parametrize("args, message", [
    (["--kl_free_nats_mode=per_dim", "--posterior=iaf"],
     "--kl_free_nats_mode=per_dim needs a factorised analytic KL"),
    (["--kl_free_nats_mode=per_dim", "--prior=flow"],
     "--kl_free_nats_mode=per_dim needs a factorised analytic KL"),
    (["--aggressive_steps=10", "--likelihood=realnvp"], "--aggressive_steps=10 needs an encoder"),
    (["--kl_cycle_ratio=0"], "kl_cycle_ratio"), (["--kl_cycles=0"], "kl_cycles")])
def test_inconsistent_method_flags_are_refused(args, message):
  from vapnev_tf import train as train_cli  # pylint: disable=g-import-not-at-top
  with pytest.raises((ValueError, Exception), match=message):
    train_cli.configs_from_flags(train_cli.parse_flags(
        ["vapnev_tf.train", "--workdir=/tmp/unused", "--dataset=fashion_mnist", *args]))


def test_the_defaults_keep_the_paper_s_behaviour():
  assert TrainConfig().kl_schedule == "linear" and TrainConfig().kl_free_nats == 0.0
  assert TrainConfig().aggressive_steps == 0
  cfg = ModelConfig()
  assert (cfg.committed_rate, cfg.prior) == (0.0, "standard")
