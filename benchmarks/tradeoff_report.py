"""What a trade-off row's run recorded, and the table of all rows (docs/design.md §26).

    figures = run_figures(run_dir, batch_size)      # eval.json, latent.json, TensorBoard windows
    lines = markdown(payload)                        # tradeoff.md

A row record (one entry of tradeoff.json's "rows") holds the row's name, flags, calibration,
schedule, parameter count, status ("ok" or "failed" with its exit code and reason) and the
figures of its run: "eval" (elbo_bpd, iw_bpd, k, num_images, step), "latent" (latent.json's
figures; None for a row without a latent), "images_per_sec" (training images per second after
the first, tracing, window) and "train_minutes" (every window, tracing included).
"""
import json
import math
import os
import shlex

from benchmarks import tradeoff_pictures
from benchmarks import tradeoff_rows

DASH = "—"
EVAL_KEYS = ("elbo_bpd", "iw_bpd", "k", "num_images", "step")
LATENT_KEYS = ("step", "num_images", "latent_dim", "kl_nats", "active_units", "active_fraction",
               "mi_nats", "mi_max_nats", "own_bpd", "other_bpd", "conditioning_gap_bpd",
               "probe_latent_accuracy", "probe_pixels_accuracy", "judge_test_accuracy",
               "agreement_mean_y", "agreement_sampled", "temperature")


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_eval(run_dir: str) -> dict | None:
  """The final evaluation in RUN/eval.json (its EVAL_KEYS), None if absent or unreadable."""
  stored = _read_json(os.path.join(run_dir, "eval.json"))
  return {k: stored.get(k) for k in EVAL_KEYS} if isinstance(stored, dict) else None


def read_latent(run_dir: str) -> dict | None:
  """RUN/latent.json's figures (LATENT_KEYS), None if absent or unreadable."""
  stored = _read_json(os.path.join(run_dir, "latent.json"))
  return {k: stored.get(k) for k in LATENT_KEYS} if isinstance(stored, dict) else None


def finished(run_dir: str, train_steps: int, has_latent: bool) -> bool:
  """Whether the run in `run_dir` evaluated its final step `train_steps` with finite bounds and,
  for a row with a latent, wrote the latent figures of that step."""
  final = read_eval(run_dir)
  if not final or final["step"] != train_steps or not _finite(final["elbo_bpd"]):
    return False
  if not has_latent:
    return True
  latent = read_latent(run_dir)
  return bool(latent) and latent["step"] == train_steps


