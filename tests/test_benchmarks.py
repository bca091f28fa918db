"""Smoke tests of the benchmark scripts: tiny models, a few steps, well-formed JSON.

Each script runs in a subprocess exactly as a user would run it (`python -m benchmarks.X`); no
timing is asserted, only that the outputs exist and carry the expected keys and sane values.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(module, out_dir, *args, timeout=240):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", module, f"--out_dir={out_dir}", *args],
                        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout,
                        env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _markdown_table(markdown, header):
  """[(cells, line)] of the rows of the markdown table whose header line starts with `header`."""
  lines = markdown.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith(header)) + 2  # past the rule line
  rows = []
  for line in lines[start:]:
    if not line.startswith("|"):
      break
    rows.append(([c.strip() for c in line.strip("|").split("|")], line))
  return rows


def _check_header(payload):
  for key in ("command", "date", "machine", "versions"):
    assert key in payload, key
  assert payload["machine"]["nproc"] >= 1
  assert len(payload["machine"]["load_average"]) == 3
  assert {"tensorflow", "keras", "tensorflow_probability"} <= set(payload["versions"])


@pytest.mark.slow  # a benchmark run end to end (`make test-all`)
def test_quality_smoke(tmp_path):
  # reported in ALL_MODELS order; tfb.Glow takes one option, the logit squash alpha
  models = ["vapnev", "realnvp", "pixel_logistic", "glow+alpha1e-3"]
  _run("benchmarks.quality", tmp_path, "--smoke", f"--models={','.join(models)}",
       "--budget_steps=2", "--train_take=256", "--batch_size=16", "--eval_take=64",
       "--eval_batch_size=32", "--iw_samples=2", "--iw_chunk_size=2",
       "--curve_take=32", "--curve_points=1", "--curve_models=vapnev,realnvp",
       "--glow_steps_per_block=1")
  payload = json.loads((tmp_path / "quality.json").read_text())
  _check_header(payload)
  assert payload["errors"] == []
  assert [r["model"] for r in payload["results"]] == models
  for r in payload["results"]:
    for key in ("params", "steps", "images_seen", "train_images_per_s", "first_step_seconds",
                "test_images", "elbo_bpd", "iw_bpd", "exact_nll_bpd", "best_bound_bpd", "curve"):
      assert key in r, (r["model"], key)
    assert r["steps"] == 2 and r["images_seen"] == 2 * 16  # --budget_steps
    assert r["test_images"] == 64 and r["params"] > 0
    assert r["best_bound_bpd"] > 0
    if r["model"] in ("realnvp", "glow+alpha1e-3"):
      assert r["iw_bpd"] is None and r["exact_nll_bpd"] is not None
    else:
      assert r["iw_k"] == 2 and r["iw_bpd"] <= r["elbo_bpd"] + 0.5
  assert [p["step"] for p in payload["results"][0]["curve"]] == [1, 2]  # vapnev's learning curve
  assert "glow_num_hidden" in payload["results"][-1]
  assert payload["results"][-1]["options"] == {"logit_alpha": 1e-3}
  assert payload["results"][0]["options"] == {}  # vapnev: the paper's alpha, 0.05
  markdown = (tmp_path / "quality.md").read_text()
  assert markdown.startswith("# Quality")
  assert "At equal images seen" in markdown  # vapnev and realnvp both have curves
  assert (tmp_path / "quality_curve.png").stat().st_size > 0


@pytest.mark.slow  # a benchmark run end to end (`make test-all`)
def test_quality_variants_and_ablation_table(tmp_path):
  # Options on a base model (the ablations): each variant is built with its ModelConfig
  # overrides (ActNorm steps initialised from data) and compared with its base in the markdown.
  models = ["vapnev", "vapnev+iaf", "vapnev+shared+fused+bf16+iaf", "vapnev+glow+iaf",
            "realnvp+glow+vdq", "realnvp+alpha1e-6", "vapnev+freebits2+clip1e3"]
  _run("benchmarks.quality", tmp_path, "--smoke", f"--models={','.join(models)}",
       "--budget_steps=2", "--train_take=256", "--batch_size=16", "--eval_take=32",
       "--eval_batch_size=32", "--iw_samples=2", "--iw_chunk_size=2",
       "--curve_points=0")
  payload = json.loads((tmp_path / "quality.json").read_text())
  assert payload["errors"] == []
  by_name = {r["model"]: r for r in payload["results"]}
  assert set(by_name) == set(models)
  assert by_name["vapnev"]["options"] == {}
  assert by_name["vapnev+shared+fused+bf16+iaf"]["options"] == {
      "conditioning": "shared", "fused_networks": True, "compute_dtype": "bfloat16",
      "posterior": "iaf"}
  glow = by_name["realnvp+glow+vdq"]
  assert "actnorm" in glow["options"]["flow_layout"]
  assert glow["options"]["dequantization"] == "variational"
  assert glow["exact_nll_bpd"] is not None and glow["iw_bpd"] is None  # a flow: no encoder
  assert by_name["realnvp+alpha1e-6"]["options"] == {"logit_alpha": 1e-6}
  assert by_name["vapnev+freebits2+clip1e3"]["options"] == {  # TrainConfig fields
      "kl_free_nats": 2.0, "clip_grad_norm": 1e3}
  for r in payload["results"]:
    assert 0 < r["best_bound_bpd"] < 100, r["model"]
    assert r["steps"] == 2, r["model"]  # --budget_steps: the same on any machine
  markdown = (tmp_path / "quality.md").read_text()
  # ablation rows: against the largest subset that ran, and all options together against the root
  table = _markdown_table(markdown, "| variant | compared with |")
  rows = {cells[0]: l for cells, l in table if cells[0].startswith("vapnev")}
  assert set(rows) == {"vapnev+iaf", "vapnev+shared+fused+bf16+iaf", "vapnev+glow+iaf",
                       "vapnev+freebits2+clip1e3"}
  assert rows["vapnev+iaf"].startswith("| vapnev+iaf | vapnev |")
  assert " vs vapnev |" not in rows["vapnev+iaf"]  # its reference is already the root
  for name in ("vapnev+shared+fused+bf16+iaf", "vapnev+glow+iaf"):
    assert rows[name].startswith(f"| {name} | vapnev+iaf |") and " vs vapnev |" in rows[name]
  assert "| realnvp+glow+vdq | realnvp |" not in markdown  # no realnvp base was run


def test_ablation_reference_is_the_largest_subset_of_options_that_ran():
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  names = ["vapnev", "vapnev+shared+fused", "vapnev+shared+fused+vdq", "vapnev+vdq", "realnvp",
           "realnvp+glow+vdq", "vae_flow+vdq"]
  ref = {n: common.ablation_reference(n, names) for n in names}
  assert ref == {"vapnev": None, "vapnev+shared+fused": "vapnev",
                 "vapnev+shared+fused+vdq": "vapnev+shared+fused", "vapnev+vdq": "vapnev",
                 "realnvp": None, "realnvp+glow+vdq": "realnvp", "vae_flow+vdq": None}
  assert common.ablation_reference("vapnev+fused+shared+vdq", names) == "vapnev+shared+fused"
  # all options together are measured against the run with the fewest
  root = {n: common.ablation_root(n, names) for n in names}
  assert root == {"vapnev": None, "vapnev+shared+fused": "vapnev",
                  "vapnev+shared+fused+vdq": "vapnev", "vapnev+vdq": "vapnev",
                  "realnvp": None, "realnvp+glow+vdq": "realnvp", "vae_flow+vdq": None}
  assert common.ablation_root("vapnev+shared+fused+vdq", names[1:3]) == "vapnev+shared+fused"


def test_train_overrides_of_a_variant():
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  assert common.train_overrides("vapnev+shared+vdq") == {}
  assert common.train_overrides("vapnev+clip5e4+freebits8") == {"clip_grad_norm": 5e4,
                                                               "kl_free_nats": 8.0}
  assert common.train_overrides("realnvp+glow+clip100") == {"clip_grad_norm": 100.0}
  size = dict(common.SMOKE_SIZE)
  assert common.parse_variant("realnvp+vdq+clip100", size) == (
      "realnvp", {"dequantization": "variational"})  # not a ModelConfig field
  with pytest.raises(ValueError, match="clip<VALUE> with VALUE > 0"):
    common.parse_variant("vapnev+clip-1", size)


_REFUSALS_DRIVER = """
import json, sys
from absl import app, flags
from benchmarks import quality
out_dir, cases = sys.argv[1], json.loads(sys.argv[2])
messages = {}
for models in cases:  # what `python -m benchmarks.quality --smoke --models=...` does first
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["quality", "--smoke", f"--out_dir={out_dir}", f"--models={models}"])
  try:
    quality.main([])
    messages[models] = None
  except app.UsageError as e:
    messages[models] = str(e)
