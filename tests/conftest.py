"""Shared pytest set-up: quiet TF logs, the `slow` marker, and the repository on sys.path."""
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running; excluded from `make test`, run by `make test-all`.")
  # TFP 0.25 still uses distutils' LooseVersion at import time.
  config.addinivalue_line("filterwarnings", "ignore:distutils Version classes:DeprecationWarning")
