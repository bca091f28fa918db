"""Polyak averaging (`--ema_decay`, docs/design.md §23): the averages follow the applied updates
only, survive a checkpoint bit-exactly, and are the weights a run evaluates, fingerprints and
exports; with the flag off nothing changes."""
import dataclasses
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from vapnev_tf import config_run
from vapnev_tf import evaluation
from vapnev_tf import export as export_lib
from vapnev_tf import loading
from vapnev_tf import sample as sample_lib
from vapnev_tf import train as train_cli
from vapnev_tf import weight_averages
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.config import TrainConfig
from vapnev_tf.data import DataConfig
from vapnev_tf.model import VAPNEV
from vapnev_tf.training import TrainState
from vapnev_tf.training import make_train_step
from vapnev_tf.training import restore

import fault_hooks
import run_fixtures

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

DECAY = 0.5  # far from 1, so each step visibly moves the average


def _state(ema_decay, strategy):
  train_cfg = TrainConfig(train_steps=4, learning_rate=1e-2, ema_decay=ema_decay,
                          export_at_end=False)
  return TrainState.create(run_fixtures.tiny_config(), train_cfg, strategy), train_cfg


def _batches(strategy):
  """A distributed stream repeating one batch of 8 dequantised images."""
  images = run_fixtures.random_images(8, seed=4).astype(np.float32) + 0.5
  return iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(images).repeat()))


def _values(variables):
  return [v.numpy().copy() for v in variables]


def test_the_average_is_the_hand_computed_ema_of_the_applied_updates():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state, train_cfg = _state(DECAY, strategy)
  train_step = make_train_step(strategy, train_cfg, global_batch_size=8)
  iterator = _batches(strategy)
  expected = None
  for t in range(12):  # past the warm-up: d_t reaches DECAY at t = 8
    assert bool(train_step(state, iterator)["ok"])
    weights = _values(state.model.trainable_variables)
    d = np.float32(min(DECAY, (1 + t) / (10 + t)))
    expected = weights if expected is None else [
        d * a + (np.float32(1) - d) * w for a, w in zip(expected, weights)]
  averaged = _values(weight_averages.averages(state.optimizer))
  assert len(averaged) == len(expected) == len(state.model.trainable_variables)
  for a, e in zip(averaged, expected):
    np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
  assert any(not np.array_equal(a, w) for a, w in zip(averaged, weights)), "an average, not a copy"


@pytest.mark.parametrize("decay", [0.5, 0.999, 0.9999])
def test_the_decay_warms_up_from_zero_to_the_flags(decay):
  """d_t = 0 at the first update, min(d, (1 + t) / (10 + t)) after: an average after t updates
  keeps a vanishing share of the initial weights, not d^t of them."""
  steps = np.array([0, 1, 2, 8, 9, 100, 1_000, 10_000, 100_000, 10**6])
  got = weight_averages.warmed_up_decay(decay, tf.constant(steps, tf.int64)).numpy()
  want = np.where(steps == 0, 0.0, np.minimum(decay, (1.0 + steps) / (10.0 + steps)))
  np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-7)
  assert got[-1] == np.float32(decay)
  share = np.prod([weight_averages.warmed_up_decay(decay, t).numpy() for t in range(1, 1001)])
  assert share <= min(1e-15, decay ** 1000)  # Keras' constant decay would keep decay ** 1000


def test_a_skipped_step_leaves_the_averages_as_they_were():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state, train_cfg = _state(DECAY, strategy)
  iterator = _batches(strategy)
  with fault_hooks.nan_loss(first=2):  # the loss of the second step is NaN
    train_step = make_train_step(strategy, train_cfg, global_batch_size=8)
    assert bool(train_step(state, iterator)["ok"])
    before = _values(weight_averages.averages(state.optimizer))
    raw = _values(state.model.trainable_variables)
    assert not bool(train_step(state, iterator)["ok"])
  assert int(state.skipped_steps.numpy()) == 1
  for a, b in zip(_values(weight_averages.averages(state.optimizer)), before):
    np.testing.assert_array_equal(a, b)
  for w, r in zip(_values(state.model.trainable_variables), raw):
    np.testing.assert_array_equal(w, r)
  assert bool(train_step(state, iterator)["ok"])  # step 3: traced with the hook, finite
  assert any(not np.array_equal(a, b) for a, b in
             zip(_values(weight_averages.averages(state.optimizer)), before))


