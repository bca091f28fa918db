"""Where a multi-worker run learns its cluster: TF_CONFIG, or Slurm's environment.

    TF_CONFIG set            TFConfigClusterResolver (Kubeflow's TFJob controller, Vertex AI and
                             hand-written launchers set it for every task)
    Slurm job step, no       SlurmClusterResolver: the hosts come from SLURM_STEP_NODELIST, this
    TF_CONFIG                task's rank from SLURM_PROCID, one worker per Slurm task
    neither                  ConfigError naming both ways

Recipes that use each path are in `docs/cluster.md` and `configs/cluster/`.

Before the strategy is created, `wait_for_peers` waits (with a console line saying for whom and
since when) until every other task's host:port accepts a TCP connection, at most
`--peer_timeout_seconds`; SIGTERM/SIGINT end the wait at once. TensorFlow's own wait for a
missing peer is silent, unbounded and deaf to signals.
"""
import datetime
import json
import os
import shutil
import signal
import socket
import threading
import time

from absl import logging

import tensorflow as tf
# The public resolver parses Slurm's "2(x3),1" task counts with this helper; reuse it, not a copy.
from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (  # pylint: disable=g-direct-tensorflow-import
    expand_tasks_per_node)

from vapnev_tf.errors import ConfigError

SLURM_PORT_BASE = 8888  # first port of the Slurm workers (one per task on a node, counting up)
SLURM_PORT_BASE_ENV = "VAPNEV_SLURM_PORT_BASE"  # overrides SLURM_PORT_BASE
_SLURM_VARS = ("SLURM_PROCID", "SLURM_STEP_NODELIST", "SLURM_STEP_NUM_TASKS",
               "SLURM_STEP_TASKS_PER_NODE")


def in_slurm_step() -> bool:
  """Whether this process is a task of a Slurm job step (`srun`)."""
  return all(os.environ.get(name) for name in _SLURM_VARS)


def _slurm_resolver():
  """SlurmClusterResolver, one worker per Slurm task.

  TF's resolver gives each task of a node a port offset and a GPU range; with no GPU it would give
  the node no task at all (it zips the tasks with the node's GPUs). On CPU-only nodes each task is
  therefore given one nominal device slot for that bookkeeping, and CUDA_VISIBLE_DEVICES is left
  alone.
  """
  resolver_cls = tf.distribute.cluster_resolver.SlurmClusterResolver
  num_tasks = _env_int("SLURM_STEP_NUM_TASKS", 1)
  procid = _env_int("SLURM_PROCID", 0)
  if procid >= num_tasks:
    raise ConfigError(f"SLURM_PROCID={procid} is not a task of the job step's "
                      f"SLURM_STEP_NUM_TASKS={num_tasks} (0..{num_tasks - 1}).")
  port_base = _env_int(SLURM_PORT_BASE_ENV, 1, str(SLURM_PORT_BASE))
  has_gpus = bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or shutil.which("nvidia-smi")
  if has_gpus:
    return resolver_cls(jobs={"worker": num_tasks}, port_base=port_base)
  tasks_per_node = expand_tasks_per_node(os.environ["SLURM_STEP_TASKS_PER_NODE"])
  return resolver_cls(jobs={"worker": num_tasks}, port_base=port_base,
                      gpus_per_node=max(tasks_per_node), gpus_per_task=1, auto_set_gpu=False)


def _env_int(name: str, minimum: int, default: str | None = None) -> int:
  """The environment variable `name` as an int >= `minimum`; ConfigError naming it otherwise."""
  raw = os.environ.get(name, default)
  try:
    value = int(str(raw).strip())
  except ValueError:
    value = None
  if value is None or value < minimum:
    raise ConfigError(f"{name}={raw!r} is not an integer >= {minimum}.")
  return value


# The task types of a MultiWorkerMirroredStrategy cluster; "ps" belongs to
# ParameterServerStrategy and "evaluator" runs outside the collective, neither trains here.
_TRAINING_TASK_TYPES = ("chief", "worker")


