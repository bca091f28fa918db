"""Shared pieces of the benchmarks: machine/version records, flagfile parsing, the TFP Glow baseline.

`GlowFlow` exposes the small part of `VAPNEV`'s interface that the library's training step
(`vapnev_tf.training.step.make_train_step`) and evaluator (`vapnev_tf.training.Evaluator`) use
(`elbo_terms`, `log_likelihood_bound`, `trainable_variables`, `config.image_shape`), so every model
of the benchmarks is trained and evaluated by exactly the same code.
"""
import datetime
import functools
import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import time
import types

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import train as train_cli
from vapnev_tf.bijectors import pixels_to_logits

tfb = tfp.bijectors
tfd = tfp.distributions

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def run_configs(name: str):
  """(ModelConfig, DataConfig, TrainConfig) of `configs/NAME.flags`, resolved by the training
  program's own flag parser (`vapnev_tf.train.configs_from_flagfile`), nested flagfiles included."""
  return train_cli.configs_from_flagfile(str(CONFIG_DIR / f"{name}.flags"), root=str(REPO_ROOT))


def model_config_values(name: str) -> dict:
  """ModelConfig keyword arguments of `configs/NAME.flags` (image shape from its --dataset)."""
  return run_configs(name)[0].to_dict()


# The architecture sizes the benchmarks use (ModelConfig values; the options are variants below).
SIZE_KEYS = ("image_shape", "latent_dim", "encoder_filters", "encoder_blocks",
             "encoder_layers_per_block", "decoder_filters", "flow_scales", "flow_checkerboard",
             "flow_channelwise", "flow_filters", "flow_res_blocks")
# "benchmark": the quality benchmark's size, trains meaningfully in minutes on 2 cores: the paper's
# layout (2 scales x (3 checkerboard + 3 channel-wise)) at 16 filters and 1 residual block; latent
# 64; encoder 4 blocks x 1 conv from 16 filters (decoder mirrors).
BENCHMARK_SIZE = dict(image_shape=(28, 28, 1), latent_dim=64, encoder_filters=16, encoder_blocks=4,
                      encoder_layers_per_block=1, decoder_filters=0, flow_scales=2, flow_checkerboard=3,
                      flow_channelwise=3, flow_filters=16, flow_res_blocks=1)
# "smoke": tiny, for the benchmarks' own tests.
SMOKE_SIZE = dict(image_shape=(16, 16, 1), latent_dim=8, encoder_filters=4, encoder_blocks=2,
                  encoder_layers_per_block=1, decoder_filters=0, flow_scales=2, flow_checkerboard=1,
                  flow_channelwise=1, flow_filters=4, flow_res_blocks=1)


def size_values(name: str) -> dict:
  """The architecture sizes (SIZE_KEYS) of "benchmark", "smoke" or configs/NAME.flags (its sizes
  only: a config's network options are not part of its size)."""
  if name == "benchmark":
    return dict(BENCHMARK_SIZE)
  if name == "smoke":
    return dict(SMOKE_SIZE)
  values = model_config_values(name)
  return {k: values[k] for k in SIZE_KEYS}


TIMING_SIZES = ("quick", "benchmark", "fashion_mnist")


def timing_size(name: str, smoke: bool) -> dict:
  """The sizes of the timing benchmarks (conditioning, profile_step): one of TIMING_SIZES
  ("quick" and "fashion_mnist" are their flagfiles' sizes), or the smoke size when `smoke`."""
  if smoke:
    return size_values("smoke")
  if name not in TIMING_SIZES:
    raise ValueError(f"unknown size {name!r}; expected one of {', '.join(TIMING_SIZES)}.")
  return size_values(name)


