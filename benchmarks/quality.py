r"""Quality at equal wall-clock budget on real Fashion-MNIST (docs/results.md).

    python -m benchmarks.quality --budget_minutes=20            # the dedicated run
    python -m benchmarks.quality --budget_minutes=4 --eval_take=2000 --iw_samples=20

Every model is trained for the same wall-clock budget, with the same batch size, data stream and
optimiser (Adam, lr 5e-4 -- the stable rate of configs/fashion_mnist.flags, see BUILD_NOTES.md
decision 16 -- Keras defaults otherwise, constant learning rate), by the LIBRARY's own
training step (`vapnev_tf.training.step.make_train_step`, on a OneDeviceStrategy): per-example loss
-(log p(x|z) - w_KL(step) KL), w_KL linear 0 -> 1 over `--kl_anneal_steps` (no KL for flows).
The budget clock starts after the first (tracing) step, whose time is reported separately, and is
paused while the learning curve is evaluated.

Then the test set (first `--eval_take` images, default all 10,000) is evaluated by the library's
`Evaluator`: the ELBO and the importance-weighted bound with k = `--iw_samples` for VAEs, the exact
NLL for the pure flows (realnvp, glow). Everything is bits/dim of dequantised pixels in [0, 256).

Models ("same flow" for vapnev, vae_flow and realnvp; see MODEL_SIZE):
  vapnev          the paper's model (conditional flow, decoder base)
  vae_flow        the same flow, not conditioned on z
  realnvp         the flow alone, standard-normal base
  pixel_gaussian  VAE with a Gaussian on pixels/256
  pixel_logistic  VAE with a discretised logistic
  glow            tfp.bijectors.Glow (default tf_keras networks, width matched to realnvp's
                  parameter count within 10%), standard-normal base, our logit pre-processing

Variants: `--models` also takes a model with options, `BASE+OPTION+...` (options in
benchmarks/common.py MODEL_OPTIONS: shared, fused, bf16, vdq, glow, iaf; and with a value:
alpha<VALUE> = logit_alpha, freebits<VALUE> = kl_free_nats, clip<VALUE> = clip_grad_norm), e.g.
`vapnev+shared+fused+bf16` or `realnvp+vdq+clip5e4`; the markdown then has an ablation table of
every variant against its base model (same budget, same data). `--size` picks the model size: the
default `benchmark` (MODEL_SIZE) or a config's (`quick`, `fashion_mnist`: configs/NAME.flags).

Outputs: OUT_DIR/quality.json, OUT_DIR/quality.md, OUT_DIR/quality_curve.png (test ELBO bits/dim
on `--curve_take` images vs training minutes).
"""
import functools
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import keras
import numpy as np

from benchmarks import common
from vapnev_tf import data as data_lib
from vapnev_tf.config import ModelConfig
from vapnev_tf.metrics import bits_per_dim
from vapnev_tf.model import VAPNEV
from vapnev_tf.training import Evaluator
from vapnev_tf.training import TrainConfig
from vapnev_tf.training import make_strategy
from vapnev_tf.training import restore
from vapnev_tf.training.step import TrainState
from vapnev_tf.training.step import counter
from vapnev_tf.training.step import make_train_step

ALL_MODELS = ("vapnev", "vae_flow", "realnvp", "pixel_gaussian", "pixel_logistic", "glow")
# Our models' size (common.BENCHMARK_SIZE without the image shape; vapnev, vae_flow, realnvp share
# the flow). The smoke size is smaller still than common.SMOKE_SIZE: one scale, no residual block.
MODEL_SIZE = {k: v for k, v in common.BENCHMARK_SIZE.items() if k != "image_shape"}
SMOKE_SIZE = dict(latent_dim=8, encoder_filters=4, encoder_blocks=2, encoder_layers_per_block=1,
                  flow_scales=1, flow_checkerboard=1, flow_channelwise=1, flow_filters=4,
                  flow_res_blocks=0)

FLAGS = flags.FLAGS
flags.DEFINE_float("budget_minutes", 20.0, "Training wall-clock budget per model (minutes).")
flags.DEFINE_list("models", list(ALL_MODELS), f"Models to train: names from {ALL_MODELS}, "
                  "optionally with options, e.g. vapnev+shared+fused (common.MODEL_OPTIONS).")
flags.DEFINE_string("size", "benchmark", "Model size of vapnev/vae_flow/realnvp and the pixel "
                    "VAEs: 'benchmark' (MODEL_SIZE) or a config name (quick, fashion_mnist).")
