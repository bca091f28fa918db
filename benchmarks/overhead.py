r"""Per-op overhead of one training step (docs/results.md): what the small networks of a
2-core CPU run pay besides arithmetic, and which settings buy it back.

    python -m benchmarks.overhead                      # writes benchmarks/results/overhead.{json,md}
    python -m benchmarks.overhead --smoke --out_dir=/tmp/x

Four studies, each in fresh worker processes (TF's thread pools and oneDNN are fixed at start-up):
  upsampling  a stride-2 3x3 `Conv2DTranspose` + centre crop (what the decoder and the z-trunk use)
              vs nearest or bilinear resize to the target size + a 3x3 `Conv2D`, at the decoder's
              and trunk's shapes of the chosen size; forward + gradient time per call.
  batch       training img/s of the library's step at several batch sizes (one process,
              alternating windows).
  xla         the same step with `jit_compile` off and on (one process, alternating windows).
  threads     the step at batch 64 under TF's thread settings (intra-op, inter-op) and with oneDNN
              off (`TF_ENABLE_ONEDNN_OPTS=0`), one process per setting, the default measured first
              and last (the spread of those two is the machine's drift).

The model is `--size` (configs/NAME.flags, or the quality benchmark's "benchmark" size) with
`--variant` options (benchmarks/common.py MODEL_OPTIONS), on a fixed in-memory batch of
Fashion-MNIST-shaped pixels.
"""
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("size", "quick", "Model size: a configs/ name (quick, fashion_mnist) or "
                    "'benchmark' (benchmarks/quality.py MODEL_SIZE).")
flags.DEFINE_string("variant", "vapnev+shared+fused+bf16", "Model variant (benchmarks/common.py "
                    "parse_variant), e.g. vapnev, vapnev+shared+fused.")
flags.DEFINE_list("studies", ["upsampling", "batch", "xla", "threads"], "Studies to run.")
flags.DEFINE_list("batch_sizes", ["32", "64", "128", "256"], "Batch sizes of the batch study.")
flags.DEFINE_list("thread_settings", ["0/0", "2/1", "1/2", "1/1", "onednn_off", "0/0"],
                  "intra/inter-op threads per worker (0: TF's default), or 'onednn_off'.")
flags.DEFINE_integer("windows", 5, "Timed windows per measurement (alternating where compared).")
flags.DEFINE_float("window_seconds", 3.0, "Seconds per timed window.")
flags.DEFINE_integer("worker_timeout", 600, "Seconds before a worker is killed.")
flags.DEFINE_boolean("smoke", False, "Tiny model, short windows (for the tests).")
flags.DEFINE_string("out_dir", "benchmarks/results", "Where overhead.{json,md} go.")
flags.DEFINE_string("worker", None, "INTERNAL: JSON spec of one measurement (subprocess mode).")
flags.DEFINE_string("worker_out", None, "INTERNAL: where the worker writes its JSON.")

def size_values(name: str, smoke: bool) -> dict:
  return common.size_values("smoke" if smoke else name)


# ===================================================================== worker side (subprocess)


def _alternating_rates(fns: dict, images: dict, windows: int, window_seconds: float) -> dict:
  """{name: [img/s per window]}: one window per name per round, `windows` rounds."""
  calls = {}
  for name, fn in fns.items():
    t = time.perf_counter()
    fn()
    calls[name] = max(1, int(round(window_seconds / max(time.perf_counter() - t, 1e-4))))
  rates = {name: [] for name in fns}
  for _ in range(windows):
    for name, fn in fns.items():
      t = time.perf_counter()
      for _ in range(calls[name]):
        fn()
      rates[name].append(calls[name] * images[name] / (time.perf_counter() - t))
  return rates


def _build_step(spec, batch_size, jit):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vapnev_tf.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import make_strategy  # pylint: disable=g-import-not-at-top
  size = spec["size"]
  base, overrides = common.parse_variant(spec["variant"], size)
  strategy = make_strategy("one_device")
  x = tf.minimum(tf.random.uniform((batch_size,) + tuple(size["image_shape"]), 0.0, 256.0,
                                   seed=1), 255.99)
  with strategy.scope():
    model = VAPNEV(ModelConfig(**dict(size, likelihood=base, **overrides)))
  run, _, _ = common.library_train_step(model, x, strategy, jit_compile=jit)
  t = time.perf_counter()
  loss = float(run()["loss"])
  first = time.perf_counter() - t
  return (lambda: float(run()["loss"])), {"first_step_seconds": round(first, 2),
                                          "first_loss": round(loss, 3),
                                          "params": common.count_params(model.trainable_variables)}


