"""The package's import layers (docs/design.md §21): import-linter's contracts in .importlinter.

`lint-imports` parses the sources (it imports nothing, so no TensorFlow starts): one process for
the repository, one for a copy of the package with an import that runs the wrong way.
"""
import os
import pathlib
import shutil
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LINT_IMPORTS = pathlib.Path(sys.executable).with_name("lint-imports")


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
  assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} is missing: pip install -r requirements-dev.txt"
  env = dict(os.environ, PYTHONPATH=str(root))
  return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", ".importlinter"],
                        cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
  out = _lint(REPO_ROOT)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "3 kept, 0 broken" in out.stdout


def test_an_import_from_a_lower_layer_up_breaks_the_contracts(tmp_path):
  shutil.copytree(REPO_ROOT / "vapnev_tf", tmp_path / "vapnev_tf",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(REPO_ROOT / ".importlinter", tmp_path)
  workdir_module = tmp_path / "vapnev_tf" / "workdir.py"
  workdir_module.write_text(workdir_module.read_text() + "\nfrom vapnev_tf import training\n")
  out = _lint(tmp_path)
  assert out.returncode != 0
  assert "Layers run one way: CLIs, products, training, model, data, base BROKEN" in out.stdout
  assert "vapnev_tf.workdir -> vapnev_tf.training" in out.stdout
  # training imports workdir, so this is a cycle as well.
  assert "No import cycles between the modules of a package BROKEN" in out.stdout
