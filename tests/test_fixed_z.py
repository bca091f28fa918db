"""likelihood="vapnev_fixed_z": VAPNEV's decoder and conditional flow at one fixed z_0, no encoder
(docs/design.md §24). Its p(x) is vapnev's p(x|z_0) with the same weights, its bounds are the exact
log-likelihood, and every path a model without a latent has (sampling, export, refusals of
latent-only options and figures) treats it as it treats realnvp."""
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import flow_fixtures as ff
import model_fixtures as mf
import vapnev_tf
from run_fixtures import assert_flow_export_serves_the_model
from run_fixtures import parse_train_flags
from run_fixtures import run_smoke
from vapnev_tf import export
from vapnev_tf import flow_steps
from vapnev_tf import latent_metrics
from vapnev_tf import latent_report
from vapnev_tf import train as train_cli
from vapnev_tf.training import restore

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

SHAPE = (8, 8, 1)
FIXED_Z = "vapnev_fixed_z"


def _config(likelihood=FIXED_Z, **overrides):
  return mf.tiny_config(SHAPE, likelihood=likelihood, encoder_blocks=2, **overrides)


def _model(**overrides):
  model = vapnev_tf.VAPNEV(_config(**overrides))
  ff.perturb_multipliers(model, seed=1)  # no coupling stays the identity
  return model


@pytest.fixture(scope="module", params=["per_coupling", "shared"])
def model(request):
  return _model(conditioning=request.param)


def test_it_has_the_decoder_and_the_conditional_flow_but_no_encoder(model):
  assert not model.has_vae and not model.config.has_vae
  assert hasattr(model, "decoder") and not hasattr(model, "encoder")
  assert model.flow.conditional
  np.testing.assert_array_equal(model.fixed_z(), np.ones(model.config.latent_dim))
  # vapnev's model without its encoder: the same variables, the same shapes.
  vapnev = vapnev_tf.VAPNEV(_config("vapnev", conditioning=model.config.conditioning))
  shapes = lambda m: {v.path: tuple(v.shape) for v in m.trainable_variables}
  assert shapes(model) == {p: s for p, s in shapes(vapnev).items()
                           if not p.startswith("encoder/")}


def test_p_x_is_vapnev_p_x_given_the_fixed_z_with_the_same_weights(model):
  vapnev = vapnev_tf.VAPNEV(_config("vapnev", conditioning=model.config.conditioning))
  by_path = {v.path: v for v in model.variables}
  for v in vapnev.variables:
    if v.path in by_path:
      v.assign(by_path[v.path])
  x = ff.pixels((3,) + SHAPE, seed=2)
  p = model.p_x_given_z(None)
  assert p.batch_shape == [] and p.event_shape == SHAPE
  z_0 = tf.ones((1, model.config.latent_dim))
  expected = vapnev.p_x_given_z(tf.tile(z_0, [3, 1])).log_prob(x)
  np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-6)
  # The same number by hand: log N(f_z0(x); mu_y(z_0), sigma_y(z_0)) + log|det df_z0/dx|.
  mu_y, sigma_y = model.decoder(z_0)
  sigma_y = tf.nn.softplus(sigma_y) + model.config.min_scale
  f = model.flow.bijector(z_0)
  y = f.forward(ff.fresh(x)).numpy()
  log_base = np.sum(-0.5 * ((y - mu_y) / sigma_y) ** 2 - np.log(sigma_y)
                    - 0.5 * math.log(2 * math.pi), axis=(1, 2, 3))
  log_det = f.forward_log_det_jacobian(ff.fresh(x), event_ndims=3).numpy()
  np.testing.assert_allclose(p.log_prob(x), log_base + log_det, rtol=1e-5)


def test_every_bound_is_the_exact_log_likelihood_without_kl(model):
  x = ff.pixels((4,) + SHAPE, seed=3)
  exact = model.p_x_given_z(None).log_prob(x)
  terms = model.elbo_terms(x, seed=(1, 2))
  np.testing.assert_array_equal(terms["kl"], np.zeros(4))
  np.testing.assert_allclose(model.elbo(x, seed=(1, 2)), exact, rtol=1e-6)
  np.testing.assert_allclose(model.log_likelihood_bound(x, num_samples=5, seed=(3, 4)), exact,
                             rtol=1e-6)


def test_variational_dequantisation_bounds_charge_log_q_u_and_no_kl():
  model = _model(dequantization="variational")
  x = ff.pixels((3,) + SHAPE, seed=8)
  terms = model.elbo_terms(x, seed=(1, 2))
  np.testing.assert_array_equal(terms["kl"], np.zeros(3))
  # The one-sample bound is log p(x_int + u) - log q(u|x_int) at elbo_terms' own u.
  x_u, log_q_u = model.dequantize(x, seed=tfp.random.split_seed((1, 2))[0])
  np.testing.assert_allclose(terms["log_q_u"], log_q_u, rtol=1e-6)
  np.testing.assert_allclose(terms["log_px_given_z"],
                             model.p_x_given_z(None).log_prob(x_u) - log_q_u, rtol=1e-5)
  bound = model.log_likelihood_bound(x, num_samples=4, seed=(5, 6))
  assert bound.shape == (3,) and np.all(np.isfinite(bound))


