"""benchmarks/tradeoff*.py: the equal-time trade-off table (docs/design.md §26).

The fast tests start no process: the rows' flags are checked by the training CLI's own parser in
process, and the runs are fake run directories written here (the training CLI replaced by a
function that writes what a run writes). One slow test runs the table end to end.
"""
import json
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from benchmarks import capacity
from benchmarks import tradeoff_pictures
from benchmarks import tradeoff_report
from benchmarks import tradeoff_rows
from benchmarks import tradeoff_runs

import run_fixtures

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK = tradeoff_rows.DEFAULT_BASE_FLAGFILE
SMOKE = tradeoff_rows.SMOKE_BASE_FLAGFILE


# ------------------------------------------------------------------------------ arithmetic


def test_the_budget_gives_rate_times_seconds_steps_and_the_schedule_keeps_its_fractions():
  assert tradeoff_rows.steps_for_budget(2.5, 20 * 60) == 3000
  assert tradeoff_rows.steps_for_budget(0.0004, 60) == 1  # at least one step
  with pytest.raises(ValueError, match="positive rate"):
    tradeoff_rows.steps_for_budget(0.0, 60)
  # configs/quick.flags: warm-up 200 and annealing 500 of 1,600 steps.
  assert tradeoff_rows.schedule(3000, 1600, 200, 500) == {
      "train_steps": 3000, "warmup_steps": 375, "kl_anneal_steps": 938}
  assert tradeoff_rows.schedule(1600, 1600, 200, 500)["warmup_steps"] == 200
  assert tradeoff_rows.schedule(7, 1600, 200, 500) == {
      "train_steps": 7, "warmup_steps": 1, "kl_anneal_steps": 2}
  assert tradeoff_rows.schedule(3, 6, 0, 12)["kl_anneal_steps"] == 3  # never past the end
  with pytest.raises(ValueError, match="train_steps >= 1"):
    tradeoff_rows.schedule(0, 1600, 200, 500)
  assert tradeoff_rows.log_every(3000, 200) == 200
  assert tradeoff_rows.log_every(96, 200) == 12 and tradeoff_rows.log_every(5, 200) == 1


def test_the_rate_leaves_out_the_first_window_and_the_time_counts_every_window():
  # Windows of 20 steps ending at 20, 40, 60 (given out of order): 20 s (tracing), 10 s, 5 s.
  rate, seconds = tradeoff_rows.steady_rate([(40, 2.0), (20, 1.0), (60, 4.0)])
  assert rate == pytest.approx(40 / 15) and seconds == pytest.approx(35.0)
  assert tradeoff_rows.steady_rate([(20, 1.0)]) == (None, 20.0)
  assert tradeoff_rows.steady_rate([]) == (None, 0)


# ------------------------------------------------------------------------------ the rows


def test_every_built_in_row_is_accepted_by_the_training_cli_as_the_table_needs_it():
  for name, row_flags in tradeoff_rows.BUILTIN_ROWS.items():
    if row_flags is None:
      continue  # realnvp_matched: computed, below
    for base, smoke in ((QUICK, False), (SMOKE, True)):
      model_cfg, data_cfg, train_cfg = tradeoff_rows.resolve(
          tradeoff_rows.row_args(base, row_flags, smoke))
      assert train_cfg.eval_every == 0 and not train_cfg.export_at_end and train_cfg.latent_eval
      if not smoke:  # every test image, the base flagfile's IW k
        assert data_cfg.eval_take is None and train_cfg.eval_num_samples == 10
      else:
        assert data_cfg.train_take == 256 and data_cfg.eval_take == 48
      if name in ("fixed_z", "realnvp_same_flow", "old_quick"):
        assert train_cfg.kl_free_nats == 0 and train_cfg.kl_free_nats_mode == "total"
      if smoke:
        continue
      if name == "recipe":
        assert (model_cfg.flow_layout, model_cfg.flow_receptive_field) == ("checkerboard*6",
                                                                           "local")
      if name == "recipe_ld64":
        assert model_cfg.latent_dim == 64 and train_cfg.kl_free_nats == 32
      if name == "old_quick":  # the quick model before the latent recipe
        assert model_cfg.flow_layout == "" and model_cfg.flow_receptive_field == "full"
        assert (model_cfg.flow_scales, model_cfg.flow_checkerboard, model_cfg.flow_channelwise,
                model_cfg.encoder_filters) == (2, 2, 2, 16)
      if name == "pixel_logistic":  # keeps the recipe's free bits
        assert model_cfg.likelihood == "pixel_logistic" and model_cfg.has_vae
        assert (train_cfg.kl_free_nats, train_cfg.kl_free_nats_mode) == (16, "per_dim")
      if name in ("fixed_z", "realnvp_same_flow"):
        assert not model_cfg.has_vae and model_cfg.flow_layout == "checkerboard*6"


