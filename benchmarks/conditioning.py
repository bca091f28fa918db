"""Training images/s of VAPNEV's network options vs the same-flow realnvp.

Every model is built in ONE process and timed in alternating windows (realnvp, then each VAPNEV
variant, round after round, like throughput.py's Glow comparison), so a loaded machine slows all
of them alike; the reported number per variant is the median over rounds of
(VAPNEV variant img/s) / (realnvp img/s of the same round). Sizes:

    quick      configs/quick.flags (latent 32, flow 2 x (2+2) couplings of 16 filters)
    benchmark  latent 64, encoder 4x1 from 16 filters, flow 2 scales x (3+3) couplings of 16
               filters, 1 residual block
    fashion_mnist  configs/fashion_mnist.flags (latent 64, encoder 4x2 from 32 filters, flow 2
               scales x (3+3) couplings of 32 filters, 2 residual blocks)

Batch 64 on Fashion-MNIST-shaped inputs (28x28x1, a fixed in-memory batch), the library's training
step (`vapnev_tf.training.step.make_train_step`), no XLA.

    python -m benchmarks.conditioning                  # writes benchmarks/results/conditioning.*
    python -m benchmarks.conditioning --smoke --out_dir=/tmp/x
"""
import os
import statistics
import time

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["quick", "benchmark"], "Sizes: quick, benchmark, fashion_mnist.")
flags.DEFINE_list("variants", None, "Variant names (default: every one in VARIANTS).")
flags.DEFINE_list("realnvp_variants", ["fused", "fused+bf16"],
                  "VARIANTS also applied to the realnvp baseline, as references (the options "
                  "speed up its l1/m1 too); reported as 'realnvp <name>'.")
flags.DEFINE_boolean("glow", True, "Also time tfp.bijectors.Glow (benchmarks/common.py GlowFlow, "
                     "6 steps per block) matched to the realnvp's parameter count within 10%; "
                     "each variant then gets a ratio to it too (off under --smoke).")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("windows", 5, "Timed rounds (each model gets one window per round).")
flags.DEFINE_float("window_seconds", 3.0, "Seconds per timed window.")
flags.DEFINE_boolean("smoke", False, "Tiny models, 2 short rounds, 2 variants (for the tests).")
flags.DEFINE_string("out_dir", "benchmarks/results", "Where conditioning.{json,md} go.")

# name -> ModelConfig overrides of the VAPNEV variant ("paper" is the default architecture).
VARIANT_NAMES = ("paper", "shared", "fused", "shared+fused", "bf16", "shared+bf16", "fused+bf16",
                 "shared+fused+bf16")
VARIANTS = {name: ({} if name == "paper" else common.parse_variant("vapnev+" + name, {})[1])
            for name in VARIANT_NAMES}


def size_values(name: str) -> dict:
  """ModelConfig values of a size (the image shape is Fashion-MNIST's)."""
  return common.timing_size(name, FLAGS.smoke)


def make_step(model, batch, strategy):
  """The library's training step on a repeated in-memory batch; `step()` returns the loss."""
  run, _, _ = common.library_train_step(model, batch, strategy)
  return lambda: float(run()["loss"])


def timed_window(fn, calls: int, images_per_call: int) -> float:
  t = time.perf_counter()
  for _ in range(calls):
    fn()
  return calls * images_per_call / (time.perf_counter() - t)


