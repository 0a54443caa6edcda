"""Map pictures: 8-bit conversion, the jet colormap, overlays and thresholds."""
from __future__ import annotations

import numpy as np
import pytest

from salicon.visualize import jet, overlay, threshold_map, to_uint8


def test_to_uint8_and_threshold():
    sal = np.array([[0.0, 0.2, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(to_uint8(sal), [[0, 51, 128, 255]])
    np.testing.assert_array_equal(threshold_map(sal, 0.3), [[0, 0, 0.5, 1.0]])
    with pytest.raises(ValueError):
        threshold_map(sal, 1.5)


def test_jet_endpoints():
    colours = jet(np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(colours, [[0, 0, 128], [128, 255, 128], [128, 0, 0]])


def test_overlay_keeps_non_salient_pixels():
    image = np.full((4, 4, 3), 100, np.uint8)
    sal = np.zeros((4, 4), np.float32)
    sal[0, 0] = 1.0
    out = overlay(image, sal)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1:, 1:], image[1:, 1:])
    assert tuple(out[0, 0]) != (100, 100, 100)
    with pytest.raises(ValueError):
        overlay(image, np.zeros((3, 4)))


def test_salient_points_finds_separate_peaks_in_order():
    from salicon.visualize import salient_points

    yy, xx = np.mgrid[0:300, 0:400]
    sal = (np.exp(-((xx - 300) ** 2 + (yy - 80) ** 2) / 200.0)
           + 0.6 * np.exp(-((xx - 90) ** 2 + (yy - 200) ** 2) / 300.0)
           + 0.1 * np.exp(-((xx - 200) ** 2 + (yy - 280) ** 2) / 100.0)).astype(np.float32)
    points = salient_points(sal, count=5, min_value=0.2)
    assert [(x, y) for x, y, _ in points] == [(300, 80), (90, 200)]  # the 0.1 peak is under 0.2 x max
    assert points[0][2] == pytest.approx(1.0, abs=1e-3) and points[1][2] == pytest.approx(0.6, abs=1e-3)
    assert salient_points(np.zeros((10, 10), np.float32)) == []
    yy, xx = np.mgrid[0:2000, 0:3000]  # a huge map: searched on a 12x coarser grid
    big = np.exp(-((xx - 2500) ** 2 + (yy - 1500) ** 2) / 20000.0).astype(np.float32)
    (x, y, value), = salient_points(big)
    assert abs(x - 2500) <= 12 and abs(y - 1500) <= 12 and value == big[y, x] > 0.99
