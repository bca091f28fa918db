"""benchmarks/profile_step.py: ops are attributed to the right parts, and a smoke run reports every
part of a VAPNEV step with non-zero time where the model has that part."""
import json
import pathlib
import subprocess
import sys

import pytest

from benchmarks import profile_step

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("op_name,part", [
    ("encoder_1/conv1_0_1/convolution", "encoder"),
    ("gradient_tape/encoder_1/conv1_0_1/convolution/Conv2DBackpropInput", "encoder"),
    ("decoder_1/deconv3_0_1/conv_transpose", "decoder"),
    ("p_x_given_z/log_prob/f_z/forward/scale0/forward/scale0_channel0/forward/scale0_channel0_1/"
     "m2_1/conv", "l2/m2 (z path)"),
    ("gradient_tape/p_x_given_z/log_prob/f_z/forward/scale0/forward/scale0_checkerboard0/forward/"
     "scale0_checkerboard0_1/l1_1/res0/conv", "l1/m1 (x path)"),
    ("p_x_given_z/log_prob/f_z/forward/pixels_to_logits/forward/sigmoid/inverse/Log1p",
     "coupling math"),
    ("p_x_given_z/log_prob/to_pixels/inverse/invert_pixels_to_logits/inverse/pixels_to_logits/"
     "forward/sigmoid/inverse/Log1p", "coupling math"),
    ("cond/then/_20/cond/adam_1/Mul_3", "optimizer"),
    ("global_norm/stack", "other"),
])
def test_ops_are_attributed_to_their_part(op_name, part):
  assert profile_step.part_of(op_name) == part


@pytest.mark.slow  # a benchmark run end to end (`make test-all`)
def test_smoke_run_reports_every_part(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.profile_step", "--smoke", "--sizes=quick",
       "--models=vapnev", "--repeats=1", "--steps=2", "--batch_size=8", f"--out_dir={tmp_path}"],
      cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "profile.json").read_text())["results"][0]
  parts = result["parts"]
  assert set(parts) == set(profile_step.PARTS)
  for part in ("encoder", "decoder", "l2/m2 (z path)", "l1/m1 (x path)", "optimizer"):
    assert parts[part]["total_s"] > 0, part
  assert parts["l1/m1 (x path)"]["gflop_per_step"] > 0
  assert abs(sum(p["share"] for p in parts.values()) - 1.0) < 1e-6
  assert "| l2/m2 (z path) |" in (tmp_path / "profile.md").read_text()
