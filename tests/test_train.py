"""The training loop in process: run directory, TensorBoard, NaN handling, config and checkpoint
safety, schedules and flags. Subprocess-level behaviour (kill/resume, 2 devices, 2 workers,
bitwise resume) is in test_train_processes.py."""
import dataclasses
import hashlib
import inspect
import json
import math
import os
import pathlib
import shutil
import types

from absl import flags
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

from vapnev_tf import evaluation
from vapnev_tf import export as export_lib
from vapnev_tf import figures
from vapnev_tf import loading
from vapnev_tf import pipeline
from vapnev_tf import seeds
from vapnev_tf import train as train_cli
from vapnev_tf import training
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.model import VAPNEV
from vapnev_tf.training import checkpointing
from vapnev_tf.training import distribute
from vapnev_tf.training import finish
from vapnev_tf.training import restore
from vapnev_tf import config_run
from vapnev_tf.training import schedules

import fault_hooks
import run_fixtures

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN_TAGS = {"loss", "elbo_bpd", "recon_bpd", "kl_nats", "kl_bpd", "kl_weight", "learning_rate",
              "grad_norm", "images_per_sec", "steps_per_sec", "skipped_steps",
              *(f"grad_norm{kind}/{part}" for kind in ("", "_max")
                for part in ("encoder", "decoder", "flow/checkerboard", "flow/channel"))}
EVAL_TAGS = {"elbo_bpd", "iw_bpd", "recon_bpd", "kl_nats", "samples",
             "originals_reconstructions"}


# Training flags as the CLI parses them, configs/smoke.flags trained in process, and the session's
# shared smoke run (the `smoke_run` fixture of tests/conftest.py: read-only, copy it to change it).
parse = run_fixtures.parse_train_flags
run_smoke = run_fixtures.run_smoke


# --- the run directory --------------------------------------------------------------------------


def test_smoke_run_writes_config_flags_checkpoints_and_eval(smoke_run):
  workdir, result = smoke_run
  assert result["step"] == 6 and result["interrupted"] is None and result["skipped_steps"] == 0
  assert result["optimizer_iterations"] == 6 and result["restored_from"] is None
  cfg = workdir_lib.read_config(str(workdir))
  assert {"model", "data", "train", "version"} <= set(cfg)
  assert cfg["model"]["latent_dim"] == 8 and cfg["data"]["train_take"] == 256
  assert cfg["train"]["train_steps"] == 6
  assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-6")
  assert tf.train.latest_checkpoint(str(workdir / "best")) is not None
  evaluation = json.loads((workdir / "eval.json").read_text())
  assert evaluation["step"] == 6 and evaluation["k"] == 2 and evaluation["num_images"] == 48
  for key in ("elbo_bpd", "iw_bpd", "seconds"):
    assert math.isfinite(evaluation[key]), key
  assert evaluation["elbo_bpd"] == pytest.approx(result["eval"]["elbo_bpd"])
  assert [h["step"] for h in evaluation["history"]] == [3]  # the mid-run ELBO evaluation
  assert evaluation["history"][0]["iw_bpd"] is None
  model, step = loading.restore_model(str(workdir))
  assert step == 6 and isinstance(model, VAPNEV)


def test_tensorboard_event_files_hold_the_expected_tags(smoke_run):
  workdir, _ = smoke_run
  tags = {}
  for split in ("train", "eval"):
    acc = event_accumulator.EventAccumulator(
        str(workdir / "tensorboard" / split),
        size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0})
    acc.Reload()
    tags[split] = set(acc.Tags()["tensors"])
    for tag in tags[split]:
      for event in acc.Tensors(tag):
        value = tf.make_ndarray(event.tensor_proto)
        if value.dtype != object:  # images are stored as encoded strings
          assert np.all(np.isfinite(value)), (split, tag)
    if split == "train":
      assert [e.step for e in acc.Tensors("loss")] == [2, 4, 6]
      assert tf.make_ndarray(acc.Tensors("kl_weight")[0].tensor_proto) == pytest.approx(0.25)
  assert TRAIN_TAGS <= tags["train"], TRAIN_TAGS - tags["train"]
  assert EVAL_TAGS <= tags["eval"], EVAL_TAGS - tags["eval"]


