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


@pytest.mark.parametrize("n_out, n_in", [(1, 1), (1, 7), (7, 1), (5, 3), (19, 25), (38, 1200), (1200, 600),
                                         (600, 1200), (600, 3001), (1200, 13000), (13000, 38), (1601, 799)])
def test_banded_zoom_equals_the_dense_matrix(n_out, n_in, rng):
    """Up- and downscaling, 1 pixel to huge: the banded operator gives A @ x within float64 rounding
    of values of VGG's scale (the entries it leaves out are < 1e-12 of the largest)."""
    from salicon.preprocess import Zoom, zoom_matrix
    a = zoom_matrix(n_out, n_in, 3)
    zoom = Zoom(a, torch.device("cpu"), torch.float64)
    dense = torch.from_numpy(np.array(a))
    x = torch.from_numpy(rng.uniform(-128, 128, (n_in, 9)))
    y = torch.from_numpy(rng.uniform(-128, 128, (2, 4, n_in)))
    assert float((zoom.rows(x) - dense @ x).abs().max()) < 1e-6
    assert float((zoom.cols(y) - y @ dense.T).abs().max()) < 1e-6
    assert float((zoom.along(y.transpose(-1, -2), 1) - (dense @ y.transpose(-1, -2))).abs().max()) < 1e-6
    if n_in >= 4 * 105 and n_out >= 128:  # a wide input: the band saves most of the work
        assert zoom.banded and max(b[3].shape[1] for b in zoom.blocks) < n_in / 2


@pytest.mark.parametrize("height, width", [(1, 1), (3, 500), (600, 800), (901, 1203), (2000, 150)])
def test_inputs_through_the_band_equal_scipys_zoom(height, width, rng):
    """Every net input made through the banded resize equals the published scipy.ndimage.zoom call
    within 1e-5 (float32), as the dense matrices did."""
    from salicon.preprocess import image_to_inputs
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    sizes = [(120, 160), (60, 80)] if height * width > 10**6 else [(1200, 1600), (600, 800)]
    ours = image_to_inputs(rgb, sizes, "spline")
    published = image_to_inputs(rgb, sizes, "scipy")
    for a, b in zip(ours, published):
        assert float((a - b).abs().max()) < 1e-5


@pytest.mark.parametrize("n_out, n_in, order", [(120, 4500, 3), (4400, 4200, 3), (1, 4200, 3), (38, 4200, 3),
                                                (700, 4200, 1)])
def test_long_axes_build_the_same_zoom_matrix_window_by_window(n_out, n_in, order):
    from salicon.preprocess import _build_zoom_matrix, _build_zoom_matrix_local
    exact = _build_zoom_matrix(n_out, n_in, order)
    local = _build_zoom_matrix_local(n_out, n_in, order, block=512)
    np.testing.assert_allclose(local, exact, rtol=0, atol=1e-11)
