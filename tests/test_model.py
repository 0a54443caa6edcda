"""Salicon.compute_saliency end to end, against the published pipeline
re-implemented here with scipy, and on the many forms an image takes."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from salicon import Salicon
from salicon.engine import Net
from salicon.errors import EngineError, ImageError, SaliconError

from .conftest import PROTOTXT

MEAN_BGR = np.array([103.939, 116.779, 123.68])


def published_compute_saliency(net: Net, path) -> np.ndarray:
    """OpenSALICON's Salicon.compute_saliency (float64 mean, /255, scipy zoom
    order 3 with float32 zoom factors), run on our engine's net."""
    im = np.array(Image.open(path), dtype=np.float32)
    im = np.transpose(im, (2, 0, 1))[::-1, :, :]
    im = (im - MEAN_BGR[:, None, None])[None] / 255
    feeds = {}
    for name, shape in net.input_shapes.items():
        factors = tuple(np.array(shape, dtype=np.float32) / np.asarray(im.shape, dtype=np.float32))
        feeds[name] = scipy.ndimage.zoom(im, factors, np.dtype(np.float32), mode="nearest")
        assert feeds[name].shape == shape
    with torch.no_grad():
        sal = net(**{k: torch.from_numpy(v) for k, v in feeds.items()})["saliency_map_out"].numpy()[0, 0]
    sal = sal - sal.min()
    sal = sal / sal.max()
    factors = tuple(np.asarray(im.shape[2:], dtype=np.float32) / np.asarray(sal.shape, dtype=np.float32))
    return scipy.ndimage.zoom(sal, factors, np.dtype(np.float32), mode="nearest")


@pytest.fixture(scope="module")
def photo(tmp_path_factory, ) -> str:
    from skimage import data
    path = tmp_path_factory.mktemp("img") / "coffee.png"
    Image.fromarray(data.coffee()[::4, ::4][:90, :120]).save(path)  # 90x120 RGB
    return str(path)


@pytest.fixture(scope="module")
def model(small_model, small_prototxt) -> Salicon:
    return Salicon(small_model, small_prototxt, device="cpu")


def test_matches_published_pipeline(model, small_model, small_prototxt, photo):
    reference = published_compute_saliency(Net(small_prototxt, small_model), photo)
    ours = model.compute_saliency(photo)
    assert ours.shape == (90, 120) and ours.dtype == np.float32
    assert 0.0 <= ours.min() and ours.max() <= 1.0
    np.testing.assert_allclose(ours, np.clip(reference, 0, 1), atol=1e-4)
    exact = Salicon(small_model, small_prototxt, device="cpu", resize="scipy").compute_saliency(photo)
    np.testing.assert_allclose(exact, np.clip(reference, 0, 1), atol=1e-4)


def test_input_forms_agree(model, photo):
    from_path = model.compute_saliency(photo)
    rgb = np.asarray(Image.open(photo))
    np.testing.assert_allclose(model.compute_saliency(rgb), from_path, atol=1e-6)
    np.testing.assert_allclose(model.compute_saliency(Image.open(photo)), from_path, atol=1e-6)
    np.testing.assert_allclose(model.compute_saliency(rgb.astype(np.float32)), from_path, atol=1e-6)


def test_image_modes(model, photo, tmp_path):
    rgb = Image.open(photo)
    gray = rgb.convert("L")
    gray_map = model.compute_saliency(gray)
    assert gray_map.shape == (90, 120)
    np.testing.assert_allclose(model.compute_saliency(np.asarray(gray)), gray_map, atol=1e-6)
    # 16-bit grayscale PNG: values x257 of the 8-bit ones give the same map.
    g16 = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    g16.save(tmp_path / "g16.png")
    np.testing.assert_allclose(model.compute_saliency(tmp_path / "g16.png"), gray_map, atol=1e-4)
    # Opaque RGBA equals RGB; a palette image decodes to its colours.
    rgba = rgb.convert("RGBA")
    rgba.save(tmp_path / "rgba.png")
    np.testing.assert_allclose(model.compute_saliency(tmp_path / "rgba.png"), model.compute_saliency(rgb), atol=1e-6)
    pal = rgb.convert("P")
    pal.save(tmp_path / "pal.png")
    np.testing.assert_allclose(model.compute_saliency(tmp_path / "pal.png"), model.compute_saliency(pal.convert("RGB")),
                               atol=1e-6)
    # Transparent pixels are composited over white.
    clear = np.asarray(rgba).copy()
    clear[..., 3] = 0
    white = np.full((90, 120, 3), 255, np.uint8)
    np.testing.assert_allclose(model.compute_saliency(clear), model.compute_saliency(white), atol=1e-6)