@pytest.mark.parametrize("row_flags, says", [
    ("--likelihood=realnvp --kl_free_nats=4", "needs a latent"),  # the configs together
    ("--latent_dim=0", "--latent_dim must be an int >= 1"),  # one flag's own check
])
def test_a_refused_row_is_one_error_naming_the_row(tmp_path, row_flags, says):
  opts = tradeoff_runs.make_options(base_flagfile=SMOKE, out_dir=str(tmp_path),
                                    extra_rows=[f"bad={row_flags}"], rows="bad")
  with pytest.raises(ValueError, match=rf"row 'bad': the training CLI refuses its flags .*{says}"):
    tradeoff_runs.plan_row("bad", opts)


def test_options_and_row_names_are_checked_naming_the_flag(tmp_path):
  opts = tradeoff_runs.make_options(smoke=True, out_dir=str(tmp_path))
  assert (opts["base_flagfile"], opts["calibration_steps"]) == (SMOKE, 6)
  assert opts["rows"] == list(tradeoff_rows.BUILTIN_ROWS)
  opts = tradeoff_runs.make_options(out_dir=str(tmp_path), rows="old_quick,mine",
                                    extra_rows=["mine=--latent_dim=16 --kl_free_nats='8'"])
  assert opts["rows"] == ["old_quick", "mine"] and opts["budget_minutes"] == 20.0
  assert opts["extra_rows"]["mine"] == ("--latent_dim=16", "--kl_free_nats=8")
  for kwargs, says in (({"rows": "recipe,nope"}, "--rows='recipe,nope'"),
                       ({"rows": "recipe,recipe"}, "--rows"),
                       ({"budget_minutes": 0.0}, "--budget_minutes=0.0"),
                       ({"calibration_steps": 2}, "--calibration_steps=2"),
                       ({"base_flagfile": "configs/none.flags"}, "--base_flagfile"),
                       ({"extra_rows": ["recipe=--latent_dim=2"]}, "is a built-in row"),
                       ({"extra_rows": ["a b=--latent_dim=2"]}, "--extra_row"),
                       ({"extra_rows": ["x=latent_dim=2"]}, "expected training flags"),
                       ({"extra_rows": ["x=--a=1", "x=--b=2"]}, "distinct")):
    with pytest.raises(ValueError, match=says.replace("-", r"\-").replace(".", r"\.")):
      tradeoff_runs.make_options(out_dir=str(tmp_path), **kwargs)


def test_the_matched_realnvp_width_comes_from_benchmarks_capacity(tmp_path, monkeypatch):
  recipe = tradeoff_rows.row_args(SMOKE, (), True)
  added, params = tradeoff_rows.matched_realnvp_flags(recipe)
  recipe_cfg = tradeoff_rows.resolve(recipe)[0]
  matched_cfg = tradeoff_rows.resolve(recipe + added)[0]
  assert matched_cfg.likelihood == "realnvp"
  assert params == capacity.count(matched_cfg)
  expected = capacity.matching_filters(tradeoff_rows.resolve(
      capacity.without_latent(recipe, "realnvp"))[0], capacity.count(recipe_cfg))
  assert f"--flow_filters={expected[0]}" in added and params == expected[1]
  # The row asks capacity's fit, whatever it answers: nothing is hard-coded.
  monkeypatch.setattr(capacity, "matching_filters", lambda cfg, target: (7, 123))
  opts = tradeoff_runs.make_options(smoke=True, out_dir=str(tmp_path), rows="realnvp_matched")
  plan = tradeoff_runs.plan_row("realnvp_matched", opts)
  assert "--flow_filters=7" in plan["flags"] and not plan["has_latent"]


