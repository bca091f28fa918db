"""The rows of the equal-time trade-off table and their training flags (docs/design.md §26).

A row is a name and the flags it adds to the base flagfile (`--base_flagfile`, default
configs/quick.flags). Its training command is

    python -m vapnev_tf.train --flagfile=BASE ROW_FLAGS EVAL_FLAGS [SMOKE_FLAGS] SCHEDULE
        --workdir=W

where EVAL_FLAGS are the table's evaluation (all test images, the base flagfile's IW k, the
latent figures, no export) and SCHEDULE the step count that fills the time budget with the
warm-up and KL annealing scaled to the same fractions of it as in the base flagfile (`schedule`).

This module holds the pure parts (flag lists, the budget arithmetic); resolving flags and counting
parameters use the training CLI's own parser (`resolve`) and benchmarks/capacity.py.
"""
import contextlib
import re
import shlex

from benchmarks import capacity
from benchmarks import common

DEFAULT_BASE_FLAGFILE = "configs/quick.flags"
SMOKE_BASE_FLAGFILE = "configs/smoke.flags"

# No free bits, the mode back to its default: what a model without a latent needs (the training
# CLI refuses free bits there) and what the old quick model trained with.
NO_FREE_BITS = ("--kl_free_nats=0", "--kl_free_nats_mode=total")

# Built-in rows: name -> flags added to the base flagfile. "realnvp_matched" is computed
# (`matched_realnvp_flags`): its width depends on the recipe's parameter count.
BUILTIN_ROWS = {
    # The latent recipe itself (configs/quick.flags: 6 local couplings, FB16 per_dim, encoder 48).
    "recipe": (),
    # The recipe with 64 latent dimensions, free bits scaled to 0.5 nats per dimension as at 32.
    "recipe_ld64": ("--latent_dim=64", "--kl_free_nats=32"),
    # The old configs/quick.flags: two scales of 2 checkerboard + 2 channel-wise couplings, full
    # receptive field, encoder 16, no free bits. Its posterior collapses at the flagfile's 1,600
    # steps (docs/results.md, "Latent figures of the quick recipe"), not at 20 minutes' steps.
    "old_quick": ("--flow_layout=", "--flow_scales=2", "--flow_checkerboard=2",
                  "--flow_channelwise=2", "--flow_receptive_field=full", *NO_FREE_BITS,
                  "--encoder_filters=16"),
    # The reference VAE whose latent must carry the image. It keeps the recipe's free bits (the
    # same training objective); a local receptive field is a flow option it refuses.
    "pixel_logistic": ("--likelihood=pixel_logistic", "--flow_receptive_field=full"),
    # The recipe's decoder and flow at one fixed z (docs/design.md §24, row 1).
    "fixed_z": ("--likelihood=vapnev_fixed_z", *NO_FREE_BITS),
    # The recipe's flow alone.
    "realnvp_same_flow": ("--likelihood=realnvp", *NO_FREE_BITS),
    "realnvp_matched": None,
}
MATCHED_ROW = "realnvp_matched"
RECIPE_ROW = "recipe"

# The table's evaluation, whatever the base flagfile says: every test image, one final evaluation,
# the latent figures (a no-op with a line for rows without a latent), no SavedModel. The IW k is
# the base flagfile's (--eval_num_samples).
EVAL_FLAGS = ("--eval_take=0", "--eval_every=0", "--latent_eval=true", "--export_at_end=false")
# --smoke: tiny data and evaluations on top of configs/smoke.flags' tiny model.
SMOKE_FLAGS = ("--train_take=256", "--eval_take=48", "--eval_batch_size=48",
               "--eval_num_samples=2", "--eval_chunk_size=2")
# The calibration run's own evaluation: as small as the CLI allows, no figures, no export.
CALIBRATION_EVAL_FLAGS = ("--eval_take=64", "--eval_batch_size=64", "--eval_num_samples=1",
                          "--latent_eval=false", "--export_at_end=false", "--eval_every=0")

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_extra_row(text: str) -> tuple[str, tuple[str, ...]]:
  """`"NAME=--flag=1 --other=2"` -> ("NAME", ("--flag=1", "--other=2")); ValueError naming
  --extra_row otherwise."""
  name, sep, rest = text.partition("=")
  if not sep or not _NAME.match(name):
    raise ValueError(f"--extra_row={text!r}: expected NAME=FLAGS with NAME of letters, digits, "
                     "'_', '.' or '-'.")
  if name in BUILTIN_ROWS:
    raise ValueError(f"--extra_row={text!r}: {name!r} is a built-in row; choose another name.")
  try:
    row_flags = tuple(shlex.split(rest))
  except ValueError as e:
    raise ValueError(f"--extra_row={text!r}: the flags do not parse as a shell string ({e}).")
  if not all(f.startswith("--") for f in row_flags):
    raise ValueError(f"--extra_row={text!r}: expected training flags (--name=value), got "
                     f"{list(row_flags)}.")
  return name, row_flags