def test_rerunning_a_finished_run_reuses_its_final_evaluation(smoke_run, tmp_path):
  workdir, first = _copy_of(smoke_run, tmp_path), smoke_run[1]
  again = run_smoke(workdir)
  assert again["restored_from"].endswith("ckpt-6")
  assert again["start_step"] == again["step"] == 6 and again["last_loss"] is None
  assert again["eval"]["iw_bpd"] == first["eval"]["iw_bpd"]
  assert again["weights_sha256"] == first["weights_sha256"]


def test_flags_text_records_the_resolved_flags(tmp_path):
  fv = parse(tmp_path / "run")
  text = fv.flags_into_string()
  assert "--latent_dim=8" in text and f"--workdir={tmp_path / 'run'}" in text


def test_flags_text_never_records_force_config(tmp_path):
  text = train_cli.run_flags_text(parse(tmp_path / "run", "--force_config", "--latent_dim=9"))
  assert "--latent_dim=9" in text and "force_config" not in text


# --- non-finite steps ---------------------------------------------------------------------------


def test_injected_nan_is_skipped_and_counted(tmp_path):
  with fault_hooks.nan_loss(first=2):
    result = run_smoke(tmp_path / "run", "--train_steps=4", "--eval_every=0",
                       "--eval_num_samples=1", "--log_every=1")
  assert result["step"] == 4 and result["skipped_steps"] == 1
  assert result["optimizer_iterations"] == 3  # Adam saw 3 updates; its moments skipped step 2
  assert math.isfinite(result["eval"]["elbo_bpd"])
  ckpt = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
  skipped = tf.Variable(-1, dtype=tf.int64)
  tf.train.Checkpoint(skipped_steps=skipped).restore(ckpt).expect_partial()
  assert int(skipped.numpy()) == 1


def test_consecutive_bad_steps_abort_and_keep_the_last_good_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(training.NonFiniteTrainingError, match=r"aborting at step 5: 2 consecutive"):
    with fault_hooks.nan_loss(first=4, count=100):
      run_smoke(workdir, "--train_steps=20", "--max_consecutive_bad_steps=2", "--eval_every=0")
  # Checkpoints every 2 steps: step 2 was the last good one; step 4 was bad and is not saved.
  assert workdir_lib.checkpoint_candidates(str(workdir / "checkpoints")) == [
      str(workdir / "checkpoints" / "ckpt-2")]
  _, step = loading.restore_model(str(workdir))
  assert step == 2


def _run_unvalidated(workdir, field, value, *extra):
  """A smoke run whose TrainConfig holds `field=value` although validation refuses it (as a value
  that overflows in float32 would reach the step through any other path)."""
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(parse(workdir, *extra))
  object.__setattr__(train_cfg, field, value)
  return pipeline.train(model_cfg, data_cfg, train_cfg, str(workdir))


def _saved_weights_finite(workdir) -> list:
  """For every checkpoint in WORKDIR/checkpoints: whether all its model weights are finite."""
  out = []
  for prefix in workdir_lib.checkpoint_candidates(str(workdir / "checkpoints")):
    reader = tf.train.load_checkpoint(prefix)
    out.append(all(np.all(np.isfinite(reader.get_tensor(name)))
                   for name, _ in tf.train.list_variables(prefix)
                   if name.startswith("model/") and "OPTIMIZER_SLOT" not in name))
  return out


