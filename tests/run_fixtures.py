"""Run directories, exports and subprocess helpers shared by the test modules.

conftest.py turns the expensive ones into session fixtures (`smoke_run`, `tiny_run`,
`tiny_export`, `tiny_model`, `tiny_loaded`), built once per test session. The shared runs are
read-only: a test that changes a run works on `copy_run(...)` in its own tmp_path.
"""
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

import vapnev_tf
from vapnev_tf import console
from vapnev_tf import data
from vapnev_tf import export
from vapnev_tf import pipeline
from vapnev_tf import train as train_cli
from vapnev_tf import workdir as workdir_lib

import model_fixtures as mf

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# The tiny run: an 8x8 model briefly trained on random images, with a made-up evaluation.
IMAGE_SHAPE = (8, 8, 1)
TEST_BITS_PER_DIM = 7.25
STEP = 5


def tiny_config(image_shape=IMAGE_SHAPE, likelihood="vapnev"):
  """The export/figure tests' model: model_fixtures.tiny_config at latent_dim 4, two blocks."""
  return mf.tiny_config(image_shape, likelihood, latent_dim=4, encoder_blocks=2)


def random_images(n, seed=0, image_shape=IMAGE_SHAPE):
  return np.random.default_rng(seed).integers(0, 256, size=(n,) + image_shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------- processes


def subprocess_env(with_repo=True):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  if with_repo:
    env["PYTHONPATH"] = str(REPO_ROOT)
  return env


def console_env(**extra):
  """The environment of a CLI process as a user starts it: none of the variables that change what
  the console shows (TF_CPP_MIN_LOG_LEVEL, VAPNEV_TF_LOGS), no cluster; the repository on the
  path."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG", console.ENV_VAR)}
  env.update(PYTHONPATH=str(REPO_ROOT), **extra)
  return env


class Background:
  """A subprocess whose output goes to files (no pipe to fill), started now, checked later."""

  def __init__(self, args, log_dir, name, cwd=None, with_repo=True, env=None):
    self.args, self.name = args, name
    self.stdout_file = pathlib.Path(log_dir) / f"{name}.stdout"
    self.stderr_file = pathlib.Path(log_dir) / f"{name}.stderr"
    with open(self.stdout_file, "w") as out, open(self.stderr_file, "w") as err:
      self.proc = subprocess.Popen(args, cwd=cwd, env=env or subprocess_env(with_repo),
                                   stdout=out, stderr=err, text=True)

  def wait(self, check=True, timeout=None):
    """(returncode, stdout, stderr); with `check`, asserts success. `timeout` (default
    TRAIN_TIMEOUT) guards against a hung process only."""
    returncode = self.proc.wait(timeout=timeout or TRAIN_TIMEOUT)
    stdout, stderr = self.stdout_file.read_text(), self.stderr_file.read_text()
    if check:
      assert returncode == 0, f"{self.args} failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return returncode, stdout, stderr

  def kill(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()


def run_checked(args, cwd=None, with_repo=True, timeout=None):
  proc = subprocess.run(args, cwd=cwd, env=subprocess_env(with_repo), capture_output=True,
                        text=True, timeout=timeout or TRAIN_TIMEOUT)  # a hang guard only
  assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
  return proc


@contextlib.contextmanager
def compiled():
  """tf.functions run as graphs inside, whatever the test's mode (conftest.py's `eager` marker):
  for the shared runs, which stand for the product's compiled path."""
  was = tf.config.functions_run_eagerly()
  tf.config.run_functions_eagerly(False)
  try:
    yield
  finally:
    tf.config.run_functions_eagerly(was)


def copy_run(run_dir, dest) -> pathlib.Path:
  """A private copy of a shared run directory (without its lock file) for a test to change."""
  shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns(".lock"))
  return pathlib.Path(dest)


def assert_flow_export_serves_the_model(model, out, image_shape) -> None:
  """The export at `out` of a model without a latent holds the flow's signatures, its bound is
  the model's for the same seed, and `sample` gives uint8 images of `image_shape`."""
  assert sorted(export.load_metadata(str(out))["signatures"]) == sorted(export.FLOW_SIGNATURES)
  loaded = tf.saved_model.load(str(out))
  assert sorted(loaded.signatures) == sorted(export.FLOW_SIGNATURES)
  images = random_images(2, seed=4, image_shape=image_shape)
  got = loaded.signatures["log_likelihood_bound"](
      images=tf.constant(images), num_samples=tf.constant(4), seed=tf.constant(3, tf.int64))
  dequantize_seed, _ = export.derive_seeds(3)
  np.testing.assert_allclose(got["log_likelihood"].numpy(),
                             model.log_likelihood_bound(data.dequantize(images, dequantize_seed)),
                             rtol=1e-6, atol=1e-4)
  sample = loaded.signatures["sample"](num_samples=tf.constant(3), temperature=tf.constant(0.7),
                                       seed=tf.constant(3, tf.int64))
  assert sample["images"].shape == (3,) + tuple(image_shape)
  assert sample["images"].dtype == tf.uint8