# Options of the benchmarks' model variants: "vapnev+shared+fused" is the vapnev model with the
# ModelConfig overrides of "shared" and "fused". "glow" depends on the size (its number of scales).
# Three options take a value: "alpha<VALUE>" sets logit_alpha (e.g. "realnvp+alpha1e-6"; the only
# option tfb.Glow, "glow+alpha1e-6", takes); "freebits<VALUE>" and "clip<VALUE>" set the TrainConfig
# fields kl_free_nats (e.g. "vapnev+freebits8") and clip_grad_norm (e.g.
# "vapnev+vdq+glow+iaf+clip5e4"), returned by `train_overrides`.
MODEL_OPTIONS = {
    "shared": lambda size: dict(conditioning="shared"),
    "fused": lambda size: dict(fused_networks=True),
    "bf16": lambda size: dict(compute_dtype="bfloat16"),
    "vdq": lambda size: dict(dequantization="variational"),
    "iaf": lambda size: dict(posterior="iaf"),
    "glow": lambda size: dict(flow_layout=_glow_layout(size)),
}


def _glow_layout(size: dict) -> str:
  from vapnev_tf.flow_steps.glow import glow_layout_string  # pylint: disable=g-import-not-at-top
  per_scale = size.get("flow_checkerboard", 3) + size.get("flow_channelwise", 3)
  return glow_layout_string(size.get("flow_scales", 2), per_scale)


def parse_variant(name: str, size: dict) -> tuple[str, dict]:
  """`"vapnev+shared+bf16"` -> `("vapnev", ModelConfig overrides)`; a plain name has none."""
  base, *options = name.split("+")
  unknown = [o for o in options if o not in MODEL_OPTIONS and logit_alpha_option(o) is None
             and train_option(o) is None]
  if unknown or len(set(options)) != len(options):
    raise ValueError(f"model variant {name!r}: options must be distinct names from "
                     f"{sorted(MODEL_OPTIONS)}, alpha<VALUE> with 0 < VALUE < 0.5 "
                     f"(logit_alpha), freebits<VALUE> with VALUE > 0 (kl_free_nats) or "
                     f"clip<VALUE> with VALUE > 0 (clip_grad_norm), got {options}.")
  if base != "vapnev" and any(free_nats_option(o) is not None for o in options):
    raise ValueError(f"model variant {name!r}: freebits<VALUE> needs a latent, i.e. the vapnev "
                     "model.")
  overrides = {}
  for option in options:
    if train_option(option) is not None:
      continue
    alpha = logit_alpha_option(option)
    overrides.update(dict(logit_alpha=alpha) if alpha is not None else MODEL_OPTIONS[option](size))
  return base, overrides


def train_overrides(name: str) -> dict:
  """The TrainConfig overrides of a variant: `"vapnev+freebits8+clip5e4"` ->
  `{"kl_free_nats": 8.0, "clip_grad_norm": 5e4}`."""
  _, *options = name.split("+")
  return dict(filter(None, map(train_option, options)))


def train_option(option: str) -> tuple[str, float] | None:
  """`"freebits8"` -> ("kl_free_nats", 8.0), `"clip5e4"` -> ("clip_grad_norm", 5e4); None if
  `option` is neither."""
  for field, value in (("kl_free_nats", free_nats_option(option)),
                       ("clip_grad_norm", clip_norm_option(option))):
    if value is not None:
      return field, value
  return None


def _numeric_option(option: str, prefix: str, upper: float) -> float | None:
  """`prefix<VALUE>` -> VALUE if 0 < VALUE < upper; None if `option` is not of that form."""
  if not option.startswith(prefix):
    return None
  try:
    value = float(option[len(prefix):])
  except ValueError:
    return None
  return value if 0.0 < value < upper else None


def free_nats_option(option: str) -> float | None:
  """`"freebits8"` -> 8.0 (free bits in nats, > 0); None if not such an option."""
  return _numeric_option(option, "freebits", float("inf"))


def clip_norm_option(option: str) -> float | None:
  """`"clip5e4"` -> 5e4 (clip the global gradient norm at it, > 0); None if not such an option."""
  return _numeric_option(option, "clip", float("inf"))


def logit_alpha_option(option: str) -> float | None:
  """`"alpha1e-6"` -> 1e-6 (the logit squash, 0 < alpha < 0.5); None if not such an option."""
  return _numeric_option(option, "alpha", 0.5)


