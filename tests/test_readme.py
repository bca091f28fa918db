"""The README's API snippet runs as printed."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippet_runs_as_printed(capsys):
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert blocks, "README.md has no python snippet"
  namespace = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # pylint: disable=exec-used
  out = capsys.readouterr().out
  assert "ELBO bits/dim" in out and "IW   bits/dim" in out
  assert namespace["uint8_images"].shape == (8, 28, 28, 1)
  assert namespace["log_px"].shape == (4,)