# ------------------------------------------------------------------------------ training runs


def parse_train_flags(workdir, *extra, flagfile="configs/smoke.flags"):
  """Training flags parsed as `python -m vapnev_tf.train` run from the repository root does."""
  with contextlib.chdir(REPO_ROOT):  # flagfiles include configs/base.flags relative to the root
    return train_cli.parse_flags(["train", f"--flagfile={flagfile}", f"--workdir={workdir}",
                                  *extra])


def run_smoke(workdir, *extra, **kwargs):
  """configs/smoke.flags (plus `extra` flags) trained in this process; the train() result."""
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(parse_train_flags(workdir, *extra))
  return pipeline.train(model_cfg, data_cfg, train_cfg, str(workdir), **kwargs)


def make_tiny_run(workdir: pathlib.Path) -> pathlib.Path:
  """A run directory with a briefly trained tiny model, its config and an eval.json of STEP."""
  workdir.mkdir(parents=True, exist_ok=True)
  npz = workdir / "images.npz"
  np.savez(npz, images=random_images(24, seed=1), test_images=random_images(16, seed=2))
  data_cfg = data.DataConfig(dataset=f"npz:{npz}", batch_size=8, eval_batch_size=8)
  model = vapnev_tf.VAPNEV(tiny_config())
  # A few Adam steps with a large rate move every zero-initialised coupling off the identity.
  optimizer = keras.optimizers.Adam(0.02)
  x = data.dequantize(random_images(8, seed=3), seed=7)
  for i in range(2):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(model.elbo(x, seed=tf.constant([i, 1])))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
  workdir_lib.write_json_atomic(str(workdir / workdir_lib.CONFIG_FILE), {
      "model": model.config.to_dict(), "data": dataclasses.asdict(data_cfg), "train": {}})
  workdir_lib.write_json_atomic(str(workdir / workdir_lib.EVAL_FILE),
                                {"step": STEP, "test_bits_per_dim": TEST_BITS_PER_DIM,
                                 "eval_take": None, "num_images": 16, "k": 1, "seed": 0,
                                 "weights_sha256": workdir_lib.weights_fingerprint(model)})
  ckpt = tf.train.Checkpoint(model=model, step=tf.Variable(STEP, dtype=tf.int64))
  tf.train.CheckpointManager(ckpt, str(workdir / workdir_lib.CHECKPOINT_DIR), max_to_keep=2).save()
  return workdir


def start_export_cli(run_dir: pathlib.Path, out: pathlib.Path) -> Background:
  """`python -m vapnev_tf.export` of `run_dir` into `out`, started in the background in a user's
  environment (`console_env`): its output is also the export CLI's console (`export_cli_output`)."""
  return Background([PYTHON, "-m", "vapnev_tf.export", f"--workdir={run_dir}",
                     f"--export_dir={out}"], out.parent, "export_cli", cwd=str(REPO_ROOT),
                    env=console_env())


def finish_export_cli(proc: Background, out: pathlib.Path) -> pathlib.Path:
  _, stdout, _ = proc.wait()
  assert json.loads(stdout.strip().splitlines()[-1])["export_dir"] == str(out)
  assert (out / export.METADATA_FILE).exists()
  return out


def export_cli_output(out: pathlib.Path) -> str:
  """All the export CLI process of `finish_export_cli(..., out)` printed: stdout, then stderr."""
  return "".join((out.parent / f"export_cli.{stream}").read_text()
                 for stream in ("stdout", "stderr"))


# ------------------------------------------------------------------------- training processes

TRAIN_TIMEOUT = 1200  # seconds: a guard against a hung process, never a speed check