def ablation_reference(name: str, names) -> str | None:
  """The run model `name` is compared with in an ablation: the same base model, with options a
  proper subset of its own, the largest such (vapnev+shared+fused+vdq is compared with
  vapnev+shared+fused if that ran, else with vapnev)."""
  return max(_option_subsets(name, names), key=lambda n: (n.count("+"), n), default=None)


def ablation_root(name: str, names) -> str | None:
  """The run with the same base model and the FEWEST options, a proper subset of `name`'s: what
  all of `name`'s options together are measured against (vapnev+shared+fused+vdq+glow+iaf ->
  vapnev+shared+fused when vapnev itself did not run)."""
  return min(_option_subsets(name, names), key=lambda n: (n.count("+"), n), default=None)


def _option_subsets(name: str, names) -> list:
  """The runs in `names` with `name`'s base model and a proper subset of its options."""
  base, *options = name.split("+")
  return [n for n in names if n.split("+")[0] == base
          and frozenset(n.split("+")[1:]) < frozenset(options)]


def run_worker(module: str, spec: dict, timeout: int, out_dir: str, env: dict | None = None) -> dict:
  """Runs `python -m MODULE --worker=SPEC --worker_out=...` (one measurement in a fresh process,
  so its peak RSS and its TF thread and oneDNN settings are its own); returns the JSON it wrote,
  with `wall_seconds`, or an error record."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  out_path = os.path.join(out_dir, f".worker_{os.getpid()}.json")
  cmd = [sys.executable, "-m", module, f"--worker={json.dumps(spec)}", f"--worker_out={out_path}"]
  t = time.perf_counter()
  logging.info("worker: %s", spec.get("label"))
  try:
    proc = subprocess.run(cmd, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout} s", "wall_seconds": timeout}
  wall = round(time.perf_counter() - t, 1)
  if proc.returncode != 0 or not os.path.exists(out_path):
    tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
    return {"error": f"exit code {proc.returncode}: {tail}", "wall_seconds": wall}
  with open(out_path) as f:
    res = json.load(f)
  os.remove(out_path)
  res["wall_seconds"] = wall
  logging.info("  -> %s", {k: v for k, v in res.items() if not isinstance(v, (dict, list))})
  return res


def count_params(variables) -> int:
  return int(sum(int(np.prod(v.shape)) for v in variables))


def peak_rss_mib() -> float:
  """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> dict:
  cpu = platform.processor()
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  mem_gib = None
  try:
    mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (ValueError, OSError):
    pass
  return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem_gib,
          "load_average": [round(v, 2) for v in os.getloadavg()],
          "platform": platform.platform(), "python": sys.version.split()[0]}


def versions() -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  import vapnev_tf  # pylint: disable=g-import-not-at-top
  return {"tensorflow": tf.__version__, "keras": keras.__version__,
          "tensorflow_probability": tfp.__version__, "numpy": np.__version__,
          "vapnev_tf": getattr(vapnev_tf, "__version__", None)}


def header() -> dict:
  return {"command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, REPO_ROOT)]
                              + ["-m", _module_name()] + sys.argv[1:]),
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "code": code_version(), "machine": machine_info(), "versions": versions()}


def code_version() -> str | None:
  """The repository's commit (short hash), with " + uncommitted changes" when tracked files
  differ from it; None outside a git checkout (e.g. an installed copy)."""
  def git(*args):
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()
  try:
    commit = git("rev-parse", "--short=7", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + (" + uncommitted changes" if dirty else "")


def _module_name() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None else os.path.basename(sys.argv[0])


def write_json(path, payload: dict) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_jsonable) + "\n")
  tmp.replace(path)


def write_lines(path, lines) -> None:
  """Writes a report's markdown `lines` to `path`, newline-terminated."""
  pathlib.Path(path).write_text("\n".join(lines) + "\n")