# ------------------------------------------------------------------------------ fake runs


def _write_windows(run_dir, windows):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard", "train"))
  with writer.as_default():
    for step, rate in windows:
      tf.summary.scalar("steps_per_sec", rate, step=step)
  writer.close()


def _write_run(run_dir, steps, has_latent, log_every=None, rate=2.0, elbo=3.6):
  """What a finished `vapnev_tf.train` run leaves for the table: eval.json at `steps`, training
  windows at `rate` steps/s, and latent.json for a row with a latent."""
  os.makedirs(run_dir, exist_ok=True)
  log_every = log_every or max(1, steps // 4)
  _write_windows(run_dir, [(s, rate) for s in range(log_every, steps + 1, log_every)])
  final = {"elbo_bpd": elbo, "iw_bpd": elbo - 0.02 if has_latent else None, "k": 10,
           "num_images": 10000, "step": steps, "history": []}
  pathlib.Path(run_dir, "eval.json").write_text(json.dumps(final))
  if has_latent:
    pathlib.Path(run_dir, "latent.json").write_text(json.dumps(dict(
        _LATENT, step=steps)))


_LATENT = {"num_images": 10000, "latent_dim": 32, "kl_nats": 30.5, "active_units": 32,
           "active_fraction": 1.0, "mi_nats": 8.2, "mi_max_nats": 9.2, "own_bpd": 3.5,
           "other_bpd": 4.9, "conditioning_gap_bpd": 1.4, "probe_latent_accuracy": 0.79,
           "probe_pixels_accuracy": 0.84, "judge_test_accuracy": 0.86, "agreement_mean_y": 0.68,
           "agreement_sampled": 0.63, "temperature": 0.8}


def _arg(args, name):
  return next(a.split("=", 1)[1] for a in reversed(args) if a.startswith(f"--{name}="))


class FakeTrainCli:
  """Stands in for `python -m vapnev_tf.train`: writes the run a training would leave (or exits
  with `fail[row]`), and records each call."""

  def __init__(self, rate=2.0, fail=None, has_latent=True):
    self.calls, self.rate, self.fail, self.has_latent = [], rate, fail or {}, has_latent

  def __call__(self, args, log_path):
    row = os.path.basename(os.path.dirname(log_path))
    self.calls.append((row, list(args)))
    if row in self.fail:
      return self.fail[row]
    _write_run(_arg(args, "workdir"), int(_arg(args, "train_steps")), self.has_latent,
               log_every=int(_arg(args, "log_every")), rate=self.rate)
    return 0


@pytest.fixture
def drawn(monkeypatch):
  """The rows the pictures were drawn for, with the real drawing replaced (fake runs have no
  weights)."""
  calls = []

  def fake_draw(run_dir, row_dir):
    calls.append((os.path.basename(row_dir), run_dir))
    return {mode: tradeoff_pictures.picture_path(mode) for mode in tradeoff_pictures.PICTURES}
  monkeypatch.setattr(tradeoff_pictures, "draw_row_pictures", fake_draw)
  return calls


def _plan(name="recipe", has_latent=True, flags_text="--latent_dim=32\n", budget=1.0):
  return {"name": name, "flags": [] if name == "recipe" else ["--likelihood=realnvp"],
          "args": [f"--flagfile={QUICK}"], "has_latent": has_latent, "params": 1234,
          "batch_size": 64,
          "base_schedule": {"steps": 1600, "warmup": 200, "anneal": 500, "log_every": 200},
          "identity": {"flags_text": flags_text, "budget_minutes": budget}}


def _opts(tmp_path, budget=1.0, calibration_steps=60):
  return {"out_dir": str(tmp_path), "budget_minutes": budget,
          "calibration_steps": calibration_steps, "smoke": False, "base_flagfile": QUICK}


def test_a_row_is_calibrated_in_a_scratch_directory_then_trained_for_the_budget(tmp_path,
                                                                               monkeypatch, drawn):
  fake = FakeTrainCli(rate=2.0)
  monkeypatch.setattr(tradeoff_runs, "train_cli", fake)
  row_dir = tmp_path / "recipe"
  (row_dir / "keep").mkdir(parents=True)  # not the tool's: left alone
  record = tradeoff_runs.run_row(_plan(), _opts(tmp_path, budget=1.0), None)
  (cal_row, cal_args), (train_row, train_args) = fake.calls
  assert cal_row == train_row == "recipe"
  scratch = _arg(cal_args, "workdir")
  assert _arg(cal_args, "train_steps") == "60" and _arg(cal_args, "latent_eval") == "false"
  assert not os.path.exists(os.path.dirname(scratch))  # the scratch directory is gone
  assert sorted(os.listdir(row_dir)) == ["keep", "row.json", "run"]
  # 2 steps/s for 1 minute; warm-up and annealing at 200/1600 and 500/1600 of it.
  assert (_arg(train_args, "train_steps"), _arg(train_args, "warmup_steps"),
          _arg(train_args, "kl_anneal_steps")) == ("120", "15", "38")
  assert _arg(train_args, "workdir") == str(row_dir / "run")
  assert record["status"] == "ok" and not record["reused"] and record["train_steps"] == 120
  assert record["calibration"]["steps_per_sec"] == pytest.approx(2.0)
  assert record["images_per_sec"] == pytest.approx(128.0)
  assert record["train_minutes"] == pytest.approx(1.0)
  assert record["latent"]["mi_nats"] == 8.2 and record["eval"]["iw_bpd"] == pytest.approx(3.58)
  stored = json.loads((row_dir / "row.json").read_text())
  assert stored["identity"] == _plan()["identity"] and stored["schedule"]["train_steps"] == 120
  assert drawn == [("recipe", str(row_dir / "run"))]
  assert record["pictures"]["draws"] == os.path.join("pictures", "draws.png")


def test_a_finished_row_is_skipped_and_an_unfinished_one_resumes_its_calibration(tmp_path,
                                                                                 monkeypatch,
                                                                                 drawn):
  fake = FakeTrainCli()
  monkeypatch.setattr(tradeoff_runs, "train_cli", fake)
  opts = _opts(tmp_path)
  first = tradeoff_runs.run_row(_plan(), opts, None)
  stored = tradeoff_runs.stored_row(_plan(), str(tmp_path / "recipe"))
  assert stored["schedule"]["train_steps"] == first["train_steps"]
  again = tradeoff_runs.run_row(_plan(), opts, stored)
  assert len(fake.calls) == 2 and again["reused"] and again["status"] == "ok"
  assert again["images_per_sec"] == pytest.approx(first["images_per_sec"])
  assert [row for row, _ in drawn] == ["recipe", "recipe"]  # a reused row draws what is missing
  flow = tradeoff_runs.run_row(_plan("realnvp_same_flow", has_latent=False), opts, None)
  assert flow["status"] == "ok" and "pictures" not in flow and len(drawn) == 2
  # A run that stopped before its final step (or without latent.json) is trained again with the
  # recorded schedule, not recalibrated.
  (tmp_path / "recipe" / "run" / "latent.json").unlink()
  tradeoff_runs.run_row(_plan(), opts, stored)
  assert len(fake.calls) == 5 and _arg(fake.calls[-1][1], "train_steps") == str(
      first["train_steps"])


def test_a_row_directory_of_another_configuration_is_refused_and_left_as_it_is(tmp_path,
                                                                              monkeypatch):
  monkeypatch.setattr(tradeoff_runs, "train_cli", FakeTrainCli())
  tradeoff_runs.run_row(_plan(), _opts(tmp_path), None)
  row_dir = tmp_path / "recipe"
  before = {p: p.read_bytes() for p in row_dir.rglob("*") if p.is_file()}
  for other in (_plan(flags_text="--latent_dim=64\n"), _plan(budget=2.0)):
    with pytest.raises(tradeoff_runs.RowDirectoryError,
                       match=rf"row 'recipe': {row_dir} holds a different configuration"):
      tradeoff_runs.stored_row(other, str(row_dir))
  (row_dir / "row.json").unlink()
  del before[row_dir / "row.json"]
  with pytest.raises(tradeoff_runs.RowDirectoryError, match=r"holds a run without row\.json"):
    tradeoff_runs.stored_row(_plan(), str(row_dir))
  assert {p: p.read_bytes() for p in row_dir.rglob("*") if p.is_file()} == before
  assert tradeoff_runs.stored_row(_plan(), str(tmp_path / "new")) is None  # not started


def test_a_failed_row_is_reported_and_the_others_still_run(tmp_path, monkeypatch, drawn):
  fake = FakeTrainCli(fail={"bad": 3})
  monkeypatch.setattr(tradeoff_runs, "train_cli", fake)
  plans = [_plan("bad"), _plan("recipe")]
  header = {"command": "python -m benchmarks.tradeoff", "date": "today",
            "machine": {"nproc": 2, "cpu": "cpu", "load_average": [0, 0, 0]},
            "versions": {"tensorflow": "2.21"}}
  payload = tradeoff_runs.run_table(_opts(tmp_path), plans, {"bad": None, "recipe": None},
                                    header)
  bad, good = payload["rows"]
  assert (bad["status"], bad["exit_code"], good["status"]) == ("failed", 3, "ok")
  assert "calibration failed" in bad["reason"]
  stored = json.loads((tmp_path / "tradeoff.json").read_text())
  assert [r["status"] for r in stored["rows"]] == ["failed", "ok"]
  markdown = (tmp_path / "tradeoff.md").read_text()
  assert "| bad | failed (exit 3) |" in markdown and "| recipe | ok |" in markdown


_HEADER = {"command": "python -m benchmarks.tradeoff", "date": "today",
           "machine": {"nproc": 2, "cpu": "cpu", "load_average": [0, 0, 0]},
           "versions": {"tensorflow": "2.21"}}


@pytest.mark.parametrize("how", ["training_only", "table_too"])
@pytest.mark.parametrize("stopped_in", ["calibration", "training"])
def test_a_row_stopped_by_a_signal_stops_the_table_and_a_rerun_resumes_it(tmp_path, monkeypatch,
                                                                         drawn, stopped_in, how):
  fake = FakeTrainCli()
  calls = {"n": 0}

  def stopped_once(args, log_path):
    calls["n"] += 1
    stop_at = 1 if stopped_in == "calibration" else 2  # the second row's first or second call
    if os.path.basename(os.path.dirname(log_path)) == "second" and calls["n"] == 2 + stop_at:
      if how == "training_only":
        return 128 + signal.SIGINT  # the training CLI after a SIGINT this process ignored
      raise tradeoff_runs.TrainingStopped(128 + signal.SIGTERM)  # this process got it too
    return fake(args, log_path)
  monkeypatch.setattr(tradeoff_runs, "train_cli", stopped_once)
  plans = [_plan("recipe"), _plan("second"), _plan("third")]
  opts = _opts(tmp_path)
  code = 130 if how == "training_only" else 143
  with pytest.raises(tradeoff_runs.RowInterrupted, match=f"'second'.*exit {code}.*resume"):
    tradeoff_runs.run_table(opts, plans, {p["name"]: None for p in plans}, _HEADER)
  assert [row for row, _ in fake.calls] == ["recipe", "recipe"] + (
      ["second"] if stopped_in == "training" else [])  # "third" never started
  assert [r["name"] for r in json.loads((tmp_path / "tradeoff.json").read_text())["rows"]] == [
      "recipe"]
  # The stopped row kept what it had: its calibration (training stopped) or nothing.
  stored = {p["name"]: tradeoff_runs.stored_row(p, str(tmp_path / p["name"])) for p in plans}
  assert (stored["second"] is not None) == (stopped_in == "training")
  payload = tradeoff_runs.run_table(opts, plans, stored, _HEADER)
  assert [(r["name"], r["status"], r["reused"]) for r in payload["rows"]] == [
      ("recipe", "ok", True), ("second", "ok", False), ("third", "ok", False)]
  if stopped_in == "training":  # resumed with the recorded calibration: one training call
    assert [row for row, _ in fake.calls].count("second") == 2


def test_a_signal_to_the_table_alone_stops_its_training_which_saves_and_exits(monkeypatch,
                                                                           tmp_path):
  """`kill PID` of the table (the training is not in the signal's reach): the training gets a
  SIGTERM, which makes the training CLI checkpoint and exit, and the table raises with the
  training's exit code."""
  script = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(128 + signal.SIGTERM))\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n")
  started = []
  real_popen = subprocess.Popen

  def fake_popen(cmd, **kwargs):
    proc = real_popen([sys.executable, "-c", script], **kwargs)
    started.append(proc)
    return proc
  monkeypatch.setattr(tradeoff_runs.subprocess, "Popen", fake_popen)
  default = signal.getsignal(signal.SIGTERM)
  log = tmp_path / "train.log"

  def kill_table_when_waiting():
    deadline = time.time() + run_fixtures.TRAIN_TIMEOUT  # a hang guard, not a speed bound
    while time.time() < deadline:
      if signal.getsignal(signal.SIGTERM) is not default and "ready" in log.read_text():
        sigint_while_waiting.append(signal.getsignal(signal.SIGINT))
        os.kill(os.getpid(), signal.SIGTERM)  # only into the table's handler, never pytest's
        return
      time.sleep(0.05)
    started[0].kill()  # the test then fails below: the handler or the child never came
  sigint_while_waiting = []
  killer = threading.Thread(target=kill_table_when_waiting, daemon=True)
  previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
  try:
    killer.start()
    with pytest.raises(tradeoff_runs.TrainingStopped) as stopped:
      tradeoff_runs.train_cli(["--workdir=unused"], str(log))
    killer.join()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous_sigint)
  assert stopped.value.exit_code == started[0].returncode == 128 + signal.SIGTERM
  assert sigint_while_waiting == [signal.SIG_IGN]  # an ignored SIGINT stays ignored
  assert signal.getsignal(signal.SIGTERM) is default  # the table's handler is gone again


