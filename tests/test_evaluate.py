"""`vapnev_tf.evaluate` and the shared evaluation routine, on a hand-made run directory."""
import dataclasses
import json
import math
import os
import pathlib
import re
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from vapnev_tf import data as data_lib
from vapnev_tf import evaluate as evaluate_cli
from vapnev_tf import evaluation
from vapnev_tf import export
from vapnev_tf import loading
from vapnev_tf import locking
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.config import ModelConfig
from vapnev_tf.datasets import locate as locate_lib
from vapnev_tf.model import VAPNEV

from run_fixtures import LOCK_HOLDER

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = ModelConfig(image_shape=(28, 28, 1), latent_dim=8, encoder_filters=4, encoder_blocks=2,
                    encoder_layers_per_block=1, flow_scales=1, flow_checkerboard=1,
                    flow_channelwise=1, flow_filters=4, flow_res_blocks=0)
DATA = data_lib.DataConfig(dataset="fashion_mnist", batch_size=16, eval_batch_size=8,
                           train_take=64, eval_take=20)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run directory as vapnev_tf.train leaves it: config.json and a checkpoint at step 5."""
  workdir = tmp_path_factory.mktemp("eval") / "run"
  tf.io.gfile.makedirs(str(workdir))
  workdir_lib.write_json_atomic(str(workdir / "config.json"), {
      "model": MODEL.to_dict(), "data": dataclasses.asdict(DATA),
      "train": {"eval_num_samples": 3, "eval_seed": 0, "eval_chunk_size": 2}})
  model = VAPNEV(MODEL)
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(model=model, step=tf.Variable(5, dtype=tf.int64)),
      str(workdir / "checkpoints"), max_to_keep=1, checkpoint_name="ckpt")
  manager.save(checkpoint_number=5)
  return workdir, model


def test_evaluate_workdir_uses_the_stored_config_and_writes_eval_json(run_dir):
  workdir, _ = run_dir
  result = evaluation.evaluate_workdir(str(workdir))
  assert result["step"] == 5 and result["checkpoint"].endswith("ckpt-5")
  assert result["k"] == 3 and result["num_images"] == 20  # the run's eval_num_samples / eval_take
  assert math.isfinite(result["elbo_bpd"]) and math.isfinite(result["iw_bpd"])
  assert abs(result["iw_bpd"] - result["elbo_bpd"]) < 0.5
  stored = json.loads((workdir / "eval.json").read_text())
  assert stored["step"] == 5 and stored["iw_bpd"] == pytest.approx(result["iw_bpd"])
  assert stored["test_bits_per_dim"] == pytest.approx(result["iw_bpd"])


def test_overrides_and_history(run_dir):
  workdir, _ = run_dir
  # A partial evaluation (9 of the run's 20 images) goes to evaluations/, not eval.json.
  result = evaluation.evaluate_workdir(str(workdir), num_samples=1, eval_take=9,
                                         eval_batch_size=4)
  assert result["iw_bpd"] is None and result["num_images"] == 9 and result["k"] == 1
  stored = json.loads((workdir / "evaluations" / "step5-images9-k1-seed0.json").read_text())
  assert stored["num_images"] == 9 and stored["scope"]["images"] == 9
  # A full one with other overrides becomes the headline; the previous one goes to the history.
  result = evaluation.evaluate_workdir(str(workdir), num_samples=1, eval_batch_size=4)
  assert result["iw_bpd"] is None and result["num_images"] == 20 and result["k"] == 1
  stored = json.loads((workdir / "eval.json").read_text())
  assert stored["num_images"] == 20 and stored["k"] == 1 and len(stored["history"]) >= 1


def test_a_partial_evaluation_never_replaces_the_full_one(run_dir):
  """`--eval_take=8` goes to WORKDIR/evaluations/<scope>.json with its scope; the
  headline eval.json (read by the export metadata and by train's reuse) keeps the full result."""
  workdir, _ = run_dir
  full = evaluation.evaluate_workdir(str(workdir))  # the run's own scope: 20 images, k=3
  headline = (workdir / "eval.json").read_bytes()
  partial = evaluation.evaluate_workdir(str(workdir), eval_take=8, eval_batch_size=4)
  assert (workdir / "eval.json").read_bytes() == headline
  assert partial["num_images"] == 8 and not partial["full"]
  assert full["full"] and full["written_to"] == str(workdir / "eval.json")
  written = workdir / "evaluations" / "step5-images8-k3-seed0.json"
  assert partial["written_to"] == str(written)
  stored = json.loads(written.read_text())
  assert stored["scope"] == {"full": False, "images": 8, "eval_take": 8, "run_eval_take": 20,
                             "k": 3, "seed": 0, "checkpoint": partial["checkpoint"], "step": 5}
  assert stored["iw_bpd"] == pytest.approx(partial["iw_bpd"])
  record, note = workdir_lib.full_evaluation(str(workdir), 5, full["weights_sha256"])
  assert note is None and record["num_images"] == 20
  assert record["test_bits_per_dim"] == pytest.approx(full["iw_bpd"])
  assert export.workdir_metadata(str(workdir), 5, full["checkpoint"],
                                 weights_sha256=full["weights_sha256"])["test_bits_per_dim"] == (
                                     pytest.approx(full["iw_bpd"]))


def _two_checkpoint_run(root):
  """A run directory with checkpoints at steps 5 and 7 (different weights)."""
  workdir = root / "two"
  workdir.mkdir()
  workdir_lib.write_json_atomic(str(workdir / "config.json"), {
      "model": MODEL.to_dict(), "data": dataclasses.asdict(DATA), "train": {"eval_seed": 0}})
  model = VAPNEV(MODEL)
  step = tf.Variable(5, dtype=tf.int64)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step),
                                       str(workdir / "checkpoints"), max_to_keep=3)
  manager.save(checkpoint_number=5)
  for v in model.trainable_variables:
    v.assign_add(0.01 * tf.ones_like(v))
  step.assign(7)
  manager.save(checkpoint_number=7)
  return workdir


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  workdir = _two_checkpoint_run(tmp_path)
  newest = workdir / "checkpoints" / "ckpt-7.data-00000-of-00001"
  newest.write_bytes(newest.read_bytes()[:100])
  with caplog.at_level("ERROR"):
    result = evaluation.evaluate_workdir(str(workdir), num_samples=1, eval_take=4, write=False)
  assert result["step"] == 5 and result["checkpoint"].endswith("ckpt-5")
  assert any("ckpt-7" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
  _, info = loading.load_run(str(workdir))
  assert info["step"] == 5 and [s["checkpoint"] for s in info["skipped"]] == [
      str(workdir / "checkpoints" / "ckpt-7")]
  # An explicitly named checkpoint is never replaced by another one.
  with pytest.raises(ValueError, match="ckpt-7.*could not be read"):
    loading.load_run(str(workdir), str(workdir / "checkpoints" / "ckpt-7"))


def _run_at_step5(root, name, shift):
  """A run directory with one checkpoint at step 5 whose weights are shifted by `shift`."""
  workdir = root / name
  workdir.mkdir()
  workdir_lib.write_json_atomic(str(workdir / "config.json"), {
      "model": MODEL.to_dict(),
      "data": dataclasses.asdict(dataclasses.replace(DATA, eval_take=4, eval_batch_size=4)),
      "train": {"eval_num_samples": 1, "eval_seed": 0}})
  model = VAPNEV(MODEL)
  for v in model.trainable_variables:
    v.assign_add(shift * tf.ones_like(v))
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(model=model, step=tf.Variable(5, dtype=tf.int64)),
      str(workdir / "checkpoints"), max_to_keep=1)
  return workdir, manager.save(checkpoint_number=5), workdir_lib.weights_fingerprint(model)


