"""The wheels: the package and each model distribution build, stay under the
package index's 100 MB per-file limit, install into a fresh virtual
environment, and predict with every model outside the source tree."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
#: The package index's usual limit on one file.
INDEX_LIMIT = 100 * 2**20
MODEL_DISTRIBUTIONS = sorted(p.parent for p in (ROOT / "models").glob("*/pyproject.toml"))


def test_every_model_distribution_holds_a_record_and_the_files_it_names():
    from salicon.pretrained import model_records
    assert MODEL_DISTRIBUTIONS, "no model distribution under models/"
    records = model_records()
    for folder in MODEL_DISTRIBUTIONS:
        packages = [p.parent for p in folder.glob("*/__init__.py")]
        assert len(packages) == 1, f"{folder}: one package expected"
        for path in packages[0].glob("*.json"):
            record = records[path.stem]
            assert record.folder.resolve() == packages[0].resolve()
            assert record.distribution == re.search(r'^name = "(.+)"', (folder / "pyproject.toml").read_text(), re.M)[1]
            assert (packages[0] / record.weights_file).is_file()
            for entry in record.derived_files.values():
                assert (packages[0] / entry["file"]).is_file()
            if record.prototxt:
                assert (packages[0] / record.prototxt).is_file() or (ROOT / "prototxt" / record.prototxt).is_file()


@pytest.mark.slow
def test_wheels_install_into_a_fresh_environment_and_predict_with_every_model(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(ROOT), *map(str, MODEL_DISTRIBUTIONS)], check=True, cwd=tmp_path)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 1 + len(MODEL_DISTRIBUTIONS)
    for wheel in built:
        assert wheel.stat().st_size < INDEX_LIMIT, f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB"

    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    *map(str, built)], check=True)
    # The dependencies (torch, OpenVINO, ...) come from this environment's site-packages, read after the
    # new environment's own: no .pth of this environment is run there, so its editable install of the
    # package stays out and the wheels' copies are the ones imported.
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(work / "a.jpg")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(env / "bin" / "salicon"), *args], cwd=work, env=clean, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([str(python), "-c", "import salicon; print(salicon.__file__)"], cwd=work, env=clean,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(env), where
    listed = run("models", "--json")
    assert listed.returncode == 0, listed.stderr
    models = {m["name"]: m for m in json.loads(listed.stdout)}
    assert {"salicon_osie", "salicon_osie_fast"} <= set(models)
    for name in models:
        done = run("predict", "a.jpg", "-o", f"out_{name}", "--model", name, "-q")
        assert done.returncode == 0, done.stderr
        saliency = np.asarray(Image.open(work / f"out_{name}" / "a.png"))
        assert saliency.shape == (120, 160) and saliency.std() > 0