def _check_tf_config_task(parsed: dict, raw: str) -> None:
  """ConfigError unless TF_CONFIG's task is a chief/worker listed in its cluster."""
  cluster_spec, task = parsed["cluster"], parsed["task"]
  if not isinstance(cluster_spec, dict) or not isinstance(task, dict):
    raise ConfigError(f"TF_CONFIG's 'cluster' and 'task' must be objects, got {raw!r}.")
  task_type, index = task.get("type"), task.get("index", 0)
  if task_type not in _TRAINING_TASK_TYPES:
    raise ConfigError(f"TF_CONFIG task type {task_type!r} cannot train with "
                      f"strategy=multi_worker (MultiWorkerMirroredStrategy): expected one of "
                      f"{_TRAINING_TASK_TYPES}.")
  for job, entries in cluster_spec.items():
    if job not in _TRAINING_TASK_TYPES:
      raise ConfigError(f"TF_CONFIG's cluster has a {job!r} job, which MultiWorkerMirroredStrategy"
                        f" does not use: list only {_TRAINING_TASK_TYPES} tasks.")
  tasks = cluster_spec.get(task_type)
  count = len(tasks) if isinstance(tasks, (list, dict)) else 0
  if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
    raise ConfigError(f"TF_CONFIG task {task_type} index {index!r} is not in the cluster, whose "
                      f"{task_type!r} job has {count} task(s) (indices 0..{count - 1}).")


def cluster_resolver() -> tf.distribute.cluster_resolver.ClusterResolver:
  """The resolver of this task's cluster, from TF_CONFIG or else Slurm; ConfigError if neither."""
  raw = os.environ.get("TF_CONFIG")
  if raw:
    try:
      parsed = json.loads(raw)
    except json.JSONDecodeError as e:
      raise ConfigError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}.") from e
    if not isinstance(parsed, dict) or "cluster" not in parsed or "task" not in parsed:
      raise ConfigError(f"TF_CONFIG must hold 'cluster' and 'task', got {raw!r}.")
    _check_tf_config_task(parsed, raw)
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()
  if in_slurm_step():
    try:
      resolver = _slurm_resolver()
      resolver.cluster_spec()  # parses the node list and task counts now, not mid-start-up
    except ConfigError:
      raise
    # TF's resolver fails on bad values in many ways (ValueError, IndexError, KeyError...).
    except Exception as e:  # pylint: disable=broad-except
      shown = ", ".join(f"{n}={os.environ.get(n)!r}" for n in _SLURM_VARS + (SLURM_PORT_BASE_ENV,)
                        if os.environ.get(n) is not None)
      raise ConfigError(f"the Slurm environment does not describe a cluster ({shown}): "
                        f"{type(e).__name__}: {e}. Start the workers with srun inside a Slurm "
                        "job, or set TF_CONFIG instead (see docs/cluster.md).") from None
    return resolver
  raise ConfigError(
      "strategy='multi_worker' needs a cluster: set TF_CONFIG (the cluster spec and this task), "
      "e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:port\", \"host2:port\"]}, \"task\": "
      "{\"type\": \"worker\", \"index\": 0}}', or start every worker with srun inside a Slurm job "
      "(see docs/cluster.md).")


# ----------------------------------------------------------------------------- waiting for peers

PEER_TIMEOUT_SECONDS = 600  # default of --peer_timeout_seconds


class PeersUnavailableError(ConfigError):
  """Some tasks of the cluster did not accept a connection within the peer timeout."""


class PeerWaitInterrupted(Exception):
  """SIGTERM/SIGINT arrived while waiting for the cluster's peers; `signum` is the signal."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


def _tasks(resolver) -> dict:
  """{"worker0": "host:port", ...}: every task of `resolver`'s cluster spec."""
  tasks = {}
  for job, entries in resolver.cluster_spec().as_dict().items():
    items = entries.items() if isinstance(entries, dict) else enumerate(entries)
    for index, address in items:
      tasks[f"{job}{index}"] = address
  return tasks


def own_task(resolver) -> str | None:
  """This task's name in `_tasks` ("worker0"), None outside a cluster."""
  if not resolver.task_type:
    return None
  return f"{resolver.task_type}{int(resolver.task_id or 0)}"


def _host_port(address: str) -> tuple:
  host, sep, port = str(address).rpartition(":")
  if not sep or not port.isdigit():
    raise ConfigError(f"cluster address {address!r} is not host:port.")
  return host.strip("[]") or "localhost", int(port)


def _reachable(address: str, timeout: float) -> bool:
  try:
    with socket.create_connection(_host_port(address), timeout=max(timeout, 0.05)):
      return True
  except OSError:
    return False


