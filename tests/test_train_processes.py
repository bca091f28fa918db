"""Training in fresh processes: SIGTERM/SIGKILL and resume, bitwise-equal resume under
deterministic ops, MirroredStrategy over 2 logical CPUs, MultiWorkerMirroredStrategy with 2 local
workers. The slow jobs are started together (module fixture) so they share the machine's cores."""
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from vapnev_tf import loading
from vapnev_tf import locking
from vapnev_tf import workdir as workdir_lib

from run_fixtures import REPO_ROOT
from run_fixtures import TRAIN_TIMEOUT as TIMEOUT
from run_fixtures import finish_process as _finish
from run_fixtures import hooked_train_cmd as _hooked_train_cmd
from run_fixtures import start_process as _start
from run_fixtures import train_cmd as _train_cmd
from run_fixtures import train_env as _env

pytestmark = pytest.mark.slow  # every test starts training processes (`make test-all` runs them)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


_DETERMINISM_DRIVER = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()  # what --deterministic_ops does
    from vapnev_tf import train as cli
    from vapnev_tf import pipeline

    def run(workdir, steps):
      fv = cli.parse_flags(["train", "--flagfile=configs/smoke.flags", f"--workdir={workdir}",
                            f"--train_steps={steps}", "--deterministic_ops",
                            "--eval_num_samples=1"])
      return pipeline.train(*cli.configs_from_flags(fv), workdir)

    a, b, out = sys.argv[1:]
    results = {"first": run(a, 4), "resumed": run(a, 8), "uninterrupted": run(b, 8)}
    json.dump(results, open(out, "w"), default=str)