def select_rows(rows_flag: str, extra_rows: dict) -> list[str]:
  """The row names to run: `rows_flag` is "all" (every built-in row, then every extra row) or a
  comma list of built-in and extra row names; ValueError naming --rows otherwise."""
  known = list(BUILTIN_ROWS) + list(extra_rows)
  if rows_flag.strip() == "all":
    return known
  names = [n.strip() for n in rows_flag.split(",") if n.strip()]
  unknown = [n for n in names if n not in known]
  if not names or unknown or len(set(names)) != len(names):
    raise ValueError(f"--rows={rows_flag!r}: expected 'all' or distinct names from {known}"
                     + (f"; unknown: {unknown}" if unknown else "") + ".")
  return names


def row_args(base_flagfile: str, row_flags, smoke: bool) -> list[str]:
  """A row's training flags without its schedule and workdir: the base flagfile (a relative path
  is resolved from the repository root), the row's flags, the table's evaluation, and with
  `smoke` the tiny data and evaluations (later flags win)."""
  return ([f"--flagfile={base_flagfile}"] + list(row_flags) + list(EVAL_FLAGS)
          + (list(SMOKE_FLAGS) if smoke else []))


def resolve(args):
  """(ModelConfig, DataConfig, TrainConfig) of training flags `args`, resolved by the training
  CLI's own parser and checks from the repository root; ValueError (or absl's flags error) when
  the CLI would refuse them."""
  return capacity._resolve(list(args))  # pylint: disable=protected-access


def flags_text(args) -> str:
  """What the training CLI writes to WORKDIR/flags.txt for `args`: every flag given, flagfiles
  expanded, with the value that won; the identity of a row's configuration."""
  from vapnev_tf import train as train_cli  # pylint: disable=g-import-not-at-top
  with contextlib.chdir(common.REPO_ROOT):
    return train_cli.run_flags_text(
        train_cli.parse_flags(["vapnev_tf.train", *args], require_workdir=False))


def matched_realnvp_flags(recipe_args) -> tuple[list[str], int]:
  """The flags that turn the recipe `recipe_args` into realnvp with the recipe's parameter count
  (`benchmarks.capacity.attribution`'s matched row: same layout and depth, --flow_filters
  widened), and that count. The flags are relative to `recipe_args`: the latent-only fields reset,
  the likelihood and the width."""
  rows = capacity.attribution(list(recipe_args), extra_res_blocks=0)
  matched = rows[MATCHED_ROW]
  dropped = set(recipe_args)
  added = [f for f in matched["flags"] if f not in dropped]
  return added, matched["params"]


def steps_for_budget(steps_per_sec: float, budget_seconds: float) -> int:
  """Training steps that fill `budget_seconds` at `steps_per_sec`: round(rate * seconds), >= 1."""
  if not steps_per_sec > 0 or not budget_seconds > 0:
    raise ValueError(f"steps_for_budget: need a positive rate and budget, got {steps_per_sec} "
                     f"steps/s and {budget_seconds} s.")
  return max(1, round(steps_per_sec * budget_seconds))


def schedule(train_steps: int, base_steps: int, base_warmup: int, base_anneal: int) -> dict:
  """{"train_steps", "warmup_steps", "kl_anneal_steps"}: the warm-up and the KL annealing at the
  same fractions of `train_steps` as `base_warmup` and `base_anneal` of `base_steps` (rounded;
  configs/quick.flags: 200 and 500 of 1,600)."""
  if train_steps < 1 or base_steps < 1:
    raise ValueError(f"schedule: need train_steps >= 1 and base_steps >= 1, got {train_steps} "
                     f"and {base_steps}.")
  scale = lambda n: min(train_steps, round(train_steps * n / base_steps))
  return {"train_steps": train_steps, "warmup_steps": scale(base_warmup),
          "kl_anneal_steps": scale(base_anneal)}


def log_every(train_steps: int, base_log_every: int, windows: int = 8) -> int:
  """Steps per training-summary window: the base flagfile's, or fewer so that a short row still
  logs about `windows` windows (its throughput is read from them)."""
  return max(1, min(base_log_every, train_steps // windows))


def schedule_flags(sched: dict, log_every_steps: int) -> list[str]:
  return [f"--train_steps={sched['train_steps']}", f"--warmup_steps={sched['warmup_steps']}",
          f"--kl_anneal_steps={sched['kl_anneal_steps']}", f"--log_every={log_every_steps}"]


def steady_rate(points) -> tuple[float | None, float]:
  """(steps/s after the first window, seconds of all windows) of training-summary windows.

  `points` are (step, steps_per_sec) at the end of each window, in any order; a window spans the
  steps since the previous point (the first since step 0). The first window holds the tracing of
  the step, so the rate is over the others (None when there is only one); the seconds, tracing
  included, are the training time (evaluations are not in any window)."""
  points = sorted(points)
  windows, previous = [], 0
  for step, rate in points:
    if step > previous and rate > 0:
      windows.append((step - previous, (step - previous) / rate))
    previous = max(previous, step)
  seconds = sum(s for _, s in windows)
  steady = windows[1:]
  if not steady:
    return None, seconds
  return sum(n for n, _ in steady) / sum(s for _, s in steady), seconds
