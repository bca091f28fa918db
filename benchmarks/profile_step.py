r"""Where one training step spends its time and FLOPs, part by part.

    python -m benchmarks.profile_step                        # quick + benchmark sizes, 3 models
    python -m benchmarks.profile_step --smoke                # tiny sizes, for tests

For each (size, model) the library's own training step (`benchmarks.throughput.make_step`, the step
`vapnev_tf.train` runs) is traced, warmed up and then run under TensorFlow's profiler
(`tf.profiler.experimental`) for `--steps` steps. The profile's per-op self times (TF's
`framework_op_stats` tool) and the FLOPs of every conv/deconv/matmul op of the step's graphs
(static shapes, as in `benchmarks.throughput.graph_flops`) are attributed to parts by the op's name
scope:

    encoder            q(z|x)'s network (Eq. 17-19)
    decoder            mu_y, sigma_y heads (Eq. 20-22)
    l2/m2 (z path)     the coupling networks' z branches (Eq. 16), and any shared z trunk
    l1/m1 (x path)     the coupling networks' x branches (Eq. 16)
    coupling math      the rest of f_z: masks, exp/tanh, log-dets, squeezes, the logit chain
    optimizer          Adam's update
    other              everything else (the loss, KL, seeds, the all-reduce plumbing, idle)
Forward and gradient ops of a part are reported together and separately ("gradient_tape/" scope).
Times are medians over `--repeats` profiled runs; shares are of the step's kernel time (the sum
over all kernels, which on 2 cores can exceed the wall time of the step: kernels run in parallel).

Outputs: OUT_DIR/profile.json, OUT_DIR/profile.md.
"""
import glob
import json
import os
import re
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from benchmarks import common
from benchmarks import throughput  # its step, FLOP counter, --smoke and --out_dir serve here too

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["quick", "benchmark"], "Model sizes: quick (configs/quick.flags), "
                  "benchmark (the quality benchmark's flow: 16 filters, 3+3 couplings, latent 64) "
                  "and fashion_mnist (configs/fashion_mnist.flags).")
flags.DEFINE_list("models", ["vapnev", "vae_flow", "realnvp"], "Likelihoods to profile.")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("steps", 10, "Steps inside one profiled run.")
flags.DEFINE_integer("repeats", 3, "Profiled runs per model (medians reported).")
flags.DEFINE_string("extra_model_flags", "", "Comma-separated NAME=VALUE ModelConfig overrides "
                    "applied to every model (e.g. conditioning options).")

PARTS = ("encoder", "decoder", "l2/m2 (z path)", "l1/m1 (x path)", "coupling math", "optimizer",
         "other")
_Z_PATH = re.compile(r"(^|/)(l2|m2|lm2|z_trunk|z_features|z_head\w*|shared_z\w*)(_\d+)?/")
_X_PATH = re.compile(r"(^|/)(l1|m1|lm1)(_\d+)?/")


def part_of(op_name: str) -> str:
  """The part of the model an op belongs to, from its name scope (see the module docstring)."""
  name = op_name[len("gradient_tape/"):] if op_name.startswith("gradient_tape/") else op_name
  if re.search(r"(^|/)(adam|Adam|optimizer)(_\d+)?/", name):
    return "optimizer"
  if re.search(r"(^|/)encoder(_\d+)?/", name):
    return "encoder"
  if re.search(r"(^|/)decoder(_\d+)?/", name):
    return "decoder"
  if _Z_PATH.search(name):
    return "l2/m2 (z path)"
  if _X_PATH.search(name):
    return "l1/m1 (x path)"
  if re.search(r"(^|/)(f_z|to_pixels|p_x)(_\d+)?/", name):
    return "coupling math"
  return "other"


def sizes(name: str) -> dict:
  return common.timing_size(name, FLAGS.smoke)


def _extra_overrides() -> dict:
  out = {}
  for item in filter(None, FLAGS.extra_model_flags.split(",")):
    key, _, value = item.partition("=")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def op_times(xplane_file: str) -> dict:
  """{op name: total seconds} of the TF kernels in a profile (every execution, no row cap).

  From the profile's trace events (TF's `trace_viewer` tool): a kernel event names its op type and
  points (`sf`) to a stack frame named `scope/op_name:OpType`; tf.data's own events are left out.
  """
  from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
  raw, ok = _pywrap_profiler_plugin.xspace_to_tools_data([xplane_file], "trace_viewer@", {})
  if not ok:
    raise RuntimeError(f"the profiler could not convert {xplane_file}")
  trace = json.loads(raw)
  frames = trace.get("stackFrames", {})
  out = {}
  for event in trace["traceEvents"]:
    if event.get("ph") != "X" or "sf" not in event:
      continue
    frame = frames.get(str(event["sf"]), {}).get("name", "")
    op_name, _, op_type = frame.rpartition(":")
    if not op_name or op_type != event["name"]:
      continue
    out[op_name] = out.get(op_name, 0.0) + float(event.get("dur", 0.0)) / 1e6
  return out


