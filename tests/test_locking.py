"""The run-directory lock: exclusive across processes, re-entrant within one, released on any exit."""
import os
import signal
import subprocess
import sys

import pytest

from vapnev_tf import locking

from run_fixtures import LOAD_LOCKING
from run_fixtures import LOCK_HOLDER

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLD = LOCK_HOLDER  # loads locking.py alone: no TensorFlow start-up


def _start_holder(workdir):
  env = dict(os.environ, PYTHONPATH=_REPO)
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir)], stdout=subprocess.PIPE,
                          text=True, env=env)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
  holder = _start_holder(tmp_path)
  try:
    with pytest.raises(locking.WorkdirLockedError) as err:
      with locking.workdir_lock(str(tmp_path), "evaluation"):
        pass
    message = str(err.value)
    assert f"pid {holder.pid}" in message and "training" in message and str(tmp_path) in message
  finally:
    holder.kill()
    holder.wait()


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over_and_reported(tmp_path):
  holder = _start_holder(tmp_path)
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  told = []
  with locking.workdir_lock(str(tmp_path), "training", log=told.append):
    assert locking.read_holder(str(tmp_path))["pid"] == os.getpid()
  assert len(told) == 1 and f"pid {holder.pid}" in told[0]
  # Released cleanly: the next holder has nothing stale to report.
  told.clear()
  with locking.workdir_lock(str(tmp_path), "training", log=told.append):
    pass
  assert not told and locking.read_holder(str(tmp_path)) == {}


def test_the_lock_is_reentrant_within_a_process_and_released_at_the_end(tmp_path):
  with locking.workdir_lock(str(tmp_path), "training"):
    with locking.workdir_lock(str(tmp_path), "export"):
      assert locking.read_holder(str(tmp_path))["purpose"] == "training"
    # still held by the outer block: another process is refused
    probe = subprocess.run(
        [sys.executable, "-c", LOAD_LOCKING + "import sys\n"
         "try:\n  locking.workdir_lock(sys.argv[1], 'x').__enter__()\nexcept "
         "locking.WorkdirLockedError:\n  sys.exit(3)", str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=_REPO), timeout=60)
    assert probe.returncode == 3
  with locking.workdir_lock(str(tmp_path), "evaluation"):
    pass


def test_a_lock_file_that_cannot_be_opened_is_one_clear_error(tmp_path):
  (tmp_path / locking.LOCK_FILE).mkdir()  # e.g. created by mistake as a directory
  with pytest.raises(locking.WorkdirLockedError, match=r"its lock file .*\.lock cannot be opened "
                                                       r"for writing \(IsADirectoryError"):
    with locking.workdir_lock(str(tmp_path), "training"):
      pass


def test_an_unwritable_lock_path_is_one_line_naming_it(tmp_path, monkeypatch):
  """A read-only directory (no lock file yet) or an immutable lock file: open() is refused."""
  filename = str(tmp_path / locking.LOCK_FILE)
  real_open = os.open

  def refuse(path, *args, **kwargs):
    if os.fspath(path) == filename:
      raise PermissionError(13, "Permission denied", path)
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(os, "open", refuse)
  with pytest.raises(locking.LockFileError) as err:
    with locking.workdir_lock(str(tmp_path), "training"):
      pytest.fail("the lock must not be taken")
  message = str(err.value)
  assert "\n" not in message and filename in message
  assert "cannot be opened for writing (PermissionError: Permission denied)" in message


@pytest.mark.parametrize("fails", ["ftruncate", "pwrite", "fsync"])
def test_a_lock_file_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch, fails):
  """An append-only lock file, a full disk: the holder record cannot be written."""
  def refuse(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, fails, refuse)
  with pytest.raises(locking.LockFileError) as err:
    with locking.workdir_lock(str(tmp_path), "training"):
      pytest.fail("the lock must not be taken")
  monkeypatch.undo()
  message = str(err.value)
  assert "\n" not in message and str(tmp_path / locking.LOCK_FILE) in message
  assert "cannot be written (OSError: No space left on device)" in message
  with locking.workdir_lock(str(tmp_path), "training"):  # released: the next one takes it
    assert locking.read_holder(str(tmp_path))["pid"] == os.getpid()
