"""TensorFlow's CPU thread pools: the flags' values, or a choice from the machine when unset.

    choice = threads.configure_threads(train_cfg.intra_op_threads, train_cfg.inter_op_threads)
    logging.info("Threads: %s", choice.describe())     # once, at the start of a run
    config["threads"] = choice.record()                  # WORKDIR/config.json

`--intra_op_threads` / `--inter_op_threads` = `AUTO` (0, their default) asks for
`automatic_threads(machine_cores())`; any other value is used as given. The rule
(docs/design.md §25): two ops side by side (inter-op 2), each op split over half of the cores
(intra-op cores // 2), so that intra-op x inter-op never exceeds the cores:

    cores       1       2       4       8       N
    intra/inter 1/1     1/2     2/2     4/2     N//2 / 2

The small convolutions of these models gain more from running side by side than from being
split over more threads (the training step's graph has independent ops: l1 and m1, the two
gradient convolutions of each kernel). Pools are fixed once TensorFlow runs its first op: an
explicit value that can no longer be applied is refused; an automatic one yields to the pools in
effect (TensorFlow's own choice when nothing set them), and the record says so.
"""
import dataclasses
import os

import tensorflow as tf

from vapnev_tf.errors import ConfigError

AUTO = 0  # the flags' value that asks for `automatic_threads`
# Where a pool size came from: the flag, the machine's cores, or TensorFlow (already started).
FLAG, MACHINE, TENSORFLOW = "flag", "machine", "tensorflow"


def machine_cores() -> int:
  """CPUs this process may run on: its affinity mask (taskset, cgroup cpusets), else the
  machine's count; at least 1."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except (AttributeError, OSError):  # no affinity API on this platform
    return max(1, os.cpu_count() or 1)


def automatic_threads(cores: int) -> tuple[int, int]:
  """(intra_op, inter_op) for `cores` >= 1 CPUs: inter-op min(2, cores), intra-op
  max(1, cores // inter-op) (the table of the module docstring)."""
  cores = int(cores)
  if cores < 1:
    raise ValueError(f"cores must be >= 1, got {cores}.")
  inter = min(2, cores)
  return max(1, cores // inter), inter


@dataclasses.dataclass(frozen=True)
class ThreadChoice:
  """The pools in effect and where each came from (`FLAG`, `MACHINE` or `TENSORFLOW`).

  A size of 0 is TensorFlow's own default (its intra- and inter-op pools then use every core).
  """
  intra_op: int
  inter_op: int
  intra_op_source: str
  inter_op_source: str
  cores: int

  @property
  def automatic(self) -> bool:
    """Whether no flag set either pool."""
    return FLAG not in (self.intra_op_source, self.inter_op_source)

  def record(self) -> dict:
    """The JSON form of config.json's "threads" entry."""
    return {**dataclasses.asdict(self), "automatic": self.automatic}

  def describe(self) -> str:
    """One line, e.g. "intra-op 1, inter-op 2 (automatic for 2 cores)"."""
    parts = []
    for label, size, source in (("intra-op", self.intra_op, self.intra_op_source),
                                ("inter-op", self.inter_op, self.inter_op_source)):
      shown = "TensorFlow's default" if size == 0 else str(size)
      parts.append(f"{label} {shown}")
    sources = {self.intra_op_source, self.inter_op_source}
    why = []
    if MACHINE in sources:
      why.append(f"automatic for {self.cores} cores")
    if FLAG in sources:
      why.append("from the flags")
    if TENSORFLOW in sources:
      why.append("TensorFlow had already started, so the automatic choice "
                 f"{automatic_threads(self.cores)} was not applied")
    return f"{', '.join(parts)} ({'; '.join(why)})"


def configure_threads(intra_op: int, inter_op: int, cores: int | None = None) -> ThreadChoice:
  """Sets TensorFlow's thread pools before its first op; `AUTO` (0) picks from the machine.

  Args:
    intra_op, inter_op: the flags' values (>= 0; 0 = `AUTO`).
    cores: CPUs to choose for (default `machine_cores()`).
  Returns:
    The pools in effect afterwards, with their sources.
  Raises:
    ConfigError: an explicit size asked for after TensorFlow has started with another one (its
      pools are fixed then); sizes equal to the ones in effect are always accepted.
  """
  cores = machine_cores() if cores is None else int(cores)
  auto_intra, auto_inter = automatic_threads(cores)
  threading = tf.config.threading
  chosen = []
  for name, value, automatic, get, set_ in (
      ("intra_op_threads", intra_op, auto_intra, threading.get_intra_op_parallelism_threads,
       threading.set_intra_op_parallelism_threads),
      ("inter_op_threads", inter_op, auto_inter, threading.get_inter_op_parallelism_threads,
       threading.set_inter_op_parallelism_threads)):
    value = int(value)
    wanted, source = (automatic, MACHINE) if value == AUTO else (value, FLAG)
    in_effect = get()
    if wanted == in_effect:
      chosen.append((wanted, source))
      continue
    try:
      set_(wanted)
    except RuntimeError as e:
      if source == FLAG:
        raise ConfigError(f"--{name}={value}: TensorFlow has already started with {in_effect} "
                          "(0: its own choice); set it before any TensorFlow op runs, e.g. on "
                          f"the command line of vapnev_tf.train ({e}).") from None
      chosen.append((in_effect, TENSORFLOW))
      continue
    chosen.append((wanted, source))
  (intra_size, intra_source), (inter_size, inter_source) = chosen
  return ThreadChoice(intra_size, inter_size, intra_source, inter_source, cores)