def test_exif_rotated_image_gives_upright_map(model, photo, tmp_path):
    img = Image.open(photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displayed rotated 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    sal = model.compute_saliency(tmp_path / "rot.jpg")
    assert sal.shape == (120, 90)
    upright = img.transpose(Image.Transpose.ROTATE_270)
    upright.save(tmp_path / "upright.jpg", quality=95)
    assert np.corrcoef(sal.ravel(), model.compute_saliency(tmp_path / "upright.jpg").ravel())[0, 1] > 0.99


def test_bad_images_raise_clear_errors(model, tmp_path):
    with pytest.raises(ImageError, match="no such image file"):
        model.compute_saliency(tmp_path / "absent.jpg")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="notes.jpg: not an image"):
        model.compute_saliency(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match="empty"):
        model.compute_saliency(np.zeros((0, 10, 3), np.uint8))
    data = (tmp_path / "ok.png")
    Image.new("RGB", (40, 30), (10, 200, 30)).save(data)
    (tmp_path / "cut.png").write_bytes(data.read_bytes()[:60])
    with pytest.raises(ImageError, match="cut.png"):
        model.compute_saliency(tmp_path / "cut.png")


def test_batch_methods(model, photo, tmp_path):
    other = tmp_path / "other.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).save(other)
    singles = [model.compute_saliency(p) for p in (photo, other, photo)]
    for batch_size in (1, 2, 3):
        maps = model.compute_saliency_batch([photo, other, photo], batch_size=batch_size)
        for a, b in zip(maps, singles):
            np.testing.assert_allclose(a, b, atol=1e-5)
    results = dict(model.iter_saliency([photo, tmp_path / "missing.png", other], batch_size=2))
    assert isinstance(results[1], ImageError)
    np.testing.assert_allclose(results[2], singles[1], atol=1e-5)


def test_constant_output_gives_zero_map(small_prototxt, tmp_path):
    net = Net(small_prototxt)  # all weights zero: a constant map
    net.save(tmp_path / "zero.caffemodel")
    sal = Salicon(tmp_path / "zero.caffemodel", small_prototxt, device="cpu").compute_saliency(
        np.zeros((20, 30, 3), np.uint8))
    assert sal.shape == (20, 30) and not sal.any()