""")


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
  """Starts every slow job at once; each test then waits for its own."""
  root = tmp_path_factory.mktemp("jobs")
  started = {}
  # Bitwise resume: 4 steps, resume to 8; vs. 8 steps uninterrupted (one process, op determinism).
  started["determinism"] = (subprocess.Popen(
      [sys.executable, "-c", _DETERMINISM_DRIVER, str(root / "det_a"), str(root / "det_b"),
       str(root / "det.json")], cwd=REPO_ROOT, env=_env(),
      stdout=open(root / "det.log", "w"), stderr=subprocess.STDOUT), root / "det.log")
  # MirroredStrategy on 2 logical CPU devices; 47 test images leave one replica an empty batch;
  # step 3 is NaN (skipped through the cross-replica tf.cond).
  started["mirrored"] = (_start(_hooked_train_cmd(
      root / "mirrored", "--num_cpu_devices=2", "--eval_take=47", "--eval_every=0",
      result_file=root / "mirrored.json", nan_at=3), root / "mirrored.log"),
      root / "mirrored.log")
  started["bad_batch"] = (_start(_train_cmd(
      root / "bad_batch", "--num_cpu_devices=2", "--batch_size=15"), root / "bad_batch.log"),
      root / "bad_batch.log")
  # MultiWorkerMirroredStrategy: two worker processes on this machine.
  workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
  for i in range(2):
    tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
    log = root / f"worker{i}.log"
    started[f"worker{i}"] = (_start(_hooked_train_cmd(
        root / "multi_worker", "--strategy=multi_worker", "--eval_every=0",
        result_file=root / f"worker{i}.json", nan_at=3), log, TF_CONFIG=tf_config), log)
  yield root, started
  for proc, _ in started.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def test_sigkill_then_resume_then_sigterm_checkpoints_and_stops(jobs, tmp_path):
  del jobs  # started first so that they run meanwhile
  workdir = tmp_path / "run"
  ckpt_dir = workdir / "checkpoints"
  extra = ("--train_steps=100000", "--checkpoint_every=2", "--eval_every=0", "--log_every=1000",
           "--max_to_keep=3")

  def wait_for_checkpoint(proc, newer_than=-1):
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
      latest = tf.train.latest_checkpoint(str(ckpt_dir))
      if latest and int(latest.rsplit("-", 1)[1]) > newer_than:
        return int(latest.rsplit("-", 1)[1])
      assert proc.poll() is None, "training exited early"
      time.sleep(0.2)
    pytest.fail("no checkpoint appeared")

  # 1. SIGKILL once checkpoints are being written (one every ~0.1 s, so the kill often lands
  # during a save or during max_to_keep's clean-up).
  proc = _start(_train_cmd(workdir, *extra), tmp_path / "kill.log")
  wait_for_checkpoint(proc)
  time.sleep(0.5)
  proc.kill()
  proc.wait()

  # No checkpoint is corrupt. (A kill between writing a checkpoint and recording it in the state
  # file leaves a complete, unlisted newest checkpoint; a kill during max_to_keep's clean-up leaves
  # a listed one without .index. `checkpoint_candidates` handles both.)
  candidates = workdir_lib.checkpoint_candidates(str(ckpt_dir))
  assert candidates
  for prefix in candidates:
    _, step = loading.restore_model(str(workdir), prefix)
    assert step == int(prefix.rsplit("-", 1)[1])
  last = int(candidates[0].rsplit("-", 1)[1])

  # 2. The same command resumes from the newest checkpoint; SIGTERM then makes the loop
  # checkpoint the current step and exit with 128 + 15.
  proc = _start(_train_cmd(workdir, *extra), tmp_path / "term.log")
  wait_for_checkpoint(proc, newer_than=last)
  proc.send_signal(signal.SIGTERM)
  code, log = _finish(proc, tmp_path / "term.log")
  assert code == 128 + signal.SIGTERM, log[-2000:]
  assert (f"Resumed from {candidates[0]}: step {last}, optimizer iterations {last}, "
          "skipped steps 0.") in log
  stopped = int(log.split("interrupted at step ")[1].split()[0])
  assert stopped > last
  assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith(f"ckpt-{stopped}")
  _, step = loading.restore_model(str(workdir))
  assert step == stopped


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(jobs):
  root, started = jobs
  code, log = _finish(*started["determinism"])
  assert code == 0, log[-3000:]
  results = json.loads((root / "det.json").read_text())
  first, resumed, straight = results["first"], results["resumed"], results["uninterrupted"]
  assert first["step"] == 4 and first["restored_from"] is None
  assert resumed["restored_from"].endswith("ckpt-4")
  assert resumed["start_step"] == 4 and resumed["start_optimizer_iterations"] == 4
  assert resumed["step"] == straight["step"] == 8
  assert resumed["optimizer_iterations"] == straight["optimizer_iterations"] == 8
  assert resumed["last_loss"] == straight["last_loss"]
  assert resumed["weights_sha256"] == straight["weights_sha256"]
  assert resumed["eval"]["elbo_bpd"] == straight["eval"]["elbo_bpd"]


def test_mirrored_strategy_on_two_cpu_devices(jobs):
  root, started = jobs
  code, log = _finish(*started["mirrored"])
  assert code == 0, log[-3000:]
  result = json.loads((root / "mirrored.json").read_text())
  assert result["num_replicas"] == 2 and result["per_replica_batch_size"] == 16 // 2
  assert result["step"] == 6 and result["eval"]["num_images"] == 47
  assert result["skipped_steps"] == 1 and result["optimizer_iterations"] == 5
  assert "test bits/dim: ELBO" in log
  assert workdir_lib.read_config(str(root / "mirrored"))["num_replicas"] == 2
  flags_text = (root / "mirrored" / "flags.txt").read_text()
  assert "--num_cpu_devices=2" in flags_text and "--latent_dim=8" in flags_text


def test_batch_not_divisible_by_two_devices_fails_clearly(jobs):
  _, started = jobs
  code, log = _finish(*started["bad_batch"])
  assert code == 1
  assert "batch_size=15 is not divisible by the 2 replicas" in log


def test_multi_worker_mirrored_strategy_workers_agree(jobs):
  root, started = jobs
  outcomes = [_finish(*started[f"worker{i}"]) for i in range(2)]
  for code, log in outcomes:
    assert code == 0, log[-3000:]
  results = [json.loads((root / f"worker{i}.json").read_text()) for i in range(2)]
  assert [r["task"] for r in results] == ["worker0", "worker1"]
  assert all(r["num_replicas"] == 2 and r["step"] == 6 for r in results)
  assert all(r["skipped_steps"] == 1 and r["optimizer_iterations"] == 5 for r in results)
  assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
  assert results[0]["eval"]["elbo_bpd"] == results[1]["eval"]["elbo_bpd"]
  # Only the chief (worker 0) wrote the run directory; worker 1 saved into a temporary directory.
  workdir = root / "multi_worker"
  assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-6")
  assert sorted(p.name for p in workdir.iterdir() if p.name != locking.LOCK_FILE) == [
      "best", "checkpoints", "config.json", "eval.json", "flags.txt", "tensorboard"]


def test_a_second_training_on_the_same_workdir_is_refused(jobs, tmp_path):
  del jobs  # started first so that they run meanwhile
  workdir = tmp_path / "run"
  first = _start(_train_cmd(workdir, "--train_steps=100000", "--eval_every=0", "--log_every=1000",
                            "--checkpoint_every=1000"), tmp_path / "first.log")
  deadline = time.time() + TIMEOUT
  while locking.read_holder(str(workdir)).get("pid") != first.pid:  # the first holds the lock
    assert proc_alive(first), (tmp_path / "first.log").read_text()[-2000:]
    assert time.time() < deadline, "the first training never took the lock"
    time.sleep(0.2)
  second = _start(_train_cmd(workdir, "--train_steps=3"), tmp_path / "second.log")
  code, log = _finish(second, tmp_path / "second.log")
  first.send_signal(signal.SIGTERM)
  first_code, first_log = _finish(first, tmp_path / "first.log")
  assert code == 1, log[-2000:]
  assert f"WorkdirLockedError: workdir '{workdir}' is in use by training (pid {first.pid}" in log
  assert "use another --workdir" in log
  assert first_code == 128 + signal.SIGTERM, first_log[-2000:]
  assert locking.read_holder(str(workdir)) == {}  # released when the first one stopped


def proc_alive(proc) -> bool:
  return proc.poll() is None


def _start_workers(workdir, root, tag, *extra):
  """Two MultiWorkerMirroredStrategy workers on free local ports (TF_CONFIG); [(proc, log)]."""
  workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
  started = []
  for i in range(2):
    tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
    log = root / f"{tag}{i}.log"
    started.append((_start(_hooked_train_cmd(workdir, "--strategy=multi_worker", *extra,
                                             result_file=root / f"{tag}{i}.json"),
                           log, TF_CONFIG=tf_config), log))
  return started


def test_sigterm_to_one_worker_checkpoints_and_stops_every_worker_then_all_resume(jobs, tmp_path):
  """D3: SIGTERM to the NON-chief worker of a 2-worker run. With
  PreemptionCheckpointHandler (`training.signals.ClusterStopRequest`) both workers agree on a
  step, save one checkpoint (the chief into the run directory) and exit with 128 + 15; before,
  the chief was left waiting in the next collective. Restarting both resumes from it."""
  del jobs  # started first so that they run meanwhile
  workdir = tmp_path / "run"
  started = _start_workers(workdir, tmp_path, "first", "--train_steps=100000", "--eval_every=0",
                           "--log_every=1", "--checkpoint_every=100000")
  (chief, chief_log), (worker, worker_log) = started
  deadline = time.time() + TIMEOUT
  while "step 3/100000" not in worker_log.read_text():  # both are training (collectives)
    assert chief.poll() is None and worker.poll() is None, chief_log.read_text()[-3000:]
    assert time.time() < deadline, "the workers never reached step 3"
    time.sleep(0.2)
  worker.send_signal(signal.SIGTERM)
  outcomes = [_finish(proc, log) for proc, log in started]
  for code, log in outcomes:
    assert code == 128 + signal.SIGTERM, log[-3000:]
  stopped = [int(log.split("interrupted at step ")[1].split()[0]) for _, log in outcomes]
  assert stopped[0] == stopped[1] >= 3  # the same step on both workers
  assert "every worker checkpointed at this step" in outcomes[0][1]  # the chief, not signalled
  latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
  assert latest.endswith(f"ckpt-{stopped[0]}")

  again = _start_workers(workdir, tmp_path, "again", f"--train_steps={stopped[0] + 2}",
                         "--eval_every=0", "--eval_num_samples=1")
  for proc, log in again:
    code, text = _finish(proc, log)
    assert code == 0, text[-3000:]
    assert f"Resumed from {latest}: step {stopped[0]}" in text
  results = [json.loads((tmp_path / f"again{i}.json").read_text()) for i in range(2)]
  assert all(r["start_step"] == stopped[0] and r["step"] == stopped[0] + 2 for r in results)
  assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
