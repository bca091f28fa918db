"""`--intra_op_threads` / `--inter_op_threads` (docs/design.md §25): 0 chooses from the machine's
cores, an explicit value wins; set before TensorFlow starts, an explicit value refused with the
flag's name once it has started with another one, an automatic one yielding to the pools in
effect; the choice is recorded in config.json."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from vapnev_tf import config_run
from vapnev_tf import training
from vapnev_tf.training import threads

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# A fresh process: the intra-op pool from the flag, the inter-op pool from the machine.
SCRIPT = textwrap.dedent("""
    import tensorflow as tf
    from vapnev_tf import training
    from vapnev_tf.training import threads
    choice = training.configure_threads(1, 0)
    tf.constant(1.0) + 1.0  # TensorFlow starts here
    threading = tf.config.threading
    print("in effect", threading.get_intra_op_parallelism_threads(),
          threading.get_inter_op_parallelism_threads())
    print("expected", 1, threads.automatic_threads(threads.machine_cores())[1])
    print("sources", choice.intra_op_source, choice.inter_op_source, choice.automatic)
    again = training.configure_threads(1, 0)  # the values in effect: accepted
    print("again", again == choice)
    try:
      training.configure_threads(2, 0)
    except training.ConfigError as e:
      print("refused:", e)
""")


def test_threads_are_set_before_tf_starts_and_refused_after():
  proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=str(REPO_ROOT), capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  in_effect = next(line for line in lines if line.startswith("in effect ")).split()[2:]
  expected = next(line for line in lines if line.startswith("expected ")).split()[1:]
  assert in_effect == expected, proc.stdout
  assert "sources flag machine False" in lines
  assert "again True" in lines
  assert "refused: --intra_op_threads=2: TensorFlow has already started with 1" in proc.stdout


@pytest.mark.parametrize("cores,expected", [(1, (1, 1)), (2, (1, 2)), (3, (1, 2)), (4, (2, 2)),
                                            (8, (4, 2)), (64, (32, 2))])
def test_the_automatic_choice_runs_two_ops_side_by_side_on_half_the_cores_each(cores, expected):
  assert threads.automatic_threads(cores) == expected
  intra, inter = expected
  assert intra * inter <= cores  # never more threads busy than cores


def test_the_automatic_choice_needs_a_core():
  with pytest.raises(ValueError, match="cores must be >= 1, got 0"):
    threads.automatic_threads(0)


def test_machine_cores_follow_the_affinity_mask_else_the_cpu_count(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
  assert threads.machine_cores() == 3  # e.g. `taskset -c 0,2,5`, a cgroup cpuset
  monkeypatch.delattr(os, "sched_getaffinity", raising=False)
  monkeypatch.setattr(os, "cpu_count", lambda: 6)
  assert threads.machine_cores() == 6
  monkeypatch.setattr(os, "cpu_count", lambda: None)
  assert threads.machine_cores() == 1


def test_after_tf_started_an_automatic_choice_yields_and_an_explicit_one_is_refused():
  tf.constant(1.0) + 1.0  # TensorFlow runs here (it may already have in this session)
  threading = tf.config.threading
  in_effect = (threading.get_intra_op_parallelism_threads(),
               threading.get_inter_op_parallelism_threads())
  # 64 cores ask for an intra-op pool of 32, which nothing in the tests sets.
  choice = training.configure_threads(0, 0, cores=64)
  assert (choice.intra_op, choice.inter_op) == in_effect
  assert choice.intra_op_source == threads.TENSORFLOW
  assert choice.inter_op_source == (threads.MACHINE if in_effect[1] == 2 else threads.TENSORFLOW)
  assert choice.cores == 64 and choice.automatic
  assert "TensorFlow had already started, so the automatic choice (32, 2) was not applied" in \
      choice.describe()
  with pytest.raises(training.ConfigError, match=r"--intra_op_threads=33: TensorFlow has "
                     r"already started with"):
    training.configure_threads(33, 0)
  with pytest.raises(training.ConfigError, match=r"--inter_op_threads=33: TensorFlow has "):
    training.configure_threads(0, 33, cores=64)


def test_the_record_says_where_each_pool_came_from():
  auto = threads.ThreadChoice(1, 2, threads.MACHINE, threads.MACHINE, cores=2)
  assert auto.record() == {"intra_op": 1, "inter_op": 2, "intra_op_source": "machine",
                           "inter_op_source": "machine", "cores": 2, "automatic": True}
  assert auto.describe() == "intra-op 1, inter-op 2 (automatic for 2 cores)"
  mixed = threads.ThreadChoice(4, 2, threads.FLAG, threads.MACHINE, cores=8)
  assert not mixed.automatic and mixed.record()["automatic"] is False
  assert mixed.describe() == "intra-op 4, inter-op 2 (automatic for 8 cores; from the flags)"
  assert "TensorFlow's default" in threads.ThreadChoice(
      0, 2, threads.TENSORFLOW, threads.MACHINE, cores=2).describe()


def test_the_flags_reach_the_train_config_and_default_to_automatic():
  from vapnev_tf import train  # pylint: disable=g-import-not-at-top
  _, _, train_cfg = train.configs_from_flagfile("configs/smoke.flags", "--intra_op_threads=1",
                                                "--inter_op_threads=2", root=str(REPO_ROOT))
  assert (train_cfg.intra_op_threads, train_cfg.inter_op_threads) == (1, 2)
  model_cfg, data_cfg, auto_cfg = train.configs_from_flagfile("configs/smoke.flags",
                                                              root=str(REPO_ROOT))
  assert (auto_cfg.intra_op_threads, auto_cfg.inter_op_threads) == (threads.AUTO, threads.AUTO)
  # Free fields: a run started automatically resumes with explicit values and back.
  stored = config_run.run_config_dict(model_cfg, data_cfg, auto_cfg)
  requested = config_run.run_config_dict(model_cfg, data_cfg, train_cfg)
  assert config_run.config_differences(stored, requested) == []
  assert config_run.config_differences(requested, stored) == []


def test_a_run_records_the_pools_in_effect_in_config_json(smoke_run):
  workdir, _ = smoke_run
  stored = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  record = stored["threads"]
  threading = tf.config.threading
  # configs/smoke.flags sets neither flag; trained in this process, where TensorFlow may have
  # started before the run (then its pools stay), else the machine's choice was applied.
  assert record["automatic"] is True and record["cores"] == threads.machine_cores()
  assert record["intra_op"] == threading.get_intra_op_parallelism_threads()
  assert record["inter_op"] == threading.get_inter_op_parallelism_threads()
  for name in ("intra_op", "inter_op"):
    assert record[f"{name}_source"] in (threads.MACHINE, threads.TENSORFLOW)
  assert stored["train"]["intra_op_threads"] == stored["train"]["inter_op_threads"] == 0
