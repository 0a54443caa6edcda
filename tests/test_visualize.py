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
