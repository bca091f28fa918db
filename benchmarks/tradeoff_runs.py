"""Running the rows of the equal-time trade-off table (`python -m benchmarks.tradeoff`; its
docstring says what the table is, docs/design.md §26 why).

    opts = make_options(rows="recipe,old_quick")
    plans, stored = prepare(opts)            # flags checked, row directories checked
    payload = run_table(opts, plans, stored, common.header())

Per row: OUT_DIR/ROW/row.json (the configuration's identity, the calibration and the schedule,
written before training), OUT_DIR/ROW/run (the training workdir), OUT_DIR/ROW/train.log (the
console of its calibration and training runs), OUT_DIR/ROW/pictures (a row with a latent:
benchmarks/tradeoff_pictures.py).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import flags
from absl import logging

from benchmarks import capacity
from benchmarks import common
from benchmarks import tradeoff_pictures
from benchmarks import tradeoff_report
from benchmarks import tradeoff_rows
from vapnev_tf import interrupts

DEFAULT_BUDGET_MINUTES = 20.0
DEFAULT_CALIBRATION_STEPS = 60
DEFAULT_OUT_DIR = "benchmarks/results/tradeoff"
SMOKE_BUDGET_MINUTES = 0.1
SMOKE_CALIBRATION_STEPS = 6
ROW_FILE = "row.json"
RUN_DIR = "run"
LOG_FILE = "train.log"


class RowDirectoryError(ValueError):
  """A row's directory holds something this command did not ask for."""


# What a training CLI stopped by SIGINT/SIGTERM exits with (128 + signal after saving a
# checkpoint; minus the signal when it died of it).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED_EXIT_CODES = frozenset([128 + s for s in STOP_SIGNALS] + [-s for s in STOP_SIGNALS])


class RowInterrupted(Exception):
  """A row's calibration or training was stopped by a signal: the table stops there (a rerun
  resumes it), rather than reporting the row as failed and starting the next one."""

  def __init__(self, name: str, exit_code: int):
    super().__init__(f"row {name!r}: its training was stopped (exit {exit_code}); run the same "
                     "command again to resume it.")
    self.exit_code = exit_code


def make_options(*, smoke: bool = False, budget_minutes: float | None = None,
                 calibration_steps: int | None = None, base_flagfile: str | None = None,
                 out_dir: str = DEFAULT_OUT_DIR, rows: str = "all", extra_rows=()) -> dict:
  """The validated options of one table (None: the default, or the smoke default with
  `smoke`); ValueError naming the flag otherwise."""
  budget = budget_minutes if budget_minutes is not None else (
      SMOKE_BUDGET_MINUTES if smoke else DEFAULT_BUDGET_MINUTES)
  calibration = calibration_steps if calibration_steps is not None else (
      SMOKE_CALIBRATION_STEPS if smoke else DEFAULT_CALIBRATION_STEPS)
  base = base_flagfile or (tradeoff_rows.SMOKE_BASE_FLAGFILE if smoke
                           else tradeoff_rows.DEFAULT_BASE_FLAGFILE)
  if not budget > 0:
    raise ValueError(f"--budget_minutes={budget}: expected minutes > 0.")
  if calibration < 3:
    raise ValueError(f"--calibration_steps={calibration}: expected >= 3 (the rate is measured "
                     "after the first of three windows).")
  path = base if os.path.isabs(base) else os.path.join(common.REPO_ROOT, base)
  if not os.path.isfile(path):
    raise ValueError(f"--base_flagfile={base}: no such file (relative paths are from the "
                     f"repository root, {common.REPO_ROOT}).")
  if not out_dir.strip():
    raise ValueError("--out_dir must be a non-empty path.")
  extra = dict(tradeoff_rows.parse_extra_row(text) for text in extra_rows)
  if len(extra) != len(extra_rows):
    raise ValueError(f"--extra_row: names must be distinct, got {list(extra_rows)}.")
  return {"smoke": smoke, "budget_minutes": budget, "calibration_steps": calibration,
          "base_flagfile": base, "out_dir": os.path.abspath(out_dir),
          "extra_rows": extra, "rows": tradeoff_rows.select_rows(rows, extra)}


def plan_row(name: str, opts: dict) -> dict:
  """The row's flags, training arguments (without schedule and workdir), resolved configs and
  parameter count; ValueError when the training CLI refuses its flags."""
  smoke, base = opts["smoke"], opts["base_flagfile"]
  if name == tradeoff_rows.MATCHED_ROW:
    recipe = tradeoff_rows.row_args(base, tradeoff_rows.BUILTIN_ROWS[tradeoff_rows.RECIPE_ROW],
                                    smoke)
    row_flags, _ = tradeoff_rows.matched_realnvp_flags(recipe)
  elif name in tradeoff_rows.BUILTIN_ROWS:
    row_flags = list(tradeoff_rows.BUILTIN_ROWS[name])
  else:
    row_flags = list(opts["extra_rows"][name])
  args = tradeoff_rows.row_args(base, row_flags, smoke)
  try:
    model_cfg, data_cfg, train_cfg = tradeoff_rows.resolve(args)
  except (ValueError, flags.Error) as e:  # a flag's own check, or the configs' together
    raise ValueError(f"row {name!r}: the training CLI refuses its flags {row_flags}: {e}") from None
  return {"name": name, "flags": row_flags, "args": args, "has_latent": model_cfg.has_vae,
          "params": capacity.count(model_cfg), "batch_size": data_cfg.batch_size,
          "base_schedule": {"steps": train_cfg.train_steps, "warmup": train_cfg.warmup_steps,
                            "anneal": train_cfg.kl_anneal_steps, "log_every": train_cfg.log_every},
          "identity": {"flags_text": tradeoff_rows.flags_text(args),
                       "budget_minutes": opts["budget_minutes"]}}


