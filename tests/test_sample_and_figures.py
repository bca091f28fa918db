"""Figures (grids, paper panel, interpolations, temperatures), PNG writing and the sample CLI."""
import json
import os

from absl import flags
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import vapnev_tf
from vapnev_tf import figures
from vapnev_tf import image_grids
from vapnev_tf import sample as sample_lib

from run_fixtures import IMAGE_SHAPE
from run_fixtures import PYTHON
from run_fixtures import REPO_ROOT
from run_fixtures import Background
from run_fixtures import random_images
from run_fixtures import tiny_config

CELL = IMAGE_SHAPE[0] + 1  # an 8x8 image plus its 1-pixel separator


def grid_size(rows, cols, height=IMAGE_SHAPE[0], width=IMAGE_SHAPE[1], pad=1):
  return rows * (height + pad) + pad, cols * (width + pad) + pad


@pytest.fixture(scope="module")
def run_dir(tiny_run):
  return tiny_run


@pytest.fixture(scope="module")
def exported(tiny_export):
  return tiny_export


@pytest.fixture(scope="module")
def saved(tiny_loaded):
  """Endpoints of the loaded SavedModel: fast (already graphs) and the same as the model's."""
  return figures.Endpoints(tiny_loaded)


def read_png(path):
  with Image.open(path) as image:
    image.load()
    return image.format, image.mode, image.size, np.asarray(image)


# ------------------------------------------------------------------------------ grids and PNGs


def test_image_grid_layout():
  images = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3, 1)
  grid = figures.image_grid(images, rows=2, cols=3, pad=1)
  assert grid.dtype == np.uint8 and grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
  np.testing.assert_array_equal(grid[1:3, 1:4], images[0])
  np.testing.assert_array_equal(grid[4:6, 5:8], images[4])  # row 1, column 1
  assert np.all(grid[0] == image_grids.PAD_VALUE) and np.all(grid[:, 0] == image_grids.PAD_VALUE)
  assert np.all(grid[4:6, 9:12] == image_grids.PAD_VALUE)  # the sixth cell is empty
  assert figures.image_grid(images, 1, 5, pad=0).shape == (2, 15, 1)
  assert figures.square_grid_shape(5) == (2, 3) and figures.square_grid_shape(64) == (8, 8)


@pytest.mark.parametrize("images, message", [
    (np.zeros((7, 2, 2, 1), np.uint8), "do not fit a 2x3 grid"),
    (np.zeros((2, 2, 2, 1), np.float32), "uint8"),
    (np.zeros((2, 2, 1), np.uint8), r"\(N, H, W, C\)"),
])
def test_image_grid_rejects_bad_input(images, message):
  with pytest.raises(ValueError, match=message):
    figures.image_grid(images, 2, 3)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_save_png_round_trip(tmp_path, channels, mode):
  array = np.random.default_rng(0).integers(0, 256, (5, 7, channels), dtype=np.uint8)
  path = figures.save_png(array, str(tmp_path / "sub" / "figure.png"))
  fmt, got_mode, size, pixels = read_png(path)
  assert (fmt, got_mode, size) == ("PNG", mode, (7, 5))
  np.testing.assert_array_equal(pixels.reshape(array.shape), array)
  assert os.listdir(tmp_path / "sub") == ["figure.png"]  # the temporary file was renamed


def test_an_existing_directory_as_out_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
  target = tmp_path / "figure.png"
  target.mkdir()
  with pytest.raises(ValueError, match="out .*figure.png' is an existing directory"):
    figures.save_png(np.zeros((4, 4), np.uint8), str(target))
  with pytest.raises(ValueError, match="is an existing directory"):  # before any model is loaded
    sample_lib.write_figure(str(target), saved_model=str(tmp_path / "no_export"))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]

  def failing_rename(*args, **kwargs):
    raise tf.errors.PermissionDeniedError(None, None, "read-only")

  monkeypatch.setattr(tf.io.gfile, "rename", failing_rename)
  with pytest.raises(ValueError, match="cannot write the PNG .*other.png.*read-only"):
    figures.save_png(np.zeros((4, 4), np.uint8), str(tmp_path / "other.png"))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def test_save_png_rejects_bad_arrays(tmp_path):
  with pytest.raises(ValueError, match="uint8"):
    figures.save_png(np.zeros((4, 4, 3), np.float32), str(tmp_path / "a.png"))
  with pytest.raises(ValueError, match="shape"):
    figures.save_png(np.zeros((4, 4, 2), np.uint8), str(tmp_path / "a.png"))
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------- figures