flags.DEFINE_integer("batch_size", 64, "Training batch size (every model).")
flags.DEFINE_integer("eval_take", None, "Evaluate on the first N test images (default: all 10000).")
flags.DEFINE_integer("iw_samples", 100, "k of the importance-weighted bound (VAEs).")
flags.DEFINE_integer("iw_chunk_size", 10, "Importance samples evaluated at once.")
flags.DEFINE_integer("eval_batch_size", 250, "Evaluation batch size.")
flags.DEFINE_integer("kl_anneal_steps", 500, "Linear KL annealing 0 -> 1 over this many steps.")
flags.DEFINE_float("learning_rate", 5e-4, "Adam learning rate (every model). 1e-3 blows up "
                   "VAPNEV after warm-up at the fashion_mnist size (BUILD_NOTES.md, Decisions).")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order and z draws.")
flags.DEFINE_integer("curve_take", 1000, "Test images of each learning-curve point.")
flags.DEFINE_integer("curve_points", 8, "Learning-curve evaluations per model (0: none).")
flags.DEFINE_list("curve_models", ["all"], "Models with a learning curve ('all' or names).")
flags.DEFINE_integer("glow_steps_per_block", 6, "Glow steps per block (2 blocks).")
flags.DEFINE_integer("max_steps", 0, "Stop after this many steps even within budget (0: off).")
flags.DEFINE_integer("budget_steps", 0, "Training budget per model in steps instead of "
                     "--budget_minutes (0: off); curve points then fall at equal step intervals, "
                     "so a run's steps and curve do not depend on the machine's load (tests).",
                     lower_bound=0)
flags.DEFINE_integer("train_take", None, "Use only the first N training images (smoke tests).")
flags.DEFINE_boolean("smoke", False, "Tiny models (for tests): see SMOKE_SIZE.")
flags.DEFINE_boolean("append", False, "Merge into OUT_DIR/quality.json: keep its results of the "
                     "models not run now (a model run now replaces its old result).")
flags.DEFINE_string("out_dir", "benchmarks/results", "Where quality.{json,md,png} go.")


FLOW_ONLY = ("realnvp", "glow")  # no encoder: the exact NLL, no KL annealing


def base_name(name: str) -> str:
  return name.split("+", 1)[0]


def size_values(name: str) -> dict:
  """ModelConfig size values (no image shape) of `--size`."""
  if FLAGS.smoke:
    return dict(SMOKE_SIZE)
  values = common.size_values(name)
  return {k: v for k, v in values.items() if k != "image_shape"}


def check_models(names) -> None:
  for name in names:
    base = base_name(name)
    if base not in ALL_MODELS:
      raise app.UsageError(f"--models: unknown model {base!r} in {name!r}; expected one of "
                           f"{ALL_MODELS}, optionally with +options.")
    options = name.split("+")[1:]
    if base == "glow" and any(common.logit_alpha_option(o) is None for o in options):
      raise app.UsageError(f"--models: {name!r}: tfb.Glow takes no options but alpha<VALUE>.")
    try:
      _, overrides = common.parse_variant(name, MODEL_SIZE)
      ModelConfig(likelihood=base, **dict(MODEL_SIZE, **overrides)) if base != "glow" else None
    except ValueError as e:
      raise app.UsageError(f"--models: {name!r}: {e}") from None


def build_model(name: str, size: dict, x_build, realnvp_flow_params: int | None):
  """Returns (model, info dict)."""
  if base_name(name) == "glow":
    logit_alpha = common.parse_variant(name, size)[1].get("logit_alpha", 0.05)
    if realnvp_flow_params is None:
      realnvp_flow_params = common.count_params(
          VAPNEV(ModelConfig(likelihood="realnvp", **size)).trainable_variables)
    glow, params, rel = common.matched_glow(
        (28, 28, 1), realnvp_flow_params, x_build,
        num_steps_per_block=FLAGS.glow_steps_per_block,
        tolerance=float("inf") if FLAGS.smoke else 0.10,  # smoke: tiny flows cannot be matched
        logit_alpha=logit_alpha)
    glow.pad_batch_to = max(FLAGS.eval_batch_size, FLAGS.batch_size)
    return glow, {"params": params, "glow_num_hidden": glow.config.num_hidden,
                  "glow_blocks": 2, "glow_steps_per_block": FLAGS.glow_steps_per_block,
                  "params_vs_realnvp_flow": round(rel, 4), "options": {"logit_alpha": logit_alpha}}
  base, overrides = common.parse_variant(name, size)
  model = VAPNEV(ModelConfig(likelihood=base, **size, **overrides))
  info = {"params": common.count_params(model.trainable_variables),
          "options": {**overrides, **common.train_overrides(name)}}
  if model.config.uses_flow:
    info["flow_params"] = common.count_params(model.flow.trainable_variables)
  return model, info