def _jsonable(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def fmt(value, digits=3):
  if value is None:
    return "–"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def curve_bound_at_step(curve, step):
  """Learning-curve bits/dim at `step`, linear between the two recorded points around it.

  None if `step` lies outside the curve (no extrapolation). Used to compare models at equal
  images seen, since the wall-clock budget gives fast models more steps."""
  for point in curve:
    if point["step"] == step:
      return point["elbo_bpd"]
  for a, b in zip(curve, curve[1:]):
    if a["step"] < step < b["step"]:
      t = (step - a["step"]) / (b["step"] - a["step"])
      return a["elbo_bpd"] + t * (b["elbo_bpd"] - a["elbo_bpd"])
  return None


TARGET_LABEL = "issue 8 target, VAPNEV IW"


def finish_bpd_plot(fig, ax, path, values, *, target: float, xlabel: str, ylabel: str,
                    title: str, legend_size: int = 8, target_label: str = TARGET_LABEL) -> str:
  """Shared look of the bits/dim-vs-minutes figures: y range from `values` (outliers clipped),
  the target (label: TARGET_LABEL by default) as a dotted line, grid, legend; saves to `path`
  and closes the figure."""
  style_bpd_axes(ax, values, target=target, xlabel=xlabel, ylabel=ylabel, title=title,
                 legend_size=legend_size, target_label=target_label)
  return save_figure(fig, path)


def save_figure(fig, path) -> str:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def style_bpd_axes(ax, values, *, target: float, xlabel: str, ylabel: str, title: str,
                   legend_size: int = 8, target_label: str = TARGET_LABEL) -> None:
  """The look of one bits/dim panel (see `finish_bpd_plot`), without saving."""
  if values:
    ax.set_ylim(min(min(values) - 0.3, target - 0.2), min(max(values) + 0.5, min(values) + 4.0))
  ax.axhline(target, color="grey", ls=":", lw=1, label=f"{target} ({target_label})")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=legend_size)


# ------------------------------------------------------------------------------ TFP Glow baseline


class GlowFlow(tf.Module):
  """p(x) = TransformedDistribution(N(0, I), Chain([Invert(pixels_to_logits), tfb.Glow])).

  `tfb.Glow` with its default coupling networks (`GlowDefaultNetwork`, tf_keras; `num_hidden`
  filters) and exit networks, on the same logit pre-processing as our flows, so its log p(x) is over
  dequantised pixels in [0, 256)^D like ours and bits/dim are directly comparable. Glow's weights
  (and ActNorm's data-dependent initialisation) are created by the first call: call
  `build(x_batch)` with real data before collecting `trainable_variables`.
  """

  def __init__(self, image_shape, num_hidden: int, num_glow_blocks: int = 2,
               num_steps_per_block: int = 6, logit_alpha: float = 0.05, name="glow"):
    super().__init__(name=name)
    image_shape = tuple(int(d) for d in image_shape)
    self.config = types.SimpleNamespace(image_shape=image_shape, likelihood="glow", has_vae=False,
                                        uses_flow=True, num_hidden=num_hidden,
                                        num_glow_blocks=num_glow_blocks,
                                        num_steps_per_block=num_steps_per_block)
    self.glow = tfb.Glow(
        output_shape=image_shape, num_glow_blocks=num_glow_blocks,
        num_steps_per_block=num_steps_per_block,
        coupling_bijector_fn=functools.partial(tfb.GlowDefaultNetwork, num_hidden=num_hidden),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork)
    z_shape = self.glow.inverse_event_shape(image_shape)
    base = tfd.Sample(tfd.Normal(tf.constant(0.0), tf.constant(1.0)), z_shape)
    self.distribution = tfd.TransformedDistribution(
        base, tfb.Chain([tfb.Invert(pixels_to_logits(logit_alpha)), self.glow]), name="p_x")

  # TFP's Glow fails to trace with an unknown batch size (its Reshape mixes int32 and int64 shape
  # tensors: "Tensors in list passed to 'values' of 'ConcatV2' Op have types [int32, int64]"), and
  # the library's Evaluator traces with an unknown batch (it keeps the last partial batch). So a
  # batch of unknown size is padded to `pad_batch_to` images (mid-grey, finite log p) and the
  # result sliced back.
  pad_batch_to = None

  def log_prob(self, x):
    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape[0] is not None or self.pad_batch_to is None:
      return self.distribution.log_prob(x)
    n = tf.shape(x)[0]
    padded = tf.concat([x, tf.fill([self.pad_batch_to - n] + list(x.shape[1:]), 128.0)], 0)
    padded.set_shape([self.pad_batch_to] + list(x.shape[1:]))
    return self.distribution.log_prob(padded)[:n]

  def build(self, x):
    return self.log_prob(x)

  def parameter_groups(self):
    """For the library's training step (its per-part gradient norms): one part."""
    return {"flow/glow": list(self.trainable_variables)}

  def elbo_terms(self, x, seed=None, per_dim_kl: bool = False):
    """The library's training-step interface; there is no latent, so no KL per dimension."""
    del seed
    if per_dim_kl:
      raise ValueError("per-dimension free bits need a latent; the Glow baseline has none.")
    log_px = self.log_prob(x)
    return {"log_px_given_z": log_px, "kl": tf.zeros_like(log_px)}

  def elbo(self, x, kl_weight=1.0, seed=None):
    del kl_weight, seed
    return self.log_prob(x)

  def log_likelihood_bound(self, x, num_samples=1, seed=None, chunk_size=16):
    del num_samples, seed, chunk_size
    return self.log_prob(x)

  def sample(self, n, temperature=1.0, seed=None):
    del temperature
    return tf.clip_by_value(self.distribution.sample(n, seed=seed), 0.0, 256.0 - 2.0 ** -8)