@pytest.mark.parametrize("elbo, short, says", [
    (float("nan"), 0, "non-finite elbo_bpd"),
    (3.6, 1, "exit 0 without the final evaluation of step 120 and its latent.json")])
def test_a_non_finite_bound_or_a_missing_final_evaluation_fails_the_row(tmp_path, monkeypatch,
                                                                        drawn, elbo, short, says):
  def bad_run(args, log_path):
    del log_path
    calibrating = "--latent_eval=false" in args
    _write_run(_arg(args, "workdir"), int(_arg(args, "train_steps")) - short * (not calibrating),
               True, log_every=int(_arg(args, "log_every")), elbo=elbo)
    return 0
  monkeypatch.setattr(tradeoff_runs, "train_cli", bad_run)
  record = tradeoff_runs.run_row(_plan(), _opts(tmp_path), None)
  assert record["status"] == "failed" and record["exit_code"] == 0
  assert says in record["reason"]


# ------------------------------------------------------------------------------ rendering


def _record(name, status="ok", has_latent=True, exit_code=0):
  final = {"elbo_bpd": 3.6, "iw_bpd": 3.58 if has_latent else None, "k": 10,
           "num_images": 10000, "step": 100}
  return {"name": name, "flags": ["--likelihood=realnvp"] if not has_latent else [],
          "has_latent": has_latent, "params": 3237658, "status": status, "exit_code": exit_code,
          "reason": None if status == "ok" else "training exited with 1",
          "calibration": {"steps": 60, "steps_per_sec": 1.5, "exit_code": 0},
          "train_steps": 100, "warmup_steps": 12, "kl_anneal_steps": 31,
          "eval": final if status == "ok" else None,
          "latent": dict(_LATENT, step=100) if has_latent and status == "ok" else None,
          "images_per_sec": 96.0, "train_minutes": 20.4}


