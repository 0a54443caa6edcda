"""The ``salicon`` command: predict over files and folders, bad files, outputs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from salicon.cli import main


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(folder / "a.jpg")
    Image.fromarray((rng.random((25, 35)) * 255).astype(np.uint8)).save(folder / "b.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "readme.txt").write_text("not an image, and not picked up from the folder")
    return folder


def _predict(args, small_model, small_prototxt):
    return main(["predict", *map(str, args), "--model", str(small_model), "--prototxt", str(small_prototxt),
                 "--device", "cpu", "-q"])


def test_predict_folder_reports_bad_file_and_finishes_others(images, tmp_path, small_model, small_prototxt, capsys):
    out = tmp_path / "out"
    code = _predict([images, "-o", out, "--npy", "--overlay"], small_model, small_prototxt)
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png" in err
    a = np.asarray(Image.open(out / "a.png"))
    assert a.shape == (30, 40) and a.dtype == np.uint8 and a.max() == 255
    assert np.asarray(Image.open(out / "b.png")).shape == (25, 35)
    assert np.asarray(Image.open(out / "a_overlay.png")).shape == (30, 40, 3)
    npy = np.load(out / "a.npy")
    assert npy.dtype == np.float32 and npy.shape == (30, 40)
    np.testing.assert_array_equal(np.round(npy * 255).astype(np.uint8), a)
    assert not (out / "broken.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.png", "a_overlay.png", "b.npy", "b.png",
                                                     "b_overlay.png"]


def test_predict_good_files_exit_zero_with_threshold(images, tmp_path, small_model, small_prototxt):
    out = tmp_path / "out"
    code = _predict([images / "a.jpg", "-o", out, "--threshold", "0.5", "--npy"], small_model, small_prototxt)
    assert code == 0
    sal = np.load(out / "a.npy")
    assert (sal[(sal > 0)] >= 0.5).all() and (sal == 0).any()


def test_predict_never_overwrites_inputs(images, small_model, small_prototxt, capsys):
    before = (images / "b.png").read_bytes()
    code = _predict([images / "b.png", "-o", images], small_model, small_prototxt)
    assert code == 1
    assert "overwrite" in capsys.readouterr().err
    assert (images / "b.png").read_bytes() == before


def test_predict_name_collisions_and_missing_inputs(tmp_path, small_model, small_prototxt, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(src / "x.jpg")
    Image.new("RGB", (20, 20), (10, 10, 200)).save(src / "x.png")
    out = tmp_path / "out"
    code = _predict([src / "x.jpg", src / "x.png", tmp_path / "nope.jpg", "-o", out], small_model, small_prototxt)
    assert code == 1
    assert "nope.jpg: no such file" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.png", "x.png.png"]


def test_predict_bad_model_is_one_clear_error(images, tmp_path, small_prototxt, capsys):
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    code = main(["predict", str(images), "-o", str(tmp_path / "o"), "--model", str(bad),
                 "--prototxt", str(small_prototxt), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.caffemodel" in err and "Traceback" not in err


def test_help_and_usage_errors():
    result = subprocess.run([sys.executable, "-m", "salicon", "predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--overlay" in result.stdout and "--threshold" in result.stdout
    result = subprocess.run([sys.executable, "-m", "salicon"], capture_output=True, text=True)
    assert result.returncode == 2 and "predict" in result.stderr
    result = subprocess.run([sys.executable, "-m", "salicon", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.slow
def test_quick_start_predicts_with_the_shipped_model(tmp_path):
    """The README's quick start: no --model, an example image, map and overlay."""
    from .conftest import ROOT
    out = tmp_path / "maps"
    assert main(["predict", str(ROOT / "examples" / "astronaut.jpg"), "-o", str(out), "--overlay", "-q"]) == 0
    sal = np.asarray(Image.open(out / "astronaut.png"))
    assert sal.shape == (512, 512) and sal.max() == 255 and sal.min() == 0
    assert np.asarray(Image.open(out / "astronaut_overlay.png")).shape == (512, 512, 3)