print(json.dumps(messages))
"""


def test_quality_refuses_unknown_models_and_options(tmp_path):
  cases = {"vapnev+warp": "options must be distinct names",
           "vapnev+bf16+bf16": "options must be distinct names",
           "flowpp": "unknown model 'flowpp'",
           "glow+vdq": "tfb.Glow takes no options but alpha<VALUE>",
           "vapnev+alpha0.5": "alpha<VALUE> with 0 < VALUE < 0.5",
           "realnvp+alphax": "alpha<VALUE> with 0 < VALUE < 0.5",
           "realnvp+iaf": "realnvp+iaf",
           "vapnev+freebits0": "freebits<VALUE> with VALUE > 0",
           "realnvp+freebits2": "freebits<VALUE> needs a latent",
           "vapnev+clip0": "clip<VALUE> with VALUE > 0"}
  # One process runs the benchmark's main on every name (its flags live on absl's global FLAGS).
  proc = subprocess.run([sys.executable, "-c", _REFUSALS_DRIVER, str(tmp_path),
                         json.dumps(list(cases))], cwd=str(REPO_ROOT), capture_output=True,
                        text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  messages = json.loads(proc.stdout.strip().splitlines()[-1])
  for models, expected in cases.items():
    assert messages[models] is not None and expected in messages[models], (models, messages)
  assert not (tmp_path / "quality.json").exists()  # refused before anything ran


@pytest.mark.slow  # a benchmark run end to end (`make test-all`)
def test_overhead_smoke(tmp_path):
  _run("benchmarks.overhead", tmp_path, "--smoke", "--studies=upsampling,xla,threads")
  payload = json.loads((tmp_path / "overhead.json").read_text())
  _check_header(payload)
  shapes = payload["upsampling"]["shapes"]
  assert {s["where"] for s in shapes} == {"decoder", "z-trunk"}
  for s in shapes:
    assert set(s["ms_per_call"]) == {"transposed+crop", "nearest+conv", "bilinear+conv"}
    assert all(v > 0 for v in s["ms_per_call"].values())
  assert set(payload["xla"]["cases"]) == {"batch 64", "batch 64 xla"}
  threads = payload["threads"]
  assert [t["intra_op_threads_effective"] for t in threads] == [0, 1]  # the setting took effect
  assert all(t["cases"]["batch 64"]["images_per_s"] > 0 for t in threads)
  assert (tmp_path / "overhead.md").read_text().startswith("# Per-op overhead")


def test_curve_bound_at_step_interpolates_inside_the_curve_only():
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  curve = [{"step": 1, "elbo_bpd": 9.0}, {"step": 101, "elbo_bpd": 5.0},
           {"step": 301, "elbo_bpd": 4.0}]
  assert common.curve_bound_at_step(curve, 1) == 9.0
  assert abs(common.curve_bound_at_step(curve, 51) - 7.0) < 1e-12
  assert abs(common.curve_bound_at_step(curve, 201) - 4.5) < 1e-12
  assert common.curve_bound_at_step(curve, 301) == 4.0
  assert common.curve_bound_at_step(curve, 302) is None  # no extrapolation
  assert common.curve_bound_at_step(curve[:1], 1) == 9.0
  assert common.curve_bound_at_step(curve[:1], 2) is None
  assert common.curve_bound_at_step([], 1) is None


@pytest.mark.slow  # a benchmark run end to end (`make test-all`)
def test_throughput_smoke(tmp_path):
  _run("benchmarks.throughput", tmp_path, "--smoke", "--configs=quick", "--jit=off",
       "--noglow", "--noreal_data", "--sweep_image_sizes=28", "--sweep_batch_sizes=64",
       "--windows=2", "--window_seconds=0.2", "--warmup_steps=0")
  payload = json.loads((tmp_path / "throughput.json").read_text())
  _check_header(payload)
  (row,) = payload["models"]
  assert "error" not in row and "train_error" not in row, row
  for key in ("params", "first_step_seconds", "train_images_per_s", "train_windows",
              "elbo_images_per_s", "sample_images_per_s", "peak_rss_mib", "train_step_traces",
              "flops_forward_per_image", "flops_train_per_image", "machine_peak",
              "efficiency_vs_conv2d", "forward_conv_ops", "conv_kernels", "pipeline"):
    assert key in row, key
  assert row["train_step_traces"] == 1
  assert len(row["train_windows"]) == 2
  assert row["flops_train_per_image"] > row["flops_forward_per_image"] > 0
  assert row["machine_peak"]["conv2d"]["gflops_per_s"] > 0
  assert "waste" in payload
  (point,) = payload["sweep"]
  assert point["train_images_per_s"] > 0 and point["peak_rss_mib"] > 0
  assert (tmp_path / "throughput.md").read_text().startswith("# Throughput")


def test_flagfile_parsing_matches_configs():
  sys.path.insert(0, str(REPO_ROOT))
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  values = common.model_config_values("cifar10")
  assert values["image_shape"] == (32, 32, 3)
  assert values["latent_dim"] == 256 and values["flow_filters"] == 64
  assert values["likelihood"] == "vapnev"  # from base.flags
  quick = common.model_config_values("quick")
  assert quick["flow_layout"] == "checkerboard*6" and quick["encoder_filters"] == 48


def test_graph_flops_counts_a_conv():
  sys.path.insert(0, str(REPO_ROOT))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from benchmarks import throughput  # pylint: disable=g-import-not-at-top
  w = tf.zeros((3, 3, 2, 5))
  graph = tf.function(lambda x: tf.nn.conv2d(x, w, 1, "SAME")).get_concrete_function(
      tf.TensorSpec((4, 8, 8, 2))).graph
  flops = throughput.graph_flops(graph)
  assert flops["flops"] == 2 * 4 * 8 * 8 * 5 * 3 * 3 * 2
  assert flops["op_counts"] == {"Conv2D": 1}


@pytest.mark.slow  # a benchmark run end to end (`make test-all`)
def test_long_run_report_reads_a_real_training_run(tmp_path):
  import fault_hooks  # pylint: disable=g-import-not-at-top
  import run_fixtures  # pylint: disable=g-import-not-at-top
  from vapnev_tf import train as train_cli  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  workdir = tmp_path / "run"
  flags_text = train_cli.run_flags_text(run_fixtures.parse_train_flags(workdir))
  with fault_hooks.nan_loss(first=2):  # configs/smoke.flags with step 2 non-finite
    run_fixtures.run_smoke(workdir, flags_text=flags_text)
  out = tmp_path / "report"
  _run("benchmarks.long_run", out, f"--workdir={workdir}", "--label=smoke",
       f"--compare_workdir={workdir}", "--compare_label=again")
  payload = json.loads((out / "long_run.json").read_text())
  _check_header(payload)
  assert [r["label"] for r in payload["runs"]] == ["smoke", "again"]
  run = payload["runs"][0]
  summary = run["summary"]
  assert summary["last_step"] == 6  # configs/smoke.flags: 6 steps, logged every 2
  assert summary["skipped_steps"] == 1  # the injected non-finite step
  assert [p["step"] for p in run["test_elbo_bpd"]] == [3, 6]  # --eval_every=3 and the end
  minutes = [p["minutes"] for p in run["train"]["elbo_bpd"]]
  assert minutes == sorted(minutes) and minutes[0] >= 0
  assert summary["test_elbo_bpd_best"] == min(p["value"] for p in run["test_elbo_bpd"])
  assert run["eval"]["k"] == 2 and run["eval"]["step"] == 6
  assert "--flow_filters=4" in run["flags"]
  assert (out / "long_run_curve.png").stat().st_size > 0
  assert "| smoke | 6 |" in (out / "long_run.md").read_text()

  # A run whose workdir is gone is compared from the report written above; --eval_json reports
  # another evaluation of the run (here a copy of its eval.json with another k).
  other_eval = tmp_path / "other_eval.json"
  other_eval.write_text(json.dumps(dict(json.loads((workdir / "eval.json").read_text()), k=7)))
  again = tmp_path / "report2"
  _run("benchmarks.long_run", again, f"--workdir={workdir}", f"--eval_json={other_eval}",
       f"--compare_report={out / 'long_run.json'}")
  runs = json.loads((again / "long_run.json").read_text())["runs"]
  assert runs[0]["eval"]["k"] == 7
  assert [r["label"] for r in runs] == ["this run", "smoke"]  # the stored label by default
  assert runs[1]["test_elbo_bpd"] == run["test_elbo_bpd"] and runs[1]["eval"] == run["eval"]
  assert runs[1]["summary"] == summary
  bad = subprocess.run([sys.executable, "-m", "benchmarks.long_run", f"--workdir={workdir}",
                        f"--compare_report={out / 'long_run.md'}", f"--out_dir={tmp_path / 'x'}"],
                       cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120, env=env)
  assert bad.returncode != 0 and "expected a long_run.json" in bad.stderr
  assert "Traceback" not in bad.stderr
  for args, message in (([f"--eval_json={tmp_path / 'missing.json'}"], "expected an evaluation JSON"),
                        ([f"--compare_workdir={workdir}", f"--compare_report={out / 'long_run.json'}"],
                         "at most one of --compare_workdir and --compare_report")):
    bad = subprocess.run([sys.executable, "-m", "benchmarks.long_run", f"--workdir={workdir}", *args,
                          f"--out_dir={tmp_path / 'x'}"], cwd=str(REPO_ROOT), capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode != 0 and message in bad.stderr, bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr


def test_long_run_report_refuses_a_directory_that_is_not_a_run(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.long_run", f"--workdir={tmp_path}",
                         f"--out_dir={tmp_path / 'report'}"], cwd=str(REPO_ROOT),
                        capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode != 0
  assert f"--workdir={tmp_path}: no training summaries" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_timing_sizes_are_the_flagfiles_or_the_benchmark_size():
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  fashion = common.timing_size("fashion_mnist", smoke=False)
  assert fashion == {k: common.model_config_values("fashion_mnist")[k] for k in common.SIZE_KEYS}
  assert fashion["flow_filters"] == 32 and fashion["encoder_layers_per_block"] == 2
  assert common.timing_size("fashion_mnist", smoke=True) == common.size_values("smoke")
  with pytest.raises(ValueError, match="expected one of quick, benchmark, fashion_mnist"):
    common.timing_size("cifar10", smoke=False)


def test_the_glow_baseline_takes_the_training_steps_arguments():
  """The library's step calls `model.elbo_terms(x, seed=..., per_dim_kl=...)` on every model the
  benchmarks train, the Glow baseline included (its end-to-end run is `slow`)."""
  import inspect  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(REPO_ROOT))
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  library = list(inspect.signature(VAPNEV.elbo_terms).parameters)
  assert list(inspect.signature(common.GlowFlow.elbo_terms).parameters) == library