def test_the_swap_lends_the_averages_and_gives_the_raw_weights_back():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state, train_cfg = _state(DECAY, strategy)
  train_step = make_train_step(strategy, train_cfg, global_batch_size=8)
  iterator = _batches(strategy)
  for _ in range(2):
    train_step(state, iterator)
  raw = _values(state.model.trainable_variables)
  averaged = _values(weight_averages.averages(state.optimizer))
  with pytest.raises(RuntimeError, match="inside"):
    with weight_averages.evaluated_weights(state.model, state.optimizer) as weights:
      assert weights == weight_averages.EMA
      for v, a in zip(state.model.trainable_variables, averaged):
        np.testing.assert_array_equal(v.numpy(), a)
      raise RuntimeError("inside")
  for v, r in zip(state.model.trainable_variables, raw):
    np.testing.assert_array_equal(v.numpy(), r)


def test_off_keeps_no_averages_and_evaluates_the_raw_weights():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state, _ = _state(0.0, strategy)
  assert weight_averages.averages(state.optimizer) is None
  assert not state.optimizer.use_ema
  raw = _values(state.model.trainable_variables)
  with weight_averages.evaluated_weights(state.model, state.optimizer) as weights:
    assert weights == weight_averages.RAW
  for v, r in zip(state.model.trainable_variables, raw):
    np.testing.assert_array_equal(v.numpy(), r)


def test_ema_decay_must_be_below_one():
  with pytest.raises(ValueError, match="ema_decay"):
    TrainConfig(ema_decay=1.0)
  with pytest.raises(ValueError, match="ema_decay"):
    weight_averages.optimizer_options(-0.1)


def test_a_resumed_run_refuses_another_ema_decay():
  cfgs = (run_fixtures.tiny_config(), DataConfig(dataset="fashion_mnist"))
  stored = config_run.run_config_dict(*cfgs, TrainConfig())
  for decay in (0.999, 0.0):
    requested = config_run.run_config_dict(*cfgs, TrainConfig(ema_decay=decay))
    before = stored if decay else config_run.run_config_dict(*cfgs, TrainConfig(ema_decay=0.9))
    assert [d for d in config_run.config_differences(before, requested)
            if d.startswith("train.ema_decay")], decay
  del stored["train"]["ema_decay"]  # a run from before the flag had none
  assert not config_run.config_differences(
      stored, config_run.run_config_dict(*cfgs, TrainConfig()))


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
  """configs/smoke.flags trained in process with --ema_decay (eval at steps 3 and 6), compiled:
  the product's path with averages."""
  workdir = tmp_path_factory.mktemp("ema") / "run"
  with run_fixtures.compiled():
    return workdir, run_fixtures.run_smoke(workdir, f"--ema_decay={DECAY}")


@pytest.mark.parametrize("lr_decay", ["none", "cosine"])  # a constant rate is a checkpointed
def test_a_checkpoint_restores_the_averages_bit_exactly(tmp_path, lr_decay):  # variable
  train_cfg = TrainConfig(train_steps=4, learning_rate=1e-2, ema_decay=DECAY, lr_decay=lr_decay,
                          export_at_end=False)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  workdir = str(tmp_path / "run")
  build = lambda: restore.build_or_restore(run_fixtures.tiny_config(), train_cfg, strategy,
                                           workdir, True, before_save=lambda: None)
  with build() as run:
    train_step = make_train_step(strategy, train_cfg, global_batch_size=8)
    iterator = _batches(strategy)
    for _ in range(3):
      train_step(run.state, iterator)
    saved_averages = _values(weight_averages.averages(run.state.optimizer))
    saved_raw = _values(run.state.model.trainable_variables)
    prefix = run.checkpoints.save(3)
  assert any(not np.array_equal(a, r) for a, r in zip(saved_averages, saved_raw))
  with build() as run:
    assert run.restored_from and run.start_step == 3
    for a, s in zip(_values(weight_averages.averages(run.state.optimizer)), saved_averages):
      assert a.tobytes() == s.tobytes()
    for r, s in zip(_values(run.state.model.trainable_variables), saved_raw):
      assert r.tobytes() == s.tobytes()
  # What load_run does for such a run: a fresh model holding the averages.
  model = VAPNEV(run_fixtures.tiny_config())
  weight_averages.restore_averaged(model, prefix, DECAY)
  for v, s in zip(_values(model.trainable_variables), saved_averages):
    assert v.tobytes() == s.tobytes()


