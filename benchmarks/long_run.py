r"""Report of a long training run: learning curve vs. wall-clock minutes, stability.

    python -m vapnev_tf.train --flagfile=configs/fashion_mnist.flags --workdir=W \
        --eval_every=500 --eval_take=2000 --eval_num_samples=1
    python -m vapnev_tf.evaluate --workdir=W --num_samples=100 --eval_take=1000
    python -m benchmarks.long_run --workdir=W [--eval_json=W/evaluations/X.json]
        [--compare_workdir=OTHER | --compare_report=JSON] [--compare_label="..."]

Reads only what `vapnev_tf.train` wrote into the workdir: its TensorBoard event files (train
scalars averaged over each window of `--log_every` steps, test bounds every `--eval_every`
steps), `flags.txt` and `eval.json` (the latest evaluation: the run's own final one, or a
tighter importance-weighted bound that `vapnev_tf.evaluate` wrote there afterwards; or, with
`--eval_json`, any evaluation such as a partial one of WORKDIR/evaluations/); a run whose
workdir is gone can still be compared from the long_run.json an earlier report wrote
(`--compare_report`: its first run). Minutes
are wall-clock since the run's summary writers first opened (evaluation time included; a
resumed run's pause counts too), so they answer "what do I get after an hour on this machine".

Outputs in `--out_dir`: long_run.json, long_run.md and long_run_curve.png (test bits/dim and
training ELBO bits/dim vs minutes; the comparison run dashed).
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a `vapnev_tf.train` run.", required=True)
flags.DEFINE_string("label", "this run", "Legend label of --workdir.")
flags.DEFINE_string("eval_json", None, "Evaluation to report for --workdir instead of its "
                    "eval.json, e.g. a partial one that `vapnev_tf.evaluate` wrote to "
                    "WORKDIR/evaluations/.")
flags.DEFINE_string("compare_workdir", None, "Optional second run drawn dashed for comparison.")
flags.DEFINE_string("compare_report", None, "Optional long_run.json of an earlier report: its "
                    "first run is drawn dashed (when that run's workdir no longer exists).")
flags.DEFINE_string("compare_label", "comparison run", "Legend label of the comparison run (with "
                    "--compare_report, default: the label stored in the report).")
flags.DEFINE_string("out_dir", "benchmarks/results", "Where the JSON, markdown and PNG go.")
flags.DEFINE_float("target_bpd", 2.95, "Horizontal reference line (bits/dim).")
flags.DEFINE_string("target_label", common.TARGET_LABEL, "Legend label of --target_bpd.")

TRAIN_TAGS = ("elbo_bpd", "loss", "grad_norm", "learning_rate", "kl_nats", "steps_per_sec",
              "images_per_sec", "skipped_steps")


def _scalars(directory: str) -> tuple[dict, float | None]:
  """{tag: [(wall_time, step, value)]} of every scalar summary under `directory`, and the
  earliest wall time of its event files (when the writer opened)."""
  if not os.path.isdir(directory):
    return {}, None
  acc = event_accumulator.EventAccumulator(
      directory, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags()["tensors"]:
    events = [(e.wall_time, e.step, tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
    if events and all(np.ndim(v) == 0 and np.issubdtype(v.dtype, np.number) for _, _, v in events):
      out[tag] = [(w, s, float(v)) for w, s, v in events]  # images and text are not curves
  return out, acc.FirstEventTimestamp() if out else None


def read_run(workdir: str, eval_json: str | None = None) -> dict:
  """The run's curves with minutes since its start, and its evaluation (`eval_json`, default
  WORKDIR/eval.json if it exists); raises ValueError if it is not a run."""
  tb = os.path.join(workdir, "tensorboard")
  train, train_t0 = _scalars(os.path.join(tb, "train"))
  evals, eval_t0 = _scalars(os.path.join(tb, "eval"))
  if not train:
    raise ValueError(f"--workdir={workdir}: no training summaries under {tb}/train; expected the workdir "
                     "of a `python -m vapnev_tf.train` run.")
  t0 = min(t for t in (train_t0, eval_t0) if t is not None)

  def curve(series, tag):
    first = {}  # a step logged twice (a resumed or re-run job) keeps its first record
    for w, s, v in sorted(series.get(tag, [])):
      first.setdefault(s, (w, v))
    return [{"step": s, "minutes": round((w - t0) / 60.0, 3), "value": v}
            for s, (w, v) in sorted(first.items())]

  test_tag = "elbo_bpd" if "elbo_bpd" in evals else None
  run = {"workdir": workdir, "train": {tag: curve(train, tag) for tag in TRAIN_TAGS if tag in train},
         "test_elbo_bpd": curve(evals, test_tag) if test_tag else []}
  flags_path = os.path.join(workdir, "flags.txt")
  if os.path.exists(flags_path):
    run["flags"] = [l.strip() for l in open(flags_path) if l.strip()]
  eval_path = eval_json or os.path.join(workdir, "eval.json")
  if eval_json or os.path.exists(eval_path):
    try:
      with open(eval_path) as f:
        stored = json.load(f)
      run["eval"] = {k: v for k, v in stored.items() if k not in ("history", "scope")}
    except (OSError, ValueError, AttributeError) as e:
      raise ValueError(f"{eval_path}: expected an evaluation JSON written by vapnev_tf "
                       f"({type(e).__name__}: {e}).") from None
  return run


def read_report(path: str) -> tuple[str, dict]:
  """(label, run) of the first run of a long_run.json; raises ValueError if it is not one."""
  try:
    with open(path) as f:
      stored = json.load(f)["runs"][0]
    run = {k: v for k, v in stored.items() if k not in ("label", "summary")}
    if not isinstance(run["train"], dict) or not isinstance(run["test_elbo_bpd"], list):
      raise TypeError("bad run")
  except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
    raise ValueError(f"--compare_report={path}: expected a long_run.json written by "
                     f"`python -m benchmarks.long_run` ({type(e).__name__}: {e}).") from None
  return stored.get("label", "comparison run"), run


def summarize(run: dict) -> dict:
  """Headline numbers of one run: steps, minutes, skipped steps, best/last test bound, and the
  largest jump of the training ELBO between two consecutive logged points (instability)."""
  train = run["train"]
  elbo = train.get("elbo_bpd", [])
  skipped = train.get("skipped_steps", [])
  test = run["test_elbo_bpd"]
  jumps = [(b["value"] - a["value"], b["step"]) for a, b in zip(elbo, elbo[1:])]
  worst = max(jumps, default=(None, None))
  return {
      "last_step": elbo[-1]["step"] if elbo else None,
      "minutes": elbo[-1]["minutes"] if elbo else None,
      "skipped_steps": int(skipped[-1]["value"]) if skipped else None,
      "train_elbo_bpd_last": elbo[-1]["value"] if elbo else None,
      "largest_train_elbo_jump_bpd": worst[0], "largest_jump_at_step": worst[1],
      "max_grad_norm": max((p["value"] for p in train.get("grad_norm", [])), default=None),
      "median_steps_per_sec": (float(np.median([p["value"] for p in train["steps_per_sec"]]))
                               if train.get("steps_per_sec") else None),
      "test_elbo_bpd_best": min((p["value"] for p in test), default=None),
      "test_elbo_bpd_last": test[-1]["value"] if test else None,
  }


def plot(path: str, runs: list[tuple[str, dict]], target: float,
         target_label: str = common.TARGET_LABEL) -> str:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 4.8))
  for i, (label, run) in enumerate(runs):
    style = "-" if i == 0 else "--"
    test, train = run["test_elbo_bpd"], run["train"].get("elbo_bpd", [])
    if test:
      ax.plot([p["minutes"] for p in test], [p["value"] for p in test], style, marker="o",
              color="C0" if i == 0 else "C3", lw=2.2 if i == 0 else 1.3,
              label=f"{label}: test ELBO")
    if train:
      ax.plot([p["minutes"] for p in train], [p["value"] for p in train], style,
              color="C1" if i == 0 else "C7", lw=1.0, alpha=0.8,
              label=f"{label}: train ELBO (mean over each log window)")
    final = run.get("eval")
    if final and final.get("iw_bpd") is not None and train:
      at = min(train, key=lambda p: abs(p["step"] - final.get("step", train[-1]["step"])))
      ax.plot([at["minutes"]], [final["iw_bpd"]], "*", ms=13, color="C2" if i == 0 else "C8",
              label=f"{label}: IW bound k={final['k']} ({final['num_images']} images)")
  values = [p["value"] for _, r in runs for p in r["test_elbo_bpd"]]
  return common.finish_bpd_plot(
      fig, ax, path, values, target=target, ylabel="bits/dim", legend_size=7,
      xlabel="wall-clock minutes (2-core CPU, evaluations included)",
      title="configs/fashion_mnist.flags: bits/dim vs minutes", target_label=target_label)


def write_markdown(path: str, payload: dict) -> None:
  lines = ["# Long run: configs/fashion_mnist.flags", "",
           f"- report command: `{payload['command']}`", f"- date: {payload['date']}",
           f"- machine: {payload['machine']['nproc']} CPU ({payload['machine']['cpu']})",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()), "",
           "| run | steps | minutes | skipped steps | median steps/s | max grad norm (window mean) "
           "| largest train-ELBO jump (bpd, step) | best test ELBO | last test ELBO |",
           "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
  for r in payload["runs"]:
    s = r["summary"]
    lines.append(
        f"| {r['label']} | {s['last_step']} | {common.fmt(s['minutes'], 1)} | {s['skipped_steps']} | "
        f"{common.fmt(s['median_steps_per_sec'], 2)} | {common.fmt(s['max_grad_norm'], 0)} | "
        f"{common.fmt(s['largest_train_elbo_jump_bpd'])} ({s['largest_jump_at_step']}) | "
        f"{common.fmt(s['test_elbo_bpd_best'])} | {common.fmt(s['test_elbo_bpd_last'])} |")
  for r in payload["runs"]:
    if r.get("eval"):
      f = r["eval"]
      iw = (f", IW(k={f.get('k')}) {common.fmt(f.get('iw_bpd'))}"
            if f.get("iw_bpd") is not None else "")
      lines += ["", f"Latest evaluation of {r['label']} (step {f.get('step')}): ELBO "
                f"{common.fmt(f.get('elbo_bpd'))}{iw} bits/dim on {f.get('num_images')} test images."]
  lines += ["", "Test ELBO bits/dim by step (minutes):", ""]
  for r in payload["runs"]:
    pts = ", ".join(f"{p['step']}: {p['value']:.3f} ({p['minutes']:.0f} min)"
                    for p in r["test_elbo_bpd"])
    lines.append(f"- {r['label']}: {pts}")
  lines += ["", f"![learning curve]({os.path.basename(payload['curve_png'])})"]
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv):
  del argv
  payload = common.header()
  try:
    runs = [(FLAGS.label, read_run(FLAGS.workdir, FLAGS.eval_json))]
    if FLAGS.compare_workdir and FLAGS.compare_report:
      raise ValueError("pass at most one of --compare_workdir and --compare_report.")
    if FLAGS.compare_workdir:
      runs.append((FLAGS.compare_label, read_run(FLAGS.compare_workdir)))
    if FLAGS.compare_report:
      label, run = read_report(FLAGS.compare_report)
      runs.append((FLAGS.compare_label if FLAGS["compare_label"].present else label, run))
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  payload["runs"] = [dict(run, label=label, summary=summarize(run)) for label, run in runs]
  payload["curve_png"] = plot(os.path.join(FLAGS.out_dir, "long_run_curve.png"), runs,
                              FLAGS.target_bpd, FLAGS.target_label)
  common.write_json(os.path.join(FLAGS.out_dir, "long_run.json"), payload)
  write_markdown(os.path.join(FLAGS.out_dir, "long_run.md"), payload)
  print(open(os.path.join(FLAGS.out_dir, "long_run.md")).read())


if __name__ == "__main__":
  app.run(main)