def worker_steps(spec):
  """Training img/s of each (batch, jit) in spec["cases"], alternating windows in this process."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  intra, inter = spec.get("threads", (0, 0))
  tf.config.threading.set_intra_op_parallelism_threads(intra)
  tf.config.threading.set_inter_op_parallelism_threads(inter)
  fns, images, info = {}, {}, {}
  for batch, jit in spec["cases"]:
    key = f"batch {batch}{' xla' if jit else ''}"
    fns[key], info[key] = _build_step(spec, batch, jit)
    images[key] = batch
  rates = _alternating_rates(fns, images, spec["windows"], spec["window_seconds"])
  return {"cases": {k: dict(info[k], images_per_s=round(statistics.median(v), 2),
                            windows=[round(r, 2) for r in v]) for k, v in rates.items()},
          "threads": [intra, inter], "intra_op_threads_effective":
          tf.config.threading.get_intra_op_parallelism_threads()}


def upsampling_shapes(size: dict) -> list:
  """(h_in, w_in, c_in) -> (h_out, w_out, c_out) of every stride-2 transposed conv of the decoder
  and the shared z-trunk of `size` (vapnev_tf.sizing walk), deduplicated."""
  from vapnev_tf import sizing  # pylint: disable=g-import-not-at-top
  h, w, _ = size["image_shape"]
  blocks = size["encoder_blocks"]
  filters = size.get("decoder_filters") or size["encoder_filters"]  # 0: the encoder's mirror
  start, targets = sizing.upsampling_plan(h, w, blocks)
  shapes, c_in, cur = [], filters * 2 ** (blocks - 1), start
  for i, k in enumerate(reversed(range(blocks))):
    shapes.append((cur + (c_in,), targets[i] + (filters * 2 ** k,), "decoder"))
    cur, c_in = targets[i], filters * 2 ** k
  start, targets = sizing.upsampling_plan(h, w, sizing.halvings_to_reach(max(h, w)))
  cur = start
  for target in targets:
    shapes.append((cur + (size["flow_filters"],), target + (size["flow_filters"],), "z-trunk"))
    cur = target
  return shapes


def worker_upsampling(spec):
  """Forward + gradient time (ms per call, batch B) of the three ways to double a feature map."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vapnev_tf.layers.coupling_network import centre_crop  # pylint: disable=g-import-not-at-top
  b, dtype = spec["batch_size"], spec["dtype"]
  out = []
  for (hi, wi, ci), (ho, wo, co), where in upsampling_shapes(spec["size"]):
    x = tf.random.normal((b, hi, wi, ci))
    layers = {
        "transposed+crop": (keras.layers.Conv2DTranspose(co, 3, strides=2, padding="same",
                                                         dtype=dtype), "crop"),
        "nearest+conv": (keras.layers.Conv2D(co, 3, padding="same", dtype=dtype), "nearest"),
        "bilinear+conv": (keras.layers.Conv2D(co, 3, padding="same", dtype=dtype), "bilinear"),
    }
    fns = {}
    for name, (layer, mode) in layers.items():
      def forward(v, layer=layer, mode=mode):
        if mode == "crop":
          return centre_crop(layer(v), ho, wo)
        return layer(tf.image.resize(v, (ho, wo), method=mode))
      forward(x)  # builds the layer

      @tf.function
      def step(v, layer=layer, forward=forward):
        with tf.GradientTape() as tape:
          tape.watch(v)
          y = tf.reduce_sum(tf.cast(forward(v), tf.float32))
        return tape.gradient(y, [v] + layer.trainable_variables)
      fns[name] = lambda step=step: [g.numpy() for g in step(x)][:0]
    rates = _alternating_rates(fns, {n: 1 for n in fns}, spec["windows"], spec["window_seconds"])
    ms = {n: round(1000.0 / statistics.median(r), 3) for n, r in rates.items()}
    out.append({"where": where, "in": [hi, wi, ci], "out": [ho, wo, co], "ms_per_call": ms})
  return {"shapes": out, "batch_size": b, "dtype": dtype}


WORKERS = {"steps": worker_steps, "upsampling": worker_upsampling}


# ====================================================================== driver side (main process)


def _worker(spec, env=None):
  return common.run_worker("benchmarks.overhead", spec, FLAGS.worker_timeout, FLAGS.out_dir, env)


def _median_ratio(a, b):
  return round(statistics.median(x / y for x, y in zip(a, b)), 3)


