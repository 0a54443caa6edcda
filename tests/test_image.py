"""Image loading: the accepted forms of an image, and clear errors for the rest."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from salicon import ImageError, Salicon, load_image

from .test_cli import _png_header_only


@pytest.mark.parametrize("source, expected", [
    ([[1, 2], [3, 4]], "cannot read an image from a list"),
    (None, "cannot read an image from a NoneType"),
    (3.5, "cannot read an image from a float"),
    (b"abc", "<3 bytes>: not an image file"),
    (b"", "empty data"),
])
def test_unreadable_sources_raise_image_error(source, expected):
    with pytest.raises(ImageError, match=expected):
        load_image(source)


def test_encoded_bytes_are_an_image(small_model, small_prototxt):
    rgb = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(load_image(buffer.getvalue()), rgb.astype(np.float32))
    model = Salicon(small_model, small_prototxt, device="cpu")
    from_bytes = model.compute_saliency(buffer.getvalue())
    np.testing.assert_array_equal(from_bytes, model.compute_saliency(rgb))
    with pytest.raises(ImageError, match="cannot read an image from a list"):
        model.compute_saliency([[1, 2], [3, 4]])


def test_uint8_loading_keeps_eight_bits(tmp_path):
    rgb = (np.random.default_rng(1).random((10, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png", as_float=False)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    assert load_image(tmp_path / "a.png").dtype == np.float32


def test_pixel_limit_is_checked_before_decoding_and_can_be_lifted(tmp_path, monkeypatch):
    # PIL's own default (a load_image(max_pixels=None) earlier in the process lifts it); restored afterwards
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))
    path = tmp_path / "huge.png"
    _png_header_only(path, 30000, 30000)
    with pytest.raises(ImageError, match="900.0 megapixels exceeds the limit of 179.0 megapixels"):
        load_image(path)
    with pytest.raises(ImageError, match=r"900.0 megapixels\)? exceeds the limit of 500.0"):
        load_image(path, max_pixels=500_000_000)
    # lifted: the limit no longer applies and decoding itself fails (the file has no pixel data)
    with pytest.raises(ImageError, match="cannot decode the image"):
        load_image(path, max_pixels=None)


def test_name_and_uint8_passthrough():
    from salicon.errors import ImageTooLargeError

    with pytest.raises(ImageError, match="upload.jpg: not an image file"):
        load_image(b"plain text", name="upload.jpg")
    rgb = np.zeros((4, 5, 3), np.uint8)
    assert load_image(rgb, as_float=False) is rgb  # no copy for what the net's preprocessing reads
    assert load_image(rgb).dtype == np.float32
    buf = io.BytesIO()
    Image.new("L", (300, 200)).save(buf, format="PNG")
    with pytest.raises(ImageTooLargeError, match="big.png: 300x200 pixels"):
        load_image(buf.getvalue(), max_pixels=50_000, name="big.png")


def test_huge_images_are_copied_out_of_pil_in_strips(monkeypatch, tmp_path):
    import salicon.image as image_module
    pixels = np.random.default_rng(0).integers(0, 256, (103, 71, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    monkeypatch.setattr(image_module, "_STRIP_PIXELS", 700)  # strips of 700 // 16 // 71 = 1 row... at least 1
    strips = []
    real = image_module._rgb_in_strips
    monkeypatch.setattr(image_module, "_rgb_in_strips", lambda img: strips.append(img.size) or real(img))
    out = load_image(tmp_path / "a.png", as_float=False)
    assert strips == [(71, 103)] and out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, pixels)


def test_huge_images_can_be_read_a_band_of_rows_at_a_time(monkeypatch, tmp_path):
    import salicon.image as image_module
    from salicon.image import RowReader, load_image_rows
    pixels = np.random.default_rng(1).integers(0, 256, (61, 47, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    small = load_image_rows(tmp_path / "a.png")
    assert isinstance(small, np.ndarray)
    monkeypatch.setattr(image_module, "_STRIP_PIXELS", 100)
    rows = load_image_rows(tmp_path / "a.png")
    assert isinstance(rows, RowReader) and rows.shape == (61, 47, 3)
    np.testing.assert_array_equal(np.concatenate([rows[r:r + 10] for r in range(0, 61, 10)]), small)
    np.testing.assert_array_equal(rows[5:9], load_image(tmp_path / "a.png", as_float=False)[5:9])
    with pytest.raises(ImageError, match="no such image file"):
        load_image_rows(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageError, match="not an image file"):
        load_image_rows(tmp_path / "bad.png")
