"""The fast spline resize against scipy.ndimage.zoom, and the input blob."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from salicon.preprocess import MEAN_BGR, image_to_blob, resize_chw, saliency_to_image_size


@pytest.mark.parametrize("src, dst", [((600, 800), (1200, 1600)), ((37, 53), (60, 80)), ((38, 50), (600, 800)),
                                      ((90, 120), (45, 61)), ((1100, 30), (120, 160))])
def test_spline_resize_equals_scipy_zoom(src, dst, rng):
    x = rng.uniform(-0.5, 0.5, (3,) + src)
    factors = (1.0, dst[0] / src[0], dst[1] / src[1])
    expected = scipy.ndimage.zoom(x, factors, order=3, mode="nearest")
    assert expected.shape[1:] == dst
    got = resize_chw(torch.from_numpy(x).float(), dst, "spline").numpy()
    np.testing.assert_allclose(got, expected, atol=2e-6)
    np.testing.assert_allclose(resize_chw(torch.from_numpy(x), dst, "scipy").numpy(), expected, atol=1e-12)


def test_bilinear_resize_equals_zoom_order1(rng):
    x = rng.standard_normal((2, 19, 25))
    expected = scipy.ndimage.zoom(x, (1, 2, 2), order=1, mode="nearest")
    np.testing.assert_allclose(resize_chw(torch.from_numpy(x), (38, 50), "bilinear").numpy(), expected, atol=1e-12)


def test_image_to_blob_is_bgr_minus_mean_scaled(rng):
    rgb = rng.uniform(0, 255, (4, 5, 3)).astype(np.float32)
    blob = image_to_blob(rgb, input_scale=1 / 255).numpy()
    expected = (rgb[:, :, ::-1].transpose(2, 0, 1) - np.array(MEAN_BGR)[:, None, None]) / 255
    np.testing.assert_allclose(blob, expected, rtol=1e-5, atol=1e-7)


def test_saliency_to_image_size_normalises_and_clips(rng):
    sal = torch.from_numpy(rng.random((38, 50)) * 3 + 7)
    out = saliency_to_image_size(sal, (600, 800))
    assert out.shape == (600, 800) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    norm = (sal.numpy() - sal.numpy().min()) / np.ptp(sal.numpy())
    expected = scipy.ndimage.zoom(norm, (600 / 38, 800 / 50), order=3, mode="nearest")
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-5)
    with pytest.raises(FloatingPointError):
        saliency_to_image_size(torch.tensor([[0.0, float("nan")]]), (4, 4))
