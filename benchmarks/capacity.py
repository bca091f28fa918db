"""The attribution rows of a VAPNEV recipe: its flags for "z fixed" and for "realnvp of the same
size" (docs/design.md §24).

Given the training flags of a VAPNEV run, prints three flag sets and their trainable parameter
counts (each counted on the model the training CLI builds from those flags):

  vapnev            the recipe itself (encoder, decoder, z-conditioning, couplings);
  vapnev_fixed_z    the same decoder and conditional flow at one fixed z, no encoder: what the
                    recipe's architecture gives without a latent (its z-paths are learned biases);
  realnvp matched   realnvp with the recipe's layout and options, --flow_filters (and, as
                    alternatives, --flow_res_blocks) chosen so its count is the closest to the
                    recipe's: the same capacity spent on the flow alone.

Options that need a latent (free bits, the IAF posterior, a learned prior, a committed rate,
aggressive steps) are reset to their defaults in the last two sets, as the training CLI refuses
them there. A count is exactly quadratic in --flow_filters at fixed everything else (every weight
is a convolution or dense layer whose widths are the filters or fixed), so three counts fit it and
its roots give the matching width; the printed count is that of the built model.

    python -m benchmarks.capacity --vapnev="--flagfile=configs/quick.flags \\
        --flow_layout='checkerboard*6' --flow_receptive_field=local --kl_free_nats=16 \\
        --kl_free_nats_mode=per_dim --encoder_filters=32"
"""
import contextlib
import dataclasses
import fractions
import math
import shlex
import time

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("vapnev", "--flagfile=configs/quick.flags",
                    "The VAPNEV run's training flags, one shell-quoted string (relative flagfiles "
                    "are resolved from the repository root).")
flags.DEFINE_integer("extra_res_blocks", 2,
                     "Also match with up to this many more --flow_res_blocks than the recipe's.")
flags.DEFINE_integer("time_steps", 0,
                     "If > 0, also time each row's training step (the library's step on one "
                     "in-memory batch of the run's --batch_size, after one untimed step) in "
                     "windows of this many steps, the rows in turn, --time_rounds times, and "
                     "print the median seconds per step and ratio to vapnev's: what a row costs "
                     "at equal steps.")
flags.DEFINE_integer("time_rounds", 3, "Rounds of --time_steps windows.")

# Fields a model without a latent refuses (ModelConfig and the training CLI), reset to defaults.
LATENT_ONLY = ("posterior", "prior", "committed_rate", "kl_free_nats", "kl_free_nats_mode",
               "aggressive_steps")


def _resolve(args: list[str]):
  """(ModelConfig, DataConfig, TrainConfig) of training flags `args`, as the training CLI resolves
  them from the repository root."""
  from vapnev_tf import train as train_cli  # pylint: disable=g-import-not-at-top
  with contextlib.chdir(common.REPO_ROOT):
    fv = train_cli.parse_flags(["vapnev_tf.train", *args], require_workdir=False)
    return train_cli.configs_from_flags(fv)


def count(model_cfg) -> int:
  """Trainable parameters of the model `model_cfg` builds."""
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  return common.count_params(VAPNEV(model_cfg).trainable_variables)


def parts(model_cfg) -> dict:
  """{part: trainable parameters} of `model_cfg`'s model (`VAPNEV.parameter_groups`)."""
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  groups = VAPNEV(model_cfg).parameter_groups()
  return {name: common.count_params(variables) for name, variables in groups.items()}


def without_latent(args: list[str], likelihood: str) -> list[str]:
  """`args` turned into a run of `likelihood` (one without a latent): its own --likelihood and
  latent-only flags dropped, then the likelihood flag and a reset of each latent-only field a
  flagfile still sets (later flags win)."""
  from vapnev_tf.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.config import TrainConfig  # pylint: disable=g-import-not-at-top
  dropped = ("likelihood",) + LATENT_ONLY
  args = [a for a in args if not a.startswith(tuple(f"--{name}=" for name in dropped))]
  model_cfg, _, train_cfg = _resolve(args)
  extra = [f"--likelihood={likelihood}"]
  for cfg, cls in ((model_cfg, ModelConfig), (train_cfg, TrainConfig)):
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name in LATENT_ONLY:
      if name in defaults and getattr(cfg, name) != defaults[name]:
        extra.append(f"--{name}={defaults[name]}")
  return list(args) + extra


def _quadratic(points):
  """(a, b, c) of the exact quadratic through three (x, y) integer points."""
  (x0, y0), (x1, y1), (x2, y2) = [(fractions.Fraction(x), fractions.Fraction(y)) for x, y in points]
  a = ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)
  b = (y1 - y0) / (x1 - x0) - a * (x0 + x1)
  return a, b, y0 - a * x0 * x0 - b * x0