def measure_size(size_name: str) -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vapnev_tf.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import make_strategy  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  strategy = make_strategy("one_device")
  values = size_values(size_name)
  b = FLAGS.batch_size
  x = tf.minimum(tf.random.uniform((b,) + tuple(values["image_shape"]), 0.0, 256.0, seed=1),
                 255.99)
  names = FLAGS.variants or (["paper", "shared+fused"] if FLAGS.smoke else list(VARIANTS))
  models = {"realnvp": dict(values, likelihood="realnvp")}
  models.update({n: dict(values, likelihood="vapnev", **VARIANTS[n]) for n in names})
  if not FLAGS.smoke:
    models.update({f"realnvp {n}": dict(values, likelihood="realnvp", **VARIANTS[n])
                   for n in FLAGS.realnvp_variants})
  steps, info = {}, {}
  for name, cfg in models.items():
    with strategy.scope():
      model = VAPNEV(ModelConfig(**cfg))
    steps[name] = make_step(model, x, strategy)
    t = time.perf_counter()
    loss = steps[name]()
    first = time.perf_counter() - t
    t = time.perf_counter()
    steps[name]()
    one = max(time.perf_counter() - t, 1e-4)
    info[name] = {"params": common.count_params(model.trainable_variables),
                  "first_step_seconds": round(first, 2), "first_loss": round(loss, 3),
                  "calls_per_window": max(1, int(round(FLAGS.window_seconds / one)))}
  if FLAGS.glow and not FLAGS.smoke:
    with strategy.scope():
      glow, params, rel = common.matched_glow(tuple(values["image_shape"]),
                                              info["realnvp"]["params"], x)
    steps["tfb.Glow"] = make_step(glow, x, strategy)
    t = time.perf_counter()
    loss = steps["tfb.Glow"]()
    first = time.perf_counter() - t
    t = time.perf_counter()
    steps["tfb.Glow"]()
    one = max(time.perf_counter() - t, 1e-4)
    info["tfb.Glow"] = {"params": params, "params_vs_realnvp": round(rel, 4),
                        "glow_num_hidden": glow.config.num_hidden,
                        "first_step_seconds": round(first, 2), "first_loss": round(loss, 3),
                        "calls_per_window": max(1, int(round(FLAGS.window_seconds / one)))}
    models["tfb.Glow"] = None
  rates = {name: [] for name in models}
  for _ in range(FLAGS.windows):
    for name in models:
      rates[name].append(timed_window(steps[name], info[name]["calls_per_window"], b))
  out = {"size": size_name, "model_config": values, "batch_size": b, "variants": {}}
  for name in models:
    entry = dict(info[name], train_images_per_s=round(statistics.median(rates[name]), 2),
                 windows=[round(r, 2) for r in rates[name]])
    if name != "realnvp":
      ratios = [v / r for v, r in zip(rates[name], rates["realnvp"])]
      entry.update(over_realnvp=round(statistics.median(ratios), 3),
                   ratios=[round(r, 3) for r in ratios])
    if name in VARIANTS or name.startswith("realnvp "):
      entry["options"] = VARIANTS[name.replace("realnvp ", "")]
    if "tfb.Glow" in rates and name != "tfb.Glow":
      entry["over_glow"] = round(statistics.median(
          v / g for v, g in zip(rates[name], rates["tfb.Glow"])), 3)
    out["variants"][name] = entry
  return out


def write_markdown(path: str, payload: dict) -> None:
  lines = ["# VAPNEV network options vs realnvp: training images/s (issue 15)", "",
           f"Command: `{payload['command']}`  ", f"Date: {payload['date']}; load average "
           f"{payload['machine'].get('load_average')}; {payload['windows']} alternating rounds of "
           f"~{payload['window_seconds']} s per model; ratio = median over rounds of "
           "(variant img/s) / (realnvp img/s of the same round). Rows 'realnvp <options>' apply the "
           "options to the baseline itself (reference).", ""]
  for result in payload["results"]:
    lines += [f"## {result['size']} (batch {result['batch_size']})", "",
              "| model | params | train img/s | / realnvp | / tfb.Glow | first step s |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, e in result["variants"].items():
      ratio = "1" if name == "realnvp" else f"**{e['over_realnvp']:.3f}**"
      over_glow = "1" if name == "tfb.Glow" else common.fmt(e.get("over_glow"))
      lines.append(f"| {name} | {e['params']:,} | {e['train_images_per_s']} | {ratio} | "
                   f"{over_glow} | {e['first_step_seconds']} |")
    glow = result["variants"].get("tfb.Glow")
    if glow:
      lines += ["", f"tfb.Glow: 2 blocks x 6 steps, num_hidden={glow['glow_num_hidden']}, "
                f"{glow['params_vs_realnvp']:+.1%} parameters vs realnvp."]
    lines.append("")
  common.write_lines(path, lines)


def main(argv):
  del argv
  if FLAGS.smoke:
    FLAGS.windows, FLAGS.window_seconds, FLAGS.batch_size = 2, 0.05, 8
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  sizes = ["smoke"] if FLAGS.smoke else FLAGS.sizes
  results = []
  payload = dict(common.header(), windows=FLAGS.windows, window_seconds=FLAGS.window_seconds,
                 results=results)
  for size in sizes:
    results.append(measure_size(size))
    common.write_json(os.path.join(FLAGS.out_dir, "conditioning.json"), payload)
    write_markdown(os.path.join(FLAGS.out_dir, "conditioning.md"), payload)
  print(f"wrote {os.path.join(FLAGS.out_dir, 'conditioning.md')}")


if __name__ == "__main__":
  app.run(main)
