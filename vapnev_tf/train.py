"""Trains VAPNEV: flags -> frozen configs -> `vapnev_tf.pipeline.train` (`training.train` and
the run's export, figures and latent figures).

    python -m vapnev_tf.train --flagfile=configs/quick.flags --workdir=runs/quick

Run from the repository root (flagfiles include `configs/base.flags` by a path relative to it).
An existing --workdir is resumed from its newest readable checkpoint; a flag set that contradicts
its config.json is refused unless --force_config. SIGTERM/SIGINT checkpoint and stop (exit code
128 + signal number); run the same command again to continue.
"""
import contextlib
import os
import time

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from vapnev_tf import config_flags
from vapnev_tf import console
from vapnev_tf import data as data_lib
from vapnev_tf import interrupts
from vapnev_tf import judge
from vapnev_tf import latent_metrics
from vapnev_tf import locking
from vapnev_tf import pipeline
from vapnev_tf import training
from vapnev_tf.config import ModelConfig
from vapnev_tf.training import cluster
from vapnev_tf.config import TrainConfig

# Flag order of --help: run and optimisation first, then data, then model.
CONFIG_CLASSES = (TrainConfig, data_lib.DataConfig, ModelConfig)
# Process options that are decisions of one invocation, not part of the run (`run_flags_text`).
NOT_RECORDED = ("force_config",)


def define_flags(fv: flags.FlagValues = flags.FLAGS, *, require_workdir: bool = True) -> None:
  """Defines the training flags on `fv` (the global FLAGS by default): the process options below
  and one flag per config field (`vapnev_tf.config_flags`, from the dataclasses' metadata)."""
  d = dict(flag_values=fv)
  flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).", **d)
  flags.DEFINE_bool("force_config", False, "Resume even if --workdir's config.json holds "
                    "different run-defining values (config.json is then overwritten).", **d)
  flags.DEFINE_integer("num_cpu_devices", 0, "Testing aid: split the CPU into this many logical "
                       "devices before TensorFlow initialises (0 = leave as is).", lower_bound=0,
                       **d)
  flags.DEFINE_bool("deterministic_ops", False,
                    "tf.config.experimental.enable_op_determinism() (bitwise-reproducible runs).",
                    **d)
  flags.DEFINE_integer("peer_timeout_seconds", 600, "strategy=multi_worker: how long to wait "
                       "for the other workers of the cluster to accept connections before "
                       "giving up with an error naming the missing ones.", lower_bound=1, **d)
  config_flags.define_config_flags(fv, *CONFIG_CLASSES)
  if require_workdir:
    flags.mark_flag_as_required("workdir", flag_values=fv)
  flags.register_validator("workdir", lambda v: v is None or bool(v.strip()),
                           message="--workdir must be a non-empty path.", flag_values=fv)


def parse_flags(argv: list[str], *, require_workdir: bool = True) -> flags.FlagValues:
  """A fresh FlagValues with the training flags parsed from `argv` (argv[0] = program name)."""
  fv = flags.FlagValues()
  define_flags(fv, require_workdir=require_workdir)
  fv(argv)
  return fv


def configs_from_flags(fv: flags.FlagValues):
  """(ModelConfig, DataConfig, TrainConfig) from parsed flags; ValueError if inconsistent.

  Derived fields: DataConfig.seed is --seed; ModelConfig.image_shape is the dataset's.
  """
  data_cfg = data_lib.DataConfig(**config_flags.kwargs_from_flags(fv, data_lib.DataConfig))
  model_cfg = ModelConfig(image_shape=data_lib.image_shape(data_cfg.dataset, data_cfg),
                          **config_flags.kwargs_from_flags(fv, ModelConfig))
  train_cfg = TrainConfig(**config_flags.kwargs_from_flags(fv, TrainConfig))
  if train_cfg.kl_free_nats > 0 and not model_cfg.has_vae:
    raise ValueError(f"--kl_free_nats={train_cfg.kl_free_nats} needs a latent: "
                     f"--likelihood={model_cfg.likelihood} has no KL term (use 0).")
  if train_cfg.kl_free_nats_mode == "per_dim" and (
      not model_cfg.has_vae or model_cfg.posterior != "gaussian" or model_cfg.prior != "standard"):
    raise ValueError("--kl_free_nats_mode=per_dim needs a factorised analytic KL: "
                     f"--posterior=gaussian and --prior=standard, got --likelihood="
                     f"{model_cfg.likelihood} --posterior={model_cfg.posterior} "
                     f"--prior={model_cfg.prior}.")
  if train_cfg.aggressive_steps > 0 and not model_cfg.has_vae:
    raise ValueError(f"--aggressive_steps={train_cfg.aggressive_steps} needs an encoder: "
                     f"--likelihood={model_cfg.likelihood} has none (use 0).")
  return model_cfg, data_cfg, train_cfg


