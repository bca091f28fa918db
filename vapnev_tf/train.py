"""Trains VAPNEV: flags -> frozen configs -> `vapnev_tf.training.train`.

    python -m vapnev_tf.train --flagfile=configs/quick.flags --workdir=runs/quick

Run from the repository root (flagfiles include `configs/base.flags` by a path relative to it).
An existing --workdir is resumed from its newest readable checkpoint; a flag set that contradicts
its config.json is refused unless --force_config. SIGTERM/SIGINT checkpoint and stop (exit code
128 + signal number); run the same command again to continue.
"""
import dataclasses
import time

from absl import app
from absl import flags
from absl import logging

from vapnev_tf import data as data_lib
from vapnev_tf.config import DTYPES
from vapnev_tf.config import LIKELIHOODS
from vapnev_tf.config import ModelConfig
from vapnev_tf.training.config import KL_SCHEDULES
from vapnev_tf.training.config import LR_DECAYS
from vapnev_tf.training.config import STRATEGIES
from vapnev_tf.training.config import TrainConfig

_FLIP = {"default": None, "on": True, "off": False}
_M = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
_D = {f.name: f.default for f in dataclasses.fields(data_lib.DataConfig)}
_T = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _valid_dataset(value: str) -> bool:
  return value in data_lib.DATASET_NAMES or (
      value.partition(":")[0] in ("npz", "folder") and bool(value.partition(":")[2]))


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the training flags on `fv` (the global FLAGS by default)."""
  d = dict(flag_values=fv)
  # Run.
  flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).", **d)
  flags.DEFINE_bool("force_config", False, "Resume even if --workdir's config.json holds a "
                    "different model/data config (config.json is then overwritten).", **d)
  flags.DEFINE_integer("seed", _T["seed"], "Seeds weights init, data order, dequantisation and "
                       "z sampling.", lower_bound=0, **d)
  flags.DEFINE_integer("train_steps", _T["train_steps"], "Total training steps (global batches).",
                       lower_bound=1, **d)
  flags.DEFINE_enum("strategy", _T["strategy"], STRATEGIES,
                    "tf.distribute strategy: mirrored (all local devices), multi_worker "
                    "(MultiWorkerMirroredStrategy from TF_CONFIG), one_device.", **d)
  flags.DEFINE_integer("num_cpu_devices", 0, "Testing aid: split the CPU into this many logical "
                       "devices before TensorFlow initialises (0 = leave as is).", lower_bound=0,
                       **d)
  flags.DEFINE_bool("jit_compile", _T["jit_compile"], "XLA-compile the loss and gradients.", **d)
  flags.DEFINE_bool("deterministic_ops", False,
                    "tf.config.experimental.enable_op_determinism() (bitwise-reproducible runs).",
                    **d)
  # Optimisation.
  flags.DEFINE_float("learning_rate", _T["learning_rate"], "Adam learning rate (peak).",
                     lower_bound=0.0, **d)
  flags.DEFINE_float("adam_beta1", _T["adam_beta1"], "Adam beta_1.", lower_bound=0.0,
                     upper_bound=1.0, **d)
  flags.DEFINE_float("adam_beta2", _T["adam_beta2"], "Adam beta_2.", lower_bound=0.0,
                     upper_bound=1.0, **d)
  flags.DEFINE_float("adam_epsilon", _T["adam_epsilon"], "Adam epsilon.", lower_bound=0.0, **d)
  flags.DEFINE_integer("warmup_steps", _T["warmup_steps"], "Linear learning-rate warm-up steps.",
                       lower_bound=0, **d)
  flags.DEFINE_enum("lr_decay", _T["lr_decay"], LR_DECAYS, "Learning-rate decay after warm-up.",
                    **d)
  flags.DEFINE_float("min_lr_fraction", _T["min_lr_fraction"], "Cosine decay ends at this "
                     "fraction of the learning rate.", lower_bound=0.0, upper_bound=1.0, **d)
  flags.DEFINE_float("clip_grad_norm", _T["clip_grad_norm"], "Clip the gradient by this global "
                     "norm; 0 = off.", lower_bound=0.0, **d)
  flags.DEFINE_integer("kl_anneal_steps", _T["kl_anneal_steps"], "KL weight rises from 0 to 1 "
                       "over these steps (Bowman et al.); 0 = always 1.", lower_bound=0, **d)
  flags.DEFINE_enum("kl_schedule", _T["kl_schedule"], KL_SCHEDULES, "Shape of the KL annealing.",
                    **d)
  # Loop cadence, evaluation, checkpoints.
  flags.DEFINE_integer("log_every", _T["log_every"], "Steps between log lines and training "
                       "summaries.", lower_bound=1, **d)
  flags.DEFINE_integer("eval_every", _T["eval_every"], "Steps between test-set ELBO evaluations "
                       "(0 = only at the end).", lower_bound=0, **d)
  flags.DEFINE_integer("eval_num_samples", _T["eval_num_samples"], "k of the importance-weighted "
                       "bound computed at the end (1 = ELBO only).", lower_bound=1, **d)
  flags.DEFINE_integer("eval_chunk_size", _T["eval_chunk_size"], "Importance samples evaluated "
                       "at once.", lower_bound=1, **d)
  flags.DEFINE_integer("eval_seed", _T["eval_seed"], "Seed of the test-set noise and evaluation "
                       "z draws.", lower_bound=0, **d)
  flags.DEFINE_integer("checkpoint_every", _T["checkpoint_every"], "Steps between checkpoints.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("max_to_keep", _T["max_to_keep"], "Checkpoints kept.", lower_bound=1, **d)
  flags.DEFINE_integer("max_consecutive_bad_steps", _T["max_consecutive_bad_steps"],
                       "Abort after this many consecutive non-finite steps.", lower_bound=1, **d)
  flags.DEFINE_float("sample_temperature", _T["sample_temperature"], "Temperature of sample "
                     "grids.", lower_bound=0.0, **d)
  flags.DEFINE_integer("num_image_samples", _T["num_image_samples"], "Images per grid.",
                       lower_bound=1, **d)
  flags.DEFINE_bool("export_at_end", _T["export_at_end"], "Write WORKDIR/export and "
                    "WORKDIR/figures at the end (if vapnev_tf.export / figures exist).", **d)
  flags.DEFINE_integer("debug_inject_nan_at_step", -1, "FOR TESTS ONLY: make the loss NaN at step "
                       "N as logged (1 = the first step; -1 = never).", lower_bound=-1, **d)
  flags.DEFINE_integer("debug_inject_nan_num_steps", 1, "FOR TESTS ONLY: number of consecutive "
                       "NaN steps from --debug_inject_nan_at_step.", lower_bound=1, **d)
  flags.DEFINE_string("debug_result_file", None, "FOR TESTS: write the run's result (step, final "
                      "evaluation, sha256 of the weights, task) to this JSON file.", **d)
  # Data.
  flags.DEFINE_string("dataset", _D["dataset"], f"One of {data_lib.DATASET_NAMES}, 'npz:PATH' "
                      "or 'folder:PATH'.", **d)
  flags.DEFINE_integer("batch_size", _D["batch_size"], "GLOBAL training batch size.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("eval_batch_size", _D["eval_batch_size"], "GLOBAL evaluation batch size.",
                       lower_bound=1, **d)
  flags.DEFINE_string("data_dir", _D["data_dir"], "TFDS data_dir.", **d)
  flags.DEFINE_string("fashion_mnist_dir", _D["fashion_mnist_dir"], "Debian Fashion-MNIST files.",
                      **d)
  flags.DEFINE_enum("flip", "default", list(_FLIP), "Horizontal flips: dataset default "
                    "(on for cifar10/celeb_a), on or off.", **d)
  flags.DEFINE_integer("shuffle_buffer", _D["shuffle_buffer"], "Shuffle buffer (examples).",
                       lower_bound=1, **d)
  flags.DEFINE_integer("train_take", 0, "Use only the first N training images (0 = all).",
                       lower_bound=0, **d)
  flags.DEFINE_integer("eval_take", 0, "Evaluate only the first N test images (0 = all).",
                       lower_bound=0, **d)
  flags.DEFINE_float("validation_fraction", _D["validation_fraction"], "Held-out share when the "
                     "source has no test split.", lower_bound=0.0, upper_bound=1.0, **d)
  # Model (defaults: the paper, Sec. 4.2).
  flags.DEFINE_enum("likelihood", _M["likelihood"], LIKELIHOODS, "p(x|z) (or realnvp: no VAE).",
                    **d)
  flags.DEFINE_integer("latent_dim", _M["latent_dim"], "Size of z.", lower_bound=1, **d)
  flags.DEFINE_integer("encoder_filters", _M["encoder_filters"], "Filters of the first encoder "
                       "block (doubled per block).", lower_bound=1, **d)
  flags.DEFINE_integer("encoder_blocks", _M["encoder_blocks"], "Encoder/decoder blocks.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("encoder_layers_per_block", _M["encoder_layers_per_block"],
                       "Conv layers per block.", lower_bound=1, **d)
  flags.DEFINE_integer("flow_scales", _M["flow_scales"], "Scales of the multi-scale flow.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("flow_checkerboard", _M["flow_checkerboard"], "Checkerboard couplings per "
                       "scale.", lower_bound=0, **d)
  flags.DEFINE_integer("flow_channelwise", _M["flow_channelwise"], "Channel-wise couplings per "
                       "scale.", lower_bound=0, **d)
  flags.DEFINE_integer("flow_filters", _M["flow_filters"], "Coupling filters at the first scale.",
                       lower_bound=1, **d)
  flags.DEFINE_integer("flow_res_blocks", _M["flow_res_blocks"], "Residual blocks in l1/m1.",
                       lower_bound=0, **d)
  flags.DEFINE_float("log_scale_bound", _M["log_scale_bound"], "Bound of coupling log-scales.",
                     **d)
  flags.DEFINE_float("logit_alpha", _M["logit_alpha"], "alpha of the logit pre-processing.", **d)
  flags.DEFINE_float("min_scale", _M["min_scale"], "Lower bound of sigma_z and sigma_y.", **d)
  flags.DEFINE_enum("dtype", _M["dtype"], DTYPES, "Model dtype.", **d)

  flags.mark_flag_as_required("workdir", flag_values=fv)
  flags.register_validator("workdir", lambda v: v is None or bool(v.strip()),
                           message="--workdir must be a non-empty path.", flag_values=fv)
  flags.register_validator(
      "dataset", _valid_dataset, flag_values=fv,
      message=f"--dataset must be one of {data_lib.DATASET_NAMES}, 'npz:PATH' or 'folder:PATH'.")
  flags.register_validator("learning_rate", lambda v: v > 0, flag_values=fv,
                           message="--learning_rate must be > 0.")
  flags.register_validator("adam_epsilon", lambda v: v > 0, flag_values=fv,
                           message="--adam_epsilon must be > 0.")
  flags.register_validator("validation_fraction", lambda v: 0 < v < 1, flag_values=fv,
                           message="--validation_fraction must be in (0, 1).")


def parse_flags(argv: list[str]) -> flags.FlagValues:
  """A fresh FlagValues with the training flags parsed from `argv` (argv[0] = program name)."""
  fv = flags.FlagValues()
  define_flags(fv)
  fv(argv)
  return fv


def configs_from_flags(fv: flags.FlagValues):
  """(ModelConfig, DataConfig, TrainConfig) from parsed flags; ValueError if inconsistent."""
  data_cfg = data_lib.DataConfig(
      dataset=fv.dataset, batch_size=fv.batch_size, eval_batch_size=fv.eval_batch_size,
      data_dir=fv.data_dir, fashion_mnist_dir=fv.fashion_mnist_dir, flip=_FLIP[fv.flip],
      shuffle_buffer=fv.shuffle_buffer, seed=fv.seed,
      validation_fraction=fv.validation_fraction, train_take=fv.train_take or None,
      eval_take=fv.eval_take or None)
  model_cfg = ModelConfig(
      image_shape=data_lib.image_shape(fv.dataset, data_cfg), likelihood=fv.likelihood,
      latent_dim=fv.latent_dim, encoder_filters=fv.encoder_filters,
      encoder_blocks=fv.encoder_blocks, encoder_layers_per_block=fv.encoder_layers_per_block,
      flow_scales=fv.flow_scales, flow_checkerboard=fv.flow_checkerboard,
      flow_channelwise=fv.flow_channelwise, flow_filters=fv.flow_filters,
      flow_res_blocks=fv.flow_res_blocks, log_scale_bound=fv.log_scale_bound,
      logit_alpha=fv.logit_alpha, min_scale=fv.min_scale, dtype=fv.dtype)
  train_cfg = TrainConfig(**{name: fv[name].value for name in _T})
  return model_cfg, data_cfg, train_cfg


def _configure_devices(num_cpu_devices: int) -> None:
  """Splits the CPU into logical devices; must run before TensorFlow initialises."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_cpu_devices)])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  started = time.time()
  fv = flags.FLAGS
  if fv.num_cpu_devices:
    _configure_devices(fv.num_cpu_devices)
  try:
    model_cfg, data_cfg, train_cfg = configs_from_flags(fv)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  # TensorFlow is imported (by vapnev_tf.data) but its runtime starts only below, after the device
  # set-up; MultiWorkerMirroredStrategy also has to be created before any op runs.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vapnev_tf import training  # pylint: disable=g-import-not-at-top
  if fv.deterministic_ops:
    tf.config.experimental.enable_op_determinism()
  from vapnev_tf import locking  # pylint: disable=g-import-not-at-top
  from vapnev_tf import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:
    strategy = training.make_strategy(train_cfg.strategy)
    result = training.train(model_cfg, data_cfg, train_cfg, fv.workdir, strategy=strategy,
                            force_config=fv.force_config, flags_text=fv.flags_into_string())
  except (training.ConfigError, training.CheckpointError, training.NonFiniteTrainingError,
          locking.WorkdirLockedError) as e:
    logging.error("%s: %s", type(e).__name__, e)
    return 1
  if fv.debug_result_file:
    workdir_lib.write_json_atomic(fv.debug_result_file, result)
  if result["interrupted"] is not None:
    print(f"interrupted at step {result['step']} (checkpoint saved; rerun to resume)")
    return 128 + result["interrupted"]
  print(training.summary_line(result["eval"]), flush=True)
  logging.info("Done: step %d in %.0f s.", result["step"], time.time() - started)
  return 0


def run():
  """Console script `vapnev-train`."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
