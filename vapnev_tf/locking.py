"""An exclusive, crash-safe lock on a run directory.

Training, an evaluation that writes results and an export from a run directory each hold
`WORKDIR/.lock` for as long as they run, so two of them can never interleave their writes
(checkpoints of one run, `best/` or `eval.json` of another).

The lock is an OS advisory lock (`fcntl.flock`) on that file: the kernel releases it when the holding
process exits for any reason, including SIGKILL, so a crash never leaves a lock that blocks the next
run. The file also records who holds it (purpose, pid, host, start time, command line): a process that
finds the lock taken names the holder in its error, and one that takes over after a crash logs the
previous holder as stale. The file itself is never deleted (deleting a lock file races with a process
that has it open); an unlocked `.lock` means nothing.

Re-entrant within one process: a nested `workdir_lock` on the same directory (the training loop's own
end-of-run export) shares the lock already held.

Limits: `flock` is local to a machine (and unreliable on some network file systems); a multi-worker run
locks from its chief only, which is the only worker that writes the run directory. A run directory given
as a URL (`gs://...`) or on a file system without `flock` support is not locked: `log` is told so.
"""
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading

LOCK_FILE = ".lock"

_held = {}  # realpath of the lock file -> [fd, depth]
_held_guard = threading.Lock()


class WorkdirLockedError(RuntimeError):
  """Another process holds the run directory's lock."""


class LockFileError(WorkdirLockedError):
  """The run directory's lock file cannot be opened (a directory, immutable, unwritable), so the
  run directory cannot be locked; a WorkdirLockedError so every CLI reports it in one line."""


def _describe(holder: dict) -> str:
  if not holder:
    return "another process (no holder information)"
  command = holder.get("command") or "?"
  return (f"{holder.get('purpose', '?')} (pid {holder.get('pid', '?')} on host "
          f"{holder.get('host', '?')}, since {holder.get('since', '?')}; command: {command})")


def read_holder(workdir: str) -> dict:
  """What `WORKDIR/.lock` says about its last holder ({} if nothing readable)."""
  try:
    with open(os.path.join(workdir, LOCK_FILE), encoding="utf-8") as f:
      return json.loads(f.read() or "{}")
  except (OSError, ValueError):
    return {}


@contextlib.contextmanager
def workdir_lock(workdir: str, purpose: str, log=None):
  """Holds the exclusive lock of `workdir` (created if missing) for the `with` block.

  Args:
    workdir: the run directory.
    purpose: what the holder does ("training", "evaluation", "export"), shown to others.
    log: optional callable(str) told when a stale lock of a crashed process is taken over.

  Raises:
    WorkdirLockedError: another live process holds the lock; the message names it.
  """
  if "://" in workdir:
    if log is not None:
      log(f"{workdir!r} is a URL: it cannot be locked, so make sure no other process writes it.")
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  filename = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  with _held_guard:
    if filename in _held:
      _held[filename][1] += 1
      nested = True
    else:
      nested = False
  if nested:
    try:
      yield
    finally:
      with _held_guard:
        _held[filename][1] -= 1
    return

  try:
    fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:  # a directory, an immutable, append-only or unwritable file
    raise LockFileError(
        f"workdir {workdir!r}: its lock file {filename} cannot be opened for writing "
        f"({type(e).__name__}: {e.strerror or e}); it must be a regular file this user can "
        "write. Remove or fix it (e.g. rmdir it if it is a directory, chattr -i if immutable, "
        "chattr -a if append-only), or use another --workdir.") from None
  unsupported = None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise WorkdirLockedError(
        f"workdir {workdir!r} is in use by {_describe(read_holder(workdir))}. Wait for it to "
        "finish (or stop it), or use another --workdir.") from None
  except OSError as e:
    os.close(fd)
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
      raise
    unsupported = e
  if unsupported is not None:
    if log is not None:
      log(f"the file system of {workdir!r} does not support locks ({unsupported}): it is not "
          "locked, so make sure no other process writes it.")
    yield
    return
  try:
    previous = read_holder(workdir)
    if previous and log is not None:
      log(f"took over the lock of {workdir!r} from a process that ended without releasing it: "
          f"{_describe(previous)}")
    holder = {"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)}
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
      os.fsync(fd)
    except OSError as e:  # append-only, a full disk, a read-only remount
      raise LockFileError(
          f"workdir {workdir!r}: its lock file {filename} cannot be written "
          f"({type(e).__name__}: {e.strerror or e}); it must be a regular file this user can "
          "write on a disk with free space. Fix it (e.g. chattr -a if append-only), or use "
          "another --workdir.") from None
    with _held_guard:
      _held[filename] = [fd, 1]
    try:
      yield
    finally:
      with _held_guard:
        del _held[filename]
      try:
        os.ftruncate(fd, 0)  # released cleanly: no holder to report
      except OSError:  # the holder record stays; the flock is released all the same
        pass
  finally:
    os.close(fd)  # closing the descriptor releases the flock
