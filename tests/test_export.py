"""SavedModel export: signatures, equality with the in-Python model in a fresh TF-only process,
saved_model_cli, metadata, and clear errors on bad input."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vapnev_tf import loading
import vapnev_tf
from vapnev_tf import data
from vapnev_tf import export
from vapnev_tf import locking
from vapnev_tf import staging
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.model import to_uint8

from run_fixtures import IMAGE_SHAPE
from run_fixtures import LOCK_HOLDER
from run_fixtures import PYTHON
from run_fixtures import REPO_ROOT
from run_fixtures import STEP
from run_fixtures import TEST_BITS_PER_DIM
from run_fixtures import Background
from run_fixtures import assert_flow_export_serves_the_model
from run_fixtures import copy_run as _copy_run
from run_fixtures import random_images
from run_fixtures import subprocess_env
from run_fixtures import tiny_config

SAVED_MODEL_CLI = str(pathlib.Path(sys.executable).parent / "saved_model_cli")
SEED = 1234
BOUND_SAMPLES = (1, 3, 20)  # 20 > the model's chunk_size of 16: two chunks


# The session's tiny run and export (tests/conftest.py), under this module's names.
@pytest.fixture(scope="module")
def run_dir(tiny_run, _tiny_run_and_export_cli):
  return tiny_run  # the export CLI runs in the background while the in-process tests below do


@pytest.fixture(scope="module")
def exported(tiny_export):
  return tiny_export


@pytest.fixture(scope="module")
def model(tiny_model):
  return tiny_model


@pytest.fixture(scope="module")
def loaded(tiny_loaded):
  return tiny_loaded


# ------------------------------------------- in-process (the export CLI runs in the background)


def test_in_python_module_bound_matches_model_for_many_chunk_counts(model):
  """The exported bound (tensor k inside a tf.function) equals the eager model's for the same seed."""
  module = export.VapnevModule(model)
  images = random_images(2, seed=5)
  dequantize_seed, model_seed = export.derive_seeds(7)
  x = data.dequantize(images, dequantize_seed)
  for k in (16, 33):  # one full chunk; three chunks, the last partial
    got = module.log_likelihood_bound(images=images, num_samples=k, seed=7)["log_likelihood"]
    np.testing.assert_allclose(got.numpy(), model.log_likelihood_bound(x, k, seed=model_seed),
                               rtol=1e-6, atol=1e-4)


def test_realnvp_exports_two_signatures_and_overwrites(tmp_path):
  model = vapnev_tf.VAPNEV(tiny_config(likelihood="realnvp"))
  out = tmp_path / "export"
  out.mkdir()
  (out / "old_file").write_text("old")
  with pytest.raises(ValueError, match="already exists"):
    export.export_model(model, str(out), {"step": 1})
  assert (out / "old_file").exists()
  # --overwrite only ever replaces a previous export, never other files.
  with pytest.raises(ValueError, match="not a vapnev_tf export.*old_file"):
    export.export_model(model, str(out), {"step": 1}, overwrite=True)
  assert (out / "old_file").exists()
  (out / "old_file").unlink()
  export.export_model(model, str(out), {"step": 0})
  export.export_model(model, str(out), {"step": 1}, overwrite=True)
  assert export.load_metadata(str(out))["step"] == 1
  assert not [p for p in tmp_path.iterdir() if p.name != "export"]  # no temporary dirs left
  assert_flow_export_serves_the_model(model, out, IMAGE_SHAPE)


def test_export_rejects_reserved_metadata_keys(model, tmp_path):
  with pytest.raises(ValueError, match="reserved"):
    export.export_model(model, str(tmp_path / "out"), {"signatures": "mine"})
  assert not (tmp_path / "out").exists()


