"""Sampling CLI: a PNG grid from a run directory or from its SavedModel export.

    python -m vapnev_tf.sample (--workdir=DIR [--checkpoint=PREFIX] | --saved_model=OUT)
        --out=FILE.png [--mode=samples|panel|interpolate|temperatures|draws] [--num=64]
        [--temperature=0.8] [--use_mean_y] [--seed=0] [--images=FILE.npy|.npz]
        [--chunk_size=256] [--rows=8] [--per_row=8]

Modes (figures in `vapnev_tf.figures`):
  samples        `num` samples at `temperature` (or on the mu_y path with --use_mean_y).
  panel          the paper's Fig. 3/4: `num` test images | reconstructions | samples.
  interpolate    `pairs` rows of latent interpolations (`steps` points) between test images.
  temperatures   one row of `per_row` samples per value of --temperatures, one seed.
  draws          what the latent controls: for each of the first `rows` test images (the panel's),
                 the image | the mu_y decoding of its z = mu_z | `per_row` samples of p(x|z) for
                 that same z at `temperature` (each its own flow noise; needs a latent).
samples mode draws `chunk_size` images per call (`sample_images`), so --num=100000 never builds
one huge batch; chunk j uses `chunk_seed(seed, j)` (seed itself for j = 0, so up to `chunk_size`
images are exactly one `sample` call with `seed`).
Test images (panel, interpolate, draws) come from --images (a uint8 (N, H, W, C) .npy, or an .npz
with `test_images` or `images`), else from the test split of the run's data config (`config.json`,
or the export's metadata when it was exported from a run directory).
"""
import json
import os
from typing import NamedTuple

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from vapnev_tf import console
from vapnev_tf import data as data_lib
from vapnev_tf import export as export_lib
from vapnev_tf import figures
from vapnev_tf import loading
from vapnev_tf import validation
from vapnev_tf import workdir as workdir_lib

MODES = ("samples", "panel", "interpolate", "temperatures", "draws")
DEFAULT_TEMPERATURES = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
SAMPLE_CHUNK_SIZE = 256  # images per sampling call: bounds memory (a 256-image flow batch)


def chunk_seed(seed: int, chunk: int) -> int:
  """The seed of chunk `chunk` of a chunked draw with `seed`: `seed` for chunk 0, else the first
  63 bits of `numpy.random.SeedSequence([seed, chunk])` (a non-negative int64, as the export's
  signatures take). Chunk j's images therefore depend only on (seed, j, the chunk's length)."""
  if chunk == 0:
    return int(seed)
  return int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1, np.uint64)[0] >> 1)


def sample_images(ep: figures.Endpoints, num: int, temperature: float, seed: int,
                  use_mean_y: bool = False, chunk_size: int = SAMPLE_CHUNK_SIZE) -> np.ndarray:
  """`num` samples, uint8 `(num, H, W, C)`, drawn `chunk_size` at a time.

  Chunk j holds images [j chunk_size, min((j + 1) chunk_size, num)) and is one call of
  `ep.sample` (or `ep.sample_mean` with `use_mean_y`) with `chunk_seed(seed, j)`: a draw of at most
  `chunk_size` images is exactly the one-batch draw with `seed`.
  """
  num = validation.check_positive_int(num, "num")
  chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
  temperature = validation.check_temperature(temperature)
  chunks = []
  for j, start in enumerate(range(0, num, chunk_size)):
    n, s = min(chunk_size, num - start), chunk_seed(seed, j)
    chunks.append(ep.sample_mean(n, s) if use_mean_y else ep.sample(n, temperature, s))
  return np.concatenate(chunks, axis=0)


class DrawnFigure(NamedTuple):
  """A figure `write_figure` wrote: `image` `(H, W, C)` uint8 and `weights`, which weights drew
  it ("ema", "raw", or None for an export whose metadata does not say)."""
  image: np.ndarray
  weights: str | None


def _check_source(workdir: str | None, saved_model: str | None) -> None:
  """Exactly one of a run directory and a SavedModel directory, and it exists."""
  if (workdir is None) == (saved_model is None):
    raise ValueError("give exactly one of workdir (a run directory) and saved_model (an export "
                     f"directory), got workdir={workdir!r} and saved_model={saved_model!r}.")
  if workdir is not None and not tf.io.gfile.isdir(workdir):
    raise ValueError(f"workdir {workdir!r} does not exist or is not a directory.")
  if saved_model is not None and not tf.saved_model.contains_saved_model(saved_model):
    raise ValueError(f"saved_model {saved_model!r} is not a SavedModel directory.")