def profile_model(size_name: str, likelihood: str) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = dict(sizes(size_name), **_extra_overrides())
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    model = throughput.build_vapnev(values, likelihood)
  batch = tf.random.uniform((FLAGS.batch_size,) + tuple(values["image_shape"]), 0.0, 255.0,
                            seed=0)
  run_step, train_step, _ = throughput.make_step(model, batch, False, strategy)
  run_step()  # trace
  run_step()
  per_run = []
  wall = []
  for _ in range(FLAGS.repeats):
    logdir = tempfile.mkdtemp(prefix="vapnev_profile_")
    tf.profiler.experimental.start(logdir)
    started = time.perf_counter()
    for _ in range(FLAGS.steps):
      out = run_step()
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
    wall.append((time.perf_counter() - started) / FLAGS.steps)
    tf.profiler.experimental.stop()
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    times = {p: {"forward": 0.0, "gradient": 0.0} for p in PARTS}
    for op_name, seconds in op_times(files[-1]).items():
      direction = "gradient" if op_name.startswith("gradient_tape/") else "forward"
      times[part_of(op_name)][direction] += seconds
    per_run.append(times)
  flops = _part_flops(model, values["image_shape"])
  params = common.count_params(model.trainable_variables)
  result = {"size": size_name, "likelihood": likelihood, "params": params,
            "batch_size": FLAGS.batch_size, "step_seconds": statistics.median(wall),
            "images_per_sec": FLAGS.batch_size / statistics.median(wall), "parts": {}}
  for part in PARTS:
    fwd = statistics.median(r[part]["forward"] for r in per_run) / FLAGS.steps
    grad = statistics.median(r[part]["gradient"] for r in per_run) / FLAGS.steps
    result["parts"][part] = {"forward_s": fwd, "gradient_s": grad, "total_s": fwd + grad,
                             "gflop_per_step": flops.get(part, 0) * FLAGS.batch_size / 1e9}
  total = sum(p["total_s"] for p in result["parts"].values())
  for p in result["parts"].values():
    p["share"] = p["total_s"] / total if total else 0.0
    p["gflop_per_s"] = p["gflop_per_step"] / p["total_s"] if p["total_s"] else None
  result["profiled_op_seconds"] = total
  return result


def _part_flops(model, image_shape) -> dict:
  """FLOPs per image of each part in one training step (forward + gradient graphs)."""
  _, graph = throughput.train_flop_graphs(model, (1,) + tuple(image_shape))
  out = {}
  for op in _all_ops(graph):
    flops = throughput.op_flops(op)
    if flops:
      part = part_of(op.name)
      out[part] = out.get(part, 0) + flops
  return out


def _all_ops(graph):
  """Ops of `graph` and of every function it calls (gradient graphs call the forward's)."""
  seen = set()
  stack = [graph]
  while stack:
    g = stack.pop()
    for op in g.get_operations():
      yield op
    for name, fn in getattr(g, "_functions", {}).items():
      if name not in seen and hasattr(fn, "graph"):
        seen.add(name)
        stack.append(fn.graph)


def write_markdown(path: str, payload: dict) -> None:
  lines = ["# One training step, part by part", "",
           f"- command: `{payload['command']}`", f"- date: {payload['date']}",
           f"- machine: {payload['machine']}", "",
           "Self time of the step's ops per part (forward + gradient), median of the profiled "
           "runs, per step; FLOPs of conv/deconv/matmul ops per step; GFLOP/s = FLOPs / time.", ""]
  for r in payload["results"]:
    lines += [f"## {r['size']} / {r['likelihood']}: {r['params']:,} parameters, batch "
              f"{r['batch_size']}, {r['images_per_sec']:.0f} img/s under the profiler", "",
              "| part | forward ms | gradient ms | total ms | share | GFLOP/step | GFLOP/s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for part in PARTS:
      p = r["parts"][part]
      lines.append(f"| {part} | {1e3 * p['forward_s']:.1f} | {1e3 * p['gradient_s']:.1f} | "
                   f"{1e3 * p['total_s']:.1f} | {100 * p['share']:.1f}% | "
                   f"{p['gflop_per_step']:.3f} | {common.fmt(p['gflop_per_s'], 1)} |")
    lines.append("")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


def main(argv):
  del argv
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  results = [profile_model(size, model) for size in FLAGS.sizes for model in FLAGS.models]
  payload = dict(common.header(), results=results)
  common.write_json(os.path.join(FLAGS.out_dir, "profile.json"), payload)
  write_markdown(os.path.join(FLAGS.out_dir, "profile.md"), payload)
  print(f"wrote {os.path.join(FLAGS.out_dir, 'profile.md')}")


if __name__ == "__main__":
  app.run(main)