def matched_glow(image_shape, target_params: int, x_build, num_glow_blocks: int = 2,
                 num_steps_per_block: int = 6, tolerance: float = 0.10,
                 logit_alpha: float = 0.05):
  """The `GlowFlow` whose num_hidden (a multiple of 8) gives the parameter count nearest to
  `target_params`; returns (glow, params, relative difference). Built on `x_build`."""
  best = None
  lo, hi = (8, 8) if tolerance == float("inf") else (8, 1024)  # inf: smallest (smoke tests)
  while lo <= hi:  # parameters grow monotonically with num_hidden
    mid = (lo + hi) // 16 * 8 or 8
    g = GlowFlow(image_shape, mid, num_glow_blocks, num_steps_per_block)
    g.build(x_build[:1])
    p = count_params(g.trainable_variables)
    if best is None or abs(p - target_params) < abs(best[1] - target_params):
      best = (mid, p)
    if p < target_params:
      lo = mid + 8
    elif p > target_params:
      hi = mid - 8
    else:
      break
  glow = GlowFlow(image_shape, best[0], num_glow_blocks, num_steps_per_block,
                  logit_alpha=logit_alpha)
  glow.build(x_build)  # the real batch initialises ActNorm
  params = count_params(glow.trainable_variables)
  rel = (params - target_params) / target_params
  if abs(rel) > tolerance:
    raise ValueError(f"Glow cannot match {target_params} parameters within {tolerance:.0%}: "
                     f"nearest num_hidden={best[0]} has {params} ({rel:+.1%}).")
  return glow, params, rel


def library_train_step(model, batch, strategy, jit_compile=False, kl_anneal_steps=1000):
  """The library's training step (`vapnev_tf.training.step`) on `batch` repeated in memory.

  Returns `(run, train_step, iterator)`: `run()` takes one step and returns its metrics.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import TrainConfig  # pylint: disable=g-import-not-at-top
  from vapnev_tf.training import step as step_lib  # pylint: disable=g-import-not-at-top
  train_cfg = TrainConfig(strategy="one_device", jit_compile=jit_compile,
                          kl_anneal_steps=kl_anneal_steps, export_at_end=False)
  with strategy.scope():
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(list(model.trainable_variables))
    state = step_lib.TrainState(model, optimizer, step_lib.counter("step"),
                                step_lib.counter("skipped_steps"))
  train_step = step_lib.make_train_step(strategy, train_cfg, int(batch.shape[0]))
  iterator = iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(batch).repeat()))
  return (lambda: train_step(state, iterator)), train_step, iterator