def test_the_table_has_a_line_per_row_with_dashes_where_a_row_has_no_figure(tmp_path):
  rows = [_record("recipe"), _record("realnvp_same_flow", has_latent=False),
          _record("old_quick", status="failed", exit_code=1)]
  payload = {"command": "python -m benchmarks.tradeoff", "date": "today",
             "machine": {"nproc": 2, "cpu": "cpu", "load_average": [1.0, 1.0, 1.0]},
             "versions": {"tensorflow": "2.21"}, "budget_minutes": 20.0,
             "calibration_steps": 60, "base_flagfile": QUICK, "smoke": False, "rows": rows}
  tradeoff_runs.write_report(payload, str(tmp_path))
  assert json.loads((tmp_path / "tradeoff.json").read_text())["rows"] == rows
  lines = (tmp_path / "tradeoff.md").read_text().splitlines()
  header = lines.index(tradeoff_report.HEADER)
  assert lines[header + 1] == tradeoff_report.RULE
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[header + 2:
                                                                             header + 5]]
  assert all(len(c) == len(tradeoff_report.HEADER.strip("|").split("|")) for c in cells)
  recipe, flow, failed = cells
  assert recipe[:8] == ["recipe", "ok", "3.580", "3.600", "30.50", "32/32", "8.20",
                        "1.400 (3.500 / 4.900)"]
  assert recipe[8:] == ["0.790", "0.680 / 0.630 (T=0.8)", "96", "100", "3,237,658", "20.4",
                        "(base)"]
  # A flow: the IW column is its exact NLL (the ELBO), the latent columns "—".
  assert flow[2] == flow[3] == "3.600" and flow[4:10] == ["—"] * 6
  assert flow[-1] == "`--likelihood=realnvp`"
  assert failed[1] == "failed (exit 1)" and failed[2:11] == ["—"] * 9 and failed[11] == "100"
  text = "\n".join(lines)
  assert "raw pixels scores 0.840" in text and "- old_quick: failed (exit 1)" in text
  assert "- recipe: 1.500 steps/s over 60 steps -> 100 steps (warm-up 12, KL annealing 31)" in text
  assert "Pictures" not in text  # no row has any


