"""The pictures beside the trade-off table: what each row's latent carries, by eye
(docs/design.md §26).

    pictures = draw_row_pictures(run_dir, row_dir)   # {"panel": "pictures/panel.png", ...}

For every finished row with a latent, three figures of `vapnev_tf.sample.make_figure` with seed 0
and the run's own sampling temperature, on the first test images (the same images for every
row):

  panel        36 test images | reconstructions | samples (paper Fig. 3/4)
  interpolate  8 rows of mu_y decodings along the path between two test images' z
  draws        8 test images | mu_y of z = mu_z | 8 draws of p(x|z) at that z (the flow's noise;
               a pixel likelihood's own noise for the pixel-logistic row)

They go to ROW/pictures/MODE.png. A figure already there is kept: a finished row's run does not
change, so a resumed table draws only what is missing.
"""
import os

PICTURE_DIR = "pictures"
# mode -> `vapnev_tf.sample.make_figure` keyword arguments besides the images and seed.
PICTURES = {
    "panel": {"num": 36},
    "interpolate": {"pairs": 8, "steps": 8},
    "draws": {"rows": 8, "per_row": 8},
}
SEED = 0
# Test images a figure reads: the panel's 36, the interpolation's 2 * 8, the draws' 8.
NUM_TEST_IMAGES = 36


def picture_path(mode: str) -> str:
  """MODE's figure relative to the row's directory."""
  return os.path.join(PICTURE_DIR, f"{mode}.png")


def _one_line(error: Exception) -> str:
  return "error: " + (" ".join(str(error).split()) or type(error).__name__)


def draw_row_pictures(run_dir: str, row_dir: str, modes=tuple(PICTURES)) -> dict:
  """{mode: its PNG relative to `row_dir`, or "error: ..." (one line) when it could not be drawn}
  of the run in `run_dir` (a finished run with a latent). The model is loaded once, with the
  weights `vapnev_tf.load_run` gives (the run's averages when it keeps them); the temperature is
  the run's `sample_temperature`. No error escapes: a row's bounds are its result, its pictures
  an addition."""
  from vapnev_tf import latent_report  # pylint: disable=g-import-not-at-top
  from vapnev_tf import sample  # pylint: disable=g-import-not-at-top
  from vapnev_tf.figures import save_png  # pylint: disable=g-import-not-at-top
  missing = [m for m in modes if not os.path.exists(os.path.join(row_dir, picture_path(m)))]
  drawn = {m: picture_path(m) for m in modes if m not in missing}
  if not missing:
    return drawn
  try:
    image_shape, run_config = sample.source_info(workdir=run_dir)
    endpoints, _, _ = sample.load_source(workdir=run_dir)
    images = sample.load_test_images(NUM_TEST_IMAGES, image_shape, run_config=run_config,
                                     minimum=2 * PICTURES["interpolate"]["pairs"])
    temperature = float(run_config.get("train", {}).get("sample_temperature",
                                                         latent_report.DEFAULT_TEMPERATURE))
  except Exception as e:  # pylint: disable=broad-except
    return dict(drawn, **{m: _one_line(e) for m in missing})
  os.makedirs(os.path.join(row_dir, PICTURE_DIR), exist_ok=True)
  for mode in missing:
    try:
      figure = sample.make_figure(endpoints, mode, images=images, seed=SEED,
                                  temperature=temperature, **PICTURES[mode])
      save_png(figure, os.path.join(row_dir, picture_path(mode)))
      drawn[mode] = picture_path(mode)
    except Exception as e:  # pylint: disable=broad-except
      drawn[mode] = _one_line(e)
  return {m: drawn[m] for m in modes}


def markdown(rows: list) -> list[str]:
  """The pictures section of tradeoff.md: one table line per row that has pictures (links
  relative to the table's directory), [] when no row has any."""
  with_pictures = [r for r in rows if r.get("pictures")]
  if not with_pictures:
    return []
  modes = list(PICTURES)
  lines = ["Pictures (`vapnev_tf.sample`, seed 0, the run's temperature; "
           "benchmarks/tradeoff_pictures.py says what each shows):", "",
           "| row | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
  for r in with_pictures:
    cells = []
    for mode in modes:
      value = r["pictures"].get(mode)
      if value is None:
        cells.append("—")
      elif value.startswith("error: "):
        cells.append(value.replace("|", "/"))
      else:
        cells.append(f"![{r['name']} {mode}]({r['name']}/{value})")
    lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
  return lines + [""]