def test_export_from_workdir_errors(run_dir, tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    export.export_from_workdir(str(tmp_path / "missing"), str(tmp_path / "out"))
  (tmp_path / "empty_run").mkdir()
  with pytest.raises(ValueError, match="no checkpoint found"):
    export.export_from_workdir(str(tmp_path / "empty_run"), str(tmp_path / "out"))
  with pytest.raises(ValueError, match="ckpt-999.*does not exist"):
    export.export_from_workdir(str(run_dir), str(tmp_path / "out"),
                               checkpoint=str(run_dir / "checkpoints" / "ckpt-999"))
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- fresh process, only TensorFlow

_FRESH_PROCESS_SCRIPT = r'''
import importlib.abc, json, os, sys

class _NoVapnev(importlib.abc.MetaPathFinder):
  """Makes sure nothing below can import vapnev_tf (even if it is pip-installed)."""
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] == "vapnev_tf":
      raise ImportError("vapnev_tf is blocked in this process")
    return None

sys.meta_path.insert(0, _NoVapnev())
export_dir, inputs_file, outputs_file, repo_root = sys.argv[1:5]
import numpy as np
import tensorflow as tf

inputs = np.load(inputs_file)
images, z, seed = tf.constant(inputs["images"]), tf.constant(inputs["z"]), int(inputs["seed"])
s = lambda v: tf.constant(v, tf.int64)
loaded = tf.saved_model.load(export_dir)
sig = loaded.signatures
out = {}
for k in [int(k) for k in inputs["bound_samples"]]:
  for name, value in sig["log_likelihood_bound"](images=images, num_samples=tf.constant(k),
                                                 seed=s(seed)).items():
    out[f"bound{k}_{name}"] = value.numpy()
out["bound_other_seed"] = sig["log_likelihood_bound"](
    images=images, num_samples=tf.constant(3), seed=s(seed + 1))["log_likelihood"].numpy()
for name, value in sig["sample"](num_samples=tf.constant(5), temperature=tf.constant(0.8),
                                 seed=s(seed)).items():
  out[f"sample_{name}"] = value.numpy()
for name, value in sig["reconstruct"](images=images, seed=s(seed)).items():
  out[f"reconstruct_{name}"] = value.numpy()
for name, value in sig["encode"](images=images).items():
  out[f"encode_{name}"] = value.numpy()
for name, value in sig["decode"](z=z).items():
  out[f"decode_{name}"] = value.numpy()
# The restored tf.functions (keyword calls) give the same as the signatures.
out["function_sample_images"] = loaded.sample(
    num_samples=tf.constant(5), temperature=tf.constant(0.8), seed=s(seed))["images"].numpy()
np.savez(outputs_file, **out)
try:
  import vapnev_tf  # noqa: F401
  importable = True
except ImportError:
  importable = False
print(json.dumps({
    "signatures": sorted(sig), "vapnev_tf_importable": importable,
    "vapnev_tf_loaded": any(m.split(".")[0] == "vapnev_tf" for m in sys.modules),
    "tfp_loaded": "tensorflow_probability" in sys.modules,
    "repo_on_path": any(os.path.realpath(p or os.getcwd()) == os.path.realpath(repo_root)
                        for p in sys.path),
    "cwd": os.getcwd()}))
'''


@pytest.fixture(scope="module")
def processes(exported, tmp_path_factory):
  """Every subprocess check on the export, started together (they mostly wait on imports)."""
  tmp = tmp_path_factory.mktemp("processes")
  images = random_images(3, seed=11)
  z = np.random.default_rng(12).standard_normal((3, 4)).astype(np.float32)
  np.savez(tmp / "inputs.npz", images=images, z=z, seed=SEED, bound_samples=BOUND_SAMPLES)
  (tmp / "script.py").write_text(_FRESH_PROCESS_SCRIPT)
  # Fresh process: no PYTHONPATH, cwd outside the repository (plus an import blocker in-script).
  started = {
      "fresh": Background([PYTHON, str(tmp / "script.py"), str(exported), str(tmp / "inputs.npz"),
                           str(tmp / "outputs.npz"), str(REPO_ROOT)], tmp, "fresh", cwd=str(tmp),
                          with_repo=False),
      "show": Background([SAVED_MODEL_CLI, "show", "--all", "--dir", str(exported)], tmp, "show",
                         cwd=str(tmp), with_repo=False),
      "run": Background([SAVED_MODEL_CLI, "run", "--dir", str(exported), "--tag_set", "serve",
                         "--signature_def", "sample", "--input_exprs",
                         "num_samples=2;temperature=0.8;seed=1"], tmp, "run", cwd=str(tmp),
                        with_repo=False),
  }
  results = {name: proc.wait() for name, proc in started.items()}
  report = json.loads(results["fresh"][1].strip().splitlines()[-1])
  results["fresh"] = (report, images, z, dict(np.load(tmp / "outputs.npz")))
  return results


@pytest.fixture(scope="module")
def fresh_process_outputs(processes):
  return processes["fresh"]


def test_fresh_process_needs_only_tensorflow(fresh_process_outputs):
  report, _, _, _ = fresh_process_outputs
  assert report["signatures"] == sorted(export.VAE_SIGNATURES)
  assert not report["vapnev_tf_importable"]
  assert not report["vapnev_tf_loaded"]
  assert not report["tfp_loaded"]
  assert not report["repo_on_path"]
  assert not report["cwd"].startswith(str(REPO_ROOT))


def test_fresh_process_log_likelihood_bound_equals_model(fresh_process_outputs, model):
  _, images, _, out = fresh_process_outputs
  dequantize_seed, model_seed = export.derive_seeds(SEED)
  x = data.dequantize(images, dequantize_seed)
  for k in BOUND_SAMPLES:
    expected = model.log_likelihood_bound(x, k, seed=model_seed).numpy()
    got = out[f"bound{k}_log_likelihood"]
    assert got.dtype == np.float32 and got.shape == (3,)
    # Same z's, same arithmetic: equal up to float32 round-off of graph vs eager kernels.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(out[f"bound{k}_bits_per_dim"],
                               vapnev_tf.bits_per_dim(expected, IMAGE_SHAPE), rtol=1e-6)
    assert np.all(out[f"bound{k}_bits_per_dim"] > 0)
  # The equality is not vacuous: another seed draws other z's (and other noise).
  assert np.abs(out["bound_other_seed"] - out["bound3_log_likelihood"]).max() > 1e-3


