"""`vapnev_tf.evaluate` and the shared evaluation routine, on a hand-made run directory."""
import dataclasses
import json
import math

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from vapnev_tf import data as data_lib
from vapnev_tf import evaluate as evaluate_cli
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.config import ModelConfig
from vapnev_tf.model import VAPNEV
from vapnev_tf.training import evaluation

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
  result = evaluate_cli.evaluate_workdir(str(workdir))
  assert result["step"] == 5 and result["checkpoint"].endswith("ckpt-5")
  assert result["k"] == 3 and result["num_images"] == 20  # the run's eval_num_samples / eval_take
  assert math.isfinite(result["elbo_bpd"]) and math.isfinite(result["iw_bpd"])
  assert abs(result["iw_bpd"] - result["elbo_bpd"]) < 0.5
  stored = json.loads((workdir / "eval.json").read_text())
  assert stored["step"] == 5 and stored["iw_bpd"] == pytest.approx(result["iw_bpd"])
  assert stored["test_bits_per_dim"] == pytest.approx(result["iw_bpd"])


def test_overrides_and_history(run_dir):
  workdir, _ = run_dir
  result = evaluate_cli.evaluate_workdir(str(workdir), num_samples=1, eval_take=9,
                                         eval_batch_size=4)
  assert result["iw_bpd"] is None and result["num_images"] == 9 and result["k"] == 1
  stored = json.loads((workdir / "eval.json").read_text())
  assert stored["num_images"] == 9 and len(stored["history"]) >= 1


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
    evaluate_cli.evaluate_workdir(str(tmp_path / "nothing_here"))


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
