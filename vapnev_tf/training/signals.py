"""SIGTERM/SIGINT during training: finish the current step, checkpoint, stop.

    with signals.make_stop_request(strategy) as stop:
      ...
      interrupted = stop.check(step, save)   # before every step; save(step) -> checkpoint path

One process (OneDevice/Mirrored, or a one-worker cluster): `StopRequest`, the signal handler sets
`received` and `check` returns it; the loop then saves and stops.

Several workers (MultiWorkerMirroredStrategy with a cluster): `ClusterStopRequest`. A worker
that stopped on its own would leave the others waiting in the next collective, so the stop is
agreed on with TensorFlow's own `tf.distribute.experimental.PreemptionCheckpointHandler`: its
termination watcher polls this process's `received` (set by the same signal handlers); the first
worker with a notice publishes, through the cluster's coordination service, the step after
which every worker saves; at that step every worker's `check` saves the checkpoint (a collective
save: the chief into the run directory, the others into their temporary directories) and
returns SIGTERM, so every worker stops at the same step and exits with 128 + 15. Restarting all
workers resumes from that checkpoint. A notice that arrives after the last training step is
ignored (the run finishes).
"""
import shutil
import signal
import tempfile
import threading

from absl import logging
import tensorflow as tf


class StopRequest:
  """SIGTERM/SIGINT set `received` (the signal number) that the loop polls; the loop then
  checkpoints and stops.

  A second SIGINT while stopping raises KeyboardInterrupt (the usual way out of a stuck run).
  Handlers are installed only in the main thread and restored on exit.
  """
  coordinated = False  # whether the stop is agreed on with other worker processes

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = signals
    self.received = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = signum
    logging.warning("Received %s: will checkpoint and stop after the current step.",
                    signal.Signals(signum).name)

  def check(self, step: int, save) -> int | None:
    """Before a step (`step` steps done): the signal to stop for, or None to go on. `save`
    (`save(step) -> path`) is for coordinated stops, which save here; the loop saves otherwise."""
    del step, save
    return self.received

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False


class _Preempted(Exception):
  """Raised by the handler's exit_fn: the agreed checkpoint is saved, stop the loop."""


class ClusterStopRequest(StopRequest):
  """A stop agreed on by every worker (module docstring), through
  `tf.distribute.experimental.PreemptionCheckpointHandler`.

  How the handler is used: `termination_watcher_fn` polls `received` (this class's signal
  handlers, so SIGINT counts too and TF installs no SIGTERM handler of its own); `save_fn` is the
  run's own `Checkpoints.save(step)` (max_to_keep, best/, non-chief temporary directories
  unchanged); `exit_fn` raises, so the loop returns normally and the CLI exits with 128 + 15;
  `grace_period=0` (save at the agreed step, then stop). The handler counts its calls
  (`save_checkpoint_if_preempted`, one per step) from 0 in every process, so its step numbers
  agree across workers; it is given a checkpoint manager of its own over an empty directory, so
  it neither restores nor tracks anything in the run's checkpoints (the run restored them).
  """
  coordinated = True

  def __init__(self, strategy: tf.distribute.Strategy):
    super().__init__()
    self._strategy, self._handler, self._save, self._scratch = strategy, None, None, None

  def __enter__(self):
    super().__enter__()
    self._scratch = tempfile.mkdtemp(prefix="vapnev_preemption_")
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(), self._scratch, max_to_keep=1)
    config = tf.distribute.experimental.TerminationConfig(
        termination_watcher_fn=lambda: self.received is not None,
        exit_fn=self._exit, grace_period=0, save_fn=self._save_now)
    self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
        self._strategy.cluster_resolver, manager, termination_config=config)
    if not hasattr(self._handler, "_received_own_sigterm"):
      # TF's handler does nothing on GCE CPU/TPU VMs (it says so in a warning): stop like one
      # process rather than never.
      logging.warning("PreemptionCheckpointHandler is inactive on this platform: a signal stops "
                      "only the worker that receives it.")
      self._handler = None
    return self

  def _save_now(self):
    path = self._save()
    logging.warning("A worker received a termination notice: every worker checkpointed at this "
                    "step (%s) and stops.", path)

  def _exit(self):
    raise _Preempted()

  def check(self, step: int, save) -> int | None:
    if self._handler is None:
      return self.received
    self._save = lambda: save(step)
    try:
      self._handler.save_checkpoint_if_preempted()
    except _Preempted:
      return self.received or signal.SIGTERM
    return None

  def __exit__(self, *exc):
    handler, self._handler = self._handler, None
    if handler is not None:  # stop its watcher threads now, not at garbage collection
      for stop in ("_stop_cluster_wise_termination_watcher_thread",
                   "_stop_poll_termination_signal_thread"):
        try:
          getattr(handler, stop, lambda: None)()
        except Exception as e:  # pylint: disable=broad-except
          logging.debug("PreemptionCheckpointHandler clean-up: %s", e)
    if self._scratch:
      shutil.rmtree(self._scratch, ignore_errors=True)
    return super().__exit__(*exc)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
  """Whether `strategy` spans several worker processes (a cluster with more than one task)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
    return False
  spec = resolver.cluster_spec().as_dict()
  return sum(len(tasks) for tasks in spec.values()) > 1


def make_stop_request(strategy: tf.distribute.Strategy | None = None) -> StopRequest:
  """`ClusterStopRequest` for a multi-worker run, else the one-process `StopRequest`."""
  if strategy is not None and is_multi_worker(strategy):
    return ClusterStopRequest(strategy)
  return StopRequest()