def test_paper_panel_from_an_rgb_model():
  """The training loop's call: a VAPNEV in memory, RGB images."""
  model = vapnev_tf.VAPNEV(tiny_config(image_shape=(16, 16, 3)))
  images = random_images(5, seed=1, image_shape=(16, 16, 3))
  panel = figures.paper_panel(model, images, seed=3)
  height, width = grid_size(2, 3, 16, 16)  # 5 images -> 2 x 3
  gap = 8  # default: half an image width
  assert panel.dtype == np.uint8 and panel.shape == (height, 3 * width + 2 * gap, 3)
  np.testing.assert_array_equal(panel[:, :width], figures.image_grid(images, 2, 3))
  assert np.all(panel[:, width:width + gap] == image_grids.PAD_VALUE)


def test_paper_panel_of_realnvp_has_no_reconstructions():
  model = vapnev_tf.VAPNEV(tiny_config(likelihood="realnvp"))
  panel = figures.paper_panel(model, random_images(4), seed=0, gap=2)
  height, width = grid_size(2, 2)
  assert panel.shape == (height, 2 * width + 2, 1)
  with pytest.raises(ValueError, match="needs a VAE"):
    figures.interpolation_rows(model, random_images(1), random_images(1), 3)


def test_figures_from_model_and_from_export_agree(tiny_model, saved):
  model = tiny_model
  from_model = figures.temperature_rows(model, [0.5, 1.0], per_row=3, seed=4)
  from_export = figures.temperature_rows(saved, [0.5, 1.0], per_row=3, seed=4)
  assert from_model.shape == from_export.shape == grid_size(2, 3) + (1,)
  # Same seeds, same draws; float32 round-off may move a pixel across an integer.
  assert np.abs(from_model.astype(int) - from_export.astype(int)).max() <= 1
  assert np.mean(from_model != from_export) < 0.02


def test_interpolation_rows(saved):
  a, b = random_images(2, seed=5), random_images(2, seed=6)
  steps = 5
  grid = figures.interpolation_rows(saved, a, b, steps, seed=0)
  assert grid.dtype == np.uint8 and grid.shape == grid_size(2, steps + 2) + (1,)
  cell = lambda r, c: grid[1 + r * CELL:r * CELL + CELL, 1 + c * CELL:c * CELL + CELL]
  np.testing.assert_array_equal(cell(1, 0), a[1])  # originals at both ends
  np.testing.assert_array_equal(cell(1, steps + 1), b[1])
  np.testing.assert_array_equal(cell(0, 1), saved.decode(saved.encode(a)[0])[0])  # t = 0: mu_z(a)
  np.testing.assert_array_equal(cell(0, steps), saved.decode(saved.encode(b)[0])[0])
  with pytest.raises(ValueError, match="as many images"):
    figures.interpolation_rows(saved, a, b[:1], steps)
  with pytest.raises(ValueError, match=r"shape \(N, 8, 8, 1\)"):
    figures.interpolation_rows(saved, random_images(2, image_shape=(4, 4, 1)), b, steps)


def test_interpolate_latents():
  rng = np.random.default_rng(0)
  z_a, z_b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
  z_b *= (np.linalg.norm(z_a, axis=1) / np.linalg.norm(z_b, axis=1))[:, None]  # equal norms
  for method in ("slerp", "linear"):
    z = figures.interpolate_latents(z_a, z_b, 6, method)
    assert z.shape == (3, 6, 4) and z.dtype == np.float32
    np.testing.assert_allclose(z[:, 0], z_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z[:, -1], z_b, rtol=1e-5, atol=1e-6)
  slerp = figures.interpolate_latents(z_a, z_b, 6, "slerp")
  np.testing.assert_allclose(np.linalg.norm(slerp, axis=-1),
                             np.repeat(np.linalg.norm(z_a, axis=1)[:, None], 6, 1), rtol=1e-5)
  linear = figures.interpolate_latents(z_a, z_a, 3, "slerp")  # parallel: falls back to linear
  np.testing.assert_allclose(linear[:, 1], z_a, rtol=1e-5)
  with pytest.raises(ValueError, match="method"):
    figures.interpolate_latents(z_a, z_b, 3, "cubic")


