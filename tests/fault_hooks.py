"""Test-only fault injection for training runs: NaN losses and a result file, outside the product.

In-process:

    with fault_hooks.nan_loss(first=2, count=1):   # step 2 (as logged) has a NaN loss
      result = run_fixtures.run_smoke(workdir)

In a child process (the training CLI with the same hook and its train() result written to a file):

    python tests/fault_hooks.py --nan_at=3 --nan_count=1 --result_file=R.json -- TRAIN_FLAGS...

`nan_loss` wraps the two functions the compiled train step calls while it builds the loss:
`schedules.kl_weight(step, ...)` (which sees the step counter) and `objective.replica_loss`
(whose result it multiplies by NaN when `first <= step + 1 < first + count`, `step + 1` being the
step's number as logged). Every gradient of that loss is then NaN, as a numerical blow-up makes
it. The wrappers are traced into the step; the step must be built inside the `with` block.
"""
import contextlib
import sys

import tensorflow as tf

from vapnev_tf.training import objective
from vapnev_tf.training import schedules


@contextlib.contextmanager
def nan_loss(first: int, count: int = 1):
  """Makes the training loss NaN at steps first .. first + count - 1 (1 = the first step)."""
  if first < 1 or count < 1:
    raise ValueError(f"nan_loss: first must be >= 1 and count >= 1, got first={first!r}, "
                     f"count={count!r}.")
  real_kl_weight, real_replica_loss = schedules.kl_weight, objective.replica_loss
  traced_step = []  # the step counter of the loss being built (same trace, just before)

  def kl_weight(step, *args, **kwargs):
    traced_step.append(step)
    return real_kl_weight(step, *args, **kwargs)

  def replica_loss(*args, **kwargs):
    loss = real_replica_loss(*args, **kwargs)
    number = tf.cast(traced_step[-1], tf.int64) + 1
    bad = (number >= first) & (number < first + count)
    return loss * tf.where(bad, tf.constant(float("nan"), loss.dtype), tf.ones([], loss.dtype))

  schedules.kl_weight, objective.replica_loss = kl_weight, replica_loss
  try:
    yield
  finally:
    schedules.kl_weight, objective.replica_loss = real_kl_weight, real_replica_loss


def write_result(filename: str, result: dict) -> None:
  """train()'s result as strict JSON (non-finite numbers as null)."""
  from vapnev_tf import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  workdir_lib.write_json_atomic(filename, result)


def main(argv: list[str]) -> int:
  """`--nan_at=N --nan_count=M --result_file=F -- TRAIN_FLAGS`: the training CLI with the hooks."""
  if "--" not in argv:
    raise ValueError(f"fault_hooks: expected hook options, '--', then training flags; got {argv!r}.")
  split = argv.index("--")
  options = dict(a[2:].split("=", 1) for a in argv[:split])
  unknown = set(options) - {"nan_at", "nan_count", "result_file"}
  if unknown:
    raise ValueError(f"fault_hooks: unknown options {sorted(unknown)}; expected nan_at, "
                     "nan_count, result_file.")
  from vapnev_tf import train as cli  # pylint: disable=g-import-not-at-top
  from vapnev_tf import training  # pylint: disable=g-import-not-at-top

  real_train = training.train

  def train_and_record(*args, **kwargs):
    result = real_train(*args, **kwargs)
    if "result_file" in options:
      write_result(options["result_file"], result)
    return result

  training.train = train_and_record
  hook = (nan_loss(int(options["nan_at"]), int(options.get("nan_count", 1)))
          if "nan_at" in options else contextlib.nullcontext())
  sys.argv = ["vapnev_tf.train", *argv[split + 1:]]
  with hook:
    cli.run()  # the console script itself; exits through SystemExit with its code
  return 0

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
