"""The pictures beside the trade-off table: what each row's latent carries, by eye
(docs/design.md §26).

    pictures = draw_row_pictures(run_dir, row_dir)   # {"panel": "pictures/panel.png", ...}

For every finished row with a latent, three figures of `vapnev_tf.sample` with seed 0 and the
run's own sampling temperature, on the first test images (the same images for every row):

  panel        36 test images | reconstructions | samples (paper Fig. 3/4)
  interpolate  8 rows of mu_y decodings along the path between two test images' z
  draws        8 test images | mu_y of z = mu_z | 8 flow-noise draws of p(x|z) at that z

They go to ROW/pictures/MODE.png. A figure already there is kept: a finished row's run does not
change, so a resumed table draws only what is missing.
"""
import os

PICTURE_DIR = "pictures"
# mode -> write_figure keyword arguments besides the source and output.
PICTURES = {
    "panel": {"num": 36},
    "interpolate": {"pairs": 8, "steps": 8},
    "draws": {"rows": 8, "per_row": 8},
}
SEED = 0
DEFAULT_TEMPERATURE = 0.8  # what vapnev_tf.latent_report uses for a config without one


def picture_path(mode: str) -> str:
  """MODE's figure relative to the row's directory."""
  return os.path.join(PICTURE_DIR, f"{mode}.png")


def draw_row_pictures(run_dir: str, row_dir: str, modes=tuple(PICTURES)) -> dict:
  """{mode: its PNG relative to `row_dir`, or "error: ..." when the figure could not be drawn} of
  the run in `run_dir` (a finished run with a latent), drawn by `vapnev_tf.sample.write_figure`
  with the run's raw weights and the temperature in its config."""
  from vapnev_tf import sample  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.join(row_dir, PICTURE_DIR), exist_ok=True)
  drawn = {}
  for mode in modes:
    relative = picture_path(mode)
    out = os.path.join(row_dir, relative)
    if not os.path.exists(out):
      try:
        sample.write_figure(out, mode, workdir=run_dir, seed=SEED,
                            temperature=_run_temperature(run_dir), **PICTURES[mode])
      except (ValueError, OSError) as e:
        drawn[mode] = f"error: {e}"
        continue
    drawn[mode] = relative
  return drawn


def _run_temperature(run_dir: str) -> float:
  """The run's `sample_temperature` (its config.json), the temperature its latent figures used."""
  from vapnev_tf import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  train_section = workdir_lib.read_config(run_dir).get("train", {})
  return float(train_section.get("sample_temperature", DEFAULT_TEMPERATURE))


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