def _assert_images_match(images, samples, expected_samples):
  """uint8 images == floor(samples); samples == the model's up to float32 round-off."""
  assert images.dtype == np.uint8 and samples.dtype == np.float32
  assert images.shape == samples.shape == expected_samples.shape
  assert samples.min() >= 0.0 and samples.max() < 256.0
  np.testing.assert_array_equal(images, np.floor(samples).astype(np.uint8))
  np.testing.assert_allclose(samples, expected_samples, atol=2e-3)
  mismatched = np.mean(images != to_uint8(expected_samples).numpy())
  assert mismatched < 0.02  # only where round-off crosses an integer


def test_fresh_process_sample_equals_model(fresh_process_outputs, model):
  _, _, _, out = fresh_process_outputs
  _, model_seed = export.derive_seeds(SEED)
  expected = model.sample(5, temperature=0.8, seed=model_seed).numpy()
  _assert_images_match(out["sample_images"], out["sample_samples"], expected)
  assert out["sample_images"].shape == (5,) + IMAGE_SHAPE
  np.testing.assert_array_equal(out["function_sample_images"], out["sample_images"])


def test_fresh_process_reconstruct_equals_model(fresh_process_outputs, model):
  _, images, _, out = fresh_process_outputs
  dequantize_seed, model_seed = export.derive_seeds(SEED)
  expected = model.reconstruct(data.dequantize(images, dequantize_seed), seed=model_seed).numpy()
  _assert_images_match(out["reconstruct_images"], out["reconstruct_samples"], expected)


def test_fresh_process_encode_decode_equal_model(fresh_process_outputs, model):
  _, images, z, out = fresh_process_outputs
  q = model.encode(images.astype(np.float32) + 0.5)
  assert out["encode_mu_z"].shape == out["encode_sigma_z"].shape == (3, 4)
  assert np.all(out["encode_sigma_z"] > 0)
  np.testing.assert_allclose(out["encode_mu_z"], q.mean().numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["encode_sigma_z"], q.stddev().numpy(), rtol=1e-5, atol=1e-6)
  _assert_images_match(out["decode_images"], out["decode_samples"],
                       model.decode_images(z).numpy())


# ------------------------------------------------------------------------------ saved_model_cli


def test_saved_model_cli_show_lists_the_signatures(processes):
  _, stdout, _ = processes["show"]
  for name in export.VAE_SIGNATURES:
    assert f"signature_def['{name}']" in stdout
  assert "inputs['num_samples'] tensor_info" in stdout
  assert "dtype: DT_UINT8" in stdout


def test_saved_model_cli_run_executes_sample(processes):
  """The TF1-style loader (as in TF Serving) restores every weight the functions read."""
  _, stdout, _ = processes["run"]
  assert "Result for output key images" in stdout
  assert "Result for output key samples" in stdout


# ------------------------------------------------------------------------- artefact and metadata


