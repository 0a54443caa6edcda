"""The README: short, what a new user runs first works on a fresh clone, and its links lead somewhere."""
from __future__ import annotations

import re
import sys

from .conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _block(section: str, language: str = "bash") -> list[str]:
    block = re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 200


def test_install_is_one_line_with_the_torch_pin_and_the_test_extras():
    (setup,) = _block(_section("Install"))
    assert "python3 -m venv .venv" in setup and 'pip install -e ".[test]"' in setup
    assert "torch==" in setup.split('pip install -e')[0]  # the pin before the package: no other torch is pulled in


def test_quick_start_runs_on_a_file_of_the_repository():
    first = _block(_section("Quick start"))[0].split("#")[0].strip()
    assert first.startswith("salicon predict ") and "--model" not in first
    assert (ROOT / first.split()[2]).is_file(), f"the quick start's image {first.split()[2]} is not in the repository"
    python = "\n".join(_block(_section("Quick start"), "python"))
    assert "Salicon()" in python and "prototxtpath=" not in python
    for path in re.findall(r'"([\w/]+\.\w+)"', python):
        assert (ROOT / path).is_file(), path
    shown = re.search(r"!\[[^\]]*\]\(([^)]+overlay[^)]*)\)", README).group(1)
    assert (ROOT / shown).is_file()


def test_relative_links_lead_to_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"


def test_test_extras_hold_pytest_and_the_export_runtimes():
    text = (ROOT / "pyproject.toml").read_text()
    if tomllib is None:
        assert "pytest" in text
        return
    extras = tomllib.loads(text)["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[<>=\[ ]", e, maxsplit=1)[0].lower() for e in extras}
    assert {"pytest", "onnx", "onnxruntime", "av"} <= names


def test_test_command_is_one_line():
    assert "```bash\npython -m pytest -q\n```" in README