def load_source(workdir: str | None = None, checkpoint: str | None = None,
                saved_model: str | None = None):
  """(`figures.Endpoints`, run config dict or None, weights label) of a run directory or an
  export. A run directory gives the weights `loading.load_run` restores (its Polyak averages when
  it keeps them); the label is "ema" or "raw" (an export's from its metadata; None when an export
  does not say)."""
  _check_source(workdir, saved_model)
  if workdir is not None:
    model, info = loading.load_run(workdir, checkpoint)
    logging.info("Sampling from %s with its %s weights.", info["checkpoint"], info["weights"])
    return figures.Endpoints(model), workdir_lib.read_config(workdir), info["weights"]
  if checkpoint is not None:
    raise ValueError("checkpoint applies to workdir only; an export holds one set of weights.")
  metadata = export_lib.load_metadata(saved_model)
  return (figures.Endpoints(tf.saved_model.load(saved_model)), metadata.get("run_config"),
          metadata.get("weights"))


def load_test_images(num: int, image_shape, images_path: str | None = None,
                     run_config: dict | None = None, minimum: int | None = None) -> np.ndarray:
  """The first `num` test images, uint8 `(num, H, W, C)`, from `images_path` or the run's data.

  With `minimum`, a source holding fewer than `num` (but at least `minimum`) images gives all it
  has (a small test set still makes a panel); otherwise fewer than `num` is an error.
  """
  if images_path is not None:
    images = _read_image_file(images_path)
    source = images_path
  else:
    if not run_config or "data" not in run_config:
      raise ValueError("no test images: pass --images=FILE.npy (uint8 (N, H, W, C)); this source "
                       "has no run config with a 'data' section to read the test split from.")
    cfg = data_lib.DataConfig(**run_config["data"])
    images = np.stack(list(data_lib.load_images(cfg, "test").take(num).as_numpy_iterator()))
    source = f"the test split of {cfg.dataset}"
  if images.ndim == 3:
    images = images[..., None]
  if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
    shape = ", ".join(map(str, image_shape))
    raise ValueError(f"{source}: expected uint8 images (N, {shape}), got {images.dtype} "
                     f"{images.shape}.")
  needed = num if minimum is None else min(num, minimum)
  if images.shape[0] < needed:
    raise ValueError(f"{source} holds {images.shape[0]} images, fewer than the {needed} needed.")
  if images.shape[0] < num:
    logging.warning("%s holds %d images, fewer than %d: using all of them.", source,
                    images.shape[0], num)
  return images[:num]


