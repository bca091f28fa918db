"""Smoke test of benchmarks/conditioning.py: tiny models, well-formed JSON and table.

No timing is asserted, only that every variant is measured against realnvp with finite numbers.
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import profile_step

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a benchmark run end to end (`make test-all`)
def test_conditioning_benchmark_smoke(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.conditioning", "--smoke",
                         f"--out_dir={tmp_path}"], cwd=str(REPO_ROOT), capture_output=True,
                        text=True, timeout=400, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  payload = json.loads((tmp_path / "conditioning.json").read_text())
  for key in ("command", "date", "machine", "versions", "results"):
    assert key in payload, key
  (result,) = payload["results"]
  assert set(result["variants"]) == {"realnvp", "paper", "shared+fused"}
  for name, entry in result["variants"].items():
    assert entry["train_images_per_s"] > 0 and len(entry["windows"]) == 2
    assert math.isfinite(entry["first_loss"])
    if name != "realnvp":
      assert entry["over_realnvp"] > 0 and len(entry["ratios"]) == 2
  assert result["variants"]["shared+fused"]["options"] == {"conditioning": "shared",
                                                           "fused_networks": True}
  assert "shared+fused" in (tmp_path / "conditioning.md").read_text()


def test_profile_step_attributes_the_shared_trunk_and_fused_heads_to_their_paths():
  z_path = "l2/m2 (z path)"
  assert profile_step.part_of("vapnev/flow/z_trunk/up0/conv2d_transpose/Conv2D") == z_path
  assert profile_step.part_of("vapnev/flow/scale0_checkerboard0/lm2/convolution") == z_path
  assert profile_step.part_of("vapnev/flow/scale0_checkerboard0/l2/convolution") == z_path
  assert profile_step.part_of("vapnev/flow/scale0_checkerboard0/lm1/conv_in/Conv2D") == \
      "l1/m1 (x path)"
