"""The README's quick start: what a new user runs first must work on a fresh clone."""
from __future__ import annotations

import re
import sys

from .conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

README = (ROOT / "README.md").read_text()


def _quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_installs_the_test_extras():
    setup, run = _quick_start_commands()
    assert "python3 -m venv .venv" in setup and 'pip install -e ".[test]"' in setup
    assert "torch==" in setup  # the CPU-friendly pin before the package, so no other torch is pulled in
    assert run.startswith("salicon predict ") and "--model" not in run
    image = run.split()[2]
    assert (ROOT / image).is_file(), f"the quick start's image {image} is not in the repository"
    shown = re.search(r"!\[[^\]]*\]\(([^)]+overlay[^)]*)\)", README).group(1)
    assert (ROOT / shown).is_file()


def test_test_extras_hold_pytest_and_the_export_runtimes():
    text = (ROOT / "pyproject.toml").read_text()
    if tomllib is None:
        assert "pytest" in text
        return
    extras = tomllib.loads(text)["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[<>=\[ ]", e, maxsplit=1)[0].lower() for e in extras}
    assert {"pytest", "onnx", "onnxruntime"} <= names


def test_test_command_is_one_line_and_api_example_needs_no_paths():
    assert "```bash\npython -m pytest -q\n```" in README
    api = README.split("## Python API", 1)[1].split("```", 2)[1]
    assert "Salicon()" in api and "prototxtpath=" not in api