def test_the_header_names_the_code_it_ran(tmp_path, monkeypatch):
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=7", "HEAD"],
                        capture_output=True, text=True, check=True).stdout.strip()
  assert common.code_version().split(" + ")[0] == head
  assert common.header()["code"] == common.code_version()
  copy = tmp_path / "not_a_checkout"
  copy.mkdir()
  monkeypatch.setattr(common, "REPO_ROOT", copy)
  assert common.code_version() is None
  payload = {"command": "c", "date": "d", "code": None, "rows": [], "budget_minutes": 20.0,
             "machine": {"nproc": 2, "cpu": "cpu", "load_average": [0, 0, 0]},
             "versions": {}, "calibration_steps": 60, "base_flagfile": QUICK}
  assert "- code: not a git checkout" in tradeoff_report.markdown(payload)
  payload["code"] = "abc1234 + uncommitted changes"
  assert "- code: abc1234 + uncommitted changes" in tradeoff_report.markdown(payload)


def test_the_pictures_section_links_each_rows_figures_and_names_a_failed_one():
  rows = [dict(_record("recipe"), pictures={"panel": "pictures/panel.png",
                                            "interpolate": "pictures/interpolate.png",
                                            "draws": "error: no | checkpoint"}),
          _record("realnvp_same_flow", has_latent=False)]
  lines = tradeoff_pictures.markdown(rows)
  assert lines[2] == "| row | panel | interpolate | draws |"
  assert lines[4] == ("| recipe | ![recipe panel](recipe/pictures/panel.png) | "
                      "![recipe interpolate](recipe/pictures/interpolate.png) | "
                      "error: no / checkpoint |")
  assert len(lines) == 6 and tradeoff_pictures.markdown(rows[1:]) == []


