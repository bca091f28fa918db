r"""Throughput, memory and FLOP efficiency of VAPNEV on this machine (docs/results.md).

    python -m benchmarks.throughput                 # everything below, ~15-25 min on 2 cores
    python -m benchmarks.throughput --smoke         # tiny configs, for tests

Model configs: the ModelConfig values are PARSED from configs/{quick,fashion_mnist,cifar10}.flags
by the training program's own parser (`common.run_configs`), batch size from the flagfile too.
Weights are random (throughput does not depend on them). Each measurement runs in its own
subprocess so that the peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) belongs to that
configuration alone.

Per config and per jit_compile in (off, on):
  train      the library's training step (`make_train_step`, OneDeviceStrategy, Adam, KL annealing;
             `TrainConfig.jit_compile` XLA-compiles its loss-and-gradient) on an in-memory batch
             repeated by tf.data (so the input pipeline cannot stall it): first-step (tracing) time,
             then warm-up, then >= 5 timed windows; images/s is the median over windows.
  elbo       `model.elbo(x)` (the one-sample bound, i.e. the log_prob path) in a tf.function.
  sample     `model.sample(n)` in a tf.function.
  FLOPs      conv/deconv/matmul multiply-adds counted from the static shapes of the ops of the
             traced graphs (forward = the elbo graph; training = forward + gradient graph), x2 per MAC.
  peak       a large tf.nn.conv2d (and a matmul) timed in the same process: the machine's limit.
  efficiency achieved training FLOP/s / conv2d FLOP/s.
Waste checks (fashion_mnist-style configs): retracing counts; per-step Python/sync overhead
(windows synced every step vs once per window); the real tf.data pipeline alone vs the step
(stall = pipeline slower than the step); duplicate network evaluations (conv ops in the forward
graph vs conv kernels of the model).
Glow: `tfb.Glow` matched (±10%) to the fashion_mnist config's unconditional flow, timed in
alternating windows with our realnvp of that flow in one process -> a ratio robust to load.
Sweep: training images/s and peak RSS vs image size (28, 32, 64; 1 channel) and batch size
(16..256) with the quick config, jit off.

Outputs: OUT_DIR/throughput.json, OUT_DIR/throughput.md.
"""
import json
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["quick", "fashion_mnist", "cifar10"], "Flagfiles (configs/NAME.flags).")
flags.DEFINE_list("jit", ["off", "on"], "jit_compile settings to measure.")
flags.DEFINE_integer("windows", 5, "Timed windows per measurement (median reported).")
flags.DEFINE_float("window_seconds", 3.0, "Target duration of one timed window.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps after the first (tracing) step.")
flags.DEFINE_boolean("sweep", True, "Run the image-size / batch-size sweep.")
flags.DEFINE_list("sweep_image_sizes", ["28", "32", "64"], "Square image sizes of the sweep.")
flags.DEFINE_list("sweep_batch_sizes", ["16", "32", "64", "128", "256"], "Batch sizes of the sweep.")
flags.DEFINE_boolean("glow", True, "Measure tfb.Glow against our realnvp flow.")
flags.DEFINE_boolean("real_data", True, "Compare the real tf.data pipeline with an in-memory batch.")
flags.DEFINE_boolean("smoke", False, "Tiny model (configs/smoke.flags sizes) for every config.")
flags.DEFINE_integer("worker_timeout", 480, "Seconds before a measurement subprocess is killed.")
flags.DEFINE_string("out_dir", "benchmarks/results", "Where throughput.{json,md} go.")
flags.DEFINE_boolean("render_only", False, "Only rewrite OUT_DIR/throughput.md from an existing "
                     "(possibly partial) OUT_DIR/throughput.json.")
flags.DEFINE_string("worker", None, "INTERNAL: JSON spec of one measurement (subprocess mode).")
flags.DEFINE_string("worker_out", None, "INTERNAL: where the worker writes its JSON.")