def test_clipping_that_turns_gradients_non_finite_skips_the_step(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(training.NonFiniteTrainingError, match="no step of this run applied"):
    _run_unvalidated(workdir, "clip_grad_norm", float("inf"), "--train_steps=3",
                     "--checkpoint_every=1", "--eval_every=0")
  assert _saved_weights_finite(workdir) == []


def test_an_update_that_overflows_the_weights_stops_the_run_before_saving(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(training.NonFiniteTrainingError,
                     match="aborting at step 1: its update left non-finite weights"):
    _run_unvalidated(workdir, "learning_rate", 1e39, "--train_steps=3", "--checkpoint_every=1",
                     "--eval_every=0")
  assert _saved_weights_finite(workdir) == []
  assert not (workdir / "config.json").exists()


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
  model_cfg, _, train_cfg = train_cli.configs_from_flags(parse(tmp_path / "run"))
  strategy = distribute.make_strategy("one_device")
  with restore.build_or_restore(model_cfg, train_cfg, strategy, str(tmp_path / "run"), True,
                                before_save=lambda: None) as run:
    first = run.state.model.trainable_variables[0]
    first.assign(tf.fill(first.shape, float("nan")))
    with pytest.raises(training.NonFiniteTrainingError,
                       match="refusing to save the checkpoint of step 1: 1 weight"):
      run.checkpoints.save(1)
    with pytest.raises(training.NonFiniteTrainingError, match="refusing to save"):
      run.checkpoints.save_if_best(1, 3.0)
  assert not (tmp_path / "run" / "checkpoints").exists()
  assert not (tmp_path / "run" / "best").exists()


# --- configuration and run-directory safety ------------------------------------------------------


def test_contradicting_config_is_refused_naming_the_fields(smoke_run, tmp_path):
  workdir = _copy_of(smoke_run, tmp_path)
  before = (workdir / "config.json").read_text()
  with pytest.raises(ValueError) as err:
    run_smoke(workdir, "--latent_dim=9", "--batch_size=8", "--train_steps=8")
  message = str(err.value)
  assert "model.latent_dim: stored 8, requested 9" in message
  assert "data.batch_size: stored 16, requested 8" in message and "--force_config" in message
  assert (workdir / "config.json").read_text() == before


def test_config_differences_ignore_locations_and_eval_batch(smoke_run):
  workdir, _ = smoke_run
  requested = config_run.run_config_dict(*train_cli.configs_from_flags(
      parse(workdir, "--eval_batch_size=8", "--data_dir=/elsewhere", "--eval_take=10")))
  stored = workdir_lib.read_config(str(workdir))
  assert config_run.config_differences(stored, requested) == [
      "data.eval_take: stored 48, requested 10"]


def test_unwritable_workdir_fails_before_training(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="not writable"):
    run_smoke(blocker / "run")
  with pytest.raises(ValueError, match="is a file"):
    run_smoke(blocker)


def test_full_disk_fails_before_training(tmp_path, monkeypatch):
  real_usage = shutil.disk_usage
  monkeypatch.setattr(shutil, "disk_usage",
                      lambda path: real_usage(path)._replace(free=10 * 2 ** 20))
  with pytest.raises(ValueError, match="10 MiB free, fewer than the 256 MiB"):
    run_smoke(tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()


def _checkpoints_fail(monkeypatch, when=lambda manager, number: True, limit=16384):
  """Saves for which `when(manager, checkpoint_number)` holds run under a file size limit of
  `limit` bytes (as with `ulimit -f`): TensorFlow's write fails half-way, like on a full disk."""
  import resource  # pylint: disable=g-import-not-at-top
  real_save = tf.train.CheckpointManager.save

  def save(self, checkpoint_number=None, **kwargs):
    if not when(self, checkpoint_number):
      return real_save(self, checkpoint_number=checkpoint_number, **kwargs)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
      return real_save(self, checkpoint_number=checkpoint_number, **kwargs)
    finally:
      resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

  monkeypatch.setattr(tf.train.CheckpointManager, "save", save)


def test_a_failing_first_checkpoint_leaves_the_run_directory_as_it_was(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  _checkpoints_fail(monkeypatch)
  with pytest.raises(training.CheckpointError,
                     match=r"could not write the checkpoint of step 2 to .*checkpoints: "
                           r"OutOfRangeError: .*File too large.*Removed the partial files") as e:
    run_smoke(workdir)
  assert "\n" not in str(e.value)
  assert sorted(p.name for p in workdir.iterdir()) == [".lock"]  # no config.json, no ckpt-2_temp
  training.rundir.refuse_unrestorable(str(workdir))  # the corrected command may start here


def test_a_full_disk_mid_run_removes_only_the_partial_checkpoint(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  _checkpoints_fail(monkeypatch, lambda manager, number: number == 4
                    and manager.directory.endswith("checkpoints"))
  with pytest.raises(training.CheckpointError, match=r"step 4 .*newest checkpoint is still "
                                                     r".*ckpt-2"):
    run_smoke(workdir)
  names = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  assert names == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
  assert (workdir / "config.json").exists() and (workdir / "best").is_dir()
  assert loading.load_run(str(workdir))[1]["step"] == 2


def test_sigterm_during_the_final_evaluation_stops_with_a_message(tmp_path, monkeypatch):
  import signal  # pylint: disable=g-import-not-at-top
  received = []
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
  real_call = evaluation.Evaluator.__call__

  def call(self, *args, **kwargs):
    if self.num_samples > 1:  # the final evaluation (k = eval_num_samples = 2)
      os.kill(os.getpid(), signal.SIGTERM)
    return real_call(self, *args, **kwargs)

  monkeypatch.setattr(evaluation.Evaluator, "__call__", call)
  try:
    from vapnev_tf import interrupts  # pylint: disable=g-import-not-at-top
    with pytest.raises(interrupts.Interrupted,
                       match="stopped by SIGTERM during the final evaluation and export of step "
                             "6 .*checkpoint is saved") as e:
      run_smoke(tmp_path / "run", "--eval_every=0")
    assert e.value.signum == signal.SIGTERM and not received
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the caller's handler is back
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert loading.load_run(str(tmp_path / "run"))[1]["step"] == 6


def test_a_changed_folder_source_is_refused_on_resume(tmp_path):
  """Images added to a folder: source without a test folder would redraw its held-out split."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(8):
    Image.fromarray(np.full((8, 8), i * 20, np.uint8), mode="L").save(folder / f"{i}.png")
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(parse(
      tmp_path / "run", f"--dataset=folder:{folder}", "--batch_size=2", "--eval_batch_size=2"))
  workdir = tmp_path / "run"
  workdir.mkdir()
  stored = training.rundir.run_config(model_cfg, data_cfg, train_cfg, tf.distribute.get_strategy())
  assert stored["data_source"]["train_files"] == 8 and stored["data_source"]["test_files"] is None
  workdir_lib.write_json_atomic(str(workdir / "config.json"), stored)
  checkpointing.check_resume_config(str(workdir), model_cfg, data_cfg, train_cfg)  # unchanged
  Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(folder / "8.png")
  with pytest.raises(checkpointing.ConfigError,
                     match=r"files changed since the run .*8 train \(test held out from them\) "
                           r"files then, 9 train .* now.*--force_config"):
    checkpointing.check_resume_config(str(workdir), model_cfg, data_cfg, train_cfg)
  checkpointing.check_resume_config(str(workdir), model_cfg, data_cfg, train_cfg, force=True)


def _checkpoint_copy(smoke_run, tmp_path):
  workdir, _ = smoke_run
  directory = tmp_path / "checkpoints"
  shutil.copytree(workdir / "checkpoints", directory)
  return directory


def _fresh_checkpoint(smoke_run):
  workdir, _ = smoke_run
  step = tf.Variable(-1, dtype=tf.int64)
  model = VAPNEV(loading.model_config(str(workdir)))
  return tf.train.Checkpoint(model=model, step=step), step


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(smoke_run, tmp_path):
  directory = _checkpoint_copy(smoke_run, tmp_path)
  newest = directory / "ckpt-6.data-00000-of-00001"
  newest.write_bytes(newest.read_bytes()[:100])  # truncated
  checkpoint, step = _fresh_checkpoint(smoke_run)
  assert checkpointing.restore_with_fallback(checkpoint, str(directory)).endswith("ckpt-4")
  assert int(step.numpy()) == 4


def test_damaged_state_file_still_finds_checkpoints(smoke_run, tmp_path):
  directory = _checkpoint_copy(smoke_run, tmp_path)
  (directory / "checkpoint").write_text("garbage {{{")
  checkpoint, step = _fresh_checkpoint(smoke_run)
  assert checkpointing.restore_with_fallback(checkpoint, str(directory)).endswith("ckpt-6")
  assert int(step.numpy()) == 6


def test_no_readable_checkpoint_raises_instead_of_starting_over(smoke_run, tmp_path):
  directory = _checkpoint_copy(smoke_run, tmp_path)
  for data_file in directory.glob("*.data-*"):
    data_file.write_bytes(b"")
  checkpoint, _ = _fresh_checkpoint(smoke_run)
  with pytest.raises(training.CheckpointError, match="none can be read"):
    checkpointing.restore_with_fallback(checkpoint, str(directory))


def test_empty_checkpoint_directory_means_a_fresh_start(tmp_path):
  checkpoint = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64))
  assert checkpointing.restore_with_fallback(checkpoint, str(tmp_path)) is None


def test_batch_not_divisible_by_replicas_is_refused():
  _, data_cfg, _ = train_cli.configs_from_flags(parse("unused", "--batch_size=15"))
  two_replicas = types.SimpleNamespace(num_replicas_in_sync=2)
  with pytest.raises(ValueError, match="batch_size=15 is not divisible by the 2 replicas"):
    distribute.check_batch_sizes(data_cfg, two_replicas)


# --- flags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (["--dataset=imagenet"], "--dataset must be one of"),
    (["--batch_size=-4"], "batch_size"),
    (["--strategy=tpu"], "strategy"),
    (["--kl_schedule=cubic"], "kl_schedule"),
    (["--kl_free_nats=-1"], "--kl_free_nats must be >= 0"),
    (["--kl_free_nats=nan"], "kl_free_nats"),
    (["--learning_rate=0"], "--learning_rate must be > 0"),
    (["--eval_num_samples=0"], "eval_num_samples"),
])
def test_bad_flags_are_refused_with_the_flag_named(extra, message):
  with pytest.raises(flags.Error, match=message):
    parse("unused", *extra)


def test_free_bits_without_a_latent_are_refused():
  with pytest.raises(ValueError, match="--kl_free_nats=2.0 needs a latent: --likelihood=realnvp"):
    train_cli.configs_from_flags(parse("unused", "--likelihood=realnvp", "--kl_free_nats=2"))
  _, _, train_cfg = train_cli.configs_from_flags(parse("unused", "--kl_free_nats=2"))
  assert train_cfg.kl_free_nats == 2.0


def test_missing_flagfile_is_reported():
  with pytest.raises(flags.Error, match="no_such.flags"):
    parse("unused", flagfile="configs/no_such.flags")


def test_workdir_is_required():
  fv = flags.FlagValues()
  train_cli.define_flags(fv)
  with pytest.raises(flags.Error, match="workdir"):
    fv(["train", "--train_steps=3"])
    fv.validate_all_flags()


def test_model_and_data_shapes_must_agree(tmp_path):
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(parse(tmp_path / "run"))
  model_cfg = dataclasses.replace(model_cfg, image_shape=(32, 32, 3))
  with pytest.raises(ValueError, match=r"image_shape \(32, 32, 3\) does not match"):
    pipeline.train(model_cfg, data_cfg, train_cfg, str(tmp_path / "run"))


@pytest.mark.parametrize("name", ["base", "quick", "smoke", "fashion_mnist", "cifar10", "celeba"])
def test_every_flagfile_parses_into_configs(name):
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(
      parse("unused", flagfile=f"configs/{name}.flags"))
  # Adam's defaults (the paper's), except fashion_mnist's measured peak (see its flagfile).
  assert train_cfg.learning_rate == (5e-4 if name == "fashion_mnist" else 1e-3)
  assert train_cfg.adam_epsilon == 1e-7
  if name in ("cifar10", "celeba"):  # exactly the paper's Sec. 4.2 model
    assert model_cfg.image_shape == ((32, 32, 3) if name == "cifar10" else (64, 64, 3))
    assert (model_cfg.latent_dim, model_cfg.encoder_filters, model_cfg.encoder_blocks,
            model_cfg.encoder_layers_per_block) == (256, 32, 4, 2)
    assert (model_cfg.flow_scales, model_cfg.flow_checkerboard, model_cfg.flow_channelwise,
            model_cfg.flow_filters, model_cfg.flow_res_blocks) == (2, 3, 3, 64, 2)
    assert data_cfg.flip is True and data_cfg.batch_size == 64
    assert (train_cfg.adam_beta1, train_cfg.adam_beta2) == (0.9, 0.999)
  if name == "quick":
    assert data_cfg.dataset == "fashion_mnist" and data_cfg.eval_take is None
    assert train_cfg.eval_num_samples == 10
    assert train_cfg.latent_eval  # `make train` ends with the latent figures


# --- schedules and small pieces -----------------------------------------------------------------


@pytest.mark.parametrize("schedule, step, expected", [
    ("linear", 0, 0.0), ("linear", 25, 0.25), ("linear", 50, 0.5), ("linear", 100, 1.0),
    ("linear", 1000, 1.0),
    ("sigmoid", 0, 0.0), ("sigmoid", 50, 0.5), ("sigmoid", 100, 1.0), ("sigmoid", 500, 1.0),
    ("sigmoid", 25, 0.04511), ("sigmoid", 75, 0.95489),
])
def test_kl_weight_at_chosen_steps(schedule, step, expected):
  assert float(schedules.kl_weight(step, 100, schedule)) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("schedule", ["linear", "sigmoid"])
def test_kl_weight_is_monotone_and_always_one_without_annealing(schedule):
  weights = schedules.kl_weight(tf.range(0, 120), 100, schedule).numpy()
  assert np.all(np.diff(weights) >= 0) and weights[0] == 0 and weights[-1] == 1
  assert np.all(schedules.kl_weight(tf.range(0, 5), 0, schedule).numpy() == 1.0)


def test_learning_rate_warmup_then_cosine():
  lr = schedules.WarmupDecay(1e-3, warmup_steps=10, decay="cosine", decay_steps=110,
                             min_fraction=0.1)
  assert float(lr(0)) == pytest.approx(1e-4)
  assert float(lr(9)) == pytest.approx(1e-3)
  assert float(lr(60)) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
  assert float(lr(110)) == pytest.approx(1e-4) and float(lr(1000)) == pytest.approx(1e-4)
  assert float(schedules.WarmupDecay(1e-3)(12345)) == pytest.approx(1e-3)


def test_train_config_validates_with_the_field_named():
  with pytest.raises(ValueError, match="TrainConfig.train_steps"):
    training.TrainConfig(train_steps=0)
  with pytest.raises(ValueError, match="TrainConfig.strategy"):
    training.TrainConfig(strategy="tpu")
  with pytest.raises(ValueError, match="TrainConfig.clip_grad_norm"):
    training.TrainConfig(clip_grad_norm=-1.0)
  cfg = training.TrainConfig(train_steps=7)
  assert training.TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_image_grid_layout():
  grid = figures.image_grid(np.zeros((5, 4, 3, 1), np.uint8), rows=2, cols=3)
  assert grid.shape == (2 * 5 + 1, 3 * 4 + 1, 1) and grid.dtype == np.uint8


# --- never start over, consistent starts, non-finite results ------------------------------------


def _snapshot(directory) -> dict:
  """{relative path: sha256 of the file, or "dir"} for everything under `directory`."""
  tree = {}
  for path in sorted(pathlib.Path(directory).rglob("*")):
    key = str(path.relative_to(directory))
    tree[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
  return tree


def _copy_of(smoke_run, tmp_path):
  workdir, _ = smoke_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  return copy


def test_a_run_with_nothing_restorable_is_never_started_over(smoke_run, tmp_path):
  workdir = _copy_of(smoke_run, tmp_path)
  for index in (workdir / "checkpoints").glob("*.index"):
    index.unlink()
  before = _snapshot(workdir)
  with pytest.raises(training.UnrestorableRunError) as err:
    run_smoke(workdir)
  message = str(err.value)
  assert "config.json" in message and "ckpt-6.data-00000-of-00001" in message
  assert "no checkpoints/*.index" in message and "use a new --workdir" in message
  assert isinstance(err.value, training.CheckpointError)  # the CLI's one-line exit 1
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("extra, error", [
    (["--latent_dim=9"], training.CheckpointError),  # the restore fails
    (["--batch_size=512"], training.ConfigError),  # 256 training images < one batch
])
def test_a_failed_start_leaves_the_run_directory_exactly_as_it_was(smoke_run, tmp_path, extra,
                                                                   error):
  workdir = _copy_of(smoke_run, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(error):
    run_smoke(workdir, *extra, force_config=True)  # --force_config
  assert _snapshot(workdir) == before
  again = run_smoke(workdir)  # the corrected command works
  assert again["restored_from"].endswith("ckpt-6") and again["eval"] is not None


@pytest.mark.parametrize("extra", [["--fused_networks"], ["--dequantization=variational"]])
def test_a_forced_model_change_the_checkpoints_cannot_hold_is_named_as_such(smoke_run, tmp_path,
                                                                            extra):
  workdir = _copy_of(smoke_run, tmp_path)
  before = _snapshot(workdir)
  with pytest.raises(training.CheckpointError) as err:
    run_smoke(workdir, *extra, force_config=True)
  message = str(err.value)
  assert "are intact but do not hold the variables this configuration builds" in message
  assert "Drop --force_config" in message and "new --workdir" in message
  assert "unreadable" not in message and "repair or delete" not in message
  assert _snapshot(workdir) == before


def test_a_run_whose_every_step_was_skipped_fails_and_saves_nothing(tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(training.NonFiniteTrainingError,
                     match="no step of this run applied an update: all 3 steps"):
    with fault_hooks.nan_loss(first=1, count=100):
      run_smoke(workdir, "--train_steps=3", "--eval_every=0", "--eval_num_samples=1")
  assert not (workdir / "checkpoints").exists() and not (workdir / "config.json").exists()


def test_a_non_finite_final_bound_fails_and_eval_json_stays_strict(tmp_path, monkeypatch):
  real_call = evaluation.Evaluator.__call__

  def nan_bounds(self, *args, **kwargs):
    return dict(real_call(self, *args, **kwargs), elbo_bpd=float("nan"), iw_bpd=float("inf"))

  monkeypatch.setattr(evaluation.Evaluator, "__call__", nan_bounds)
  workdir = tmp_path / "run"
  with pytest.raises(training.NonFiniteTrainingError,
                     match="final evaluation at step 2 is not finite"):
    run_smoke(workdir, "--train_steps=2", "--eval_every=0")

  def refuse(token):
    raise ValueError(f"non-strict JSON token {token}")

  stored = json.loads((workdir / "eval.json").read_text(), parse_constant=refuse)
  assert stored["step"] == 2 and stored["elbo_bpd"] is None and stored["iw_bpd"] is None
  assert not (workdir / "export").exists()


def test_strict_json_writer_writes_missing_values_as_null(tmp_path):
  filename = str(tmp_path / "x.json")
  workdir_lib.write_json_atomic(filename, {"a": float("nan"), "b": [np.float32(1.5), np.inf],
                                           "c": np.int64(3), "d": (1, None)})
  text = pathlib.Path(filename).read_text()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {"a": None, "b": [1.5, None], "c": 3, "d": [1, None]}


def test_a_skipped_last_step_is_checkpointed_and_exported_as_that_step(tmp_path):
  workdir = tmp_path / "run"
  with fault_hooks.nan_loss(first=4):
    result = run_smoke(workdir, "--train_steps=4", "--eval_every=0", "--eval_num_samples=1",
                       "--export_at_end=true", "--num_image_samples=2")
  assert result["step"] == 4 and result["skipped_steps"] == 1
  latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
  assert latest.endswith("ckpt-4")
  skipped, step = tf.Variable(-1, dtype=tf.int64), tf.Variable(-1, dtype=tf.int64)
  tf.train.Checkpoint(skipped_steps=skipped, step=step).restore(latest).expect_partial()
  assert int(skipped.numpy()) == 1 and int(step.numpy()) == 4
  # The state saved after the skipped step holds exactly the weights the run ended with.
  model, _ = loading.restore_model(str(workdir), latest)
  assert finish.weights_fingerprint(model) == result["weights_sha256"]
  metadata = export_lib.load_metadata(str(workdir / "export"))
  assert metadata["step"] == 4 and metadata["checkpoint"] == latest
  assert (workdir / "figures" / "panel_step4.png").exists()


def test_seed_tags_and_chunk_size_have_one_home():
  assert seeds.DATA_TEST != seeds.DATA_TRAIN
  assert len({seeds.TRAIN_Z, seeds.EVAL_Z, seeds.IMAGES}) == 3
  assert training.TrainConfig().eval_chunk_size == seeds.IW_CHUNK_SIZE
  bound = inspect.signature(VAPNEV.log_likelihood_bound).parameters["chunk_size"]
  assert bound.default == seeds.IW_CHUNK_SIZE
