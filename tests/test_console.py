"""The console of the CLIs (`vapnev_tf.console`): no TensorFlow boilerplate, small training and
export output, one-line usage errors, the live progress line on a terminal, VAPNEV_TF_LOGS=all,
and flags.txt holding the run's own flags. The CLI processes start together when the session's
tests are collected (`console_jobs`, tests/conftest.py)."""
import contextlib
import io
import pathlib
import re
import subprocess

from absl import app
from absl import flags
import pytest

from vapnev_tf import console
from vapnev_tf import train as train_cli
from vapnev_tf.training import reporting

import run_fixtures

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 300
# Lines TensorFlow, absl and Keras print that a user did not ask for.
BOILERPLATE = re.compile(
    r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN|cpu_feature_guard|cudart_stub|"
    r"rebuild TensorFlow|INFO:tensorflow|Sharding callback|input_\d+|Traceback", re.MULTILINE)
MAX_TRAIN_BYTES = 4000  # the whole smoke training (2 evaluations, export, figures)


def _wait(job):
  proc, log = job
  try:
    proc.wait(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    pytest.fail(f"timed out; log:\n{log.read_text()[-3000:]}")
  return proc.returncode, log.read_text()


USAGE_ERRORS = run_fixtures.CONSOLE_USAGE_ERRORS
IN_PROCESS_USAGE_ERRORS = {  # the same console path, on the training CLI's flags in this process
    "train_unknown_flag": (["vapnev_tf.train", "--workdir=/tmp/x", "--bacth_size=4"],
                           "Unknown command line flag 'bacth_size'"),
    "train_missing_workdir": (["vapnev_tf.train", "--flagfile=configs/smoke.flags"],
                              "--workdir"),
    "train_positional": (["vapnev_tf.train", "--flagfile=configs/smoke.flags", "--workdir=/tmp/x",
                          "extra"], "Unexpected arguments: ['extra']"),
}


def _assert_one_line_and_a_hint(prog, expected, log):
  lines = log.splitlines()
  assert len(lines) == 2, log[-3000:]  # not the 180-line --help
  assert lines[0].startswith((f"{prog}: error: ", f"{prog}: FATAL Flags parsing error: "))
  assert expected in lines[0]
  assert "--help" in lines[1] and "--helpfull" in lines[1]


@pytest.fixture(scope="module")
def jobs(console_jobs):
  return console_jobs  # started when the session's tests were collected (conftest.py)


@pytest.mark.parametrize("name", sorted(USAGE_ERRORS))
def test_a_usage_error_is_one_line_and_a_hint(jobs, name):
  code, log = _wait(jobs[1][name])
  prog, expected = USAGE_ERRORS[name][0][0], USAGE_ERRORS[name][1]
  assert code == 1, log[-2000:]
  _assert_one_line_and_a_hint(prog, expected, log)


@pytest.mark.parametrize("name", sorted(IN_PROCESS_USAGE_ERRORS))
def test_a_training_usage_error_is_one_line_and_a_hint_in_process(name, capsys):
  """What `console.run_cli` does with the training CLI's flags and main, in this process."""
  argv, expected = IN_PROCESS_USAGE_ERRORS[name]
  prog = argv[0]
  fv = flags.FlagValues()
  train_cli.define_flags(fv)
  with pytest.raises(SystemExit) as exit_, contextlib.chdir(REPO_ROOT):
    try:
      remaining = fv(argv)
    except flags.Error as e:
      console.usage_error(prog, e, kind=console.FLAG_ERROR)
    try:
      train_cli.main(remaining)  # refuses positional arguments before it reads any flag
    except app.UsageError as e:
      console.usage_error(prog, e, e.exitcode)
  assert exit_.value.code == 1
  captured = capsys.readouterr()
  assert captured.out == ""
  _assert_one_line_and_a_hint(prog, expected, captured.err)


def test_training_output_is_small_and_has_no_tensorflow_boilerplate(jobs):
  root, started = jobs
  code, log = _wait(started["train"])
  assert code == 0, log[-3000:]
  assert len(log.encode()) < MAX_TRAIN_BYTES, log
  assert not BOILERPLATE.search(log), BOILERPLATE.search(log).group(0)
  # The events a user reads, one line each.
  for event in ("Starting a new run in", "eval @ step 3:", "step 2: checkpoint", "Exported",
                "test bits/dim: ELBO", "Done: step 6"):
    assert event in log, (event, log)
  # The thread pools, chosen from the machine in this fresh process, are said once.
  assert log.count("Threads: ") == 1 and "(automatic for " in log, log
  assert (root / "run" / "export" / "saved_model.pb").exists()


def test_export_cli_output_has_no_renaming_line(tiny_export):
  """The export CLI's process is the session's `tiny_export` (started in a user's environment)."""
  log = run_fixtures.export_cli_output(tiny_export)
  assert not BOILERPLATE.search(log), BOILERPLATE.search(log).group(0)
  assert len(log.encode()) < 1000, log
  assert '"export_dir"' in log


def test_tensorflow_logs_come_back_with_the_environment_variable(jobs):
  _, started = jobs
  quiet_code, quiet = _wait(started["quiet_import"])
  loud_code, loud = _wait(started["loud_import"])
  assert quiet_code == loud_code == 0, (quiet, loud)
  assert quiet.strip() == "2"  # nothing but the program's own output
  assert BOILERPLATE.search(loud), loud  # TensorFlow's own start-up lines


# --- in process -----------------------------------------------------------------------------


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_live_line_redraws_in_place_on_a_terminal_only():
  term = _Terminal()
  line = console.LiveLine(term, interval=0.0)
  line.update("step 1/10")
  line.update("step 2/10")
  line.clear()
  assert term.getvalue() == "\rstep 1/10\x1b[K\rstep 2/10\x1b[K\r\x1b[K"
  throttled = console.LiveLine(_Terminal(), interval=3600.0)
  throttled.update("a")
  throttled.update("b")  # within the interval: not drawn
  throttled.update("c", force=True)
  assert throttled.stream.getvalue() == "\ra\x1b[K\rc\x1b[K"
  log_file = io.StringIO()  # not a terminal: nothing, ever (callers log plain lines instead)
  plain = console.LiveLine(log_file, interval=0.0)
  plain.update("step 1/10")
  plain.clear()
  assert log_file.getvalue() == "" and not plain.enabled


def test_progress_line_has_step_rate_bits_per_dim_and_eta():
  from vapnev_tf.data import DataConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.config import TrainConfig  # pylint: disable=g-import-not-at-top
  reporter = reporting.Reporter(ModelConfig(image_shape=(28, 28, 1)), DataConfig(batch_size=8),
                                TrainConfig(train_steps=100))
  reporter.window.start -= 2.0  # 2 s ago
  for _ in range(4):
    reporter.window.add({"ok": True, "loss": 1.0, "log_px": -1000.0, "kl": 10.0,
                         "grad_norm": 1.0})
  line = reporter.progress_line(4)
  expected = r"step 4/100 \| 1\d img/s \| train 1\.8\d\d bits/dim \| ETA 0m4\ds"
  assert re.fullmatch(expected, line), line


def test_format_duration():
  assert console.format_duration(3725) == "1h02m05s"
  assert console.format_duration(65) == "1m05s"
  assert console.format_duration(float("inf")) == "?"


def test_flags_txt_lists_only_the_flags_given():
  with contextlib.chdir(REPO_ROOT):
    fv = train_cli.parse_flags(["vapnev_tf.train", "--workdir=/tmp/x",
                                "--flagfile=configs/smoke.flags", "--batch_size=8"])
  lines = train_cli.run_flags_text(fv).splitlines()
  assert "--batch_size=8" in lines and "--batch_size=16" not in lines  # the value that won
  assert "--workdir=/tmp/x" in lines and "--latent_dim=8" in lines  # command line and flagfile
  assert "--learning_rate=0.001" in lines  # from configs/base.flags, included by smoke.flags
  assert not any(line.startswith(("--num_cpu_devices", "--flow_layout", "--flagfile"))
                 for line in lines)  # defaults and the flagfile flag itself are not listed
  assert "--noexport_at_end" in lines  # a boolean as absl writes it
  names = [line[2:].split("=")[0] for line in lines]
  names = [n[2:] if n.startswith("no") and n not in fv and n[2:] in fv else n for n in names]
  assert names == sorted(names)  # sorted by flag name
  # The file is a flagfile that repeats the run.
  again = flags.FlagValues()
  train_cli.define_flags(again)
  again(["vapnev_tf.train", *lines])
  assert train_cli.configs_from_flags(again) == train_cli.configs_from_flags(fv)


def test_console_filter_drops_library_info_and_erases_the_live_line(monkeypatch):
  import logging  # pylint: disable=g-import-not-at-top
  term = _Terminal()
  monkeypatch.setattr(console, "live", console.LiveLine(term, interval=0.0))
  console.live.update("step 1/10")

  def record(path, level):
    return logging.LogRecord("absl", level, path, 1, "message", (), None)

  quiet = console._ConsoleFilter(keep_library_info=False)  # pylint: disable=protected-access
  assert not quiet.filter(record("/x/site-packages/tensorflow/python/a.py", logging.INFO))
  assert term.getvalue() == "\rstep 1/10\x1b[K"  # a dropped line does not erase the live line
  assert quiet.filter(record("/x/site-packages/tensorflow/python/a.py", logging.WARNING))
  assert quiet.filter(record("/repo/vapnev_tf/training/loop.py", logging.INFO))
  assert term.getvalue() == "\rstep 1/10\x1b[K\r\x1b[K"  # erased once, before the written line
  loud = console._ConsoleFilter(keep_library_info=True)  # pylint: disable=protected-access
  assert loud.filter(record("/x/site-packages/tensorflow/python/a.py", logging.INFO))