def train_env(**extra):
  """The environment of a training subprocess: the repository on the path, no cluster."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
  env.pop("TF_CONFIG", None)
  env.update(extra)
  return env


def train_cmd(workdir, *extra):
  """`python -m vapnev_tf.train` on configs/smoke.flags (run from the repository root)."""
  return [PYTHON, "-m", "vapnev_tf.train", "--flagfile=configs/smoke.flags",
          f"--workdir={workdir}", *extra]


def hooked_train_cmd(workdir, *extra, result_file=None, nan_at=None, nan_count=1):
  """`train_cmd` run through the test-only tests/fault_hooks.py: the same console, plus train()'s
  result written to `result_file` and/or a NaN loss at steps nan_at .. nan_at + nan_count - 1."""
  hooks = [] if result_file is None else [f"--result_file={result_file}"]
  if nan_at is not None:
    hooks += [f"--nan_at={nan_at}", f"--nan_count={nan_count}"]
  return [PYTHON, str(REPO_ROOT / "tests" / "fault_hooks.py"), *hooks, "--",
          "--flagfile=configs/smoke.flags", f"--workdir={workdir}", *extra]


def start_process(cmd, log, **env):
  """`cmd` started from the repository root, stdout and stderr into the file `log`."""
  return subprocess.Popen(cmd, cwd=REPO_ROOT, env=train_env(**env), stdout=open(log, "w"),
                          stderr=subprocess.STDOUT)


def finish_process(proc, log):
  """(returncode, log text) once `proc` ends; fails the test (killing it) after TRAIN_TIMEOUT."""
  import pytest  # pylint: disable=g-import-not-at-top
  try:
    proc.wait(timeout=TRAIN_TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    pytest.fail(f"job timed out after {TRAIN_TIMEOUT} s; log:\n"
                f"{pathlib.Path(log).read_text()[-3000:]}")
  return proc.returncode, pathlib.Path(log).read_text()


# --------------------------------------------------------------------------- console processes

# name: (argv after `-m`, what the error line says); one process per CLI (tests/test_console.py).
CONSOLE_USAGE_ERRORS = {
    "train_bad_value": (["vapnev_tf.train", "--flagfile=configs/smoke.flags", "--workdir=/tmp/x",
                         "--batch_size=0"], "--batch_size must be an int >= 1, got 0"),
    "evaluate_missing_workdir": (["vapnev_tf.evaluate"], "--workdir"),
    "export_unknown_flag": (["vapnev_tf.export", "--workdir=/tmp/x", "--nonsense"],
                            "Unknown command line flag 'nonsense'"),
    "sample_bad_value": (["vapnev_tf.sample", "--num=-3"], "--num"),
}
_console_jobs = {}  # "root": the jobs' directory, "started": {name: (Popen, log path)}


def _start_console_process(root, name, args, **env):
  out = open(root / f"{name}.log", "w")
  proc = subprocess.Popen([PYTHON, *args], cwd=REPO_ROOT, env=console_env(**env), stdout=out,
                          stderr=subprocess.STDOUT)
  return proc, root / f"{name}.log"


def start_console_jobs(root: pathlib.Path) -> None:
  """Starts, in a user's environment and all at once, the CLI processes whose console
  tests/test_console.py checks: one usage error per CLI, a smoke training with its export, and
  `import vapnev_tf` with and without VAPNEV_TF_LOGS. conftest.py starts them when the session's
  tests are collected, so they run beside the in-process tests that come first."""
  if _console_jobs:
    return
  root.mkdir(parents=True, exist_ok=True)
  started = {name: _start_console_process(root, name, ["-m", *argv])
             for name, (argv, _) in CONSOLE_USAGE_ERRORS.items()}
  started["train"] = _start_console_process(root, "train", [
      "-m", "vapnev_tf.train", "--flagfile=configs/smoke.flags", f"--workdir={root / 'run'}",
      "--export_at_end"])
  probe = "import vapnev_tf, tensorflow as tf; print(int(tf.constant(1) + 1))"
  started["quiet_import"] = _start_console_process(root, "quiet_import", ["-c", probe])
  started["loud_import"] = _start_console_process(root, "loud_import", ["-c", probe],
                                                  **{console.ENV_VAR: "all"})
  _console_jobs.update(root=root, started=started)


def console_jobs(root: pathlib.Path) -> tuple:
  """(root, {name: (Popen, log path)}) of the console processes, started now unless already."""
  start_console_jobs(root)
  return _console_jobs["root"], _console_jobs["started"]


def stop_console_jobs() -> None:
  for proc, _ in _console_jobs.get("started", {}).values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


# ------------------------------------------------------------------------------- lock holders

# `vapnev_tf/locking.py` needs only the standard library: a helper process loads that file alone
# (not the vapnev_tf package, which imports TensorFlow) and starts in a fraction of a second.
LOAD_LOCKING = f"""
import importlib.util
_spec = importlib.util.spec_from_file_location(
    "vapnev_tf_locking", {str(REPO_ROOT / "vapnev_tf" / "locking.py")!r})
locking = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(locking)
"""
# `python -c LOCK_HOLDER WORKDIR`: holds WORKDIR's lock for "training", prints "locked", sleeps.
LOCK_HOLDER = LOAD_LOCKING + """
import sys, time
with locking.workdir_lock(sys.argv[1], "training"):
  print("locked", flush=True)
  time.sleep(300)
"""
