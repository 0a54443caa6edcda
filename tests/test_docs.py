"""The documentation site: it builds with ``mkdocs build --strict`` (a broken link,
anchor or reference fails), its generated command-line reference lists every
option of every subcommand, and the guides' marked Python snippets run."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from salicon.cli.reference import markdown, subcommand_options

from .conftest import ROOT

DOCS = ROOT / "docs"
#: A ```python block right after this line is run by the tests (in a folder with the example files).
RUN_MARK = "<!-- run -->"


def test_the_cli_reference_lists_every_option_of_every_subcommand():
    reference = markdown()
    options = subcommand_options()
    assert {"predict", "evaluate", "train", "serve", "models", "export-onnx"} <= set(options)
    for command, names in options.items():
        section = reference.split(f"## `salicon {command}`", 1)[1].split("\n## `salicon ", 1)[0]
        missing = [name for name in names if f"`{name}" not in section]
        assert not missing, f"salicon {command}: {missing} are not in the reference"
    assert "`--temporal-smoothing SECONDS`" in reference and "`--token TOKEN`" in reference


def _snippets() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for block in re.findall(re.escape(RUN_MARK) + r"\n```python\n(.*?)```", text, re.S):
            found.append((page.relative_to(DOCS).as_posix(), block))
    return found


def test_the_marked_snippets_are_found():
    pages = {page for page, _ in _snippets()}
    assert {"index.md", "guides/python.md", "guides/videos.md", "guides/evaluation.md"} <= pages


@pytest.mark.parametrize("page, code", _snippets(), ids=[p for p, _ in _snippets()])
def test_a_guide_snippet_runs(tmp_path, page, code):
    for example in (ROOT / "examples").glob("*.jpg"):
        shutil.copy(example, tmp_path / example.name)
    shutil.copy(ROOT / "examples" / "astronaut.jpg", tmp_path / "photo.jpg")
    shutil.copy(ROOT / "examples" / "coffee.jpg", tmp_path / "image.jpg")
    (tmp_path / "examples").mkdir()
    for example in (ROOT / "examples").glob("*.jpg"):
        shutil.copy(example, tmp_path / "examples" / example.name)
    if "clip.mp4" in code:
        pytest.importorskip("av", reason="PyAV (the extra 'video') reads videos")
        from .videoclips import make_clip

        make_clip(tmp_path / "clip.mp4", n=12, size=(120, 160), rate=12)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{page}:\n{code}\n{result.stderr[-3000:]}"


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("material", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed: pip install -e '.[docs]'")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    cli = (site / "reference" / "cli.html").read_text()
    assert "--temporal-smoothing" in cli and "salicon serve" in cli
    assert "/api/video" in (site / "reference" / "http.html").read_text()
    assert "sha256" in (site / "models" / "salicon_osie.html").read_text()
    assert (site / "images" / "bench" / "speed.png").is_file()
    assert "Salicon" in (site / "reference" / "python.html").read_text()
    for page in site.rglob("*.html"):  # offline: nothing fetched from elsewhere
        text = page.read_text(errors="replace")
        assert not re.search(r'<(script|link)[^>]+(src|href)="https?://', text), page