def training_windows(run_dir: str) -> list[tuple[int, float]]:
  """(step, steps_per_sec) of every training-summary window in RUN/tensorboard/train (the
  `steps_per_sec` scalar the training loop writes every --log_every steps; a step logged twice,
  by a resumed run, keeps its first record); [] when there is none."""
  directory = os.path.join(run_dir, "tensorboard", "train")
  if not os.path.isdir(directory):
    return []
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import (  # pylint: disable=g-import-not-at-top
      event_accumulator)
  acc = event_accumulator.EventAccumulator(
      directory, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  if "steps_per_sec" not in acc.Tags()["tensors"]:
    return []
  first = {}
  for event in sorted(acc.Tensors("steps_per_sec"), key=lambda e: e.wall_time):
    first.setdefault(event.step, float(tf.make_ndarray(event.tensor_proto)))
  return sorted(first.items())


def run_figures(run_dir: str, batch_size: int) -> dict:
  """{"eval", "latent", "images_per_sec", "train_minutes"} of the run in `run_dir`."""
  rate, seconds = tradeoff_rows.steady_rate(training_windows(run_dir))
  return {"eval": read_eval(run_dir), "latent": read_latent(run_dir),
          "images_per_sec": None if rate is None else rate * batch_size,
          "train_minutes": seconds / 60.0 if seconds else None}


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def non_finite(figures: dict) -> str | None:
  """The reason a finished run's figures are unusable (a missing or non-finite bound), else None."""
  final = figures.get("eval")
  if not final:
    return "no eval.json"
  for key in ("elbo_bpd", "iw_bpd"):
    if final.get(key) is not None and not _finite(final[key]):
      return f"non-finite {key} ({final[key]})"
  return None


def iw_bpd(row: dict) -> float | None:
  """The row's IW bound; for a row without a latent the ELBO, which is then its exact NLL."""
  final = row.get("eval") or {}
  if final.get("iw_bpd") is not None:
    return final["iw_bpd"]
  return final.get("elbo_bpd") if not row.get("has_latent") else None


def _num(value, digits=3) -> str:
  return DASH if value is None else f"{value:.{digits}f}"


def _status(row: dict) -> str:
  if row["status"] == "ok":
    return "ok"
  code = row.get("exit_code")
  return f"failed (exit {code})" if code is not None else "failed"


HEADER = ("| row | status | IW bpd | ELBO bpd | KL nats | active | MI nats | gap bpd (own / other) "
          "| probe z | agreement mean-y / T | train img/s | steps | params | train min | flags |")
RULE = "|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---|"


def table_line(row: dict) -> str:
  """One markdown table line of a row record ("—" where the row has no such figure)."""
  ok = row["status"] == "ok"
  final = (row.get("eval") or {}) if ok else {}
  latent = (row.get("latent") or {}) if ok and row.get("has_latent") else {}
  active = (f"{latent['active_units']}/{latent['latent_dim']}"
            if latent.get("active_units") is not None else DASH)
  gap = DASH
  if latent.get("conditioning_gap_bpd") is not None:
    gap = (f"{latent['conditioning_gap_bpd']:.3f} ({latent['own_bpd']:.3f} / "
           f"{latent['other_bpd']:.3f})")
  agreement = DASH
  if latent.get("agreement_mean_y") is not None:
    agreement = (f"{latent['agreement_mean_y']:.3f} / {latent['agreement_sampled']:.3f} "
                 f"(T={latent['temperature']:g})")
  params = f"{row['params']:,}" if row.get("params") is not None else DASH
  images = row.get("images_per_sec") if ok else None
  minutes = row.get("train_minutes") if ok else None
  cells = [row["name"], _status(row), _num(iw_bpd(row) if ok else None),
           _num(final.get("elbo_bpd")), _num(latent.get("kl_nats"), 2), active,
           _num(latent.get("mi_nats"), 2), gap, _num(latent.get("probe_latent_accuracy")),
           agreement, _num(images, 0), str(row.get("train_steps") or DASH), params,
           _num(minutes, 1), f"`{shlex.join(row['flags'])}`" if row["flags"] else "(base)"]
  return "| " + " | ".join(cells) + " |"


def markdown(payload: dict) -> list[str]:
  """tradeoff.md: the run's header, the table, failures and calibrations."""
  machine = payload["machine"]
  rows = payload["rows"]
  lines = ["# Equal-time trade-off table", "",
           f"- command: `{payload['command']}`", f"- date: {payload['date']}",
           f"- code: {payload.get('code') or 'not a git checkout'}",
           f"- machine: {machine['nproc']} CPU ({machine['cpu']}), load average at the end "
           f"{machine['load_average']}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()),
           f"- budget: {payload['budget_minutes']:g} training minutes per row (steps from a "
           f"{payload['calibration_steps']}-step calibration); base flagfile "
           f"`{payload['base_flagfile']}`; every row evaluated on "
           + ("the smoke subset" if payload.get("smoke") else "all test images")
           + ", IW k from the base flagfile", "",
           HEADER, RULE]
  lines += [table_line(row) for row in rows]
  pixels = next((r["latent"]["probe_pixels_accuracy"] for r in rows
                 if r["status"] == "ok" and r.get("latent")
                 and r["latent"].get("probe_pixels_accuracy") is not None), None)
  lines += ["", "IW: the importance-weighted bound (k of the base flagfile); for rows without a "
            "latent the exact NLL. Latent columns: `latent.json` of the run's `--latent_eval` "
            "(docs/design.md §13)"
            + (f"; the same probe on raw pixels scores {pixels:.3f}." if pixels is not None
               else "."), ""]
  failed = [r for r in rows if r["status"] != "ok"]
  if failed:
    lines += ["Failed rows:", ""]
    lines += [f"- {r['name']}: {_status(r)}: {r.get('reason') or 'see its train.log'}"
              for r in failed]
    lines.append("")
  lines += tradeoff_pictures.markdown(rows)
  lines += ["Calibration (steps/s after the first window of a short run; steps = round(rate x "
            "budget)):", ""]
  for r in rows:
    cal = r.get("calibration")
    if cal and cal.get("steps_per_sec"):
      lines.append(f"- {r['name']}: {cal['steps_per_sec']:.3f} steps/s over "
                   f"{cal['steps']} steps -> {r.get('train_steps')} steps (warm-up "
                   f"{r.get('warmup_steps')}, KL annealing {r.get('kl_anneal_steps')})")
  return lines