def test_another_runs_checkpoint_never_becomes_this_runs_result(tmp_path):
  """Evaluating run B's ckpt-5 with --workdir=A (same step, other weights) writes a labelled
  record to A/evaluations/, never A/eval.json; and a result of B's weights found in A's eval.json
  is attached neither to A's export nor to A's final report (matched by fingerprint, not step)."""
  a, a_ckpt, a_sha = _run_at_step5(tmp_path, "a", 0.0)
  b, b_ckpt, b_sha = _run_at_step5(tmp_path, "b", 0.01)
  assert a_sha != b_sha
  own = evaluation.evaluate_workdir(str(a))
  assert own["weights_sha256"] == a_sha and not own["foreign"]
  headline = (a / "eval.json").read_bytes()
  foreign = evaluation.evaluate_workdir(str(a), checkpoint=b_ckpt)
  assert (a / "eval.json").read_bytes() == headline
  assert foreign["foreign"] and foreign["weights_sha256"] == b_sha
  written = pathlib.Path(foreign["written_to"])
  assert written.parent == a / "evaluations" and written.name.startswith("foreign-ckpt-5-")
  record = json.loads(written.read_text())
  assert record["source"]["checkpoint"] == os.path.abspath(b_ckpt)
  assert record["source"]["of_this_run"] is False and record["weights_sha256"] == b_sha
  assert workdir_lib.full_evaluation(str(a), 5, a_sha)[0]["elbo_bpd"] == own["elbo_bpd"]
  # B's own evaluation copied over A's eval.json: same step, other weights, never attached.
  evaluation.evaluate_workdir(str(b))
  (a / "eval.json").write_bytes((b / "eval.json").read_bytes())
  meta = export.workdir_metadata(str(a), 5, a_ckpt, weights_sha256=a_sha)
  assert meta["test_bits_per_dim"] is None and "other weights" in meta["eval_note"]
  assert export.workdir_metadata(str(a), 5, a_ckpt, weights_sha256=b_sha)["eval"] is not None
  from vapnev_tf.training import finish  # pylint: disable=g-import-not-at-top
  from vapnev_tf.config import TrainConfig  # pylint: disable=g-import-not-at-top
  train_cfg = TrainConfig(eval_num_samples=1, eval_seed=0, export_at_end=False)
  assert finish._stored_final_eval(str(a), 5, train_cfg, a_sha) is None
  assert finish._stored_final_eval(str(a), 5, train_cfg, b_sha) is not None