def stored_row(plan: dict, row_dir: str) -> dict | None:
  """ROW/row.json when it records this very configuration; None when the row has not started;
  RowDirectoryError naming the row and the directory when it holds anything else."""
  meta_path = os.path.join(row_dir, ROW_FILE)
  if os.path.exists(meta_path):
    try:
      with open(meta_path) as f:
        stored = json.load(f)
    except (OSError, ValueError) as e:
      raise RowDirectoryError(f"row {plan['name']!r}: {meta_path} is unreadable ({e}); move "
                              f"{row_dir} away or choose another --out_dir.") from None
    if not isinstance(stored, dict) or stored.get("identity") != plan["identity"]:
      raise RowDirectoryError(
          f"row {plan['name']!r}: {row_dir} holds a different configuration (its {ROW_FILE} "
          "records other flags, flagfile contents or budget); move it away or choose another "
          "--out_dir.")
    return stored
  if os.path.exists(os.path.join(row_dir, RUN_DIR)):
    raise RowDirectoryError(f"row {plan['name']!r}: {row_dir} holds a run without {ROW_FILE}, "
                            "not one of this tool's rows; move it away or choose another "
                            "--out_dir.")
  return None


class TrainingStopped(Exception):
  """This process got SIGINT/SIGTERM while a training ran; the training has exited since
  (`exit_code`, 128 + signal after its checkpoint)."""

  def __init__(self, exit_code: int):
    super().__init__(f"the training was stopped (exit {exit_code})")
    self.exit_code = exit_code


def train_cli(args: list[str], log_path: str) -> int:
  """Runs `python -m vapnev_tf.train ARGS` from the repository root, its console appended to
  `log_path`; its exit code. A SIGINT/SIGTERM to this process (one it does not ignore, as a
  background job ignores SIGINT) stops the training with its checkpoint, waits for it to exit and
  raises `TrainingStopped`."""
  watched = tuple(s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN)
  with open(log_path, "a") as log:
    log.write(f"$ python -m vapnev_tf.train {' '.join(args)}\n")
    log.flush()
    with interrupts.raising("a row's training", watched):
      proc = None
      try:
        proc = subprocess.Popen([sys.executable, "-m", "vapnev_tf.train", *args],
                                cwd=str(common.REPO_ROOT), stdout=log, stderr=subprocess.STDOUT)
        return proc.wait()
      except interrupts.Interrupted as e:
        if proc is None:
          raise TrainingStopped(128 + e.signum) from None
        # A Ctrl-C reached the training already (same process group), a `kill PID` did not:
        # SIGTERM makes it checkpoint and exit either way (a second SIGINT would abandon the
        # current step, killing it the steps since its last checkpoint).
        if proc.poll() is None:
          proc.send_signal(signal.SIGTERM)
        while True:
          try:
            code = proc.wait()
            break
          except interrupts.Interrupted:
            continue  # it is saving its checkpoint; it exits by itself
        raise TrainingStopped(code) from None


def calibrate(plan: dict, row_dir: str, steps: int) -> dict:
  """{"steps", "steps_per_sec", "exit_code", "seconds"} of a `steps`-step training of the row in
  a scratch directory under `row_dir`, which is deleted afterwards (steps_per_sec None if the
  run failed or logged a single window)."""
  scratch = tempfile.mkdtemp(prefix="calibration_", dir=row_dir)
  start = time.time()
  try:
    args = (plan["args"] + list(tradeoff_rows.CALIBRATION_EVAL_FLAGS)
            + [f"--train_steps={steps}", f"--log_every={max(1, steps // 3)}",
               f"--checkpoint_every={steps}", f"--workdir={os.path.join(scratch, RUN_DIR)}"])
    code = train_cli(args, os.path.join(row_dir, LOG_FILE))
    rate = None
    if code == 0:
      rate, _ = tradeoff_rows.steady_rate(
          tradeoff_report.training_windows(os.path.join(scratch, RUN_DIR)))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)  # created above by this call, nothing else
  return {"steps": steps, "steps_per_sec": rate, "exit_code": code,
          "seconds": round(time.time() - start, 1)}


