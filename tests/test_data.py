"""Data set loaders and fixation maps."""
from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.io
from PIL import Image

from salicon.data import (
    CAT2000Dataset,
    DataError,
    MIT1003Dataset,
    OSIEDataset,
    SALICONDataset,
    open_dataset,
    prepare,
    split_names,
)
from salicon.fixations import Fixations, binary_fixation_map, fixation_density, gaussian_window, training_target

from .conftest import SHARED

OSIE = SHARED / "data" / "osie"
needs_osie = pytest.mark.skipif(not (OSIE / "fixations.mat").exists(), reason=f"OSIE not found at {OSIE}")


def test_fixation_density_equals_matlab_imfilter_by_hand(rng):
    """imfilter(binary, fspecial('gaussian', n, sigma)) with zero padding, for an
    even and an odd window, computed directly from the definition."""
    h, w = 30, 40
    fix = Fixations(rng.uniform(-0.4, w - 0.6, 20), rng.uniform(-0.4, h - 0.6, 20), np.zeros(20, int))
    binary = binary_fixation_map(fix, (h, w)).astype(float)
    for n, sigma in ((8, 3.0), (9, 2.0)):
        g = gaussian_window(sigma, n)
        kernel = np.outer(g, g)
        c = (n + 1) // 2 - 1  # MATLAB's centre floor((n+1)/2), 0-based
        padded = np.pad(binary, ((c, n - 1 - c), (c, n - 1 - c)))
        direct = np.array([[np.sum(kernel * padded[i:i + n, j:j + n]) for j in range(w)] for i in range(h)])
        direct = (direct - direct.min()) / np.ptp(direct)
        np.testing.assert_allclose(fixation_density(fix, (h, w), sigma, n), direct, atol=1e-12)


def test_fixated_pixels_round_half_up_and_clip():
    fix = Fixations(np.array([0.5, 1.49, -3.0, 99.0, 0.5]), np.array([0.5, 0.5, 2.0, 2.0, 0.5]), np.zeros(5))
    binary = binary_fixation_map(fix, (3, 4))
    assert set(zip(*np.nonzero(binary))) == {(1, 1), (1, 1), (2, 0), (2, 3)}


def test_training_target_area_average():
    fmap = np.zeros((4, 6))
    fmap[:2, :3] = 1.0
    fmap[2:, 3:] = 0.5
    np.testing.assert_allclose(training_target(fmap, (2, 2)), [[1.0, 0.0], [0.0, 0.5]])


def test_split_is_seeded_and_disjoint():
    names = [f"im{i}" for i in range(20)]
    a = split_names(names, 5, seed=1)
    assert a == split_names(names, 5, seed=1) and a != split_names(names, 5, seed=2)
    assert len(a[1]) == 5 and not set(a[0]) & set(a[1]) and sorted(a[0] + a[1]) == sorted(names)
    assert len(split_names(names, 0.25, seed=0)[1]) == 5
    with pytest.raises(DataError):
        split_names(names, 20, seed=0)


def _img(path, size=(32, 24), value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 50, 200)).save(path)


def test_mit1003_layout(tmp_path):
    (tmp_path / "ALLFIXATIONMAPS").mkdir()
    for name in ("i1", "i2"):
        _img(tmp_path / "ALLSTIMULI" / f"{name}.jpeg")
        Image.fromarray(np.full((24, 32), 128, np.uint8)).save(tmp_path / "ALLFIXATIONMAPS" / f"{name}_fixMap.jpg")
        pts = np.zeros((24, 32), np.uint8)
        pts[5, 7] = 255
        Image.fromarray(pts).save(tmp_path / "ALLFIXATIONMAPS" / f"{name}_fixPts.jpg", quality=100)
    ds = open_dataset(tmp_path)
    assert isinstance(ds, MIT1003Dataset) and ds.names() == ["i1", "i2"]
    binary, density = ds.ground_truth(ds.samples[0], (24, 32))
    assert binary[5, 7] and binary.sum() == 1 and density.shape == (24, 32)


def test_cat2000_layout(tmp_path):
    for cat in ("Action", "Art"):
        _img(tmp_path / "Stimuli" / cat / "001.jpg")
        (tmp_path / "FIXATIONMAPS" / cat).mkdir(parents=True)
        Image.fromarray(np.full((24, 32), 90, np.uint8)).save(tmp_path / "FIXATIONMAPS" / cat / "001.jpg")
        locs = np.zeros((24, 32))
        locs[3, 4] = 1
        (tmp_path / "FIXATIONLOCS" / cat).mkdir(parents=True)
        scipy.io.savemat(tmp_path / "FIXATIONLOCS" / cat / "001.mat", {"fixLocs": locs})
    ds = open_dataset(tmp_path)
    assert isinstance(ds, CAT2000Dataset) and ds.names() == ["Action/001", "Art/001"]
    binary, _ = ds.ground_truth(ds.samples[1], (24, 32))
    assert binary[3, 4] and binary.sum() == 1


def test_salicon_layout(tmp_path):
    _img(tmp_path / "images" / "COCO_1.jpg")
    gaze = np.zeros((2,), dtype=[("location", object), ("timestamp", object), ("fixations", object)])
    gaze[0] = (np.zeros((0, 2)), np.zeros(0), np.array([[5, 3], [10, 12]]))   # (x, y), 1-based
    gaze[1] = (np.zeros((0, 2)), np.zeros(0), np.array([[32, 24]]))
    (tmp_path / "fixations").mkdir()
    scipy.io.savemat(tmp_path / "fixations" / "COCO_1.mat",
                     {"gaze": gaze, "image": "COCO_1", "resolution": np.array([24, 32])})
    ds = open_dataset(tmp_path)
    assert isinstance(ds, SALICONDataset) and ds.sigma == 19.0
    fix = ds.samples[0].fixations
    np.testing.assert_array_equal(fix.x, [4, 9, 31])
    np.testing.assert_array_equal(fix.y, [2, 11, 23])
    np.testing.assert_array_equal(fix.subject, [0, 0, 1])
    binary, _ = ds.ground_truth(ds.samples[0], (24, 32))
    assert binary[2, 4] and binary[11, 9] and binary[23, 31]


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="not a data folder"):
        open_dataset(tmp_path / "stuff")
    with pytest.raises(DataError, match="no such data folder"):
        open_dataset(tmp_path / "absent")
    with pytest.raises(DataError, match="not an MIT1003 folder"):
        open_dataset(f"mit1003:{tmp_path / 'stuff'}")


@needs_osie
def test_osie_loader():
    ds = OSIEDataset(OSIE)
    assert len(ds) == 700 and ds.names()[0] == "1001"
    assert sum(len(s.fixations) for s in ds.samples) == 98321
    counts = [len(s.fixations) for s in ds.samples]
    assert min(counts) == 111 and max(counts) == 179
    assert all(np.unique(s.fixations.subject).size == 15 for s in ds.samples[:20])
    binary, density = ds.ground_truth(ds.samples[0], (600, 800))
    assert density.min() == 0 and density.max() == 1 and binary.sum() > 50
    assert density[binary].mean() > density.mean() * 2


@needs_osie
def test_osie_preparation_is_fast():
    ds = OSIEDataset(OSIE)
    start = time.perf_counter()
    prepared = prepare(ds, ds.samples[:40], (38, 50))
    per_image = (time.perf_counter() - start) / 40
    assert len(prepared) == 40 and prepared[0].image.dtype == np.uint8 and prepared[0].target.shape == (38, 50)
    assert per_image < 0.3  # 700 images well under 2 minutes on 2 cores