_HOLD_LOCK = LOCK_HOLDER  # loads locking.py alone: no TensorFlow start-up


def test_evaluation_that_writes_is_refused_while_another_process_holds_the_run(run_dir, capsys):
  """The CLI's main (in this process; tests/test_console.py starts the CLI itself) returns 1 with
  one line naming the holder; nothing is written."""
  workdir, _ = run_dir
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(workdir)],
                            stdout=subprocess.PIPE, text=True, env=env)
  try:
    assert holder.stdout.readline().strip() == "locked"
    before = (workdir / "eval.json").read_bytes() if (workdir / "eval.json").exists() else None
    with pytest.raises(locking.WorkdirLockedError, match=f"pid {holder.pid}"):
      evaluation.evaluate_workdir(str(workdir), num_samples=1, eval_take=2)
    fv = flags.FlagValues()
    evaluate_cli.define_flags(fv)
    argv = fv(["vapnev_tf.evaluate", f"--workdir={workdir}", "--num_samples=1", "--eval_take=2"])
    capsys.readouterr()
    assert evaluate_cli.main(argv, fv) == 1
    stderr = capsys.readouterr().err
    errors = [l for l in stderr.splitlines() if l.startswith("vapnev_tf.evaluate: error:")]
    assert len(errors) == 1 and f"pid {holder.pid}" in errors[0] and "training" in errors[0]
    assert "Traceback" not in stderr
    after = (workdir / "eval.json").read_bytes() if (workdir / "eval.json").exists() else None
    assert after == before
    # Reading without writing needs no lock.
    assert evaluation.evaluate_workdir(str(workdir), num_samples=1, eval_take=2,
                                         write=False)["num_images"] == 2
  finally:
    holder.kill()
    holder.wait()


def test_elbo_is_the_mean_of_the_models_own_elbo(run_dir):
  """One batch holding every image: the routine's ELBO equals model.elbo with its seed."""
  _, model = run_dir
  cfg = dataclasses.replace(DATA, eval_take=6, eval_batch_size=6)
  result = evaluation.evaluate(model, cfg, num_samples=1, seed=0)
  x = next(iter(data_lib.eval_dataset(cfg, seed=0)))
  zero = tf.constant(0, tf.int64)  # batch index, then replica id
  key = tf.random.experimental.stateless_fold_in(tf.constant([0, 3], tf.int64), zero)
  key = tf.random.experimental.stateless_fold_in(key, zero)
  elbo_key = tf.cast(tf.random.experimental.stateless_split(key, 2), tf.int32)[0]
  expected = float(np.mean(model.elbo(x, seed=elbo_key).numpy()))
  assert result["elbo_nats"] == pytest.approx(expected, rel=1e-5)
  assert result["elbo_bpd"] == pytest.approx(-expected / (784 * math.log(2)), rel=1e-5)


def test_summary_line_format():
  line = evaluation.summary_line({"elbo_bpd": 3.1234, "iw_bpd": 3.1, "k": 10, "num_images": 10000})
  assert line == "test bits/dim: ELBO 3.123, IW(k=10) 3.100 (10000 images)"
  assert evaluation.summary_line({"elbo_bpd": 3.0, "iw_bpd": None, "k": 1, "num_images": 5}) == (
      "test bits/dim: ELBO 3.000 (5 images)")


def test_missing_run_directory_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no config.json"):
    evaluation.evaluate_workdir(str(tmp_path / "nothing_here"))


def test_bad_num_samples_is_refused(run_dir):
  _, model = run_dir
  with pytest.raises(ValueError, match="num_samples"):
    evaluation.evaluate(model, DATA, num_samples=0)


