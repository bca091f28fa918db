"""Fault injection: SIGKILL at random points, several times in a row, each time resuming.

Slow (each restart traces the step again): run with `make test-all` or
`.venv/bin/python -m pytest -q -m slow tests/test_fault_injection.py`.
"""
import json
import random
import time

import pytest
import tensorflow as tf

from run_fixtures import TRAIN_TIMEOUT as TIMEOUT
from run_fixtures import finish_process as _finish
from run_fixtures import start_process as _start
from run_fixtures import train_cmd as _train_cmd
from vapnev_tf import loading
from vapnev_tf import workdir as workdir_lib

STEPS = 300
FLAGS = (f"--train_steps={STEPS}", "--checkpoint_every=2", "--eval_every=0", "--log_every=1000",
         "--max_to_keep=3", "--deterministic_ops", "--seed=3")


def _latest_step(ckpt_dir):
  latest = tf.train.latest_checkpoint(str(ckpt_dir))
  return -1 if latest is None else int(latest.rsplit("-", 1)[1])


@pytest.mark.slow
def test_repeated_sigkill_resumes_monotonically_and_ends_with_the_uninterrupted_weights(tmp_path):
  rng = random.Random(1234)
  killed, ckpt_dir = tmp_path / "killed", tmp_path / "killed" / "checkpoints"
  reference = _start(_train_cmd(tmp_path / "reference", *FLAGS), tmp_path / "reference.log")
  steps_seen = []
  for attempt in range(3):
    before = _latest_step(ckpt_dir)
    proc = _start(_train_cmd(killed, *FLAGS), tmp_path / f"kill{attempt}.log")
    deadline = time.time() + TIMEOUT
    while _latest_step(ckpt_dir) <= before and time.time() < deadline:
      assert proc.poll() is None, (tmp_path / f"kill{attempt}.log").read_text()[-2000:]
      time.sleep(0.1)
    time.sleep(rng.uniform(0.0, 2.0))  # a random point after the first new checkpoint
    proc.kill()
    proc.wait()
    # Every checkpoint left behind is readable and holds the step its name says.
    for prefix in workdir_lib.checkpoint_candidates(str(ckpt_dir)):
      _, step = loading.restore_model(str(killed), prefix)
      assert step == int(prefix.rsplit("-", 1)[1])
    steps_seen.append(_latest_step(ckpt_dir))
  assert steps_seen == sorted(steps_seen) and steps_seen[0] > 0, steps_seen

  final = _start(_train_cmd(killed, *FLAGS), tmp_path / "final.log")
  for proc, log in ((final, tmp_path / "final.log"), (reference, tmp_path / "reference.log")):
    code, text = _finish(proc, log)
    assert code == 0, text[-3000:]
  # Each run's result as it wrote it: eval.json (step and sha256 of the evaluated weights).
  resumed = json.loads((killed / workdir_lib.EVAL_FILE).read_text())
  uninterrupted = json.loads((tmp_path / "reference" / workdir_lib.EVAL_FILE).read_text())
  assert resumed["step"] == uninterrupted["step"] == STEPS
  assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