def _listen(address: str):
  """A TCP listener on `address`'s port, so that peers waiting for this task see it; closed
  before the strategy starts TensorFlow's server on the same port."""
  host, port = _host_port(address)
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind(("", port))
    sock.listen(64)
  except OSError as e:
    sock.close()
    raise ConfigError(f"this task's cluster address {address} cannot be served: port {port} on "
                      f"{host} is unavailable ({e.strerror or e}); another process uses it, or "
                      "the address is not this machine's.") from e
  return sock


def wait_for_peers(peers: dict, timeout_seconds: float, *, own_address: str | None = None,
                   poll_seconds: float = 0.5, report_every_seconds: float = 30.0) -> None:
  """Returns once every address of `peers` ({name: "host:port"}) accepts a TCP connection.

  While waiting, logs which peers are missing and since when (then every
  `report_every_seconds`), and listens on `own_address` (this task's port) so the peers' own
  waits see this task. SIGTERM/SIGINT (handlers installed in the main thread for the wait only)
  end the wait within `poll_seconds`.

  Raises:
    PeersUnavailableError: after `timeout_seconds`, naming the missing peers.
    PeerWaitInterrupted: on SIGTERM/SIGINT.
    ConfigError: a bad address, or `own_address`'s port cannot be listened on.
  """
  if isinstance(timeout_seconds, bool) or not timeout_seconds > 0:
    raise ConfigError(f"peer_timeout_seconds must be > 0, got {timeout_seconds!r}.")
  missing = {name: address for name, address in sorted(peers.items())
             if not _reachable(address, min(1.0, poll_seconds))}
  if not missing:
    return
  received, previous = [], {}
  if threading.current_thread() is threading.main_thread():
    for s in (signal.SIGTERM, signal.SIGINT):
      previous[s] = signal.signal(s, lambda signum, frame: received.append(signum))
  listener = _listen(own_address) if own_address else None
  start = time.monotonic()
  since = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S UTC")
  shown = lambda: ", ".join(f"{n} ({a})" for n, a in missing.items())
  logging.warning("Waiting for %d peer(s) of the cluster to accept connections: %s; since %s, "
                  "giving up after %g s (--peer_timeout_seconds).", len(missing), shown(), since,
                  timeout_seconds)
  last_report = start
  try:
    while True:
      if received:
        name = signal.Signals(received[0]).name
        raise PeerWaitInterrupted(received[0], f"stopped by {name} while waiting for peer(s) "
                                  f"{shown()} (since {since}); nothing was started or written.")
      elapsed = time.monotonic() - start
      if elapsed >= timeout_seconds:
        raise PeersUnavailableError(
            f"gave up after {timeout_seconds:g} s (--peer_timeout_seconds) waiting for peer(s) "
            f"{shown()} of the multi-worker cluster, unreachable since {since}. Start every "
            "worker of the cluster (same TF_CONFIG cluster, each its own task), check the "
            "hosts and ports, or raise --peer_timeout_seconds.")
      time.sleep(min(poll_seconds, max(timeout_seconds - elapsed, 0.0)))
      missing = {n: a for n, a in missing.items() if not _reachable(a, min(1.0, poll_seconds))}
      if not missing:
        logging.warning("Every peer of the cluster is reachable (after %.0f s).",
                        time.monotonic() - start)
        return
      if time.monotonic() - last_report >= report_every_seconds:
        last_report = time.monotonic()
        logging.warning("Still waiting for peer(s) %s (since %s, %.0f of %g s).", shown(), since,
                        last_report - start, timeout_seconds)
  finally:
    if listener is not None:
      listener.close()
    for s, handler in previous.items():
      signal.signal(s, handler)


def wait_for_cluster(resolver, timeout_seconds: float) -> None:
  """`wait_for_peers` for every task of `resolver`'s cluster but this one."""
  tasks = _tasks(resolver)
  own = own_task(resolver)
  if own is not None and own not in tasks:
    raise ConfigError(f"this task ({resolver.task_type} {resolver.task_id}) is not in the "
                      f"cluster ({', '.join(sorted(tasks)) or 'no tasks'}).")
  peers = {name: address for name, address in tasks.items() if name != own}
  wait_for_peers(peers, timeout_seconds, own_address=tasks.get(own))
