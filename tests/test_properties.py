"""Property-based flow tests (hypothesis) over random small configurations: invertibility, log-det
against the autodiff Jacobian, and finiteness at the edges of the pixel domain."""
import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

import flow_fixtures as ff
from vapnev_tf.flow import ConditionalRealNVP

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager


@st.composite
def flow_configs(draw):
  scales = draw(st.integers(1, 2))
  multiple = 2 ** scales
  height = multiple * draw(st.integers(1, 2))
  width = multiple * draw(st.integers(1, 2))
  checkerboard = draw(st.integers(0, 2))
  channelwise = draw(st.integers(0 if checkerboard else 1, 2))
  return dict(image_shape=(height, width, draw(st.sampled_from([1, 3]))), num_scales=scales,
              num_checkerboard=checkerboard, num_channelwise=channelwise,
              filters=draw(st.integers(2, 4)), conditional=draw(st.booleans()),
              dtype=draw(st.sampled_from(["float32", "float64"])), seed=draw(st.integers(0, 99)))


def _build(cfg):
  flow = ConditionalRealNVP(cfg["image_shape"], latent_dim=ff.LATENT_DIM,
                            num_scales=cfg["num_scales"], num_checkerboard=cfg["num_checkerboard"],
                            num_channelwise=cfg["num_channelwise"], filters=cfg["filters"],
                            num_res_blocks=1, conditional=cfg["conditional"], dtype=cfg["dtype"])
  ff.perturb_multipliers(flow, cfg["seed"])
  return flow


def _settings(max_examples):
  return hypothesis.settings(max_examples=max_examples, deadline=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck))


# Each property runs on a few examples in `make test` and on the full count under `slow`
# (`make test-all`); derandomized, so each draws the same examples on every run.
QUICK = _settings(max_examples=3)
FULL = _settings(max_examples=12)


def _check_invertible_with_exact_log_det(cfg):
  flow = _build(cfg)
  dtype = cfg["dtype"]
  z = ff.latents((1,), dtype, seed=cfg["seed"])
  x = ff.pixels((1,) + cfg["image_shape"], dtype, seed=cfg["seed"])
  bij = flow.bijector(z)
  y = bij.forward(x)
  np.testing.assert_allclose(bij.inverse(ff.fresh(y)), x, rtol=0,
                             atol=5e-2 if dtype == "float32" else 1e-8)
  fldj = bij.forward_log_det_jacobian(x, event_ndims=3).numpy()[0]
  ildj = bij.inverse_log_det_jacobian(ff.fresh(y), event_ndims=3).numpy()[0]
  assert abs(fldj + ildj) <= (1e-2 if dtype == "float32" else 1e-8) * max(1.0, abs(fldj))
  if dtype == "float64":
    expected = ff.autodiff_log_det(lambda t: flow.bijector(z).forward(t), x)
    assert abs(fldj - expected) < 1e-4


def _check_finite_at_the_pixel_domain_edges(cfg, noise):
  """Pixels 0 and 255 with dequantisation noise at both ends of [0, 1)."""
  flow = _build(cfg)
  dtype = cfg["dtype"]
  top = np.nextafter(np.array(1.0, dtype), np.array(0.0, dtype)) if noise else 0.0
  values = np.where(np.arange(np.prod(cfg["image_shape"])) % 2 == 0, 0.0, 255.0) + top
  x = values.reshape((1,) + cfg["image_shape"]).astype(dtype)
  bij = flow.bijector(ff.latents((1,), dtype))
  y = bij.forward(x)
  assert np.all(np.isfinite(y.numpy()))
  assert np.all(np.isfinite(bij.forward_log_det_jacobian(x, event_ndims=3).numpy()))


@QUICK
@hypothesis.given(flow_configs())
def test_random_flows_are_invertible_with_exact_log_det(cfg):
  _check_invertible_with_exact_log_det(cfg)


@pytest.mark.slow  # the full example count (`make test-all`)
@FULL
@hypothesis.given(flow_configs())
def test_random_flows_are_invertible_with_exact_log_det_full(cfg):
  _check_invertible_with_exact_log_det(cfg)


@QUICK
@hypothesis.given(flow_configs(), st.sampled_from([0.0, 1.0]))
def test_log_prob_is_finite_at_the_pixel_domain_edges(cfg, noise):
  _check_finite_at_the_pixel_domain_edges(cfg, noise)


@pytest.mark.slow  # the full example count (`make test-all`)
@FULL
@hypothesis.given(flow_configs(), st.sampled_from([0.0, 1.0]))
def test_log_prob_is_finite_at_the_pixel_domain_edges_full(cfg, noise):
  _check_finite_at_the_pixel_domain_edges(cfg, noise)
