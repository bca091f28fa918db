"""The console of the command-line tools: quiet TensorFlow, one line per event, a live progress
line on a terminal, usage errors as one line.

    quiet_tensorflow_imports()   # vapnev_tf/__init__.py, before anything imports TensorFlow
    run_cli(main, "vapnev_tf.train")   # every CLI: app.run with one-line usage errors
    live.update("step 10/800 | ...")   # redrawn in place with \\r when stderr is a terminal

By default TensorFlow's C++ log (TF_CPP_MIN_LOG_LEVEL=3: the oneDNN/CUDA/cpu_feature banners,
`failed call to cuInit` on machines without a GPU, tf.data notes), the lines its shared libraries
print while they load (before absl::InitializeLog: they are written to stderr unconditionally, so
stderr is pointed at /dev/null while vapnev_tf imports TensorFlow, TFP and Keras), its Python
logger (below ERROR) and the Python warnings of TensorFlow/TFP/Keras are off. GPUs are not hidden:
only log levels change. `VAPNEV_TF_LOGS=all` (environment) turns all of this off: TensorFlow logs
as it always does and absl's long log-line prefix comes back. A TF_CPP_MIN_LOG_LEVEL set by the
user is kept.
"""
import contextlib
import logging as std_logging
import math
import os
import sys
import time
import warnings

ENV_VAR = "VAPNEV_TF_LOGS"
# TF_CPP_MIN_LOG_LEVEL 3 = FATAL only: also hides the E-level `failed call to cuInit` (a machine
# without a GPU is not an error here). Errors that matter reach Python as exceptions.
TF_CPP_LEVEL = "3"
_NOISY_MODULES = r"(tensorflow|tensorflow_probability|tf_keras|keras|absl|google\.protobuf)(\.|$)"


def tf_logs_wanted() -> bool:
  """Whether the user asked for TensorFlow's own logs (VAPNEV_TF_LOGS=all|1|on|true)."""
  return os.environ.get(ENV_VAR, "").strip().lower() in ("all", "1", "on", "true", "yes")