def configs_from_flagfile(flagfile: str, *extra_flags: str, root: str | None = None):
  """(ModelConfig, DataConfig, TrainConfig) of `--flagfile=flagfile` plus `extra_flags`, resolved
  exactly as `python -m vapnev_tf.train` run in `root` (default: the current directory; the
  repository's flagfiles include configs/base.flags relative to it) resolves them."""
  with contextlib.chdir(root or os.getcwd()):
    fv = parse_flags(["vapnev_tf.train", f"--flagfile={flagfile}", *extra_flags],
                     require_workdir=False)
    return configs_from_flags(fv)


def run_flags_text(fv: flags.FlagValues) -> str:
  """WORKDIR/flags.txt: the run's own flags, i.e. the training flags given on the command line or
  in a flagfile (absl's `present`; a flagfile's lines count, --flagfile itself is expanded), one
  `--name=value` per line, sorted, with the value that won. Flags left at their defaults are not
  listed (config.json holds the complete resolved configuration), so
  `python -m vapnev_tf.train --flagfile=WORKDIR/flags.txt` repeats the run, and the file shows at
  a glance what was chosen for it. `--force_config` is never recorded: it overrides the config
  guard for one resume, and a flagfile repeating it would silently override it ever after."""
  names = set(_training_flag_names()) - set(NOT_RECORDED)
  lines = [fv[name].serialize() for name in sorted(names) if name in fv and fv[name].present]
  return "".join(f"{line}\n" for line in lines)


def _training_flag_names() -> list[str]:
  """The names of the flags `define_flags` defines (not absl's own)."""
  fv = flags.FlagValues()
  define_flags(fv)
  return list(fv)


def _configure_devices(num_cpu_devices: int) -> None:
  """Splits the CPU into logical devices; must run before TensorFlow initialises."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_cpu_devices)])


def main(argv, fv: flags.FlagValues = flags.FLAGS):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  started = time.time()
  if fv.num_cpu_devices:
    _configure_devices(fv.num_cpu_devices)
  try:
    model_cfg, data_cfg, train_cfg = configs_from_flags(fv)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  # Importing TensorFlow starts no runtime: it starts with the first op, after the device set-up
  # above; MultiWorkerMirroredStrategy also has to be created before any op runs.
  if fv.deterministic_ops:
    tf.config.experimental.enable_op_determinism()
  if train_cfg.latent_eval:  # checked now rather than after the training
    try:
      judge.check_cache_dir(None)
    except ValueError as e:
      raise app.UsageError(f"--latent_eval: {e}") from e
  try:
    # Before the strategy starts TensorFlow; training.train logs and records the choice.
    training.configure_threads(train_cfg.intra_op_threads, train_cfg.inter_op_threads)
    strategy = training.make_strategy(train_cfg.strategy, fv.peer_timeout_seconds)
    result = pipeline.train(model_cfg, data_cfg, train_cfg, fv.workdir, strategy=strategy,
                            force_config=fv.force_config, flags_text=run_flags_text(fv))
  except (training.ConfigError, training.CheckpointError, training.NonFiniteTrainingError,
          locking.WorkdirLockedError) as e:
    logging.error("%s: %s", type(e).__name__, e)
    return 1
  except (cluster.PeerWaitInterrupted, interrupts.Interrupted) as e:
    logging.error("%s", e)
    return 128 + e.signum
  if result["interrupted"] is not None:
    print(f"interrupted at step {result['step']} (checkpoint saved; rerun to resume)")
    return 128 + result["interrupted"]
  print(training.summary_line(result["eval"]), flush=True)
  if result.get("latent") is not None:
    print(latent_metrics.summary_line(result["latent"]), flush=True)
  logging.info("Done: step %d in %.0f s.", result["step"], time.time() - started)
  return 0


def run():
  """Console script `vapnev-train`."""
  define_flags()
  console.run_cli(main, "vapnev_tf.train")


if __name__ == "__main__":
  run()
