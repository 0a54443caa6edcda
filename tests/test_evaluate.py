"""salicon evaluate: scores, baselines, outputs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from salicon.cli import main
from salicon.data import OSIEDataset, open_dataset
from salicon.evaluate import center_bias, evaluate, load_ground_truth, other_fixations, read_split

from .conftest import SHARED

OSIE = SHARED / "data" / "osie"
needs_osie = pytest.mark.skipif(not (OSIE / "fixations.mat").exists(), reason=f"OSIE not found at {OSIE}")


@pytest.fixture
def dataset_dir(tmp_path):
    """images/, maps/ (blurred) and fixations/ (point images) for 6 images whose
    fixations cluster on a bright square off the centre."""
    rng = np.random.default_rng(0)
    for sub in ("images", "maps", "fixations"):
        (tmp_path / sub).mkdir()
    yy, xx = np.mgrid[:60, :80]
    for i in range(6):
        cy, cx = rng.integers(10, 50), rng.integers(10, 70)
        img = np.full((60, 80, 3), 40, np.uint8)
        img[cy - 5:cy + 5, cx - 5:cx + 5] = 250
        Image.fromarray(img).save(tmp_path / "images" / f"s{i}.png")
        pts = np.zeros((60, 80), np.uint8)
        pts[np.clip(cy + rng.integers(-4, 5, 12), 0, 59), np.clip(cx + rng.integers(-4, 5, 12), 0, 79)] = 255
        Image.fromarray(pts).save(tmp_path / "fixations" / f"s{i}.png")
        fmap = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0 ** 2))
        Image.fromarray(np.round(fmap * 255).astype(np.uint8)).save(tmp_path / "maps" / f"s{i}.png")
    return tmp_path


def test_center_bias_shape_and_peak():
    cb = center_bias((60, 80))
    assert cb.shape == (60, 80) and cb.max() == pytest.approx(np.exp(-0.5 * (0.5 / 15) ** 2 - 0.5 * (0.5 / 20) ** 2))
    np.testing.assert_allclose(cb, cb[::-1, ::-1])  # symmetric about the centre


def test_other_fixations_rescale(dataset_dir):
    ds = open_dataset(dataset_dir)
    truths = [load_ground_truth(ds, s) for s in ds.samples]
    other = other_fixations(truths, 0, np.random.default_rng(0), n_others=5)
    expected = np.zeros_like(other)
    for t in truths[1:]:
        expected |= t.binary
    np.testing.assert_array_equal(other, expected)  # same size: the union of the other 5 images


def test_good_predictions_beat_the_centre_bias(dataset_dir):
    ds = open_dataset(dataset_dir)
    truths = {s.name: load_ground_truth(ds, s) for s in ds.samples}
    result = evaluate(ds, lambda sample: truths[sample.name].density, model_name="oracle")
    summary = result.summary()
    assert set(summary) == {"oracle", "center_bias"}  # no per-subject data: no inter-observer row
    for metric in ("AUC_Judd", "AUC_Borji", "sAUC", "NSS", "CC", "SIM", "IG"):
        assert summary["oracle"][metric]["mean"] > summary["center_bias"][metric]["mean"], metric
    for metric in ("KLDiv", "EMD"):
        assert summary["oracle"][metric]["mean"] < summary["center_bias"][metric]["mean"], metric
    assert summary["oracle"]["CC"]["mean"] == pytest.approx(1.0)
    assert summary["oracle"]["NSS"]["n"] == 6


def test_cli_evaluate_writes_csv_json_pictures(dataset_dir, tmp_path, capsys):
    maps = tmp_path / "preds"
    maps.mkdir()
    for f in (dataset_dir / "maps").iterdir():
        np.save(maps / f"{f.stem}.npy", np.asarray(Image.open(f), float))
    out = tmp_path / "eval"
    code = main(["evaluate", "--dataset", f"folder:{dataset_dir}", "--saliency-maps", str(maps), "--out", str(out),
                 "--pictures", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "AUC_Judd" in printed and "center_bias" in printed and "preds" in printed
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 12 and {r["model"] for r in rows} == {"preds", "center_bias"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preds"]["CC"]["mean"] > 0.99
    assert Image.open(out / "histograms.png").size[0] > 0 and Image.open(out / "contact_sheet.png").size[0] > 0
    split = tmp_path / "split.txt"
    split.write_text("s1\ns3  # two images\n")
    assert read_split(split) == ["s1", "s3"]
    code = main(["evaluate", "--dataset", str(dataset_dir), "--baselines-only", "--split", str(split),
                 "--metrics", "NSS,CC", "--out", str(tmp_path / "e2"), "-q"])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "e2" / "per_image.csv")))
    assert [r["image"] for r in rows] == ["s1", "s3"] and set(rows[0]) == {"image", "model", "NSS", "CC"}
    assert main(["evaluate", "--dataset", str(dataset_dir), "--metrics", "NSS,Foo", "-q"]) == 2


@needs_osie
def test_osie_baselines_match_published_ranges():
    ds = OSIEDataset(OSIE)
    names = ds.names()[:100]
    result = evaluate(ds, None, names, metrics=("AUC_Judd", "NSS", "CC"))
    s = result.summary()
    assert 0.735 <= s["center_bias"]["AUC_Judd"]["mean"] <= 0.755
    assert 0.83 <= s["center_bias"]["NSS"]["mean"] <= 0.92
    assert 0.29 <= s["center_bias"]["CC"]["mean"] <= 0.34
    assert 0.92 <= s["inter_observer"]["AUC_Judd"]["mean"] <= 0.96


def test_evaluate_fails_when_the_model_scores_no_image(dataset_dir, tmp_path, capsys):
    empty = tmp_path / "maps_empty"
    empty.mkdir()
    (empty / "s0.npy").write_bytes(b"garbage, not a .npy")  # unreadable
    code = main(["evaluate", "--dataset", f"folder:{dataset_dir}", "--saliency-maps", str(empty),
                 "--out", str(tmp_path / "e"), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "s0.npy: not a readable .npy saliency map" in err
    assert "no saliency map for image 's1'" in err
    assert "maps_empty: no image could be scored (6 failed)" in err
    code = main(["evaluate", "--dataset", f"folder:{dataset_dir}", "--saliency-maps", str(tmp_path / "nonexist"),
                 "--out", str(tmp_path / "e"), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "nonexist: no such folder" in err


def test_evaluate_partial_failure_is_reported_and_nonzero(dataset_dir, tmp_path, capsys):
    maps = tmp_path / "preds"
    maps.mkdir()
    for f in sorted((dataset_dir / "maps").iterdir())[:4]:
        np.save(maps / f"{f.stem}.npy", np.asarray(Image.open(f), float))
    code = main(["evaluate", "--dataset", f"folder:{dataset_dir}", "--saliency-maps", str(maps),
                 "--out", str(tmp_path / "e"), "-q", "--metrics", "CC"])
    assert code == 1
    assert "2 of 6 image(s) could not be scored" in capsys.readouterr().err
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["preds"]["CC"]["n"] == 4


def test_evaluate_says_which_metrics_cannot_be_computed(dataset_dir, tmp_path, capsys):
    import shutil
    shutil.rmtree(dataset_dir / "fixations")  # maps only: no fixation points
    maps = tmp_path / "preds"
    maps.mkdir()
    for f in (dataset_dir / "maps").iterdir():
        np.save(maps / f"{f.stem}.npy", np.asarray(Image.open(f), float))
    args = ["evaluate", "--dataset", f"folder:{dataset_dir}", "--saliency-maps", str(maps), "-q"]
    assert main(args + ["--metrics", "NSS,CC", "--out", str(tmp_path / "e1")]) == 1  # NSS asked for by name
    err = capsys.readouterr().err
    assert "metric NSS cannot be computed" in err and "fixation points" in err
    assert "CC" in json.loads((tmp_path / "e1" / "summary.json").read_text())["preds"]
    assert main(args + ["--metrics", "NSS", "--out", str(tmp_path / "e2")]) == 1
    assert "none of the requested metrics" in capsys.readouterr().err
    # the default metric list: the location metrics are noted, the others scored, exit 0
    assert main(args + ["--metrics", "CC,SIM", "--out", str(tmp_path / "e3")]) == 0


def test_unknown_dataset_kind_is_named():
    from salicon.data import DataError
    with pytest.raises(DataError, match="unknown data set kind 'bogus'.*osie, folder, mit1003, cat2000, salicon"):
        open_dataset("bogus:small")