def _read_image_file(path: str) -> np.ndarray:
  if not tf.io.gfile.exists(path):
    raise ValueError(f"images file {path!r} does not exist.")
  with tf.io.gfile.GFile(path, "rb") as f:
    loaded = np.load(f, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
      return loaded
    for key in ("test_images", "images"):
      if key in loaded.files:
        return loaded[key]
    raise ValueError(f"{path}: an .npz needs an array 'test_images' or 'images', found "
                     f"{sorted(loaded.files)}.")


def make_figure(ep: figures.Endpoints, mode: str, *, num: int = 64, temperature: float = 0.8,
                use_mean_y: bool = False, seed: int = 0, images=None, pairs: int = 8,
                steps: int = 8, temperatures=DEFAULT_TEMPERATURES, per_row: int = 8,
                chunk_size: int = SAMPLE_CHUNK_SIZE, rows: int = 8) -> np.ndarray:
  """The uint8 `(H', W', C)` figure of `mode` (see the module docstring)."""
  temperature = validation.check_temperature(temperature)
  if mode == "samples":
    images = sample_images(ep, num, temperature, seed, use_mean_y, chunk_size)
    return figures.image_grid(images, *figures.square_grid_shape(num))
  if mode == "panel":
    return figures.paper_panel(ep, images[:num], seed, temperature=temperature)
  if mode == "interpolate":
    if images.shape[0] < 2 * pairs:
      raise ValueError(f"interpolate needs 2 * pairs = {2 * pairs} images, got {images.shape[0]}.")
    return figures.interpolation_rows(ep, images[:pairs], images[pairs:2 * pairs], steps, seed)
  if mode == "temperatures":
    for t in temperatures:
      validation.check_temperature(t, "temperatures")
    return figures.temperature_rows(ep, temperatures, per_row, seed)
  if mode == "draws":
    return figures.noise_draw_rows(ep, images[:rows], per_row, temperature, seed)
  raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")


def source_info(workdir: str | None = None, saved_model: str | None = None):
  """(image_shape, run config or None) of a run directory or an export, without loading weights."""
  _check_source(workdir, saved_model)
  if workdir is not None:
    return loading.model_config(workdir).image_shape, workdir_lib.read_config(workdir)
  metadata = export_lib.load_metadata(saved_model)
  return tuple(metadata["image_shape"]), metadata.get("run_config")


def write_figure(out: str, mode: str = "samples", workdir: str | None = None,
                 checkpoint: str | None = None, saved_model: str | None = None,
                 images_path: str | None = None, **kwargs) -> np.ndarray:
  """Loads the model, makes the figure of `mode` (kwargs of `make_figure`), writes it to `out`.

  Inputs (source, test images) are checked before the model is loaded. Returns a `DrawnFigure`:
  the figure `(H, W, C)` uint8 and which weights drew it (`load_source`).
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
  if not str(out).lower().endswith(".png"):
    raise ValueError(f"out must be a .png file, got {out!r}.")
  figures.check_png_path(out)
  image_shape, run_config = source_info(workdir, saved_model)
  images = None
  if mode in ("panel", "interpolate", "draws"):
    if mode != "interpolate":  # a panel (or draws grid) of fewer images than asked is still one
      count = kwargs.get("num", 64) if mode == "panel" else kwargs.get("rows", 8)
      images = load_test_images(count, image_shape, images_path, run_config, minimum=1)
    else:
      images = load_test_images(2 * kwargs.get("pairs", 8), image_shape, images_path, run_config)
  ep, _, weights = load_source(workdir, checkpoint, saved_model)
  figure = make_figure(ep, mode, images=images, **kwargs)
  figures.save_png(figure, out)
  return DrawnFigure(figure, weights)


# ------------------------------------------------------------------------------------------ CLI


def _define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the sample flags on `fv` (the global FLAGS by default)."""
  d = dict(flag_values=fv)
  flags.DEFINE_string("workdir", None, "Run directory (restores its latest checkpoint).", **d)
  flags.DEFINE_string("checkpoint", None, "Checkpoint prefix in --workdir (default: the latest).",
                      **d)
  flags.DEFINE_string("saved_model", None, "Export directory written by vapnev_tf.export.", **d)
  flags.DEFINE_string("out", None, "Output PNG file.", **d)
  flags.DEFINE_enum("mode", "samples", MODES, "Which figure to draw.", **d)
  flags.DEFINE_integer("num", 64, "Samples (samples mode) or test images (panel mode).",
                       lower_bound=1, **d)
  flags.DEFINE_float("temperature", 0.8, "Temperature on sigma_y for samples and panel samples "
                     "(finite, >= 0).", **d)
  flags.DEFINE_bool("use_mean_y", False, "samples mode: decode z ~ N(0, I) on the mu_y path.",
                    **d)
  flags.DEFINE_integer("seed", 0, "Seed (non-negative int).", **d)
  flags.DEFINE_string("images", None, "uint8 (N, H, W, C) .npy/.npz of test images.", **d)
  flags.DEFINE_integer("pairs", 8, "interpolate mode: rows (pairs of test images).", **d)
  flags.DEFINE_integer("steps", 8, "interpolate mode: latent points per row (ends included).",
                       **d)
  flags.DEFINE_list("temperatures", [str(t) for t in DEFAULT_TEMPERATURES],
                    "temperatures mode: one row per value.", **d)
  flags.DEFINE_integer("per_row", 8, "temperatures mode: samples per row; draws mode: flow-noise "
                       "draws per row.", lower_bound=1, **d)
  flags.DEFINE_integer("rows", 8, "draws mode: test images (one row each).", lower_bound=1, **d)
  flags.DEFINE_integer("chunk_size", SAMPLE_CHUNK_SIZE, "samples mode: images per sampling call "
                       "(bounds memory; see the module docstring for the per-chunk seeds).",
                       lower_bound=1, **d)
  flags.mark_flag_as_required("out", flag_values=fv)
  flags.register_validator("temperature", _finite_non_negative,
                           message="--temperature must be a finite number >= 0", flag_values=fv)
  flags.register_validator("temperatures", lambda values: all(map(_finite_non_negative, values)),
                           message="--temperatures must be finite numbers >= 0",
                           flag_values=fv)


def _finite_non_negative(value) -> bool:
  try:
    validation.check_temperature(float(value))
  except (TypeError, ValueError):
    return False
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  try:
    drawn = write_figure(
        f.out, f.mode, workdir=f.workdir, checkpoint=f.checkpoint, saved_model=f.saved_model,
        images_path=f.images, num=f.num, temperature=f.temperature, use_mean_y=f.use_mean_y,
        seed=f.seed, pairs=f.pairs, steps=f.steps,
        temperatures=[float(t) for t in f.temperatures], per_row=f.per_row,
        chunk_size=f.chunk_size, rows=f.rows)
  except ValueError as e:  # bad input: the message, not a traceback
    raise app.UsageError(str(e)) from e
  print(json.dumps({"out": os.path.abspath(f.out), "mode": f.mode,
                    "shape": list(drawn.image.shape), "weights": drawn.weights}))


def run():
  """Console script `vapnev-sample`."""
  _define_flags()
  console.run_cli(main, "vapnev_tf.sample")


if __name__ == "__main__":
  run()