def test_metadata_and_fingerprint(exported, model):
  meta = export.load_metadata(str(exported))
  assert (exported / "fingerprint.pb").exists()
  assert meta["format"] == export.METADATA_FORMAT
  assert meta["step"] == STEP
  assert meta["test_bits_per_dim"] == TEST_BITS_PER_DIM
  assert meta["model_config"] == json.loads(json.dumps(model.config.to_dict()))
  assert meta["run_config"]["data"]["dataset"].startswith("npz:")
  assert sorted(meta["signatures"]) == sorted(export.VAE_SIGNATURES)
  assert meta["signatures"]["sample"]["inputs"] == {
      "num_samples": {"dtype": "int32", "shape": []},
      "seed": {"dtype": "int64", "shape": []},
      "temperature": {"dtype": "float32", "shape": []}}
  assert meta["signatures"]["encode"]["outputs"]["mu_z"] == {"dtype": "float32",
                                                             "shape": [None, 4]}
  assert set(meta["versions"]) >= {"vapnev_tf", "tensorflow", "tensorflow_probability", "keras"}
  assert meta["versions"]["tensorflow"] == tf.__version__
  fingerprint = tf.saved_model.experimental.read_fingerprint(str(exported))
  assert meta["fingerprint"]["singleprint"] == fingerprint.singleprint()


def test_saved_model_holds_every_variable_once(exported, model):
  saved = {name: shape for name, shape in tf.train.list_variables(
      str(exported / "variables" / "variables")) if name.endswith("VARIABLE_VALUE")}
  assert len(saved) == len(model.variables)
  num_parameters = sum(int(np.prod(v.shape)) for v in model.variables)
  assert sum(int(np.prod(s)) for s in saved.values()) == num_parameters
  assert export.load_metadata(str(exported))["num_parameters"] == num_parameters


# ------------------------------------------------------------------------------------ bad input


def test_export_refuses_an_existing_directory(model, exported):
  with pytest.raises(ValueError, match="already exists and is not empty.*overwrite"):
    export.export_model(model, str(exported), {})


def test_wrong_image_shape_or_dtype_is_refused(loaded):
  seed = tf.constant(1, tf.int64)
  reconstruct = loaded.signatures["reconstruct"]
  # Signature (serving) calls: the dtype is checked on entry, the shape by an assertion.
  with pytest.raises(tf.errors.InvalidArgumentError, match="images must be uint8 of shape"):
    reconstruct(images=tf.zeros((2, 9, 8, 1), tf.uint8), seed=seed)
  with pytest.raises(tf.errors.InvalidArgumentError, match="images must be uint8 of shape"):
    loaded.signatures["encode"](images=tf.zeros((8, 8, 1), tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
    reconstruct(images=tf.zeros((2, 8, 8, 1), tf.float32), seed=seed)
  with pytest.raises(tf.errors.InvalidArgumentError, match="must hold at least one image"):
    reconstruct(images=tf.zeros((0, 8, 8, 1), tf.uint8), seed=seed)
  # The restored tf.functions check against their traced input specs (two traces, int32 and
  # int64 seeds: TF reports "no matching concrete function" as a ValueError).
  with pytest.raises((TypeError, ValueError),
                     match=r"TensorSpec\(shape=\(None, 8, 8, 1\), dtype=tf.uint8"):
    loaded.reconstruct(images=tf.zeros((2, 9, 8, 1), tf.uint8), seed=seed)
  with pytest.raises((TypeError, ValueError), match="uint8|float32"):
    loaded.log_likelihood_bound(images=tf.zeros((2, 8, 8, 1), tf.float32),
                                num_samples=tf.constant(1), seed=seed)


def test_restored_functions_take_an_int32_seed_like_the_int64_one(loaded):
  images = random_images(2, seed=5)
  for name, args in (("sample", dict(num_samples=tf.constant(2), temperature=tf.constant(0.8))),
                     ("reconstruct", dict(images=tf.constant(images))),
                     ("log_likelihood_bound", dict(images=tf.constant(images),
                                                   num_samples=tf.constant(2)))):
    fn = getattr(loaded, name)
    out32 = fn(**args, seed=tf.constant(7))
    out64 = fn(**args, seed=tf.constant(7, tf.int64))
    for key in out64:
      np.testing.assert_array_equal(out32[key].numpy(), out64[key].numpy(), err_msg=name)
  with pytest.raises(tf.errors.InvalidArgumentError, match="int64"):  # a signature: one dtype
    loaded.signatures["sample"](num_samples=tf.constant(2), temperature=tf.constant(0.8),
                                seed=tf.constant(7))


def test_bad_scalars_are_refused(loaded):
  seed = tf.constant(1, tf.int64)
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples >= 1"):
    loaded.signatures["sample"](num_samples=tf.constant(0), temperature=tf.constant(1.0), seed=seed)
  with pytest.raises(tf.errors.InvalidArgumentError, match="temperature >= 0"):
    loaded.signatures["sample"](num_samples=tf.constant(2), temperature=tf.constant(-1.0),
                                seed=seed)
  with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples >= 1"):
    loaded.signatures["log_likelihood_bound"](images=tf.zeros((1, 8, 8, 1), tf.uint8),
                                              num_samples=tf.constant(0), seed=seed)


def test_non_finite_latents_and_overflowing_counts_are_refused(loaded, model):
  seed = tf.constant(1, tf.int64)
  for bad in (np.nan, np.inf):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"z must be finite \(got NaN/inf\)"):
      loaded.signatures["decode"](z=tf.fill([1, model.config.latent_dim], bad))
  limit = model.max_samples
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf"sample: num_samples must be a positive int <= {limit}"):
    loaded.signatures["sample"](num_samples=tf.constant(2 ** 31 - 1),
                                temperature=tf.constant(1.0), seed=seed)