def test_temperature_rows(saved):
  grid = figures.temperature_rows(saved, [0.0, 0.5, 1.0], per_row=4, seed=2)
  assert grid.dtype == np.uint8 and grid.shape == grid_size(3, 4) + (1,)
  rows = [grid[1 + r * CELL:r * CELL + CELL] for r in range(3)]
  assert not np.array_equal(rows[0], rows[2])  # the temperature changes the samples
  with pytest.raises(ValueError, match="temperatures"):
    figures.temperature_rows(saved, [-1.0], per_row=2, seed=0)


def cells(grid, rows, cols):
  """The `(rows, cols, H, W, C)` images of a grid of 8x8 images with 1-pixel separators."""
  return np.stack([np.stack([grid[1 + r * CELL:r * CELL + CELL, 1 + c * CELL:c * CELL + CELL]
                             for c in range(cols)]) for r in range(rows)])


def test_noise_draw_rows_hold_z_and_vary_the_flow_noise(saved):
  images = random_images(3, seed=7)
  draws = 4
  grid = figures.noise_draw_rows(saved, images, draws, temperature=0.8, seed=5)
  assert grid.dtype == np.uint8 and grid.shape == grid_size(3, draws + 2) + (1,)
  got = cells(grid, 3, draws + 2)
  np.testing.assert_array_equal(got[:, 0], images)  # the originals
  mu_z = saved.encode(images)[0]
  np.testing.assert_array_equal(got[:, 1], saved.decode(mu_z))  # the mu_y path of z = mu_z
  for row in got[:, 2:]:  # every draw of a row has its own noise
    assert all(not np.array_equal(row[i], row[j]) for i in range(draws) for j in range(i))
  # The draws are p(x|z) at that same z: without noise (T = 0) each is the row's mu_y decoding.
  still = cells(figures.noise_draw_rows(saved, images, draws, temperature=0.0, seed=5), 3,
                draws + 2)
  for d in range(draws):
    assert np.abs(still[:, 2 + d].astype(int) - got[:, 1].astype(int)).max() <= 1
  # Seeded: the same seed gives the same picture, another seed other draws of the same rows.
  np.testing.assert_array_equal(
      grid, figures.noise_draw_rows(saved, images, draws, temperature=0.8, seed=5))
  other = cells(figures.noise_draw_rows(saved, images, draws, temperature=0.8, seed=6), 3,
                draws + 2)
  np.testing.assert_array_equal(other[:, :2], got[:, :2])
  assert not np.array_equal(other[:, 2:], got[:, 2:])


@pytest.mark.parametrize("likelihood", ["realnvp", "vapnev_fixed_z"])
def test_noise_draw_rows_refuse_a_model_without_a_latent(likelihood):
  model = vapnev_tf.VAPNEV(tiny_config(likelihood=likelihood))
  with pytest.raises(ValueError, match="draws needs a latent z"):
    sample_lib.make_figure(model, "draws", images=random_images(2), rows=2, per_row=2)


def test_noise_draws_from_an_export_without_sample_from_z_name_the_fix(tiny_loaded):
  """An export written before `sample_from_z` existed keeps its other figures; draws say why not."""
  older = type("Older", (), {"signatures": {name: f for name, f in tiny_loaded.signatures.items()
                                            if name != "sample_from_z"}})()
  with pytest.raises(ValueError, match="no sample_from_z.* signature.*export the run again"):
    figures.noise_draw_rows(older, random_images(1), 2, temperature=0.8, seed=0)


def test_samples_grid_and_mean_path(saved):
  assert figures.samples_grid(saved, 5, 0.8, seed=1).shape == grid_size(2, 3) + (1,)
  mean = figures.samples_grid(saved, 4, 0.8, seed=1, use_mean_y=True)
  assert mean.shape == grid_size(2, 2) + (1,)
  np.testing.assert_array_equal(mean, figures.samples_grid(saved, 4, 0.3, seed=1, use_mean_y=True))


def test_endpoints_rejects_other_objects():
  with pytest.raises(ValueError, match="must be a vapnev_tf.VAPNEV"):
    figures.Endpoints(object())


# ------------------------------------------------------------------------------------------ CLI