def test_configuration_errors(small_model, small_prototxt, small_train_prototxt, monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA is not available"):
            Salicon(small_model, small_prototxt, device="cuda")
    with pytest.raises(SaliconError, match="ground_truth"):
        Salicon(small_model, small_train_prototxt, device="cpu")
    with pytest.raises(ValueError, match="resize"):
        Salicon(small_model, small_prototxt, resize="lanczos")
    monkeypatch.setattr("salicon.pretrained.default_model_path", lambda: PROTOTXT / "absent.caffemodel")
    with pytest.raises(SaliconError, match="shipped pretrained model is missing"):
        Salicon(prototxtpath=small_prototxt)


def test_missing_layer_in_model_is_an_error(small_prototxt, tmp_path):
    from salicon import formats
    net = Net(small_prototxt)
    arrays = net.state_arrays()
    del arrays["saliency_map"]
    formats.write_caffemodel(tmp_path / "partial.caffemodel", net.net_param, arrays)
    with pytest.raises(SaliconError, match="saliency_map"):
        Salicon(tmp_path / "partial.caffemodel", small_prototxt, device="cpu")


def test_bf16_precision_agrees_with_fp32(small_model, small_prototxt, photo):
    exact = Salicon(small_model, small_prototxt, device="cpu").compute_saliency(photo)
    fast = Salicon(small_model, small_prototxt, device="cpu", precision="bf16").compute_saliency(photo)
    assert np.corrcoef(exact.ravel(), fast.ravel())[0, 1] > 0.99


# ------------------------------------------------------- the shipped model

SHIPPED_PARTS = PROTOTXT.parent.parent / "shared" / "models" / "salicon_osie"
OSIE_STIMULI = PROTOTXT.parent.parent / "shared" / "data" / "osie" / "stimuli"
needs_parts = pytest.mark.skipif(not (SHIPPED_PARTS / "model_part0.npz").exists(),
                                 reason=f"the trained model's float16 parts are not distributed ({SHIPPED_PARTS})")


def test_shipped_model_is_the_default(small_prototxt):
    from salicon.pretrained import default_model_path
    model = Salicon(prototxtpath=small_prototxt, device="cpu")
    assert model.model_path == default_model_path() and model.model_path.suffix == ".safetensors"
    assert model.input_scale == pytest.approx(1 / 255)  # from the file's metadata
    sal = model.compute_saliency(str(PROTOTXT.parent / "examples" / "astronaut.jpg"))
    assert sal.shape == (512, 512) and sal.min() == 0 and sal.max() == 1


def test_input_scale_comes_from_the_model_unless_given(small_prototxt, tmp_path):
    from salicon import formats
    net = Net(small_prototxt)
    path = tmp_path / "vgg_scale.safetensors"
    formats.write_safetensors(path, formats.params_to_tensors(net.state_arrays()), {"input_scale": "1.0"})
    assert Salicon(path, small_prototxt, device="cpu").input_scale == 1.0
    assert Salicon(path, small_prototxt, device="cpu", input_scale=0.5).input_scale == 0.5
    caffemodel = tmp_path / "m.caffemodel"
    net.save(caffemodel)
    assert Salicon(caffemodel, small_prototxt, device="cpu").input_scale == pytest.approx(1 / 255)


@pytest.mark.slow
def test_shipped_float16_weights_match_float32_weights(tmp_path):
    from salicon.export import export_caffemodel
    float32 = export_caffemodel(tmp_path, name="float32")["caffemodel"]
    image = str(PROTOTXT.parent / "examples" / "coffee.jpg")
    ours = Salicon(device="cpu", precision="fp32", postprocess="none").compute_saliency(image)
    theirs = Salicon(float32, device="cpu", precision="fp32", postprocess="none").compute_saliency(image)
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] >= 0.9999


@needs_parts
def test_shipped_weights_are_the_trained_float16_parts():
    from salicon import formats
    from salicon.pretrained import default_model_path
    shipped, metadata = formats.read_safetensors(default_model_path())
    parts = {}
    for part in sorted(SHIPPED_PARTS.glob("model_part*.npz")):
        with np.load(part) as z:
            parts.update({k: z[k] for k in z.files})
    assert set(parts) == set(shipped)
    for key, array in parts.items():
        assert shipped[key].dtype == np.float16
        np.testing.assert_array_equal(shipped[key], array)


@needs_parts
@pytest.mark.slow
@pytest.mark.skipif(not OSIE_STIMULI.exists(), reason="the OSIE images are not distributed")
def test_shipped_model_reproduces_the_trained_models_raw_maps():
    """Raw 38x50 outputs for two test images, against those the training run saved (float16)."""
    model = Salicon(device="cpu", precision="fp32")
    with np.load(SHIPPED_PARTS / "raw_maps_osie_all.npz") as z:
        for name in ("1003", "1006"):
            inputs, _ = model.preprocess(str(OSIE_STIMULI / f"{name}.jpg"))
            raw = model.forward({k: v[None] for k, v in inputs.items()})[0].numpy()
            reference = z[name].astype(np.float32)
            assert np.abs(raw - reference).max() <= 2e-3  # float16 storage of the reference
            assert np.corrcoef(raw.ravel(), reference.ravel())[0, 1] >= 0.9999


@pytest.mark.slow
def test_fast_prototxt_runs_the_shipped_weights_at_half_size():
    from salicon.pretrained import prototxt_path
    fast = Salicon(prototxtpath=prototxt_path("salicon_fast.prototxt"), device="cpu", postprocess="none")
    assert fast.net.input_shapes == {"fine_scale": (1, 3, 600, 800), "coarse_scale": (1, 3, 300, 400)}
    image = str(PROTOTXT.parent / "examples" / "astronaut.jpg")
    inputs, size = fast.preprocess(image)
    assert tuple(fast.forward({k: v[None] for k, v in inputs.items()}).shape) == (1, 19, 25)
    full = Salicon(device="cpu", postprocess="none").compute_saliency(image)
    quick = fast.compute_saliency(image)
    assert quick.shape == full.shape == (512, 512)
    assert np.corrcoef(quick.ravel(), full.ravel())[0, 1] > 0.6  # the same model seeing a smaller image