@contextlib.contextmanager
def _stderr_fd_silenced():
  """Points file descriptor 2 at /dev/null for the block (C++ writes), then restores it."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
    yield
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


@contextlib.contextmanager
def quiet_tensorflow_imports():
  """Wrap the package's first TensorFlow/TFP/Keras imports (vapnev_tf/__init__.py).

  Sets TF_CPP_MIN_LOG_LEVEL (unless set) and silences stderr's file descriptor while the block
  imports TensorFlow for the first time; Python exceptions still propagate (and print after the
  block). Does nothing with VAPNEV_TF_LOGS=all or when TensorFlow is already imported.
  """
  if tf_logs_wanted() or "tensorflow" in sys.modules:
    yield
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_CPP_LEVEL)
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", module=_NOISY_MODULES)
    with _stderr_fd_silenced():
      yield


class _ConsoleFormatter(std_logging.Formatter):
  """`HH:MM:SS message`; warnings and errors say so: `HH:MM:SS WARNING: message`."""

  def format(self, record):
    text = record.getMessage()
    if record.exc_info:
      text += "\n" + self.formatException(record.exc_info)
    level = "" if record.levelno < std_logging.WARNING else f"{record.levelname}: "
    return f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {level}{text}"


_LIBRARY_DIRS = ("/tensorflow/", "/tensorflow_probability/", "/keras/", "/tf_keras/")


class _ConsoleFilter(std_logging.Filter):
  """On absl's handler: drops the INFO lines that TensorFlow/TFP/Keras log through absl (e.g.
  "Sharding callback duration" at every checkpoint; not with `keep_library_info`), and erases the
  live progress line before a line that is written."""

  def __init__(self, keep_library_info: bool):
    super().__init__()
    self.keep_library_info = keep_library_info

  def filter(self, record):
    path = (record.pathname or "").replace(os.sep, "/")
    if (not self.keep_library_info and record.levelno < std_logging.WARNING
        and any(d in path for d in _LIBRARY_DIRS)):
      return False
    live.clear()
    return True


def setup_cli_logging() -> None:
  """The CLIs' Python logging: TensorFlow's logger at ERROR, TF/TFP/Keras warnings off, absl's
  lines as `HH:MM:SS message`. Call after flags are parsed (absl's handler exists then); with
  VAPNEV_TF_LOGS=all only the live-line eraser is installed."""
  # Deferred, like every import here: this module runs before TensorFlow and absl are loaded.
  from absl import logging  # pylint: disable=g-import-not-at-top
  handler = logging.get_absl_handler()
  for old in [f for f in handler.filters if isinstance(f, _ConsoleFilter)]:
    handler.removeFilter(old)
  handler.addFilter(_ConsoleFilter(keep_library_info=tf_logs_wanted()))
  if tf_logs_wanted():
    return
  warnings.filterwarnings("ignore", module=_NOISY_MODULES)
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  # Deferred: TensorFlow's first import must happen inside `quiet_tensorflow_imports`.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel(std_logging.ERROR)
  std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
  handler.setFormatter(_ConsoleFormatter())


class LiveLine:
  """One status line redrawn in place (`\\r`, erase to end of line) when `stream` is a terminal.

  `update(text)` redraws at most every `interval` seconds (`force=True`: now); `clear()` erases
  it (log lines call it through the absl handler's filter). On a non-terminal `enabled` is False
  and nothing is ever written: callers then log plain periodic lines instead.
  """

  def __init__(self, stream=None, interval: float = 0.25, enabled: bool | None = None):
    self._stream, self.interval = stream, interval
    self._enabled = enabled
    self._shown = False
    # Never drawn yet: the first update is due whatever the monotonic clock reads (it may start
    # near 0 at boot, less than `interval` ago).
    self._last = -math.inf

  @property
  def stream(self):
    return self._stream or sys.stderr

  @property
  def enabled(self) -> bool:
    if self._enabled is not None:
      return self._enabled
    try:
      return self.stream.isatty()
    except (AttributeError, ValueError):
      return False

  def due(self) -> bool:
    """Whether an `update` now would redraw (lets callers skip formatting the line)."""
    return self.enabled and time.monotonic() - self._last >= self.interval

  def update(self, text: str, force: bool = False) -> None:
    if not self.enabled or not (force or self.due()):
      return
    self._last = time.monotonic()
    self.stream.write("\r" + text + "\x1b[K")
    self.stream.flush()
    self._shown = True

  def clear(self) -> None:
    if self._shown:
      self.stream.write("\r\x1b[K")
      self.stream.flush()
      self._shown = False


live = LiveLine()


def format_duration(seconds: float) -> str:
  """`1h02m03s` / `2m03s`; `?` for an unknown (infinite or NaN) duration."""
  if not seconds == seconds or seconds == float("inf"):
    return "?"
  seconds = int(max(0, seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def hint(prog: str) -> str:
  return f"Try `python -m {prog} --help` for its flags (--helpfull: every flag)."


FLAG_ERROR = "FATAL Flags parsing error"  # absl's own words for a flag it cannot parse


def usage_error(prog: str, message: str, exitcode: int = 1, kind: str = "error") -> None:
  """Prints `prog: kind: message` and the --help hint to stderr (two lines) and exits."""
  live.clear()
  message = " ".join(str(message).split())  # one line, whatever absl's message looks like
  print(f"{prog}: {kind}: {message}\n{hint(prog)}", file=sys.stderr, flush=True)
  sys.exit(exitcode)


def run_cli(main, prog: str) -> None:
  """`absl.app.run(main)` whose usage errors print one line plus a hint instead of the whole
  --help, exit 1: `prog: FATAL Flags parsing error: ...` (unknown flag, bad value, missing
  required flag; absl's words) or `prog: error: ...` (`app.UsageError` from `main`).
  Sets up the console (`setup_cli_logging`) once the flags are parsed."""
  # Deferred: this module runs before absl is loaded (`vapnev_tf/__init__.py`).
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      usage_error(prog, e, kind=FLAG_ERROR)

  def wrapped(argv):
    setup_cli_logging()
    try:
      return main(argv)
    except app.UsageError as e:
      usage_error(prog, e, e.exitcode)
    finally:
      live.clear()

  app.run(wrapped, flags_parser=parse)