# ------------------------------------------------------ overwrite, lock, metadata of the checkpoint


def _tree(root) -> list:
  return sorted(str(p.relative_to(root)) for p in pathlib.Path(root).rglob("*"))


def test_overwrite_never_replaces_a_run_directory_its_parents_or_other_files(run_dir, tmp_path):
  """`--overwrite` replaces a previous export only; everything else is refused, naming it."""
  runs = tmp_path / "runs"
  a, b = _copy_run(run_dir, runs / "a"), _copy_run(run_dir, runs / "b")
  (a / "best").mkdir()
  (a / "notes.txt").write_text("mine")
  before = _tree(tmp_path)
  for export_dir, message in [
      (a, "is the run directory"), (runs, "contains the run directory"),
      (tmp_path, "contains the run directory"),
      (b, r"not a vapnev_tf export \(it holds .*config.json"),
      (a / "checkpoints", "inside the run directory.*checkpoint"),
      (a / "best", "inside the run directory.*nothing"),
      (a / "notes.txt", "inside the run directory")]:
    for overwrite in (True, False):
      with pytest.raises(ValueError, match=message):
        export.export_from_workdir(str(a), str(export_dir), overwrite=overwrite)
  # Without the run directory to compare with, a run directory is still not an export.
  with pytest.raises(ValueError, match="not a vapnev_tf export.*config.json"):
    export.check_export_dir(str(b), overwrite=True)
  assert _tree(tmp_path) == before


def test_only_a_directory_holding_an_export_and_nothing_else_is_an_export(tmp_path):
  fake = tmp_path / "fake"
  (fake / "variables").mkdir(parents=True)
  (fake / "saved_model.pb").write_bytes(b"x")
  (fake / "variables" / "variables.index").write_bytes(b"x")
  with pytest.raises(ValueError, match="no vapnev_metadata.json"):
    export.check_export_dir(str(fake), overwrite=True)
  (fake / export.METADATA_FILE).write_text("{}")
  export.check_export_dir(str(fake), overwrite=True)  # an export: may be replaced
  with pytest.raises(ValueError, match="already exists and is not empty.*overwrite"):
    export.check_export_dir(str(fake), overwrite=False)
  (fake / "variables" / "checkpoints").mkdir()
  with pytest.raises(ValueError, match="variables/ holds checkpoints"):
    export.check_export_dir(str(fake), overwrite=True)
  (fake / "variables" / "checkpoints").rmdir()
  (fake / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="not part of a SavedModel: notes.txt"):
    export.check_export_dir(str(fake), overwrite=True)


