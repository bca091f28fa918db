"""The repository stands alone: no file cites material outside it."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
_OUTSIDE = re.compile(r"\.\./shared|(?<![A-Za-z_])NOTES \d|STYLE habit|STYLE\.md")
_SECTION = re.compile(r"docs/design\.md §(\d+)")


def _tracked_text_files():
  for pattern in ("vapnev_tf/**/*.py", "tests/**/*.py", "benchmarks/**/*.py", "configs/*.flags",
                  "*.md", "docs/*.md", "benchmarks/results/**/*.md", "setup.py", "Makefile"):
    yield from ROOT.glob(pattern)


def test_no_file_cites_material_outside_the_repository():
  offenders = []
  for path in _tracked_text_files():
    if path.name == "test_repository.py":
      continue
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
      if _OUTSIDE.search(line):
        offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
  assert not offenders, "references to files outside the repository:\n" + "\n".join(offenders)


def test_every_cited_design_section_exists():
  design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
  sections = {int(n) for n in re.findall(r"^## §(\d+) ", design, flags=re.M)}
  missing = []
  for path in _tracked_text_files():
    for number in _SECTION.findall(path.read_text(encoding="utf-8")):
      if int(number) not in sections:
        missing.append(f"{path.relative_to(ROOT)} cites §{number}")
  assert sections and not missing, missing
