"""The README's API snippets run as printed."""
import pathlib
import re

import tensorflow as tf

import vapnev_tf
from vapnev_tf import workdir as workdir_lib

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _section_snippet(heading: str) -> str:
  """The first ```python block after the README heading `## {heading}`."""
  text = README.read_text()
  start = text.index(f"\n## {heading}\n")
  blocks = re.findall(r"```python\n(.*?)```", text[start:], flags=re.S)
  assert blocks, f"README.md section {heading!r} has no python snippet"
  return blocks[0]


def test_readme_python_snippet_runs_as_printed(capsys):
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert blocks, "README.md has no python snippet"
  namespace = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # pylint: disable=exec-used
  out = capsys.readouterr().out
  assert "ELBO bits/dim" in out and "IW   bits/dim" in out
  assert namespace["uint8_images"].shape == (8, 28, 28, 1)
  assert namespace["log_px"].shape == (4,)


def test_loading_a_trained_run_snippet_runs_as_printed(tmp_path, monkeypatch, capsys):
  """"Loading a trained run", on a tiny run directory made here at the snippet's path."""
  cfg = vapnev_tf.ModelConfig(image_shape=(8, 8, 1), latent_dim=4, encoder_filters=4,
                              encoder_blocks=2, flow_filters=4, flow_checkerboard=1,
                              flow_channelwise=1)
  workdir = tmp_path / "runs" / "quick"
  workdir.mkdir(parents=True)
  workdir_lib.write_json_atomic(str(workdir / "config.json"),
                                {"model": cfg.to_dict(), "data": {}, "train": {}})
  trained = vapnev_tf.VAPNEV(cfg)
  for v in trained.trainable_variables:
    v.assign_add(0.01 * tf.ones_like(v))
  tf.train.CheckpointManager(tf.train.Checkpoint(model=trained, step=tf.Variable(3, tf.int64)),
                             str(workdir / "checkpoints"), max_to_keep=1).save(3)
  monkeypatch.chdir(tmp_path)
  namespace = {}
  snippet = _section_snippet("Loading a trained run")
  exec(compile(snippet, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert "at step 3" in capsys.readouterr().out
  assert namespace["info"]["step"] == 3 and namespace["info"]["skipped"] == []
  assert namespace["images"].shape == (4, 8, 8, 1) and namespace["images"].dtype == tf.uint8
  for restored, original in zip(namespace["model"].weights, trained.weights):
    assert (restored.numpy() == original.numpy()).all()