def run_row(plan: dict, opts: dict, stored: dict | None) -> dict:
  """Calibrates (unless `stored` holds the calibration), trains (unless finished) and reads the
  row's run; the row record (benchmarks/tradeoff_report.py)."""
  row_dir = os.path.join(opts["out_dir"], plan["name"])
  run_dir = os.path.join(row_dir, RUN_DIR)
  record = {k: plan[k] for k in ("name", "flags", "has_latent", "params")}
  record.update(status="failed", exit_code=None, reason=None, reused=False)
  os.makedirs(row_dir, exist_ok=True)
  if stored is None:
    logging.info("%s: calibrating (%d steps)", plan["name"], opts["calibration_steps"])
    try:
      cal = calibrate(plan, row_dir, opts["calibration_steps"])
    except TrainingStopped as e:
      raise RowInterrupted(plan["name"], e.exit_code) from None
    if cal["exit_code"] in INTERRUPTED_EXIT_CODES:
      raise RowInterrupted(plan["name"], cal["exit_code"])
    record["calibration"] = cal
    if cal["exit_code"] != 0 or cal["steps_per_sec"] is None:
      record.update(exit_code=cal["exit_code"],
                    reason=f"calibration failed (see {os.path.join(row_dir, LOG_FILE)})")
      return record
    base = plan["base_schedule"]
    sched = tradeoff_rows.schedule(
        tradeoff_rows.steps_for_budget(cal["steps_per_sec"], opts["budget_minutes"] * 60.0),
        base["steps"], base["warmup"], base["anneal"])
    stored = {"name": plan["name"], "identity": plan["identity"], "calibration": cal,
              "schedule": sched,
              "log_every": tradeoff_rows.log_every(sched["train_steps"], base["log_every"])}
    common.write_json(os.path.join(row_dir, ROW_FILE), stored)
  sched = stored["schedule"]
  record.update(calibration=stored["calibration"], **sched)
  record["args"] = (plan["args"] + tradeoff_rows.schedule_flags(sched, stored["log_every"])
                    + [f"--workdir={run_dir}"])
  start = time.time()
  if tradeoff_report.finished(run_dir, sched["train_steps"], plan["has_latent"]):
    record["reused"] = True
    code = 0
  else:
    logging.info("%s: training %d steps", plan["name"], sched["train_steps"])
    try:
      code = train_cli(record["args"], os.path.join(row_dir, LOG_FILE))
    except TrainingStopped as e:
      raise RowInterrupted(plan["name"], e.exit_code) from None
    if code in INTERRUPTED_EXIT_CODES:
      raise RowInterrupted(plan["name"], code)
  record["wall_seconds"] = round(time.time() - start, 1)
  record.update(tradeoff_report.run_figures(run_dir, plan["batch_size"]))
  record["exit_code"] = code
  if code != 0:
    record["reason"] = f"training exited with {code} (see {os.path.join(row_dir, LOG_FILE)})"
    return record
  record["reason"] = tradeoff_report.non_finite(record)
  if record["reason"] is None and not tradeoff_report.finished(run_dir, sched["train_steps"],
                                                               plan["has_latent"]):
    record["reason"] = (f"exit 0 without the final evaluation of step {sched['train_steps']}"
                        + (" and its latent.json" if plan["has_latent"] else ""))
  if record["reason"] is None:
    record["status"] = "ok"
    if plan["has_latent"]:
      record["pictures"] = tradeoff_pictures.draw_row_pictures(run_dir, row_dir)
  return record


def write_report(payload: dict, out_dir: str) -> None:
  common.write_json(os.path.join(out_dir, "tradeoff.json"), payload)
  common.write_lines(os.path.join(out_dir, "tradeoff.md"), tradeoff_report.markdown(payload))


def prepare(opts: dict) -> tuple[list, dict]:
  """(plans, {row: its stored row.json or None}) of `opts`' rows, every row's flags checked by
  the training CLI's parser and every row directory checked before anything trains; ValueError
  (RowDirectoryError) otherwise."""
  plans = [plan_row(name, opts) for name in opts["rows"]]
  stored = {p["name"]: stored_row(p, os.path.join(opts["out_dir"], p["name"])) for p in plans}
  return plans, stored


def run_table(opts: dict, plans: list, stored: dict, header: dict) -> dict:
  """Runs the rows in turn, rewriting OUT_DIR/tradeoff.{json,md} after each; the payload (the
  `header` fields, the options and "rows", the row records). A failed row does not stop the
  others; an interrupted one (a signal stopped its training, whether this process got it too or
  not) raises `RowInterrupted` with the rows before it reported."""
  payload = dict(header, budget_minutes=opts["budget_minutes"],
                 calibration_steps=opts["calibration_steps"],
                 base_flagfile=opts["base_flagfile"], smoke=opts["smoke"], rows=[])
  for plan in plans:
    record = run_row(plan, opts, stored[plan["name"]])
    payload["rows"].append(record)
    payload["machine"] = common.machine_info()  # the load average while the rows ran
    write_report(payload, opts["out_dir"])
    logging.info("%s: %s", plan["name"], tradeoff_report.table_line(record))
  return payload