def test_the_pictures_of_a_run_are_drawn_once_and_a_run_it_cannot_load_is_an_error(tmp_path,
                                                                                   tiny_run):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  row_dir = tmp_path / "row"
  drawn = tradeoff_pictures.draw_row_pictures(str(tiny_run), str(row_dir))
  assert drawn == {m: os.path.join("pictures", f"{m}.png") for m in ("panel", "interpolate",
                                                                      "draws")}
  # tiny_run: 8x8 images in grids with 1-pixel borders; draws: 8 rows of image, mu_y and 8
  # draws; interpolate: 8 rows.
  shapes = {m: np.asarray(Image.open(row_dir / p)).shape for m, p in drawn.items()}
  assert shapes["draws"][:2] == (8 * 9 + 1, 10 * 9 + 1), shapes
  assert shapes["interpolate"][0] == 8 * 9 + 1, shapes
  stamps = {m: os.stat(row_dir / p).st_mtime_ns for m, p in drawn.items()}
  assert tradeoff_pictures.draw_row_pictures(str(tiny_run), str(row_dir)) == drawn
  assert {m: os.stat(row_dir / p).st_mtime_ns for m, p in drawn.items()} == stamps
  empty = tmp_path / "empty_run"
  empty.mkdir()
  failed = tradeoff_pictures.draw_row_pictures(str(empty), str(tmp_path / "row2"), ("panel",))
  assert failed["panel"].startswith("error: ") and "run directory" in failed["panel"]
  # A run with its config but without a readable checkpoint.
  no_weights = tmp_path / "no_weights"
  no_weights.mkdir()
  shutil.copy(tiny_run / "config.json", no_weights / "config.json")
  failed = tradeoff_pictures.draw_row_pictures(str(no_weights), str(tmp_path / "row3"))
  assert set(failed) == set(tradeoff_pictures.PICTURES)
  assert all(v.startswith("error: ") and "\n" not in v for v in failed.values()), failed
  assert not (tmp_path / "row3" / "pictures").exists()


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow  # two rows trained, evaluated and their latent figures computed (~2-3 min)
def test_the_smoke_table_end_to_end_then_its_rerun_reuses_the_rows(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", XDG_CACHE_HOME=str(tmp_path / "cache"))
  cmd = [sys.executable, "-m", "benchmarks.tradeoff", "--smoke",
         "--rows=recipe,realnvp_same_flow", f"--out_dir={tmp_path / 'out'}"]
  for attempt in range(2):
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=run_fixtures.TRAIN_TIMEOUT, env=env)  # a hang guard
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "out" / "tradeoff.json").read_text())
    recipe, flow = payload["rows"]
    assert [r["reused"] for r in payload["rows"]] == [attempt == 1] * 2
    for row in payload["rows"]:
      assert row["status"] == "ok" and row["train_steps"] >= 1
      assert row["eval"]["step"] == row["train_steps"] and row["eval"]["num_images"] == 48
      for value in (row["eval"]["elbo_bpd"], row["images_per_sec"], row["train_minutes"],
                    row["calibration"]["steps_per_sec"]):
        assert isinstance(value, float) and math.isfinite(value) and value > 0
      assert not [p for p in os.listdir(tmp_path / "out" / row["name"])
                  if p.startswith("calibration_")]
    for key in ("kl_nats", "mi_nats", "conditioning_gap_bpd", "probe_latent_accuracy",
                "agreement_mean_y"):
      assert math.isfinite(recipe["latent"][key]), key
    assert recipe["eval"]["iw_bpd"] is not None and flow["latent"] is None
    assert recipe["pictures"] == {m: os.path.join("pictures", f"{m}.png")
                                  for m in tradeoff_pictures.PICTURES}
    assert "pictures" not in flow
    if attempt == 0:  # the rerun keeps the figures drawn by the first run
      stamps = {p: os.stat(tmp_path / "out" / "recipe" / p).st_mtime_ns
                for p in recipe["pictures"].values()}
  assert stamps == {p: os.stat(tmp_path / "out" / "recipe" / p).st_mtime_ns for p in stamps}
  markdown = (tmp_path / "out" / "tradeoff.md").read_text()
  assert "| realnvp_same_flow | ok |" in markdown
  assert "![recipe panel](recipe/pictures/panel.png)" in markdown