def test_load_run_gives_the_averages_as_the_weights(ema_run, tmp_path):
  workdir, result = ema_run
  model_cfg, _, train_cfg = train_cli.configs_from_flags(
      run_fixtures.parse_train_flags(workdir, f"--ema_decay={DECAY}"))
  run_dir = run_fixtures.copy_run(workdir, tmp_path / "copy")
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with restore.build_or_restore(model_cfg, train_cfg, strategy, str(run_dir), True,
                                before_save=lambda: None) as run:
    assert run.start_step == result["step"]
    averaged = _values(weight_averages.averages(run.state.optimizer))
  model, info = loading.load_run(str(run_dir))
  assert info["weights"] == weight_averages.EMA
  for v, a in zip(model.trainable_variables, averaged):
    assert v.numpy().tobytes() == a.tobytes()
  assert result["weights_sha256"] == workdir_lib.weights_fingerprint(model)


def test_the_run_evaluates_and_exports_the_averages(ema_run, tmp_path):
  workdir, result = ema_run
  eval_json = json.loads((workdir / workdir_lib.EVAL_FILE).read_text())
  assert eval_json["weights"] == result["eval"]["weights"] == weight_averages.EMA
  assert [r["weights"] for r in eval_json["history"]] == [weight_averages.EMA]
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(
      run_fixtures.parse_train_flags(workdir, f"--ema_decay={DECAY}"))
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  run_dir = run_fixtures.copy_run(workdir, tmp_path / "copy")
  with restore.build_or_restore(model_cfg, train_cfg, strategy, str(run_dir), True,
                                before_save=lambda: None) as run:
    model = run.state.model
    kwargs = dict(num_samples=train_cfg.eval_num_samples, seed=train_cfg.eval_seed,
                  chunk_size=train_cfg.eval_chunk_size)
    raw_bound = evaluation.evaluate(model, data_cfg, **kwargs)["elbo_bpd"]
    for v, a in zip(model.trainable_variables, weight_averages.averages(run.state.optimizer)):
      v.assign(a)  # the averages assigned by hand
    by_hand = evaluation.evaluate(model, data_cfg, **kwargs)
    assert eval_json["weights_sha256"] == workdir_lib.weights_fingerprint(model)
  assert result["eval"]["elbo_bpd"] == pytest.approx(by_hand["elbo_bpd"], rel=1e-6)
  assert result["eval"]["iw_bpd"] == pytest.approx(by_hand["iw_bpd"], rel=1e-6)
  assert raw_bound != pytest.approx(by_hand["elbo_bpd"], rel=1e-6), "the raw weights differ"

  again = evaluation.evaluate_workdir(str(run_dir), write=False)  # vapnev_tf.evaluate's path
  assert again["weights"] == weight_averages.EMA
  assert again["weights_sha256"] == eval_json["weights_sha256"]
  assert again["elbo_bpd"] == pytest.approx(by_hand["elbo_bpd"], rel=1e-6)

  out = export_lib.export_from_workdir(str(run_dir), str(tmp_path / "export"))
  meta = export_lib.load_metadata(out)
  assert meta["weights"] == weight_averages.EMA
  assert meta["weights_sha256"] == eval_json["weights_sha256"]
  assert meta["test_bits_per_dim"] == pytest.approx(eval_json["test_bits_per_dim"])