# ================================================================== worker side (one subprocess)


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def time_windows(fn, images_per_call, windows, window_seconds, sync_each=True):
  """Runs `fn()` (which must block until done when sync_each) in `windows` windows of about
  `window_seconds`; returns (median images/s, per-window list, calls per window)."""
  t = time.perf_counter()
  fn()
  one = max(time.perf_counter() - t, 1e-4)
  calls = max(1, int(round(window_seconds / one)))
  rates = []
  for _ in range(windows):
    t = time.perf_counter()
    for _ in range(calls):
      out = fn()
    if not sync_each:
      _block(out)
    rates.append(calls * images_per_call / (time.perf_counter() - t))
  return statistics.median(rates), [round(r, 2) for r in rates], calls


def _block(out):
  tf = _tf()
  for v in tf.nest.flatten(out):
    if hasattr(v, "numpy"):
      v.numpy()


_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
             "StatelessIf")


def op_flops(op):
  """2 x multiply-adds of one Conv2D / Conv2DBackprop{Input,Filter} / (Batch)MatMul op, from its
  static shapes; 0 for any other op; None when its shapes are unknown."""
  def prod(shape):
    return math.prod(int(d) for d in shape)

  t = op.type
  try:
    if t == "Conv2D":
      k = op.inputs[1].shape  # (kh, kw, cin, cout)
      return int(2 * prod(op.outputs[0].shape) * k[0] * k[1] * k[2])
    if t == "Conv2DBackpropInput":
      k, dy = op.inputs[1].shape, op.inputs[2].shape
      return int(2 * prod(dy) * k[0] * k[1] * k[2])
    if t == "Conv2DBackpropFilter":
      k, dy = op.outputs[0].shape, op.inputs[2].shape
      return int(2 * prod(dy) * k[0] * k[1] * k[2])
    if t in ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "BatchMatMul"):
      a = op.inputs[0].shape
      adj = op.get_attr("transpose_a") if t == "MatMul" else op.get_attr("adj_x")
      kdim = a[-2] if adj else a[-1]
      return int(2 * prod(op.outputs[0].shape) * int(kdim))
  except (TypeError, ValueError):
    return None
  return 0


def graph_flops(graph):
  """`op_flops` summed over `graph`. Returns dict with totals per op type and the number of ops
  whose shapes were unknown (not counted) and of function-call ops (whose bodies are not
  counted)."""
  totals, counts, unknown, calls = {}, {}, 0, 0
  for op in graph.get_operations():
    if op.type in _CALL_OPS:
      calls += 1
      continue
    f = op_flops(op)
    if f is None:
      unknown += 1
      continue
    if not f:
      continue
    totals[op.type] = totals.get(op.type, 0) + f
    counts[op.type] = counts.get(op.type, 0) + 1
  return {"flops": int(sum(totals.values())), "by_type": totals, "op_counts": counts,
          "unknown_shape_ops": unknown, "function_call_ops": calls}


def machine_peak(windows):
  """FLOP/s of a large float32 tf.nn.conv2d (3x3, 128->128 on 32x64x64) and a 2048^3 matmul."""
  tf = _tf()
  x = tf.random.normal((32, 64, 64, 128))
  w = tf.random.normal((3, 3, 128, 128))
  conv = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"))
  conv_flops = 2 * 32 * 64 * 64 * 128 * 128 * 9
  a = tf.random.normal((2048, 2048))
  mm = tf.function(lambda: tf.matmul(a, a))
  out = {}
  for name, fn, flops in (("conv2d", conv, conv_flops), ("matmul", mm, 2 * 2048 ** 3)):
    fn().numpy()
    rates = []
    for _ in range(windows):
      t = time.perf_counter()
      fn().numpy()
      rates.append(flops / (time.perf_counter() - t))
    out[name] = {"gflops_per_s": round(statistics.median(rates) / 1e9, 2),
                 "windows_gflops_per_s": [round(r / 1e9, 2) for r in rates], "flops": flops}
  return out


def build_vapnev(size: dict, likelihood=None):
  from vapnev_tf.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  values = dict(size)
  if likelihood:
    values["likelihood"] = likelihood
  return VAPNEV(ModelConfig(**values))


def make_step(model, batch, jit, strategy, kl_anneal_steps=1000):
  """The library's training step on a repeated in-memory batch; returns (step_fn, train_step,
  iterator) (`common.library_train_step`)."""
  return common.library_train_step(model, batch, strategy, jit, kl_anneal_steps)