def write_markdown(path, p):
  lines = ["# Per-op overhead of one training step (issue 15)", "",
           f"- command: `{p['command']}`", f"- date: {p['date']}",
           f"- machine: load average at start {p['machine']['load_average']}, at end "
           f"{p.get('load_average_end')} (about 2 is this benchmark alone on 2 cores)",
           f"- model: `{p['variant']}` at size `{p['size']}`; {p['windows']} windows of "
           f"~{p['window_seconds']} s", ""]
  up = p.get("upsampling")
  if up:
    lines += ["## Upsampling: transposed conv vs resize + conv (forward + gradient, ms per call, "
              f"batch {up['batch_size']}, {up['dtype']})", "",
              "| where | in | out | transposed+crop | nearest+conv | bilinear+conv |",
              "|---|---|---|---:|---:|---:|"]
    for s in up.get("shapes", []):
      m = s["ms_per_call"]
      lines.append(f"| {s['where']} | {'x'.join(map(str, s['in']))} | "
                   f"{'x'.join(map(str, s['out']))} | {m['transposed+crop']} | "
                   f"{m['nearest+conv']} | {m['bilinear+conv']} |")
    if up.get("error"):
      lines.append(f"\nFAILED: {up['error']}")
    lines.append("")
  for study, title in (("batch", "Batch size"), ("xla", "XLA (jit_compile)")):
    r = p.get(study)
    if not r:
      continue
    lines += [f"## {title}: training img/s, one process, alternating windows", ""]
    if r.get("error"):
      lines += [f"FAILED: {r['error']}", ""]
      continue
    ref = r["cases"]["batch 64"]["windows"]
    lines += ["| case | params | img/s (median) | / batch 64 (median of per-round ratios) | "
              "first step s |", "|---|---:|---:|---:|---:|"]
    for name, c in r["cases"].items():
      lines.append(f"| {name} | {c['params']:,} | {c['images_per_s']} | "
                   f"{_median_ratio(c['windows'], ref)} | {c['first_step_seconds']} |")
    lines.append("")
  th = p.get("threads")
  if th:
    lines += ["## Threads and oneDNN: training img/s at batch 64, one process per setting", "",
              "| setting | intra-op threads in effect | img/s (median) | windows |",
              "|---|---:|---:|---|"]
    for t in th:
      if t.get("error"):
        lines.append(f"| {t['setting']} | – | FAILED | {t['error'][:80]} |")
        continue
      c = t["cases"]["batch 64"]
      lines.append(f"| {t['setting']} | {t['intra_op_threads_effective']} | {c['images_per_s']} "
                   f"| {c['windows']} |")
    lines.append("")
  common.write_lines(path, lines)


def main(argv):
  del argv
  if FLAGS.worker:
    spec = json.loads(FLAGS.worker)
    common.write_json(FLAGS.worker_out, WORKERS[spec["kind"]](spec))
    return
  if FLAGS.smoke:
    FLAGS.windows, FLAGS.window_seconds = 2, 0.05
  size = size_values(FLAGS.size, FLAGS.smoke)
  common.parse_variant(FLAGS.variant, size)  # fails before any worker on a bad name
  unknown = set(FLAGS.studies) - {"upsampling", "batch", "xla", "threads"}
  if unknown:
    raise app.UsageError(f"--studies: unknown {sorted(unknown)}; expected upsampling, batch, "
                         "xla, threads.")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  p = dict(common.header(), size=FLAGS.size, variant=FLAGS.variant, windows=FLAGS.windows,
           window_seconds=FLAGS.window_seconds, model_config=size)
  base = {"size": size, "variant": FLAGS.variant, "windows": FLAGS.windows,
          "window_seconds": FLAGS.window_seconds}
  batches = [8] if FLAGS.smoke else [int(b) for b in FLAGS.batch_sizes]
  if 64 not in batches:
    batches.append(64)
  dtype = ("mixed_bfloat16" if common.parse_variant(FLAGS.variant, size)[1].get("compute_dtype")
           == "bfloat16" else "float32")
  jobs = {
      "upsampling": lambda: _worker(dict(base, kind="upsampling", batch_size=64, dtype=dtype,
                                         label="upsampling")),
      "batch": lambda: _worker(dict(base, kind="steps", cases=[[b, False] for b in batches],
                                    label="batch sizes")),
      "xla": lambda: _worker(dict(base, kind="steps", cases=[[64, False], [64, True]],
                                  label="xla")),
  }
  for study in ("upsampling", "batch", "xla"):
    if study in FLAGS.studies:
      p[study] = jobs[study]()
      common.write_json(os.path.join(FLAGS.out_dir, "overhead.json"), p)
  if "threads" in FLAGS.studies:
    p["threads"] = []
    for setting in (["0/0", "1/1"] if FLAGS.smoke else FLAGS.thread_settings):
      if setting == "onednn_off":
        threads, env = [0, 0], {"TF_ENABLE_ONEDNN_OPTS": "0"}
      else:
        threads, env = [int(v) for v in setting.split("/")], None
      r = _worker(dict(base, kind="steps", cases=[[64, False]], threads=threads,
                       label=f"threads {setting}"), env)
      r["setting"] = {"0/0": "TF default"}.get(setting, setting if setting == "onednn_off" else
                                               f"intra {threads[0]} / inter {threads[1]}")
      p["threads"].append(r)
      common.write_json(os.path.join(FLAGS.out_dir, "overhead.json"), p)
  p["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
  common.write_json(os.path.join(FLAGS.out_dir, "overhead.json"), p)
  write_markdown(os.path.join(FLAGS.out_dir, "overhead.md"), p)
  print(open(os.path.join(FLAGS.out_dir, "overhead.md")).read())


if __name__ == "__main__":
  app.run(main)
