"""Shared pytest set-up: quiet TF logs, the `slow` marker, the repository on sys.path, and the
session fixtures every test module shares (built once, read-only; see tests/run_fixtures.py)."""
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running; excluded from `make test`, run by `make test-all`.")
  config.addinivalue_line(
      "markers", "eager: runs tf.functions eagerly (`tf.config.run_functions_eagerly`); for a "
      "module or test whose subject is the arithmetic or the state of a few steps, not their "
      "compilation (docs/design.md §19). VAPNEV_TEST_COMPILED=1 runs them compiled.")
  config.addinivalue_line(
      "markers", "compiled: runs compiled in an `eager` module (its subject is graph mode).")
  # TFP 0.25 still uses distutils' LooseVersion at import time.
  config.addinivalue_line("filterwarnings", "ignore:distutils Version classes:DeprecationWarning")


def pytest_collection_finish(session):
  """The console's CLI processes start as soon as the tests are collected when a selected test
  needs them: they then run beside the in-process tests before tests/test_console.py (mostly
  Python tracing, one core) instead of holding it up. Under pytest-xdist every worker collects
  every test, so there the worker that gets tests/test_console.py starts them on first use."""
  if hasattr(session.config, "workerinput"):
    return
  if any("console_jobs" in getattr(item, "fixturenames", ()) for item in session.items):
    import run_fixtures  # pylint: disable=g-import-not-at-top
    run_fixtures.start_console_jobs(_console_root(session.config))


def pytest_collection_modifyitems(config, items):
  """Under pytest-xdist the console tests come first, so the worker that takes them starts the
  CLI processes at once and they run beside the other worker's tests (same order in every
  worker, as xdist requires)."""
  if hasattr(config, "workerinput"):
    items.sort(key=lambda item: item.path.name != "test_console.py")


def _runs_eagerly(item) -> bool:
  if os.environ.get("VAPNEV_TEST_COMPILED") == "1" or item.get_closest_marker("compiled"):
    return False
  return item.get_closest_marker("eager") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  """Sets the function mode of `item` before its fixtures are built, so a module fixture of an
  `eager` module is built eagerly too (the shared session runs are built compiled: `compiled`)."""
  if "tensorflow" in sys.modules:
    sys.modules["tensorflow"].config.run_functions_eagerly(_runs_eagerly(item))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
  if "tensorflow" in sys.modules:
    sys.modules["tensorflow"].config.run_functions_eagerly(False)


_CONSOLE_ROOT = pytest.StashKey[pathlib.Path]()


def _console_root(config) -> pathlib.Path:
  if _CONSOLE_ROOT not in config.stash:
    config.stash[_CONSOLE_ROOT] = pathlib.Path(tempfile.mkdtemp(prefix="vapnev-console-"))
  return config.stash[_CONSOLE_ROOT]


def pytest_sessionfinish(session):
  if _CONSOLE_ROOT in session.config.stash:
    import run_fixtures  # pylint: disable=g-import-not-at-top
    run_fixtures.stop_console_jobs()
    shutil.rmtree(session.config.stash[_CONSOLE_ROOT], ignore_errors=True)


@pytest.fixture(scope="session")
def console_jobs(request):
  """(root, {name: (Popen, log path)}): the CLI processes of `run_fixtures.start_console_jobs`."""
  import run_fixtures  # pylint: disable=g-import-not-at-top
  return run_fixtures.console_jobs(_console_root(request.config))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """(workdir, train() result) of configs/smoke.flags as is, trained once in this process:
  6 steps, evaluation at step 3 and at the end (k=2). Read-only: copy it to change it."""
  import run_fixtures  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("smoke") / "run"
  with run_fixtures.compiled():
    return workdir, run_fixtures.run_smoke(workdir)


@pytest.fixture(scope="session")
def _tiny_run_and_export_cli(tmp_path_factory):
  """The tiny run, and its export by `python -m vapnev_tf.export` started in the background (it
  runs while in-process tests do; `tiny_export` waits for it)."""
  import run_fixtures  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("tiny")
  with run_fixtures.compiled():
    run_dir = run_fixtures.make_tiny_run(root / "tiny_run")
  out = root / "tiny_export"
  proc = run_fixtures.start_export_cli(run_dir, out)
  yield run_dir, proc, out
  proc.kill()


@pytest.fixture(scope="session")
def tiny_run(_tiny_run_and_export_cli):
  """A run directory of a briefly trained 8x8 tiny model (run_fixtures.make_tiny_run)."""
  return _tiny_run_and_export_cli[0]


@pytest.fixture(scope="session")
def tiny_export(_tiny_run_and_export_cli):
  """`tiny_run` exported by the export CLI in a subprocess."""
  import run_fixtures  # pylint: disable=g-import-not-at-top
  _, proc, out = _tiny_run_and_export_cli
  return run_fixtures.finish_export_cli(proc, out)


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
  """The tiny run's model restored from its checkpoint."""
  import run_fixtures  # pylint: disable=g-import-not-at-top
  from vapnev_tf import loading  # pylint: disable=g-import-not-at-top
  model, step = loading.restore_model(str(tiny_run))
  assert step == run_fixtures.STEP
  return model


@pytest.fixture(scope="session")
def tiny_loaded(tiny_export):
  """`tf.saved_model.load` of the tiny export."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.saved_model.load(str(tiny_export))