def run_model(name: str, size: dict, strategy, train_data_cfg, eval_data_cfg, curve_data_cfg,
              realnvp_flow_params):
  keras.utils.set_random_seed(FLAGS.seed)
  train_cfg = TrainConfig(seed=FLAGS.seed, strategy="one_device",
                          learning_rate=FLAGS.learning_rate,
                          kl_anneal_steps=0 if base_name(name) in FLOW_ONLY
                          else FLAGS.kl_anneal_steps, export_at_end=False,
                          **common.train_overrides(name))
  dist = data_lib.distributed_dataset(strategy, train_data_cfg, "train")
  iterator = iter(dist)
  x_build = next(iter(data_lib.train_dataset(train_data_cfg)))
  with strategy.scope():
    model, info = build_model(name, size, x_build, realnvp_flow_params)
    if restore.needs_data_dependent_init(model):  # ActNorm steps (the "glow" option)
      restore.initialize_from_batch(model, x_build, strategy)
    optimizer = keras.optimizers.Adam(learning_rate=FLAGS.learning_rate)
    optimizer.build(list(model.trainable_variables))
    state = TrainState(model, optimizer, counter("step"), counter("skipped_steps"))
  train_step = functools.partial(make_train_step(strategy, train_cfg, FLAGS.batch_size), state)
  do_curve = FLAGS.curve_points > 0 and ("all" in FLAGS.curve_models or name in FLAGS.curve_models)
  curve_eval = Evaluator(model, curve_data_cfg, num_samples=1, seed=0, strategy=strategy)
  # The budget is wall-clock seconds or, with --budget_steps, steps (a load-independent run).
  budget = FLAGS.budget_steps or FLAGS.budget_minutes * 60.0
  curve_times = [budget * (i + 1) / FLAGS.curve_points for i in range(FLAGS.curve_points)]
  curve = []
  load_start = os.getloadavg()

  t0 = time.perf_counter()
  out = train_step(iterator)
  float(out["loss"])
  first_step = time.perf_counter() - t0
  if do_curve:
    r = curve_eval()
    curve.append({"minutes": 0.0, "step": 1, "elbo_bpd": r["elbo_bpd"]})
  trained = 0.0  # seconds on the budget clock
  steps, losses = 1, []
  while ((steps if FLAGS.budget_steps else trained) < budget
         and not (FLAGS.max_steps and steps >= FLAGS.max_steps)):
    t = time.perf_counter()
    out = train_step(iterator)
    losses.append(float(out["loss"]))  # syncs, so the clock measures the step
    trained += time.perf_counter() - t
    steps += 1
    if do_curve and curve_times and (steps if FLAGS.budget_steps else trained) >= curve_times[0]:
      curve_times.pop(0)
      r = curve_eval()
      curve.append({"minutes": round(trained / 60.0, 3), "step": steps, "elbo_bpd": r["elbo_bpd"]})
      logging.info("%s: %.1f min, step %d, curve ELBO %.3f bits/dim", name, trained / 60, steps,
                   r["elbo_bpd"])
  if do_curve and (not curve or curve[-1]["step"] != steps):
    r = curve_eval()
    curve.append({"minutes": round(trained / 60.0, 3), "step": steps, "elbo_bpd": r["elbo_bpd"]})
  load_end = os.getloadavg()
  timed_steps = steps - 1
  images_per_s = timed_steps * FLAGS.batch_size / trained if trained > 0 else None

  is_vae = base_name(name) not in FLOW_ONLY
  k = FLAGS.iw_samples if is_vae else 1
  final = Evaluator(model, eval_data_cfg, num_samples=k, seed=0, chunk_size=FLAGS.iw_chunk_size,
                    strategy=strategy)()
  tail = losses[-50:] if losses else [float("nan")]
  result = dict(info)
  result.update({
      "model": name,
      "date": common.header()["date"][:10],  # results of several --append runs are merged
      "steps": steps,
      "images_seen": steps * FLAGS.batch_size,
      "epochs": round(steps * FLAGS.batch_size / data_lib.num_examples(train_data_cfg, "train"), 3),
      "train_seconds": round(trained, 2),
      "first_step_seconds": round(first_step, 2),
      "train_images_per_s": round(images_per_s, 1) if images_per_s else None,
      "skipped_steps": int(state.skipped_steps.numpy()),
      "final_train_loss_bpd": float(bits_per_dim(-np.mean(tail), (28, 28, 1))),  # loss = -bound
      "load_average_start": [round(v, 2) for v in load_start],
      "load_average_end": [round(v, 2) for v in load_end],
      "test_images": final["num_images"],
      "elbo_bpd": final["elbo_bpd"] if is_vae else None,
      "iw_bpd": final["iw_bpd"] if is_vae else None,
      "iw_k": k if is_vae else None,
      "exact_nll_bpd": None if is_vae else final["elbo_bpd"],
      "recon_bpd": final["recon_bpd"] if is_vae else None,
      "kl_nats": final["kl_nats"] if is_vae else None,
      "eval_seconds": final["seconds"],
      "curve": curve,
  })
  result["best_bound_bpd"] = result["iw_bpd"] if is_vae else result["exact_nll_bpd"]
  logging.info("%s: %s", name, {k_: v for k_, v in result.items() if k_ != "curve"})
  return result