def test_every_weight_trains_and_survives_a_checkpoint(model, tmp_path):
  """Fails at z = 0: the ReLU stacks fed by z would sit at their kink with zero gradient."""
  mf.assert_every_weight_trains_and_survives_a_checkpoint(
      model, lambda: vapnev_tf.VAPNEV(model.config), ff.pixels((4,) + SHAPE, seed=4), tmp_path,
      clone_differs=True)


def test_sampling_and_the_mean_y_path(model):
  samples = model.sample(3, temperature=0.7, seed=(1, 1))
  assert samples.shape == (3,) + SHAPE
  assert float(tf.reduce_min(samples)) >= 0.0 and float(tf.reduce_max(samples)) < 256.0
  mean = model.sample(2, use_mean_y=True)
  np.testing.assert_array_equal(mean[0], mean[1])
  np.testing.assert_allclose(mean, model.sample(2, temperature=0.0, seed=(2, 2)), atol=1e-3)
  # The mean image is f_z0^{-1}(mu_y(z_0)), by hand.
  z_0 = tf.ones((1, model.config.latent_dim))
  by_hand = model.flow.to_pixels(z_0).forward(model.decoder(z_0)[0])
  np.testing.assert_allclose(mean[:1], tf.clip_by_value(by_hand, 0.0, 256.0 - 2.0 ** -8), atol=1e-3)


def test_latent_methods_and_latent_figures_are_refused_in_one_line(model):
  x = ff.pixels((2,) + SHAPE, seed=6)
  for call in (lambda: model.encode(x), lambda: model.reconstruct(x),
               lambda: model.decode(tf.zeros((2, model.config.latent_dim)))):
    with pytest.raises(ValueError, match=r"needs a VAE, but likelihood='vapnev_fixed_z'"):
      call()
  with pytest.raises(ValueError, match="likelihood='vapnev_fixed_z' has no latent"):
    latent_metrics.evaluate_latent(model, np.zeros((4,) + SHAPE))
  with pytest.raises(ValueError, match=r"^W: likelihood='vapnev_fixed_z' has no latent z") as e:
    latent_report.check_latent_run({"model": {"likelihood": FIXED_Z}}, "W")
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("flag, message", [
    ("--posterior=iaf", "posterior='iaf' needs a VAE"),
    ("--prior=flow", "prior='flow' needs a VAE"),
    ("--committed_rate=4", "committed_rate=4.0 needs a VAE"),
    ("--kl_free_nats=16", "--kl_free_nats=16.0 needs a latent"),
    ("--kl_free_nats_mode=per_dim", "--kl_free_nats_mode=per_dim needs a factorised"),
    ("--aggressive_steps=10", "--aggressive_steps=10 needs an encoder"),
])
def test_options_of_a_vae_are_refused_as_for_realnvp(tmp_path, flag, message):
  for likelihood in ("realnvp", FIXED_Z):
    fv = parse_train_flags(tmp_path / "run", f"--likelihood={likelihood}", flag)
    with pytest.raises(ValueError, match=message) as e:
      train_cli.configs_from_flags(fv)
    assert "\n" not in str(e.value) and likelihood in str(e.value)


def test_actnorm_init_sees_the_fixed_latent():
  layout = flow_steps.glow_layout_string(1, 1)
  model = _model(flow_layout=layout)
  x = ff.pixels((4,) + SHAPE, seed=7)
  names = restore.initialize_from_batch(model, x, strategy=None)
  assert len(names) == 1
  # Initialised: the first ActNorm's bias is no longer its zero start.
  assert float(tf.reduce_max(tf.abs(flow_steps.glow.actnorm_layers(model.flow)[0].bias))) > 0


def test_export_has_the_signatures_of_a_model_without_a_latent(tmp_path):
  model = _model()
  out = tmp_path / "export"
  export.export_model(model, str(out), {"step": 0})
  assert_flow_export_serves_the_model(model, out, SHAPE)


def test_three_training_steps_report_finite_bits_per_dim(tmp_path):
  """configs/smoke.flags with z fixed, through the training CLI's configuration; the Glow
  layout's ActNorm is initialised from the first batch at the fixed z."""
  result = run_smoke(tmp_path / "run", f"--likelihood={FIXED_Z}", "--train_steps=3",
                     "--eval_every=0", "--eval_num_samples=2",
                     f"--flow_layout={flow_steps.glow_layout_string(1, 1)}")
  assert result["step"] == 3 and result["skipped_steps"] == 0
  final = result["eval"]
  assert math.isfinite(final["elbo_bpd"]) and math.isfinite(final["iw_bpd"])
  # No KL and no z to average over: the bound with k = 2 is the ELBO, the exact log-likelihood.
  assert final["iw_bpd"] == pytest.approx(final["elbo_bpd"], rel=1e-5)