def matching_filters(model_cfg, target: int) -> tuple[int, int]:
  """(flow_filters, count) of `model_cfg` with the filters whose count is closest to `target`."""
  at = lambda f: count(dataclasses.replace(model_cfg, flow_filters=f))
  a, b, c = _quadratic([(f, at(f)) for f in (1, 2, 3)])
  root = (-b + math.sqrt(b * b - 4 * a * (c - target))) / (2 * a) if a else (target - c) / b
  best = None
  for f in sorted({max(1, math.floor(root)), max(1, math.ceil(root))}):
    n = a * f * f + b * f + c
    if best is None or abs(n - target) < abs(best[1] - target):
      best = (f, n)
  return best[0], at(best[0])


def attribution(args: list[str], extra_res_blocks: int = 2) -> dict:
  """The three rows for VAPNEV training flags `args` (see the module docstring): {"vapnev",
  "vapnev_fixed_z", "realnvp_same_flow", "realnvp_matched", "alternatives"}, each with "flags" (a
  list) and "params"; "vapnev" also has "parts"."""
  vapnev_cfg, _, _ = _resolve(args)
  if not vapnev_cfg.has_vae or not vapnev_cfg.uses_flow:
    raise ValueError(f"--vapnev: the flags must describe a VAE with a flow, got "
                     f"--likelihood={vapnev_cfg.likelihood}.")
  vapnev_parts = parts(vapnev_cfg)
  target = sum(vapnev_parts.values())  # the groups partition the trainable variables
  fixed_args = without_latent(args, "vapnev_fixed_z")
  realnvp_args = without_latent(args, "realnvp")
  realnvp_cfg = _resolve(realnvp_args)[0]
  rows = {"vapnev": {"flags": list(args), "params": target, "parts": vapnev_parts},
          "vapnev_fixed_z": {"flags": fixed_args, "params": count(_resolve(fixed_args)[0])},
          "realnvp_same_flow": {"flags": realnvp_args, "params": count(realnvp_cfg)}}
  options = []
  for extra in range(extra_res_blocks + 1):
    blocks = realnvp_cfg.flow_res_blocks + extra
    filters, n = matching_filters(dataclasses.replace(realnvp_cfg, flow_res_blocks=blocks), target)
    options.append({"flags": realnvp_args + [f"--flow_filters={filters}",
                                             f"--flow_res_blocks={blocks}"], "params": n})
  rows["realnvp_matched"] = options[0]  # the recipe's depth: only the width changes
  rows["alternatives"] = options[1:]
  return rows


def format_rows(rows: dict) -> list[str]:
  target = rows["vapnev"]["params"]
  line = lambda name, row: (f"{name:<18} {row['params']:>10,} params "
                            f"({row['params'] / target - 1:+.1%})  {shlex.join(row['flags'])}")
  parts = ", ".join(f"{k} {v:,}" for k, v in rows["vapnev"]["parts"].items())
  out = [f"{'vapnev':<18} {target:>10,} params ({parts})",
         line("vapnev_fixed_z", rows["vapnev_fixed_z"]),
         line("realnvp same flow", rows["realnvp_same_flow"]),
         line("realnvp matched", rows["realnvp_matched"])]
  out += [line("  alternative", row) for row in rows["alternatives"]]
  return out


def _train_step(args: list[str]):
  """A callable taking one training step of the model of training flags `args` (the library's
  step on one in-memory batch of uniform pixels of the run's batch size), already traced."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vapnev_tf.model import VAPNEV  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import make_strategy  # pylint: disable=g-import-not-at-top
  model_cfg, data_cfg, _ = _resolve(args)
  strategy = make_strategy("one_device")
  with strategy.scope():
    model = VAPNEV(model_cfg)
  x = tf.random.stateless_uniform((data_cfg.batch_size,) + model_cfg.image_shape, (0, 1), 0.0,
                                  255.99)
  run = common.library_train_step(model, x, strategy)[0]
  run()
  return run


def step_times(named_flags: dict, steps: int, rounds: int) -> dict:
  """{name: (median seconds per step, median ratio to the first name's)} over `rounds` rounds of
  one `steps`-step window per model, in turn, so a loaded machine slows every row alike."""
  import statistics  # pylint: disable=g-import-not-at-top
  runs = {name: _train_step(args) for name, args in named_flags.items()}
  seconds = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      t = time.perf_counter()
      for _ in range(steps):
        run()
      seconds[name].append((time.perf_counter() - t) / steps)
  first = next(iter(seconds.values()))
  return {name: (statistics.median(v), statistics.median(a / b for a, b in zip(v, first)))
          for name, v in seconds.items()}


def main(argv):
  del argv
  rows = attribution(shlex.split(FLAGS.vapnev), FLAGS.extra_res_blocks)
  for text in format_rows(rows):
    print(text)
  if FLAGS.time_steps > 0:
    named = {name: rows[name]["flags"] for name in ("vapnev", "vapnev_fixed_z",
                                                    "realnvp_same_flow", "realnvp_matched")}
    named.update({f"alternative {i + 1}": row["flags"]
                  for i, row in enumerate(rows["alternatives"])})
    for name, (seconds, ratio) in step_times(named, FLAGS.time_steps, FLAGS.time_rounds).items():
      print(f"{name:<18} {seconds:.3f} s/step ({ratio:.2f}x vapnev's)")


if __name__ == "__main__":
  app.run(main)