def equal_images_lines(results, batch_size, curve_take):
  """Markdown: every curve's bound at the fewest steps any curved model reached."""
  curved = [r for r in results if len(r["curve"]) >= 2]
  if len(curved) < 2:
    return []
  step = min(r["curve"][-1]["step"] for r in curved)
  lines = ["", f"At equal images seen ({step} steps = {step * batch_size:,} images, the fewest any "
           f"model reached; learning curve on the first {curve_take} test images, linear between "
           "its trained points; ELBO for VAEs, exact NLL for flows; '–': the model's first curve "
           "point after initialisation came later, and the untrained-to-first-point segment is "
           "too far from linear to interpolate):", "",
           "| model | bits/dim at equal images | minutes to get there | first trained curve point "
           "|", "|---|---:|---:|---|"]
  for r in curved:
    trained = [p for p in r["curve"] if p["step"] > 1]
    bpd = common.curve_bound_at_step(trained, step)
    minutes = r["train_seconds"] / 60.0 * step / max(r["steps"], 1)
    first = trained[0] if trained else r["curve"][-1]
    lines.append(f"| {r['model']} | {common.fmt(bpd)} | {minutes:.1f} | "
                 f"{first['step'] * batch_size:,} images: {common.fmt(first['elbo_bpd'])} |")
  return lines


def ablation_lines(results):
  """Markdown: each variant against its reference run (`common.ablation_reference`), same budget."""
  by_name = {r["model"]: r for r in results}
  rows = []
  for r in results:
    ref = common.ablation_reference(r["model"], by_name)
    if ref is None:
      continue
    base = by_name[ref]
    root = common.ablation_root(r["model"], by_name)
    same_day = r.get("date") == base.get("date") == by_name[root].get("date")
    rows.append(
        f"| {r['model']} | {ref} | {common.fmt(r['best_bound_bpd'])} | "
        f"{r['best_bound_bpd'] - base['best_bound_bpd']:+.3f} | "
        f"{r['train_images_per_s'] / base['train_images_per_s']:.2f} | "
        f"{r['params'] - base['params']:+,} | "
        + ("" if root == ref else
           f"{r['best_bound_bpd'] - by_name[root]['best_bound_bpd']:+.3f} vs {root}")
        + " | "
        + ("" if same_day else "measured on different days ("
           + ", ".join(sorted({by_name[n].get('date', '?') for n in (r['model'], ref, root)}))
           + "): the machine's speed may differ")
        + " |")
  if not rows:
    return []
  return ["", "Ablation: each variant against the run with the same base model and the largest "
          "subset of its options, and against the one with the fewest where that is another "
          "(same budget, data and seed; best bound: IW for VAEs, exact NLL for flows):", "",
          "| variant | compared with | best bpd | difference | img/s ratio | params difference "
          "| all options together | note |", "|---|---|---:|---:|---:|---:|---|---|"] + rows


