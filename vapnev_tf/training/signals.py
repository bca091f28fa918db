"""SIGTERM/SIGINT during training: finish the current step, checkpoint, stop."""
import signal
import threading

from absl import logging


class StopRequest:
  """SIGTERM/SIGINT set `received` (the signal number) that the loop polls; the loop then
  checkpoints and stops.

  A second SIGINT while stopping raises KeyboardInterrupt (the usual way out of a stuck run).
  Handlers are installed only in the main thread and restored on exit.
  """

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

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False