def test_cli_flags():
  fv = flags.FlagValues()
  evaluate_cli.define_flags(fv)
  fv(["evaluate", "--workdir=/x", "--num_samples=5", "--eval_take=100"])
  assert (fv.workdir, fv.num_samples, fv.eval_take, fv.checkpoint) == ("/x", 5, 100, None)
  with pytest.raises(flags.Error):
    fv(["evaluate", "--workdir=/x", "--num_samples=0"])


def test_weights_flag_takes_raw_or_ema_and_not_with_latent(tmp_path, capsys):
  fv = flags.FlagValues()
  evaluate_cli.define_flags(fv)
  assert fv(["evaluate", "--workdir=/x"]) and fv.weights is None  # the run's own
  fv(["evaluate", "--workdir=/x", "--weights=raw"])
  assert fv.weights == "raw"
  with pytest.raises(flags.Error):
    fv(["evaluate", "--workdir=/x", "--weights=best"])
  fv = flags.FlagValues()
  evaluate_cli.define_flags(fv)
  argv = fv(["vapnev_tf.evaluate", f"--workdir={tmp_path}", "--latent", "--weights=raw"])
  assert evaluate_cli.main(argv, fv) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["vapnev_tf.evaluate: error: --weights applies to the bounds; --latent reports "
                 "the run's own weights."]


def test_every_flag_a_data_error_suggests_is_a_flag_of_evaluate(run_dir, monkeypatch):
  fv = flags.FlagValues()
  evaluate_cli.define_flags(fv)
  for name in ("cifar10", "celeb_a"):
    hint = locate_lib._how_to_fix(name)  # pylint: disable=protected-access
    suggested = set(re.findall(r"--(\w+)=DIR", hint))
    assert suggested and suggested <= set(fv), suggested
  fv(["evaluate", "--workdir=/x", "--data_dir=/d", "--fashion_mnist_dir=/f"])
  assert (fv.data_dir, fv.fashion_mnist_dir) == ("/d", "/f")

  class Seen(Exception):
    pass

  def capture(model, data_cfg, **kwargs):
    raise Seen(data_cfg)

  monkeypatch.setattr(evaluation, "evaluate", capture)
  workdir, _ = run_dir
  with pytest.raises(Seen) as seen:
    evaluation.evaluate_workdir(str(workdir), data_dir="/data/elsewhere",
                                  fashion_mnist_dir="/fm/elsewhere", write=False)
  data_cfg = seen.value.args[0]
  assert (data_cfg.data_dir, data_cfg.fashion_mnist_dir) == ("/data/elsewhere", "/fm/elsewhere")


@pytest.mark.parametrize("record, expected", [
    ({"elbo_bpd": 3.25, "iw_bpd": 3.125}, 3.125),
    ({"elbo_bpd": 3.25, "iw_bpd": None}, 3.25),  # k = 1: no IW bound
    ({"elbo_bpd": 3.25}, 3.25),
    ({"elbo_bpd": 3.25, "iw_bpd": math.nan}, 3.25),  # a non-finite IW bound is not the headline
    ({"elbo_bpd": None, "iw_bpd": None}, None),
    ({"elbo_bpd": 3.25, "iw_bpd": 3.125, "test_bits_per_dim": 3.125}, 3.125),  # stored headline
    ({"test_bits_per_dim": 7.25}, 7.25),  # a record that states only its headline
    ({"elbo_bpd": 3.25, "iw_bpd": 3.125, "test_bits_per_dim": None}, 3.125),
])
def test_one_rule_picks_the_tightest_bound(record, expected):
  assert evaluation.tightest_bpd(record) == expected


def test_eval_json_and_the_export_metadata_report_the_same_bound(tmp_path):
  """train/evaluate write eval.json's "test_bits_per_dim" and the export metadata reads a record
  back: both by `evaluation.tightest_bpd`, also for a record whose IW bound is null."""
  workdir = str(tmp_path)
  workdir_lib.write_json_atomic(workdir_lib.path(workdir, workdir_lib.CONFIG_FILE),
                                {"data": {"eval_take": None}})
  for iw, expected in ((3.125, 3.125), (None, 3.25)):
    result = {"elbo_bpd": 3.25, "iw_bpd": iw, "k": 4, "seed": 0, "num_images": 8,
              "eval_take": None}
    written = evaluation.write_eval_json(workdir, result, 5, "ckpt-5", "sha")
    meta = export.workdir_metadata(workdir, 5, "ckpt-5", (), "sha")
    assert written["test_bits_per_dim"] == meta["test_bits_per_dim"] == expected
