r"""The equal-time latent trade-off table: every row trained for the same minutes
(docs/design.md §26).

    nice -n 10 python -m benchmarks.tradeoff                      # all rows, 20 minutes each
    python -m benchmarks.tradeoff --rows=recipe,old_quick --budget_minutes=5
    python -m benchmarks.tradeoff --extra_row="cyclical=--kl_schedule=cyclical --kl_cycles=4"
    python -m benchmarks.tradeoff --smoke --rows=recipe,realnvp_same_flow --out_dir=/tmp/t

Each row (benchmarks/tradeoff_rows.py: the latent recipe `recipe` = --base_flagfile itself,
`recipe_ld64`, the `old_quick` model (configs/quick.flags before the recipe), the `pixel_logistic` VAE, `fixed_z`,
`realnvp_same_flow` and the parameter-matched `realnvp_matched`; plus any --extra_row) is trained
by the library's own CLI, `python -m vapnev_tf.train`, in a subprocess, so it gets the real
recipe: warm-up, cosine decay, KL annealing, free bits, the final evaluation on all test images
(IW k of the base flagfile) and the latent figures (`--latent_eval`).

Equal time: a cosine schedule needs its length in steps, so each row is first calibrated: a
`--calibration_steps` training in a scratch directory (deleted afterwards) whose steps/s after its
first (tracing) window gives train_steps = round(rate * budget_minutes * 60); the warm-up and the
KL annealing are scaled to the fractions of the base flagfile's steps they have there.

Layout of OUT_DIR (default benchmarks/results/tradeoff): OUT_DIR/ROW/row.json (the row's
configuration and calibration), OUT_DIR/ROW/run (the training workdir), OUT_DIR/ROW/train.log
(its console), and OUT_DIR/tradeoff.json and tradeoff.md (rewritten after every row). The rows
are run by benchmarks/tradeoff_runs.py; this module holds only the command line.

Resumable: the same command again skips rows whose run finished (eval.json at the final step and,
with a latent, latent.json) and resumes unfinished ones with their recorded calibration. A row
directory that holds another configuration (other flags, flagfile contents or budget) is refused
before anything runs, naming the row and the directory; nothing is deleted or overwritten. A row
that fails (non-zero exit, a non-finite bound) is reported as failed with its exit code; the other
rows still run and the tool exits 1 at the end. A row whose training a signal stopped (Ctrl-C,
SIGTERM; also a SIGINT this process ignores, as a background job does, that reached the training)
stops the table with the training's exit code (130 or 143), and the same command resumes it.
"""
import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from benchmarks import common
from benchmarks import tradeoff_report
from benchmarks import tradeoff_rows
from benchmarks import tradeoff_runs

FLAGS = flags.FLAGS
flags.DEFINE_float("budget_minutes", tradeoff_runs.DEFAULT_BUDGET_MINUTES,
                   "Training minutes per row (the step count comes from the row's calibration).")
flags.DEFINE_integer("calibration_steps", tradeoff_runs.DEFAULT_CALIBRATION_STEPS,
                     "Steps of each row's calibration run (steps/s is measured after its first "
                     "third, which holds the tracing).")
flags.DEFINE_string("rows", "all", "'all' (every built-in row, then every --extra_row) or a comma "
                    f"list of names from {list(tradeoff_rows.BUILTIN_ROWS)} and --extra_row's.")
flags.DEFINE_multi_string("extra_row", [], "A row of your own, NAME=FLAGS: training flags added to "
                          "--base_flagfile, one shell-quoted string (repeatable).")
flags.DEFINE_string("base_flagfile", tradeoff_rows.DEFAULT_BASE_FLAGFILE,
                    "The flagfile every row starts from (relative to the repository root).")
flags.DEFINE_string("out_dir", tradeoff_runs.DEFAULT_OUT_DIR, "Where the rows' directories, "
                    "tradeoff.json and tradeoff.md go.")
flags.DEFINE_bool("smoke", False, "Tests: configs/smoke.flags as the base (unless "
                  "--base_flagfile), 256 training and 48 test images, a 6-second budget and "
                  "6 calibration steps (unless given).")


def _given(name: str):
  """The flag's value when given on the command line, else None (its default, or --smoke's)."""
  return FLAGS[name].value if FLAGS[name].present else None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    opts = tradeoff_runs.make_options(
        smoke=FLAGS.smoke, budget_minutes=_given("budget_minutes"),
        calibration_steps=_given("calibration_steps"), base_flagfile=_given("base_flagfile"),
        out_dir=FLAGS.out_dir, rows=FLAGS.rows, extra_rows=FLAGS.extra_row)
    plans, stored = tradeoff_runs.prepare(opts)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    payload = tradeoff_runs.run_table(opts, plans, stored, common.header())
  except tradeoff_runs.RowInterrupted as e:
    print(f"Stopped: {e}")
    return e.exit_code if e.exit_code > 128 else 128 + signal.SIGINT
  print("\n".join(tradeoff_report.markdown(payload)))
  return 1 if any(r["status"] != "ok" for r in payload["rows"]) else 0


if __name__ == "__main__":
  app.run(main)