def train_flop_graphs(model, batch_shape):
  """Graphs of the forward (elbo) and of loss+gradient on a fixed batch shape."""
  tf = _tf()
  spec = tf.TensorSpec(batch_shape, tf.float32)
  variables = list(model.trainable_variables)

  @tf.function(input_signature=[spec])
  def forward(x):
    return model.elbo(x, 0.5, seed=(1, 2))

  @tf.function(input_signature=[spec])
  def loss_and_grads(x):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(model.elbo(x, 0.5, seed=(1, 2)))
    return tape.gradient(loss, variables)

  return (forward.get_concrete_function().graph, loss_and_grads.get_concrete_function().graph)


def conv_kernel_count(model):
  return sum(1 for v in model.trainable_variables if len(v.shape) == 4)


def worker_model(spec):
  """One (config, jit) measurement: train, elbo, sample, FLOPs, peak, waste checks."""
  tf = _tf()
  import keras  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import make_strategy  # pylint: disable=g-import-not-at-top
  res = {"rss_after_import_mib": round(common.peak_rss_mib(), 1)}
  keras.utils.set_random_seed(0)
  size, batch_size, jit = spec["size"], spec["batch_size"], spec["jit"]
  strategy = make_strategy("one_device")
  with strategy.scope():
    model = build_vapnev(size)
  res["params"] = common.count_params(model.trainable_variables)
  if model.config.uses_flow:
    res["flow_params"] = common.count_params(model.flow.trainable_variables)
  shape = (batch_size,) + tuple(model.config.image_shape)
  x = tf.random.uniform(shape, 0.0, 256.0, seed=1)
  x = tf.minimum(x, 255.99)
  step_fn, train_step, _ = make_step(model, x, jit, strategy)
  res["load_average_start"] = [round(v, 2) for v in os.getloadavg()]

  t = time.perf_counter()
  try:
    float(step_fn()["loss"])
  except Exception as e:  # pylint: disable=broad-except
    res["train_error"] = f"{type(e).__name__}: {str(e)[:500]}"
    return res
  res["first_step_seconds"] = round(time.perf_counter() - t, 2)
  for _ in range(spec["warmup_steps"]):
    float(step_fn()["loss"])
  synced = lambda: float(step_fn()["loss"])
  rate, windows, calls = time_windows(synced, batch_size, spec["windows"], spec["window_seconds"])
  res.update({"train_images_per_s": round(rate, 2), "train_windows": windows,
              "train_steps_per_window": calls})
  if spec.get("waste"):
    # Python/sync overhead: dispatch a window of steps and block once at its end.
    rate_async, win_async, _ = time_windows(step_fn, batch_size, spec["windows"],
                                            spec["window_seconds"], sync_each=False)
    res["train_images_per_s_sync_once_per_window"] = round(rate_async, 2)
    res["train_windows_sync_once_per_window"] = win_async
  res["train_step_traces"] = int(train_step.experimental_get_tracing_count())
  res["peak_rss_train_mib"] = round(common.peak_rss_mib(), 1)

  elbo = tf.function(lambda v: model.elbo(v, seed=(3, 4)), jit_compile=jit)
  try:
    elbo(x).numpy()
    rate, windows, _ = time_windows(lambda: elbo(x).numpy(), batch_size, spec["windows"],
                                    spec["window_seconds"])
    res.update({"elbo_images_per_s": round(rate, 2), "elbo_windows": windows,
                "elbo_traces": int(elbo.experimental_get_tracing_count())})
  except Exception as e:  # pylint: disable=broad-except
    res["elbo_error"] = f"{type(e).__name__}: {str(e)[:500]}"
  n = batch_size
  sample = tf.function(lambda: model.sample(n, temperature=0.8, seed=(5, 6)), jit_compile=jit)
  try:
    t = time.perf_counter()
    sample().numpy()
    res["sample_first_call_seconds"] = round(time.perf_counter() - t, 2)
    rate, windows, _ = time_windows(lambda: sample().numpy(), n, spec["windows"],
                                    spec["window_seconds"])
    res.update({"sample_images_per_s": round(rate, 2), "sample_windows": windows})
  except Exception as e:  # pylint: disable=broad-except
    res["sample_error"] = f"{type(e).__name__}: {str(e)[:500]}"

  if spec.get("flops"):
    fwd_graph, train_graph = train_flop_graphs(model, shape)
    fwd, trn = graph_flops(fwd_graph), graph_flops(train_graph)
    res["flops_forward_per_image"] = fwd["flops"] / batch_size
    res["flops_train_per_image"] = trn["flops"] / batch_size
    res["flops_train_over_forward"] = round(trn["flops"] / max(fwd["flops"], 1), 3)
    res["flops_forward_detail"], res["flops_train_detail"] = fwd, trn
    conv_ops = fwd["op_counts"].get("Conv2D", 0) + fwd["op_counts"].get("Conv2DBackpropInput", 0)
    res["forward_conv_ops"] = conv_ops
    res["conv_kernels"] = conv_kernel_count(model)
    res["machine_peak"] = machine_peak(spec["windows"])
    achieved = res["flops_train_per_image"] * res["train_images_per_s"]
    res["achieved_train_gflops_per_s"] = round(achieved / 1e9, 3)
    res["efficiency_vs_conv2d"] = round(achieved / (res["machine_peak"]["conv2d"]["gflops_per_s"]
                                                    * 1e9), 4)
  if spec.get("pipeline"):
    res["pipeline"] = pipeline_check(spec, batch_size)
  res["peak_rss_mib"] = round(common.peak_rss_mib(), 1)
  res["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
  return res


def pipeline_check(spec, batch_size):
  """Real Fashion-MNIST tf.data pipeline alone (batches/s), to compare with the step rate."""
  from vapnev_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  cfg = data_lib.DataConfig(dataset="fashion_mnist", batch_size=batch_size)
  try:
    it = iter(data_lib.train_dataset(cfg))
    for _ in range(20):
      next(it)
    rate, windows, _ = time_windows(lambda: next(it).numpy(), batch_size, spec["windows"], 1.0)
    return {"images_per_s": round(rate, 1), "windows": windows}
  except Exception as e:  # pylint: disable=broad-except
    return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def worker_real_data(spec):
  """The library step fed by the real tf.data pipeline vs by an in-memory batch, alternating."""
  _tf()  # TensorFlow (and its threads) before the library
  import keras  # pylint: disable=g-import-not-at-top
  from vapnev_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import make_strategy  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  strategy = make_strategy("one_device")
  with strategy.scope():
    model = build_vapnev(spec["size"])
  b = spec["batch_size"]
  cfg = data_lib.DataConfig(dataset="fashion_mnist", batch_size=b)
  x = next(iter(data_lib.train_dataset(cfg)))
  step_mem, _, _ = make_step(model, x, False, strategy)
  # The same train_step function object can't take both iterator types without retracing, so a
  # second step (sharing the model) reads the real pipeline.
  from vapnev_tf.training import TrainConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import step as step_lib  # pylint: disable=g-import-not-at-top
  with strategy.scope():
    opt = keras.optimizers.Adam(1e-3)
    opt.build(list(model.trainable_variables))
    real_state = step_lib.TrainState(model, opt, step_lib.counter("step"),
                                     step_lib.counter("skipped_steps"))
  real_step = step_lib.make_train_step(strategy, TrainConfig(strategy="one_device"), b)
  real_it = iter(data_lib.distributed_dataset(strategy, cfg, "train"))
  real = lambda: float(real_step(real_state, real_it)["loss"])
  mem = lambda: float(step_mem()["loss"])
  real(), mem(), real(), mem()
  mem_rates, real_rates = [], []
  for _ in range(spec["windows"]):
    mem_rates.append(time_windows(mem, b, 1, spec["window_seconds"])[0])
    real_rates.append(time_windows(real, b, 1, spec["window_seconds"])[0])
  ratios = [r / m for r, m in zip(real_rates, mem_rates)]
  return {"in_memory_images_per_s": round(statistics.median(mem_rates), 2),
          "real_pipeline_images_per_s": round(statistics.median(real_rates), 2),
          "real_over_in_memory_median_ratio": round(statistics.median(ratios), 3),
          "ratios": [round(r, 3) for r in ratios]}


def worker_glow(spec):
  """tfb.Glow matched to our unconditional flow; alternating windows -> images/s ratios."""
  tf = _tf()
  import keras  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import make_strategy  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  strategy = make_strategy("one_device")
  b = spec["batch_size"]
  size = dict(spec["size"])
  with strategy.scope():
    ours = build_vapnev(size, likelihood="realnvp")
  target = common.count_params(ours.trainable_variables)
  x = tf.minimum(tf.random.uniform((b,) + tuple(ours.config.image_shape), 0.0, 256.0, seed=1),
                 255.99)
  out = {"realnvp_params": target}
  try:
    with strategy.scope():
      glow, params, rel = common.matched_glow(
          ours.config.image_shape, target, x, num_steps_per_block=spec.get("glow_steps", 6),
          tolerance=spec.get("glow_tolerance", 0.10))
  except Exception as e:  # pylint: disable=broad-except
    out["glow_error"] = f"{type(e).__name__}: {str(e)[:500]}"
    return out
  out.update({"glow_params": params, "glow_params_rel": round(rel, 4),
              "glow_num_hidden": glow.config.num_hidden, "glow_blocks": 2,
              "glow_steps_per_block": glow.config.num_steps_per_block})
  ours_step, _, _ = make_step(ours, x, False, strategy)
  glow_step, _, _ = make_step(glow, x, False, strategy)
  t = time.perf_counter()
  float(glow_step()["loss"])
  out["glow_first_step_seconds"] = round(time.perf_counter() - t, 2)
  t = time.perf_counter()
  float(ours_step()["loss"])
  out["realnvp_first_step_seconds"] = round(time.perf_counter() - t, 2)
  fo, fg = (lambda: float(ours_step()["loss"])), (lambda: float(glow_step()["loss"]))
  fo(), fg()
  ro, rg = [], []
  for _ in range(spec["windows"]):
    ro.append(time_windows(fo, b, 1, spec["window_seconds"])[0])
    rg.append(time_windows(fg, b, 1, spec["window_seconds"])[0])
  ratios = [g / o for g, o in zip(rg, ro)]
  out.update({"realnvp_train_images_per_s": round(statistics.median(ro), 2),
              "glow_train_images_per_s": round(statistics.median(rg), 2),
              "glow_over_realnvp_train_ratio": round(statistics.median(ratios), 3),
              "ratios": [round(r, 3) for r in ratios]})
  lp_o = tf.function(lambda v: ours.elbo(v))
  lp_g = tf.function(lambda v: glow.log_prob(v))
  lp_o(x).numpy(), lp_g(x).numpy()
  ro, rg = [], []
  for _ in range(spec["windows"]):
    ro.append(time_windows(lambda: lp_o(x).numpy(), b, 1, spec["window_seconds"] / 2)[0])
    rg.append(time_windows(lambda: lp_g(x).numpy(), b, 1, spec["window_seconds"] / 2)[0])
  out.update({"realnvp_log_prob_images_per_s": round(statistics.median(ro), 2),
              "glow_log_prob_images_per_s": round(statistics.median(rg), 2),
              "glow_over_realnvp_log_prob_ratio":
                  round(statistics.median([g / o for g, o in zip(rg, ro)]), 3)})
  fwd_o, _ = train_flop_graphs(ours, x.shape)
  g_graph = tf.function(lambda v: glow.log_prob(v)).get_concrete_function(
      tf.TensorSpec(x.shape, tf.float32)).graph
  out["realnvp_forward_flops_per_image"] = graph_flops(fwd_o)["flops"] / b
  out["glow_forward_flops_per_image"] = graph_flops(g_graph)["flops"] / b
  out["peak_rss_mib"] = round(common.peak_rss_mib(), 1)
  return out


def worker_sweep(spec):
  tf = _tf()
  import keras  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import make_strategy  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  strategy = make_strategy("one_device")
  size = dict(spec["size"])
  with strategy.scope():
    model = build_vapnev(size)
  b = spec["batch_size"]
  x = tf.minimum(tf.random.uniform((b,) + tuple(model.config.image_shape), 0.0, 256.0, seed=1),
                 255.99)
  step_fn, _, _ = make_step(model, x, False, strategy)
  t = time.perf_counter()
  float(step_fn()["loss"])
  first = time.perf_counter() - t
  for _ in range(spec["warmup_steps"]):
    float(step_fn()["loss"])
  rate, windows, calls = time_windows(lambda: float(step_fn()["loss"]), b, spec["windows"],
                                      spec["window_seconds"])
  return {"train_images_per_s": round(rate, 2), "windows": windows, "steps_per_window": calls,
          "first_step_seconds": round(first, 2), "peak_rss_mib": round(common.peak_rss_mib(), 1),
          "params": common.count_params(model.trainable_variables),
          "load_average_end": [round(v, 2) for v in os.getloadavg()]}


WORKERS = {"model": worker_model, "glow": worker_glow, "sweep": worker_sweep,
           "real_data": worker_real_data}


# ====================================================================== driver side (main process)


def run_worker(spec: dict, timeout: int) -> dict:
  """Runs one measurement in a fresh Python process; returns its JSON or an error record."""
  return common.run_worker("benchmarks.throughput", spec, timeout, FLAGS.out_dir)


def sizes_for(name: str) -> tuple[dict, int]:
  """ModelConfig values and batch size of configs/NAME.flags (of smoke.flags with NAME's image
  shape under --smoke)."""
  model_cfg, data_cfg, _ = common.run_configs("smoke" if FLAGS.smoke else name)
  size = dict(model_cfg.to_dict(), image_shape=common.model_config_values(name)["image_shape"])
  return size, data_cfg.batch_size


def base_spec():
  return {"windows": FLAGS.windows, "window_seconds": FLAGS.window_seconds,
          "warmup_steps": FLAGS.warmup_steps}


def write_markdown(path, p):
  m = p["machine"]
  L = ["# Throughput, memory and FLOP efficiency", "",
       f"- command: `{p['command']}`", f"- date: {p['date']}",
       f"- machine: {m['nproc']} CPU ({m['cpu']}), {m['mem_gib']} GiB; load average at start "
       f"{m['load_average']}, at end {p.get('load_average_end')} (other engineers' jobs share "
       "the CPU: absolute figures are pessimistic and noisy; ratios measured in one process are "
       "more reliable)",
       "- versions: " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()),
       f"- model configs: ModelConfig values parsed from configs/NAME.flags (batch size from the "
       f"flagfile); random weights; in-memory batch (no input pipeline); medians of "
       f"{p['settings']['windows']} windows of ~{p['settings']['window_seconds']} s after "
       f"{p['settings']['warmup_steps']} warm-up steps; each row is its own process.", "",
       "| config | jit | params | batch | first step s | train img/s | elbo img/s | sample img/s "
       "| peak RSS MiB | train traces | note |",
       "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  for r in p["models"]:
    note = "; ".join(f"{k}: {r[k][:160]}" for k in ("error", "train_error", "elbo_error",
                                                    "sample_error") if k in r)
    L.append(f"| {r['config']} | {r['jit']} | {common.fmt(r.get('params'))} | {r['batch_size']} | "
             f"{common.fmt(r.get('first_step_seconds'), 1)} | "
             f"{common.fmt(r.get('train_images_per_s'), 1)} | "
             f"{common.fmt(r.get('elbo_images_per_s'), 1)} | "
             f"{common.fmt(r.get('sample_images_per_s'), 1)} | "
             f"{common.fmt(r.get('peak_rss_mib'), 0)} | {common.fmt(r.get('train_step_traces'))} | "
             f"{note} |")
  L += ["", "## FLOPs and efficiency (jit off rows)", "",
        "| config | fwd GFLOP/img | train GFLOP/img | train/fwd | achieved GFLOP/s | conv2d peak "
        "GFLOP/s | matmul GFLOP/s | efficiency | fwd conv ops / conv kernels |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
  for r in p["models"]:
    if "efficiency_vs_conv2d" not in r:
      continue
    pk = r["machine_peak"]
    L.append(f"| {r['config']} ({r['jit']}) | {r['flops_forward_per_image'] / 1e9:.4f} | "
             f"{r['flops_train_per_image'] / 1e9:.4f} | {r['flops_train_over_forward']} | "
             f"{r['achieved_train_gflops_per_s']} | {pk['conv2d']['gflops_per_s']} | "
             f"{pk['matmul']['gflops_per_s']} | **{r['efficiency_vs_conv2d']:.3f}** | "
             f"{r['forward_conv_ops']} / {r['conv_kernels']} |")
  w = p.get("waste", {})
  if w:
    L += ["", "## Waste checks", ""]
    for k, v in w.items():
      L.append(f"- {k}: {v}")
  g = p.get("glow")
  if g:
    L += ["", "## tfb.Glow vs our Real NVP flow (same process, alternating windows)", ""]
    if "error" in g or "glow_error" in g:
      L.append(f"FAILED: {g.get('error') or g.get('glow_error')}")
    else:
      L += [f"- our realnvp (fashion_mnist flow): {g['realnvp_params']:,} params; Glow 2 blocks x "
            f"{g['glow_steps_per_block']} steps, num_hidden {g['glow_num_hidden']}: "
            f"{g['glow_params']:,} params ({g['glow_params_rel']:+.1%})",
            f"- training img/s: realnvp {g['realnvp_train_images_per_s']}, Glow "
            f"{g['glow_train_images_per_s']}; **Glow/realnvp = {g['glow_over_realnvp_train_ratio']}**"
            f" (per-window ratios {g['ratios']})",
            f"- log_prob img/s: realnvp {g['realnvp_log_prob_images_per_s']}, Glow "
            f"{g['glow_log_prob_images_per_s']}; Glow/realnvp = "
            f"{g['glow_over_realnvp_log_prob_ratio']}",
            f"- forward GFLOP/img: realnvp {g['realnvp_forward_flops_per_image'] / 1e9:.4f}, Glow "
            f"{g['glow_forward_flops_per_image'] / 1e9:.4f}",
            f"- first step s: realnvp {g['realnvp_first_step_seconds']}, Glow "
            f"{g['glow_first_step_seconds']}"]
  if p.get("sweep"):
    L += ["", "## Sweep (quick config, jit off, training step)", "",
          "| image | batch | params | train img/s | peak RSS MiB | first step s | note |",
          "|---|---:|---:|---:|---:|---:|---|"]
    for r in p["sweep"]:
      L.append(f"| {r['image_size']}x{r['image_size']}x1 | {r['batch_size']} | "
               f"{common.fmt(r.get('params'))} | {common.fmt(r.get('train_images_per_s'), 1)} | "
               f"{common.fmt(r.get('peak_rss_mib'), 0)} | "
               f"{common.fmt(r.get('first_step_seconds'), 1)} | {r.get('error', '')[:160]} |")
  with open(path, "w") as f:
    f.write("\n".join(L) + "\n")


def main(argv):
  del argv
  if FLAGS.worker:
    spec = json.loads(FLAGS.worker)
    res = WORKERS[spec["kind"]](spec)
    res["spec"] = spec
    common.write_json(FLAGS.worker_out, res)
    return
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  if FLAGS.render_only:
    with open(os.path.join(FLAGS.out_dir, "throughput.json")) as f:
      p = json.load(f)
    p.setdefault("waste", summarise_waste(p))
    write_markdown(os.path.join(FLAGS.out_dir, "throughput.md"), p)
    print(open(os.path.join(FLAGS.out_dir, "throughput.md")).read())
    return
  p = common.header()
  p["settings"] = {"configs": FLAGS.configs, "jit": FLAGS.jit, "windows": FLAGS.windows,
                   "window_seconds": FLAGS.window_seconds, "warmup_steps": FLAGS.warmup_steps,
                   "smoke": FLAGS.smoke,
                   "model_config_source": "parsed from configs/NAME.flags "
                                          "(benchmarks.common.run_configs)"}
  p["models"] = []
  json_path = os.path.join(FLAGS.out_dir, "throughput.json")
  for name in FLAGS.configs:
    size, batch = sizes_for(name)
    for jit in FLAGS.jit:
      spec = dict(base_spec(), kind="model", label=f"{name} jit={jit}", size=size,
                  batch_size=batch, jit=jit == "on", flops=True,
                  waste=jit == "off", pipeline=(jit == "off" and name != "cifar10"))
      r = run_worker(spec, FLAGS.worker_timeout)
      r.update({"config": name, "jit": jit, "batch_size": batch})
      p["models"].append(r)
      p["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
      common.write_json(json_path, p)
  # Waste: real input pipeline vs in-memory, on the fashion_mnist (or smoke) config.
  name = "fashion_mnist" if "fashion_mnist" in FLAGS.configs else FLAGS.configs[0]
  size, batch = sizes_for(name)
  if FLAGS.real_data and size["image_shape"] == (28, 28, 1):
    p["real_data"] = run_worker(dict(base_spec(), kind="real_data", label="real data", size=size,
                                     batch_size=batch), FLAGS.worker_timeout)
  p["waste"] = summarise_waste(p)
  if FLAGS.glow:
    gspec = dict(base_spec(), kind="glow", label="glow", size=size, batch_size=batch)
    if FLAGS.smoke:
      gspec.update(glow_steps=1, glow_tolerance=float("inf"))
    p["glow"] = run_worker(gspec, FLAGS.worker_timeout)
  common.write_json(json_path, p)
  if FLAGS.sweep:
    quick, _ = sizes_for("quick")
    p["sweep"] = []
    points = [(int(s), 64) for s in FLAGS.sweep_image_sizes] + [
        (28, int(b)) for b in FLAGS.sweep_batch_sizes if int(b) != 64]
    for image_size, b in points:
      size = dict(quick, image_shape=(image_size, image_size, 1))
      spec = dict(base_spec(), kind="sweep", label=f"sweep {image_size} b{b}", size=size,
                  batch_size=b, window_seconds=max(1.0, FLAGS.window_seconds / 2),
                  warmup_steps=1)
      r = run_worker(spec, FLAGS.worker_timeout)
      r.update({"image_size": image_size, "batch_size": b})
      p["sweep"].append(r)
      common.write_json(json_path, p)
  p["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
  common.write_json(json_path, p)
  write_markdown(os.path.join(FLAGS.out_dir, "throughput.md"), p)
  print(open(os.path.join(FLAGS.out_dir, "throughput.md")).read())


def summarise_waste(p) -> dict:
  w = {}
  for r in p["models"]:
    tag = f"{r['config']} jit={r['jit']}"
    if "train_step_traces" in r:
      w[f"{tag}: traces of the train step over the whole measurement"] = r["train_step_traces"]
    if "train_images_per_s_sync_once_per_window" in r and r.get("train_images_per_s"):
      w[f"{tag}: img/s synced every step vs once per window (Python/sync overhead)"] = (
          f"{r['train_images_per_s']} vs {r['train_images_per_s_sync_once_per_window']} "
          f"(ratio {r['train_images_per_s_sync_once_per_window'] / r['train_images_per_s']:.3f})")
    if "forward_conv_ops" in r and r["jit"] == "off":
      w[f"{tag}: conv ops in the forward (elbo) graph vs conv kernels (duplicates if >)"] = (
          f"{r['forward_conv_ops']} vs {r['conv_kernels']}")
    pipe = r.get("pipeline")
    if pipe and "images_per_s" in pipe and r.get("train_images_per_s"):
      w[f"{tag}: real tf.data pipeline alone vs training step (img/s)"] = (
          f"{pipe['images_per_s']} vs {r['train_images_per_s']} "
          f"(pipeline {pipe['images_per_s'] / r['train_images_per_s']:.0f}x faster)")
  rd = p.get("real_data")
  if rd and "error" not in rd:
    w["training with the real pipeline / with an in-memory batch (same process, alternating)"] = (
        f"{rd['real_pipeline_images_per_s']} / {rd['in_memory_images_per_s']} img/s, median ratio "
        f"{rd['real_over_in_memory_median_ratio']}")
  elif rd:
    w["real-pipeline check"] = rd["error"]
  return w


if __name__ == "__main__":
  app.run(main)
