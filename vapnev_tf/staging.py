"""Staging directories next to a target, and the sweep of those left by dead processes.

    staging = new_staging_dir(target, allowed)  # TARGET.tmp-PID-HEX with its marker file
    ... write into `staging`, rename it to `target` ...
    sweep_stale(target, allowed)                # before the next write to the same target

A writer stages into `TARGET.tmp-<pid>-<hex>` and renames it into place; a SIGKILL between the
two leaves the staging directory behind. Each one starts with the marker `STAGING_MARKER`
({"pid", "host"}) so that a later writer can tell its own kind of leftover from anything else.
`sweep_stale` removes a sibling `TARGET.tmp-*` only when all of these hold:
  * its name carries a pid and its marker names the same pid and this host;
  * that process is not alive (a live one may still be writing);
  * it holds nothing but the marker and the entries the writer writes (`allowed`).
Anything else with the same prefix (a live writer's, another host's, a directory with other
content, a file) is left as it is. Only local paths are swept (a pid means nothing remotely).
"""
import json
import os
import shutil
import socket
import uuid

STAGING_MARKER = ".vapnev_staging"


def _is_local(path: str) -> bool:
  return "://" not in path


def staging_prefix(target: str) -> str:
  """`TARGET.tmp-`: every staging directory of `target` starts with it."""
  return f"{target.rstrip('/')}.tmp-"


def new_staging_dir(target: str) -> str:
  """Creates `TARGET.tmp-<pid>-<hex>` holding the marker; returns its path."""
  path = f"{staging_prefix(target)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
  if _is_local(path):
    os.makedirs(path)
    with open(os.path.join(path, STAGING_MARKER), "w", encoding="utf-8") as f:
      json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
  return path


def pid_alive(pid: int) -> bool:
  """Whether a process `pid` exists on this host (one we may not signal counts as alive)."""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _stale_owner(path: str, name_pid: str, allowed: set) -> bool:
  """True if `path` is a staging directory of a dead process on this host holding only
  `allowed` entries and the marker."""
  if not name_pid.isdigit() or not os.path.isdir(path) or os.path.islink(path):
    return False
  try:
    with open(os.path.join(path, STAGING_MARKER), encoding="utf-8") as f:
      marker = json.load(f)
    entries = set(os.listdir(path))
  except (OSError, ValueError):
    return False
  if (not isinstance(marker, dict) or marker.get("pid") != int(name_pid)
      or marker.get("host") != socket.gethostname()):
    return False
  if not entries <= set(allowed) | {STAGING_MARKER}:
    return False
  return not pid_alive(int(name_pid))


def sweep_stale(target: str, allowed) -> list[str]:
  """Removes the staging directories of `target` left by dead processes (module docstring);
  returns the paths removed. Errors while removing one leave it (the next sweep retries)."""
  prefix = staging_prefix(target)
  if not _is_local(prefix):
    return []
  parent, base = os.path.split(os.path.abspath(prefix))
  try:
    names = os.listdir(parent)
  except OSError:
    return []
  removed = []
  for name in sorted(names):
    if not name.startswith(base):
      continue
    path = os.path.join(parent, name)
    if _stale_owner(path, name[len(base):].split("-", 1)[0], set(allowed)):
      try:
        shutil.rmtree(path)
      except OSError:
        continue
      removed.append(path)
  return removed