def test_sample_cli_from_workdir_and_from_saved_model(run_dir, exported, tmp_path):
  """A panel from a run directory (test images from its data config), through what the CLI's main
  calls, in this process; and `python -m vapnev_tf.sample`: a sample grid from the export."""
  procs = {
      "samples": Background([PYTHON, "-m", "vapnev_tf.sample", f"--saved_model={exported}",
                             "--num=6", "--temperature=0.5", f"--out={tmp_path}/samples.png"],
                            tmp_path, "samples", cwd=str(REPO_ROOT)),
  }
  sample_lib.write_figure(f"{tmp_path}/panel.png", "panel", workdir=str(run_dir), num=4, seed=3)
  outputs = {name: proc.wait()[1] for name, proc in procs.items()}
  height, width = grid_size(2, 2)
  fmt, mode, size, _ = read_png(tmp_path / "panel.png")
  assert (fmt, mode, size) == ("PNG", "L", (3 * width + 2 * 4, height))
  fmt, mode, size, _ = read_png(tmp_path / "samples.png")
  height, width = grid_size(2, 3)
  assert (fmt, mode, size) == ("PNG", "L", (width, height))
  report = json.loads(outputs["samples"].strip().splitlines()[-1])
  assert report["shape"] == [height, width, 1] and report["mode"] == "samples"
  assert report["weights"] == "raw"  # the export's metadata: a run without Polyak averages


def test_make_figure_modes(saved, tmp_path):
  images = random_images(6, seed=9)
  interp = sample_lib.make_figure(saved, "interpolate", images=images, pairs=3, steps=4)
  assert interp.shape == grid_size(3, 6) + (1,)
  temps = sample_lib.make_figure(saved, "temperatures", temperatures=[0.0, 1.0], per_row=5)
  assert temps.shape == grid_size(2, 5) + (1,)
  with pytest.raises(ValueError, match="needs 2 \\* pairs = 8 images"):
    sample_lib.make_figure(saved, "interpolate", images=images, pairs=4)


def test_draws_from_a_run_directory_and_from_its_export_agree(run_dir, exported, tmp_path):
  """The draws mode through what the CLI's main calls: the run's first test images, as the panel
  takes them, from the run directory and from its export, for the same seed."""
  kwargs = dict(rows=3, per_row=2, temperature=0.8, seed=2)
  drawn_from_run = sample_lib.write_figure(str(tmp_path / "run.png"), "draws",
                                           workdir=str(run_dir), **kwargs)
  drawn_from_export = sample_lib.write_figure(str(tmp_path / "export.png"), "draws",
                                              saved_model=str(exported), **kwargs)
  assert drawn_from_run.weights == drawn_from_export.weights == "raw"  # the run keeps no averages
  from_run, from_export = drawn_from_run.image, drawn_from_export.image
  assert from_run.shape == from_export.shape == grid_size(3, 4) + (1,)
  assert read_png(tmp_path / "run.png")[2] == (grid_size(3, 4)[1], grid_size(3, 4)[0])
  image_shape, run_config = sample_lib.source_info(workdir=str(run_dir))
  first = sample_lib.load_test_images(3, image_shape, run_config=run_config)  # as the panel's
  np.testing.assert_array_equal(cells(from_export, 3, 4)[:, 0], first)
  # Same seeds, same draws; float32 round-off may move a pixel across an integer.
  assert np.abs(from_run.astype(int) - from_export.astype(int)).max() <= 1
  assert np.mean(from_run != from_export) < 0.02


def test_write_figure_from_saved_model_with_an_images_file(exported, tmp_path):
  images = tmp_path / "images.npz"
  np.savez(images, test_images=random_images(6, seed=9))
  sample_lib.write_figure(str(tmp_path / "panel.png"), "panel", saved_model=str(exported),
                          images_path=str(images), num=6)
  height, width = grid_size(2, 3)
  assert read_png(tmp_path / "panel.png")[2] == (3 * width + 2 * 4, height)


def test_sample_cli_errors(exported, tmp_path):
  with pytest.raises(ValueError, match="exactly one of workdir"):
    sample_lib.write_figure(str(tmp_path / "x.png"))
  with pytest.raises(ValueError, match="exactly one of workdir"):
    sample_lib.write_figure(str(tmp_path / "x.png"), workdir="a", saved_model="b")
  with pytest.raises(ValueError, match="not a SavedModel"):
    sample_lib.write_figure(str(tmp_path / "x.png"), saved_model=str(tmp_path))
  with pytest.raises(ValueError, match=r"\.png"):
    sample_lib.write_figure(str(tmp_path / "x.jpg"), saved_model=str(exported))
  bad = tmp_path / "bad.npy"
  np.save(bad, random_images(8, image_shape=(4, 4, 1)))
  with pytest.raises(ValueError, match=r"expected uint8 images \(N, 8, 8, 1\)"):
    sample_lib.write_figure(str(tmp_path / "x.png"), "panel", saved_model=str(exported),
                            images_path=str(bad), num=4)
  assert not (tmp_path / "x.png").exists()


