"""Per-part gradient norms: `VAPNEV.parameter_groups()` partitions the trainable variables, and
the training step's "grad_norm/GROUP" metrics are the norms of those parts' gradients (what
TensorBoard shows under grad_norm/ and the log line names as the largest part)."""
import dataclasses
import types

import numpy as np
import pytest
import tensorflow as tf

import model_fixtures as mf
from vapnev_tf import console
from vapnev_tf.model import VAPNEV
from vapnev_tf.training import TrainConfig
from vapnev_tf.training import TrainState
from vapnev_tf.training import make_train_step
from vapnev_tf.training import reporting

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

TINY = mf.tiny_config((8, 8, 1), latent_dim=4, encoder_blocks=2, encoder_layers_per_block=1,
                      flow_scales=1, flow_res_blocks=0)
GLOW = "squeeze (actnorm invconv channel)*2"
RECIPES = {
    "paper": ({}, {"encoder", "decoder", "flow/checkerboard", "flow/channel"}),
    "all_options": (dict(conditioning="shared", fused_networks=True, posterior="iaf",
                         dequantization="variational", flow_layout=GLOW),
                    {"encoder", "iaf", "decoder", "dequantizer", "flow/z_trunk", "flow/actnorm",
                     "flow/invconv", "flow/channel"}),
    "realnvp": (dict(likelihood="realnvp"), {"flow/checkerboard", "flow/channel"}),
    "pixel_logistic": (dict(likelihood="pixel_logistic"), {"encoder", "decoder"}),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_groups_partition_the_trainable_variables(recipe):
  overrides, expected = RECIPES[recipe]
  model = VAPNEV(dataclasses.replace(TINY, **overrides))
  groups = model.parameter_groups()
  assert set(groups) == expected
  grouped = [id(v) for variables in groups.values() for v in variables]
  assert sorted(grouped) == sorted(id(v) for v in model.trainable_variables)
  assert len(grouped) == len(set(grouped)), "a variable is in two groups"


def test_the_step_reports_each_parts_gradient_norm():
  overrides, expected = RECIPES["all_options"]
  model_cfg = dataclasses.replace(TINY, **overrides)
  train_cfg = TrainConfig(train_steps=2, learning_rate=1e-3, export_at_end=False)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state = TrainState.create(model_cfg, train_cfg, strategy)
  images = np.random.default_rng(0).integers(0, 256, size=(8, 8, 8, 1)).astype(np.float32)
  batches = tf.data.Dataset.from_tensors(images).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(batches))
  train_step = make_train_step(strategy, train_cfg, global_batch_size=8)

  model, variables = state.model, state.model.trainable_variables
  train_step(state, iterator)  # at the identity start the z-trunk gets no gradient (Eq. 16: zeros)
  out = train_step(state, iterator)
  norms = {k[len(reporting.GRAD_NORM_PREFIX):]: float(v) for k, v in out.items()
           if k.startswith(reporting.GRAD_NORM_PREFIX)}
  assert set(norms) == expected
  assert all(n > 0 and np.isfinite(n) for n in norms.values()), norms
  total = float(out["grad_norm"])
  assert np.sqrt(sum(n * n for n in norms.values())) == pytest.approx(total, rel=1e-5)

  # Every part gets a gradient (so its norm means something): computed here, independently.
  with tf.GradientTape() as tape:
    terms = model.elbo_terms(images, seed=(1, 2))
    loss = -tf.reduce_mean(terms["log_px_given_z"])
  grads = dict(zip((id(v) for v in variables), tape.gradient(loss, variables)))
  for name, group in model.parameter_groups().items():
    independent = float(tf.linalg.global_norm([grads[id(v)] for v in group]))
    assert independent > 0, name


def test_the_window_keeps_means_and_maxima_and_the_log_line_names_the_largest_part(monkeypatch):
  window = reporting.Window()
  base = {"ok": True, "loss": 1.0, "log_px": -1.0, "kl": 0.5, "grad_norm": 5.0}
  window.add({**base, "grad_norm/encoder": 1.0, "grad_norm/flow/invconv": 4.0})
  window.add({**base, "grad_norm/encoder": 3.0, "grad_norm/flow/invconv": 40.0})
  window.add({**base, "ok": False, "grad_norm/encoder": np.nan, "grad_norm/flow/invconv": 1e9})
  means = window.means()
  assert means["grad_norm/encoder"] == pytest.approx(2.0)
  assert means["grad_norm/flow/invconv"] == pytest.approx(22.0)
  assert window.maxima == {"grad_norm/encoder": 3.0, "grad_norm/flow/invconv": 40.0}
  from vapnev_tf.data import DataConfig  # pylint: disable=g-import-not-at-top
  reporter = reporting.Reporter(TINY, DataConfig(batch_size=8), TrainConfig(train_steps=10))
  reporter.window = window
  # The line as logged, independent of the process's logging state: outside absl.app, any
  # tf.saved_model.save (test_export.py) leaves absl's logger at WARNING, which hides INFO lines.
  lines = []
  monkeypatch.setattr(console, "live", console.LiveLine(enabled=False))
  monkeypatch.setattr(reporting, "logging", types.SimpleNamespace(
      info=lambda fmt, *args: lines.append(fmt % args), debug=None, warning=None))
  reporter.log_window(3, {**base, "kl_weight": 1.0, "learning_rate": 1e-3}, skipped_total=1)
  assert len(lines) == 1 and "grad norm 5 (largest: flow/invconv 22) | skipped 1" in lines[0], lines
