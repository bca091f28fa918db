"""`--intra_op_threads` / `--inter_op_threads` (docs/results.md, Per-op overhead): set before
TensorFlow starts, refused with the flag's name once it has started with other values."""
import os
import pathlib
import subprocess
import sys
import textwrap

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import tensorflow as tf
    from vapnev_tf import training
    training.configure_threads(1, 2)
    tf.constant(1.0) + 1.0  # TensorFlow starts here
    threading = tf.config.threading
    print("in effect", threading.get_intra_op_parallelism_threads(),
          threading.get_inter_op_parallelism_threads())
    training.configure_threads(1, 2)  # the values in effect: accepted
    try:
      training.configure_threads(2, 2)
    except training.ConfigError as e:
      print("refused:", e)
""")


def test_threads_are_set_before_tf_starts_and_refused_after():
  proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=str(REPO_ROOT), capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "in effect 1 2" in proc.stdout
  assert "refused: --intra_op_threads=2: TensorFlow has already started with 1" in proc.stdout


def test_the_flags_reach_the_train_config():
  from vapnev_tf import train  # pylint: disable=g-import-not-at-top
  _, _, train_cfg = train.configs_from_flagfile("configs/smoke.flags", "--intra_op_threads=1",
                                                "--inter_op_threads=2", root=str(REPO_ROOT))
  assert (train_cfg.intra_op_threads, train_cfg.inter_op_threads) == (1, 2)