def test_chunked_samples_are_the_per_chunk_draws_and_one_chunk_is_one_batch(saved):
  """samples mode draws `chunk_size` images per call; chunk j is the one-batch draw with
  `chunk_seed(seed, j)` (seed itself for j = 0), so up to `chunk_size` images nothing changes."""
  chunked = sample_lib.sample_images(saved, 10, 0.8, seed=3, chunk_size=4)
  seeds = [sample_lib.chunk_seed(3, j) for j in range(3)]
  assert seeds[0] == 3 and len(set(seeds)) == 3 and all(0 <= s < 2 ** 63 for s in seeds)
  by_hand = np.concatenate([saved.sample(4, 0.8, seeds[0]), saved.sample(4, 0.8, seeds[1]),
                            saved.sample(2, 0.8, seeds[2])])
  np.testing.assert_array_equal(chunked, by_hand)
  one_batch = sample_lib.sample_images(saved, 10, 0.8, seed=3, chunk_size=10)
  np.testing.assert_array_equal(one_batch, saved.sample(10, 0.8, 3))
  np.testing.assert_array_equal(chunked[:4], one_batch[:4])  # the first chunk is the same draw
  np.testing.assert_array_equal(
      sample_lib.make_figure(saved, "samples", num=5, temperature=0.8, seed=1, chunk_size=8),
      figures.samples_grid(saved, 5, 0.8, seed=1))
  grid = sample_lib.make_figure(saved, "samples", num=10, temperature=0.8, seed=3, chunk_size=4)
  np.testing.assert_array_equal(grid, figures.image_grid(by_hand, 3, 4))
  mean = sample_lib.sample_images(saved, 5, 0.8, seed=2, use_mean_y=True, chunk_size=2)
  np.testing.assert_array_equal(mean[2:4], saved.sample_mean(2, sample_lib.chunk_seed(2, 1)))


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), -1.0])
def test_make_figure_refuses_bad_temperatures(saved, temperature):
  for mode in ("samples", "panel"):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
      sample_lib.make_figure(saved, mode, num=2, temperature=temperature,
                             images=random_images(2, seed=1))
  with pytest.raises(ValueError, match="temperatures must be a finite number >= 0"):
    sample_lib.make_figure(saved, "temperatures", temperatures=[0.5, temperature], per_row=2)


@pytest.mark.parametrize("flag", ["--temperature=inf", "--temperature=-1", "--temperatures=0,nan",
                                  "--num=0", "--chunk_size=0", "--rows=0", "--per_row=0"])
def test_sample_cli_refuses_bad_flags_naming_the_flag(exported, tmp_path, flag):
  """The CLI's own flag definitions refuse each value at parse time, naming the flag (the
  console's one-line form of a parse error is checked on a real process in test_console.py)."""
  out = tmp_path / "x.png"
  fv = flags.FlagValues()
  sample_lib._define_flags(fv)  # pylint: disable=protected-access
  with pytest.raises(flags.Error) as error:
    fv(["vapnev_tf.sample", f"--saved_model={exported}", f"--out={out}", flag])
  message = " ".join(str(error.value).split())  # as console.usage_error prints it: one line
  assert flag.split("=")[0] in message, message
  assert not out.exists()


def test_panel_uses_every_image_of_a_test_set_smaller_than_num(tmp_path):
  """The default --num=64 on a 5-image test set makes a 5-image panel; interpolation,
  which needs exactly 2 * pairs images, still refuses too few."""
  path = tmp_path / "five.npy"
  np.save(path, random_images(5, seed=4))
  images = sample_lib.load_test_images(64, (8, 8, 1), str(path), minimum=1)
  assert images.shape == (5, 8, 8, 1)
  with pytest.raises(ValueError, match="fewer than the 16 needed"):
    sample_lib.load_test_images(16, (8, 8, 1), str(path))
