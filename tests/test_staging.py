"""Staging directories of interrupted writes: only a dead process's own leftovers are swept."""
import json
import os
import socket
import subprocess
import sys

import pytest

from vapnev_tf import staging

ALLOWED = ("saved_model.pb", "variables", "vapnev_metadata.json")


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  assert not staging.pid_alive(proc.pid)
  return proc.pid


def _leftover(target, pid, entries=("saved_model.pb", "variables"), marker_pid=None,
              host=None):
  """A staging directory as a killed writer `pid` leaves it."""
  suffix = f"{len(os.listdir(os.path.dirname(target))):08x}"  # unique in this directory
  path = f"{target}.tmp-{pid}-{suffix}"
  os.makedirs(path)
  (open(os.path.join(path, staging.STAGING_MARKER), "w")
   .write(json.dumps({"pid": pid if marker_pid is None else marker_pid,
                      "host": socket.gethostname() if host is None else host})))
  for entry in entries:
    if entry == "variables":
      os.makedirs(os.path.join(path, entry))
    else:
      open(os.path.join(path, entry), "w").write("x")
  return path


def test_new_staging_dir_is_named_and_marked_with_this_process(tmp_path):
  path = staging.new_staging_dir(str(tmp_path / "export"))
  assert os.path.basename(path).startswith(f"export.tmp-{os.getpid()}-")
  marker = json.load(open(os.path.join(path, staging.STAGING_MARKER)))
  assert marker == {"pid": os.getpid(), "host": socket.gethostname()}
  assert staging.sweep_stale(str(tmp_path / "export"), ALLOWED) == []  # we are alive
  assert os.path.isdir(path)


def test_sweep_removes_a_dead_processs_leftover_and_keeps_everything_else(tmp_path):
  target = str(tmp_path / "export")
  dead = _dead_pid()
  stale = _leftover(target, dead)
  marker_only = _leftover(target + "2", dead, entries=())  # another target: not ours to sweep
  live = _leftover(target, os.getpid(), entries=("saved_model.pb",))
  foreign = _leftover(target, dead, entries=("saved_model.pb", "notes.txt"))
  other_host = _leftover(target, dead, host="elsewhere.example")
  wrong_marker = _leftover(target, dead, marker_pid=dead + 1)
  no_pid = f"{target}.tmp-abcdef12"  # an unmarked directory with the same prefix
  os.makedirs(no_pid)
  no_marker = f"{target}.tmp-{dead}-feedbeef"
  os.makedirs(no_marker)
  a_file = f"{target}.tmp-{dead}-cafe"
  open(a_file, "w").write("mine")

  assert staging.sweep_stale(target, ALLOWED) == [stale]
  assert not os.path.exists(stale)
  for kept in (marker_only, live, foreign, other_host, wrong_marker, no_pid, no_marker, a_file):
    assert os.path.exists(kept), kept
  assert open(a_file).read() == "mine"


def test_sweep_of_a_missing_parent_or_a_remote_path_does_nothing(tmp_path):
  assert staging.sweep_stale(str(tmp_path / "no" / "such" / "export"), ALLOWED) == []
  assert staging.sweep_stale("gs://bucket/export", ALLOWED) == []


@pytest.mark.parametrize("pid, alive", [(0, False), (-5, False), ("own", True)])
def test_pid_alive(pid, alive):
  assert staging.pid_alive(os.getpid() if pid == "own" else pid) is alive