def test_a_run_without_averages_evaluates_and_exports_its_raw_weights(smoke_run):
  workdir, result = smoke_run
  eval_json = json.loads((workdir / workdir_lib.EVAL_FILE).read_text())
  assert eval_json["weights"] == result["eval"]["weights"] == weight_averages.RAW
  model, info = loading.load_run(str(workdir))
  assert info["weights"] == weight_averages.RAW
  assert eval_json["weights_sha256"] == workdir_lib.weights_fingerprint(model)
  assert dataclasses.asdict(TrainConfig())["ema_decay"] == 0.0


def test_the_raw_weights_of_a_run_with_averages_are_evaluated_beside_them(ema_run, tmp_path):
  """`load_run(weights="raw")` / `vapnev_tf.evaluate --weights=raw`: the trained weights of a run
  that keeps averages, evaluated into WORKDIR/evaluations/ (named "raw"), eval.json untouched."""
  workdir, result = ema_run
  run_dir = run_fixtures.copy_run(workdir, tmp_path / "copy")
  eval_file = run_dir / workdir_lib.EVAL_FILE
  before = eval_file.read_bytes()
  raw_model, info = loading.load_run(str(run_dir), weights=weight_averages.RAW)
  assert info["weights"] == weight_averages.RAW
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(
      run_fixtures.parse_train_flags(workdir, f"--ema_decay={DECAY}"))
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with restore.build_or_restore(model_cfg, train_cfg, strategy, str(run_dir), True,
                                before_save=lambda: None) as run:
    for v, r in zip(raw_model.trainable_variables, run.state.model.trainable_variables):
      assert v.numpy().tobytes() == r.numpy().tobytes()
  assert workdir_lib.weights_fingerprint(raw_model) != result["weights_sha256"]

  raw = evaluation.evaluate_workdir(str(run_dir), weights=weight_averages.RAW)
  assert raw["weights"] == weight_averages.RAW and raw["full"]
  assert raw["weights_sha256"] == workdir_lib.weights_fingerprint(raw_model)
  assert raw["written_to"].endswith("-raw.json")
  assert raw["written_to"].startswith(str(run_dir / workdir_lib.EVALUATIONS_DIR))
  record = json.loads(pathlib.Path(raw["written_to"]).read_text())
  assert record["weights"] == weight_averages.RAW
  assert record["elbo_bpd"] == pytest.approx(raw["elbo_bpd"])
  assert eval_file.read_bytes() == before, "eval.json holds the run's own (averaged) weights only"
  averaged = evaluation.evaluate_workdir(str(run_dir), weights=weight_averages.EMA, write=False)
  assert averaged["weights_sha256"] == result["weights_sha256"]
  assert averaged["elbo_bpd"] != pytest.approx(raw["elbo_bpd"], rel=1e-6)


def test_weights_that_a_run_does_not_keep_are_refused(smoke_run):
  workdir, _ = smoke_run
  with pytest.raises(ValueError, match="keeps no Polyak averages.*ema_decay=0"):
    loading.load_run(str(workdir), weights=weight_averages.EMA)
  with pytest.raises(ValueError, match="weights must be None.*'raw' or 'ema', got 'best'"):
    loading.load_run(str(workdir), weights="best")
  model, info = loading.load_run(str(workdir), weights=weight_averages.RAW)  # its own weights
  assert info["weights"] == weight_averages.RAW
  eval_json = json.loads((workdir / workdir_lib.EVAL_FILE).read_text())
  assert eval_json["weights_sha256"] == workdir_lib.weights_fingerprint(model)


def test_drawn_figures_name_their_weights(ema_run, tmp_path):
  workdir, _ = ema_run
  drawn = sample_lib.write_figure(str(tmp_path / "s.png"), "samples", workdir=str(workdir),
                                  num=2, seed=1)
  assert drawn.weights == weight_averages.EMA
  assert drawn.image.dtype == np.uint8 and drawn.image.ndim == 3