def write_markdown(path, payload):
  h, m = payload, payload["machine"]
  lines = [
      "# Quality at equal wall-clock budget (real Fashion-MNIST)", "",
      f"- command: `{h['command']}`",
      f"- date: {h['date']}",
      f"- machine: {m['nproc']} CPU ({m['cpu']}), {m['mem_gib']} GiB; load average at start "
      f"{m['load_average']}, at end {payload['load_average_end']} (about 2 is this benchmark "
      "alone on 2 cores; more means other jobs shared the CPU)",
      "- versions: " + ", ".join(f"{k} {v}" for k, v in h["versions"].items()),
      "- settings: budget "
      + (f"{payload['settings']['budget_steps']} steps/model, "
         if payload["settings"].get("budget_steps") else
         f"{payload['settings']['budget_minutes']} min/model (clock starts after the tracing "
         "step), ")
      + f"batch {payload['settings']['batch_size']}, Adam lr "
      f"{payload['settings']['learning_rate']}, KL annealing over "
      f"{payload['settings']['kl_anneal_steps']} steps, test images "
      f"{payload['settings']['test_images']}, IW k = {payload['settings']['iw_samples']}",
      f"- our model size ({payload['settings'].get('size_name', 'benchmark')}): "
      f"{payload['settings']['model_size']}"]
  if payload.get("appended_to"):
    a = payload["appended_to"]
    lines.append(f"- merged (--append) with the results of the other models from: `{a['command']}` "
                 f"({a['date']}, load average at start {a['machine']['load_average']})")
  lines += ["",
      "Bits/dim of dequantised pixels (lower is better). VAEs: ELBO and IW bound (upper bounds on "
      "the NLL); flows: exact NLL.", "",
      "| model | date | params | steps | images seen | epochs | train img/s | first step s "
      "| ELBO bpd | IW bpd | exact NLL bpd | best bpd | KL nats | load avg (start→end, 1 min) |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  for r in payload["results"]:
    lines.append(
        f"| {r['model']} | {r.get('date', '–')} | {r['params']:,} | {r['steps']} | {r['images_seen']:,} | {r['epochs']} | "
        f"{common.fmt(r['train_images_per_s'], 1)} | {r['first_step_seconds']} | "
        f"{common.fmt(r['elbo_bpd'])} | {common.fmt(r['iw_bpd'])} | "
        f"{common.fmt(r['exact_nll_bpd'])} | **{common.fmt(r['best_bound_bpd'])}** | "
        f"{common.fmt(r['kl_nats'], 1)} | {r['load_average_start'][0]}→{r['load_average_end'][0]} |")
  for r in payload["results"]:
    if base_name(r["model"]) == "glow":
      lines += ["", f"{r['model']}: tfb.Glow, 2 blocks x {r['glow_steps_per_block']} steps, "
                f"GlowDefaultNetwork num_hidden={r['glow_num_hidden']}: {r['params']:,} parameters "
                f"({r['params_vs_realnvp_flow']:+.1%} vs our realnvp flow)."]
  for e in payload.get("errors", []):
    lines += ["", f"FAILED {e['model']}: `{e['error']}`"]
  lines += ablation_lines(payload["results"])
  lines += equal_images_lines(payload["results"], payload["settings"]["batch_size"],
                             payload["settings"]["curve_take"])
  if payload.get("curve_png"):
    lines += ["", f"Learning curves (test bound on {payload['settings']['curve_take']} images vs "
              f"training minutes and vs images seen): "
              f"![curve]({os.path.basename(payload['curve_png'])})"]
  common.write_lines(path, lines)


def plot_curves(path, results, curve_take, batch_size):
  """Two panels: test bound vs training minutes (the budget) and vs images seen."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  curved = [r for r in results if len(r["curve"]) >= 2]
  if not curved:
    return None
  fig, (ax_time, ax_images) = plt.subplots(1, 2, figsize=(12, 4.5))
  for r in curved:
    pts = r["curve"]
    bound = "NLL" if base_name(r["model"]) in FLOW_ONLY else "ELBO"
    style = dict(marker="o", lw=2.5 if r["model"] == "vapnev" else 1.2,
                 label=f"{r['model']} ({bound})")
    ys = [p["elbo_bpd"] for p in pts]
    ax_time.plot([p["minutes"] for p in pts], ys, **style)
    ax_images.plot([p["step"] * batch_size / 1000.0 for p in pts], ys, **style)
  vals = [p["elbo_bpd"] for r in curved for p in r["curve"][1:]]
  ylabel = f"test bits/dim ({curve_take} images)"
  common.style_bpd_axes(ax_time, vals, target=2.95, xlabel="training minutes (2-core CPU)",
                        ylabel=ylabel, title="Fashion-MNIST: test bound vs wall-clock")
  common.style_bpd_axes(ax_images, vals, target=2.95, xlabel="thousands of training images seen",
                        ylabel=ylabel, title="... vs images seen")
  ax_images.set_xscale("log")  # pixel VAEs see ~6-10x the flows' images in the same minutes
  ax_images.set_xlim(left=0.8 * min(r["curve"][1]["step"] for r in curved) * batch_size / 1000.0)
  return common.save_figure(fig, path)


def main(argv):
  del argv
  check_models(FLAGS.models)
  payload = common.header()
  size = size_values(FLAGS.size)
  strategy = make_strategy("one_device")
  train_data_cfg = data_lib.DataConfig(dataset="fashion_mnist", batch_size=FLAGS.batch_size,
                                       seed=FLAGS.seed, train_take=FLAGS.train_take,
                                       shuffle_buffer=10_000)
  eval_data_cfg = data_lib.DataConfig(dataset="fashion_mnist", eval_batch_size=FLAGS.eval_batch_size,
                                      eval_take=FLAGS.eval_take)
  curve_data_cfg = data_lib.DataConfig(dataset="fashion_mnist",
                                       eval_batch_size=FLAGS.eval_batch_size,
                                       eval_take=FLAGS.curve_take)
  payload["settings"] = {
      "budget_minutes": FLAGS.budget_minutes, "budget_steps": FLAGS.budget_steps,
      "batch_size": FLAGS.batch_size,
      "learning_rate": FLAGS.learning_rate, "kl_anneal_steps": FLAGS.kl_anneal_steps,
      "iw_samples": FLAGS.iw_samples, "iw_chunk_size": FLAGS.iw_chunk_size,
      "test_images": data_lib.num_examples(eval_data_cfg, "test"), "eval_take": FLAGS.eval_take,
      "curve_take": FLAGS.curve_take, "models": FLAGS.models, "model_size": size,
      "size_name": "smoke" if FLAGS.smoke else FLAGS.size,
      "smoke": FLAGS.smoke, "max_steps": FLAGS.max_steps, "train_take": FLAGS.train_take,
      "seed": FLAGS.seed,
      "training_step": "vapnev_tf.training.step.make_train_step (library), OneDeviceStrategy, "
                       "Adam constant lr, linear KL annealing (VAEs)"}
  payload["results"], payload["errors"] = [], []
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  realnvp_flow_params = None
  json_path = os.path.join(FLAGS.out_dir, "quality.json")
  previous = []
  if FLAGS.append and os.path.exists(json_path):
    with open(json_path) as f:
      old = json.load(f)
    previous = [r for r in old.get("results", []) if r["model"] not in FLAGS.models]
    payload["appended_to"] = {k: old.get(k) for k in ("command", "date", "machine", "settings")}
    payload["errors"] = [e for e in old.get("errors", []) if e["model"] not in FLAGS.models]
    for r in previous:
      if r["model"] == "realnvp":
        realnvp_flow_params = r["params"]
  payload["results"] = list(previous)
  for name in FLAGS.models:
    logging.info("=== %s ===", name)
    try:
      r = run_model(name, size, strategy, train_data_cfg, eval_data_cfg, curve_data_cfg,
                    realnvp_flow_params)
      if name == "realnvp":
        realnvp_flow_params = r["params"]
      payload["results"].append(r)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("%s failed", name)
      payload["errors"].append({"model": name, "error": f"{type(e).__name__}: {e}"})
    payload["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    common.write_json(json_path, payload)  # after every model
  order = {m: i for i, m in enumerate(ALL_MODELS)}
  payload["results"].sort(key=lambda r: (order[base_name(r["model"])], r["model"].count("+"),
                                         r["model"]))
  png = plot_curves(os.path.join(FLAGS.out_dir, "quality_curve.png"), payload["results"],
                    FLAGS.curve_take, FLAGS.batch_size)
  payload["curve_png"] = png
  common.write_json(os.path.join(FLAGS.out_dir, "quality.json"), payload)
  write_markdown(os.path.join(FLAGS.out_dir, "quality.md"), payload)
  print(open(os.path.join(FLAGS.out_dir, "quality.md")).read())


if __name__ == "__main__":
  app.run(main)
