"""SIGTERM/SIGINT as an exception, for work that must clean up after itself when stopped.

    with interrupts.raising("the final evaluation and export"):
      ...                      # a signal raises Interrupted here; `finally` blocks run

Outside such a block the default handlers apply (SIGTERM ends the process at once, without
running `finally` blocks, so a half-written export directory would stay behind). Handlers are
installed only in the main thread and restored on exit.
"""
import contextlib
import signal
import threading


class Interrupted(Exception):
  """A SIGTERM/SIGINT stopped `what`; `signum` is the signal (exit with 128 + signum)."""

  def __init__(self, signum: int, what: str):
    super().__init__(f"stopped by {signal.Signals(signum).name} during {what}")
    self.signum, self.what = signum, what


@contextlib.contextmanager
def raising(what: str, signals=(signal.SIGTERM, signal.SIGINT)):
  """Inside the block, the first of `signals` raises `Interrupted(signum, what)`."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handle(signum, frame):
    del frame
    raise Interrupted(signum, what)

  previous = {s: signal.signal(s, handle) for s in signals}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