def test_export_cli_refuses_to_overwrite_its_run_directory(run_dir, tmp_path):
  """`--workdir=W --export_dir=W --overwrite` must not replace the run directory W."""
  workdir = _copy_run(run_dir, tmp_path / "run")
  before = _tree(workdir)
  proc = subprocess.run([PYTHON, "-m", "vapnev_tf.export", f"--workdir={workdir}",
                         f"--export_dir={workdir}", "--overwrite"], cwd=str(REPO_ROOT),
                        env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  errors = [l for l in proc.stderr.splitlines() if l.startswith("vapnev_tf.export: error:")]
  assert len(errors) == 1 and "is the run directory" in errors[0]
  assert "Traceback" not in proc.stderr
  assert _tree(workdir) == before


_HOLD_LOCK = LOCK_HOLDER  # loads locking.py alone: no TensorFlow start-up


def test_export_is_refused_while_another_process_holds_the_run(run_dir, tmp_path):
  workdir = _copy_run(run_dir, tmp_path / "run")
  out = tmp_path / "out"
  holder = subprocess.Popen([PYTHON, "-c", _HOLD_LOCK, str(workdir)], stdout=subprocess.PIPE,
                            text=True, env=subprocess_env())
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(locking.WorkdirLockedError, match=rf"in use by training \(pid {holder.pid}"):
      export.export_from_workdir(str(workdir), str(out))
    proc = subprocess.run([PYTHON, "-m", "vapnev_tf.export", f"--workdir={workdir}",
                           f"--export_dir={out}"], cwd=str(REPO_ROOT), env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("vapnev_tf.export: error:")]
    assert len(errors) == 1 and f"pid {holder.pid}" in errors[0] and "in use" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
  finally:
    holder.kill()
    holder.wait()


def _add_checkpoint(workdir, step, number):
  """A newer checkpoint (other weights, step counter `step`) in WORKDIR/checkpoints."""
  model, _ = loading.restore_model(str(workdir))
  for v in model.trainable_variables:
    v.assign_add(0.01 * tf.ones_like(v))
  manager = tf.train.CheckpointManager(
      tf.train.Checkpoint(model=model, step=tf.Variable(step, dtype=tf.int64)),
      str(workdir / workdir_lib.CHECKPOINT_DIR), max_to_keep=3)
  return manager.save(checkpoint_number=number)


def _write_eval(workdir, headline, history=()):
  workdir_lib.write_json_atomic(str(workdir / workdir_lib.EVAL_FILE),
                                dict(headline, history=list(history)))


def test_metadata_attaches_only_a_full_evaluation_of_the_same_weights(run_dir, tmp_path):
  workdir = _copy_run(run_dir, tmp_path / "run")
  sha = "a" * 64
  full = lambda step, bpd: {"step": step, "test_bits_per_dim": bpd, "eval_take": None,
                            "weights_sha256": sha}
  meta_of = lambda step: export.workdir_metadata(str(workdir), step, "ckpt", weights_sha256=sha)
  # eval.json of another step than the exported checkpoint: no bits/dim, and a note saying so.
  _write_eval(workdir, full(9, 6.0))
  meta = meta_of(STEP)
  assert meta["test_bits_per_dim"] is None and meta["eval"] is None
  assert f"no full evaluation of step {STEP}" in meta["eval_note"]
  assert meta_of(9)["test_bits_per_dim"] == 6.0
  # A partial evaluation (8 images; the run evaluates all) of the same step is never attached,
  # nor is a record that does not say its scope, nor one of other weights at the same step; a
  # full one of these weights in the history is.
  partial = dict(full(STEP, 9.9), eval_take=8)
  legacy = {"step": STEP, "test_bits_per_dim": 9.8}
  other = dict(full(STEP, 9.7), weights_sha256="b" * 64)
  _write_eval(workdir, partial, [legacy, other])
  assert meta_of(STEP)["test_bits_per_dim"] is None
  assert "other weights" in meta_of(STEP)["eval_note"]
  _write_eval(workdir, partial, [full(STEP, 7.0), legacy, other])
  assert meta_of(STEP)["test_bits_per_dim"] == 7.0
  # The run's own eval_take counts as full.
  config = json.loads((workdir / workdir_lib.CONFIG_FILE).read_text())
  config["data"]["eval_take"] = 8
  workdir_lib.write_json_atomic(str(workdir / workdir_lib.CONFIG_FILE), config)
  assert meta_of(STEP)["test_bits_per_dim"] == 9.9


def test_export_falls_back_from_a_truncated_newest_checkpoint_and_labels_what_it_holds(
    run_dir, tmp_path, caplog):
  """The metadata's step is the restored checkpoint's own (also after a fallback), and the
  evaluation of the newer (unreadable) checkpoint is not attached to it."""
  workdir = _copy_run(run_dir, tmp_path / "run")
  newest = _add_checkpoint(workdir, step=9, number=2)
  _write_eval(workdir, {"step": 9, "test_bits_per_dim": 6.0, "eval_take": None})
  data_file = pathlib.Path(newest + ".data-00000-of-00001")
  data_file.write_bytes(data_file.read_bytes()[:100])  # truncated
  with caplog.at_level("ERROR"):
    out = export.export_from_workdir(str(workdir), str(tmp_path / "out"))
  assert any("ckpt-2" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
  meta = export.load_metadata(out)
  assert meta["step"] == STEP and meta["checkpoint"].endswith("ckpt-1")
  assert [s["checkpoint"] for s in meta["skipped_checkpoints"]] == [newest]
  assert meta["test_bits_per_dim"] is None and "step 5" in meta["eval_note"]
  # The export holds the weights of that checkpoint.
  restored, _ = loading.restore_model(str(workdir), meta["checkpoint"])
  loaded = tf.saved_model.load(out)
  z = tf.zeros((1, 4))
  np.testing.assert_allclose(loaded.decode(z=z)["samples"].numpy(),
                             restored.decode_images(z).numpy(), atol=2e-3)


def test_a_signal_during_an_export_removes_its_temporary_directory(model, tmp_path, monkeypatch):
  """SIGTERM while the SavedModel is written: no `EXPORT.tmp-*` is left, and the CLI's handler
  turns the signal into `interrupts.Interrupted` (exit 128 + 15 with a line saying what stopped)."""
  import signal  # pylint: disable=g-import-not-at-top
  from vapnev_tf import interrupts  # pylint: disable=g-import-not-at-top
  real_save = tf.saved_model.save

  def save_then_signal(*args, **kwargs):
    real_save(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(tf.saved_model, "save", save_then_signal)
  out = tmp_path / "out"
  with pytest.raises(interrupts.Interrupted, match="stopped by SIGTERM during the export") as e:
    with interrupts.raising("the export"):
      export.export_model(model, str(out), {})
  assert e.value.signum == signal.SIGTERM
  assert sorted(p.name for p in tmp_path.iterdir()) == []
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.slow  # three real exports; the sweep's rules are tests/test_staging.py's, in make test
def test_an_export_sweeps_staging_dirs_of_killed_exports_and_nothing_else(model, tmp_path,
                                                                         monkeypatch):
  """A SIGKILL between staging and the rename leaves `EXPORT.tmp-<pid>-<hex>`; the next export to
  the same target removes it once that pid is dead. A live process's staging directory, one with
  other content and an unmarked one with the same prefix are kept."""
  out = tmp_path / "out"
  # A real leftover: the export is "killed" right after the SavedModel is written.
  real_save = tf.saved_model.save

  def save_then_die(*args, **kwargs):
    real_save(*args, **kwargs)
    raise SystemExit("killed")

  monkeypatch.setattr(tf.saved_model, "save", save_then_die)
  monkeypatch.setattr(tf.io.gfile, "rmtree", lambda path: None)  # a kill cleans nothing up
  with pytest.raises(SystemExit):
    export.export_model(model, str(out), {})
  monkeypatch.undo()
  [leftover] = [p for p in tmp_path.iterdir()]
  assert leftover.name.startswith(f"out.tmp-{os.getpid()}-")
  dead = subprocess.Popen([PYTHON, "-c", "pass"])
  dead.wait()
  stale = tmp_path / leftover.name.replace(f"tmp-{os.getpid()}-", f"tmp-{dead.pid}-")
  leftover.rename(stale)
  (stale / staging.STAGING_MARKER).write_text(
      json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
  live = tmp_path / f"out.tmp-{os.getpid()}-11111111"  # this process: alive
  shutil.copytree(stale, live)
  (live / staging.STAGING_MARKER).write_text(
      json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
  foreign = tmp_path / f"out.tmp-{dead.pid}-22222222"  # the dead pid, but a user's file inside
  shutil.copytree(stale, foreign)
  (foreign / "my_notes.txt").write_text("keep me")
  unmarked = tmp_path / "out.tmp-backup"
  unmarked.mkdir()

  export.export_model(model, str(out), {"step": 1})
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      ["out", live.name, foreign.name, unmarked.name])
  assert (foreign / "my_notes.txt").read_text() == "keep me"
  assert export.is_export(str(out)) and not (out / staging.STAGING_MARKER).exists()
  export.export_model(model, str(out), {"step": 2}, overwrite=True)  # still an export
  assert export.load_metadata(str(out))["step"] == 2
