"""Decoders ahead of the net (salicon.decode) and Salicon.iter_saliency(decode=)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from salicon.cli import main
from salicon.decode import (
    PreprocessSpec,
    decode_inputs,
    decode_rgb,
    gpu_decode_problem,
    prefetch,
    read_for_gpu,
    to_device,
)
from salicon.errors import EngineError, ImageTooLargeError, SaliconError
from salicon.image import load_image
from salicon.model import Salicon


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decode")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(90, 130), (64, 64), (120, 80), (100, 150)]):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / (f"{i}.jpg" if i % 2 == 0 else f"{i}.png")
        Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)
        paths.append(path)
    grey = folder / "grey.jpg"
    Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)).save(grey)
    paths.append(grey)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not an image")
    return paths, broken


def test_prefetch_keeps_order_and_stays_bounded():
    running, most = [0], [0]
    lock = threading.Lock()

    def work(x):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01 * (5 - x % 5))  # later items finish first
        with lock:
            running[0] -= 1
        return x * x

    submitted = []

    def items():
        for i in range(20):
            submitted.append(i)
            yield i

    with ThreadPoolExecutor(4) as pool:
        out = []
        for index, value in prefetch(work, items(), pool, ahead=3):
            assert len(submitted) <= index + 1 + 3  # never more than `ahead` beyond the consumer
            out.append((index, value))
    assert out == [(i, i * i) for i in range(20)]
    assert most[0] <= 3


def test_decode_rgb_equals_load_image_and_returns_errors(images, tmp_path):
    paths, broken = images
    for path in paths:
        np.testing.assert_array_equal(decode_rgb(path, 10**8), load_image(path, as_float=False))
    assert isinstance(decode_rgb(broken, 10**8), SaliconError)
    assert isinstance(decode_rgb(paths[0], 100), ImageTooLargeError)


def test_read_for_gpu_sends_plain_jpegs_and_decodes_the_rest(images):
    paths, broken = images
    kind, data = read_for_gpu(paths[0], 10**8)
    assert kind == "jpeg" and data == paths[0].read_bytes()
    assert read_for_gpu(paths[4], 10**8)[0] == "jpeg"  # grey JPEG: the GPU decoder makes it RGB
    kind, rgb = read_for_gpu(paths[1], 10**8)  # PNG: decoded here
    assert kind == "rgb"
    np.testing.assert_array_equal(rgb, load_image(paths[1], as_float=False))
    assert isinstance(read_for_gpu(broken, 10**8), SaliconError)
    too_large = read_for_gpu(paths[0], 100)
    assert isinstance(too_large, ImageTooLargeError) and str(paths[0]) in str(too_large)
    kind, rgb = read_for_gpu(np.zeros((4, 5, 3), np.uint8), 10**8)  # arrays are pixels already
    assert kind == "rgb" and rgb.shape == (4, 5, 3)


def test_gpu_decoding_is_refused_clearly_without_cuda():
    assert "decodes JPEGs on a CUDA device; the model runs on cpu" in gpu_decode_problem(torch.device("cpu"))


def test_to_device_on_the_cpu_copies_read_only_buffers():
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    rgb.setflags(write=False)
    out = to_device(rgb, torch.device("cpu"))
    assert out.dtype == torch.uint8 and torch.equal(out, torch.from_numpy(rgb.copy()))


def test_decode_inputs_equal_the_model_preprocess(images, small_model, small_prototxt):
    model = Salicon(small_model, small_prototxt, device="cpu", precision="fp32")
    spec = model.preprocess_spec()
    assert isinstance(spec, PreprocessSpec)
    inputs, size = decode_inputs(images[0][0], spec)
    ref, ref_size = model.preprocess(images[0][0])
    assert size == ref_size
    for name in ref:
        np.testing.assert_array_equal(inputs[name], ref[name].numpy())


@pytest.mark.parametrize("decode", ["processes", "gpu-path"])
def test_iter_saliency_decoders_give_the_same_maps(images, small_model, small_prototxt, decode):
    paths, broken = images
    sources = [paths[0], broken, *paths[1:]]
    model = Salicon(small_model, small_prototxt, device="cpu", precision="fp32")
    ref = dict(model.iter_saliency(sources, batch_size=2, workers=2))
    if decode == "processes":
        got = dict(model.iter_saliency(sources, batch_size=2, workers=2, decode="processes"))
    else:  # the GPU branch's parent side (8-bit pixels to the device, resized there), run on the CPU
        got = {}
        for i, source in enumerate(sources):
            decoded = decode_rgb(source, model.max_pixels)
            prepared = model._on_device(decoded)
            if isinstance(prepared, Exception):
                got[i] = prepared
                continue
            inputs, size = prepared
            raw = model.forward({k: v[None] for k, v in inputs.items()})
            got[i] = model.postprocess(raw[0], size)
    assert sorted(got) == sorted(ref) == list(range(len(sources)))
    assert isinstance(got[1], SaliconError) and isinstance(ref[1], SaliconError)  # the broken file only
    for i in ref:
        if i != 1:
            assert got[i].shape == ref[i].shape and float(ref[i].std()) > 0
            np.testing.assert_allclose(got[i], ref[i], atol=1e-5)


def test_iter_saliency_refuses_gpu_decoding_on_the_cpu(small_model, small_prototxt, images):
    model = Salicon(small_model, small_prototxt, device="cpu", precision="fp32")
    with pytest.raises(EngineError, match="CUDA device"):
        list(model.iter_saliency(images[0], decode="gpu"))
    with pytest.raises(ValueError, match="decode must be one of"):
        list(model.iter_saliency(images[0], decode="fibers"))


def test_predict_decode_options(images, small_model, small_prototxt, tmp_path, capsys):
    paths, broken = images
    base = ["predict", *map(str, paths), "--model", str(small_model), "--prototxt", str(small_prototxt),
            "--device", "cpu", "--precision", "fp32", "-q"]
    assert main(base + ["-o", str(tmp_path / "threads")]) == 0
    assert main(base + ["-o", str(tmp_path / "procs"), "--decode", "processes", "--workers", "2"]) == 0
    for path in paths:
        a = np.asarray(Image.open(tmp_path / "threads" / f"{path.stem}.png"), dtype=int)
        b = np.asarray(Image.open(tmp_path / "procs" / f"{path.stem}.png"), dtype=int)
        assert np.abs(a - b).max() <= 1  # 8-bit maps of float maps equal within 1e-5
    assert main(base + ["-o", str(tmp_path / "gpu"), "--decode", "gpu"]) == 2
    assert "--decode gpu: decode 'gpu' decodes JPEGs on a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu").exists()
    assert main(base + ["-o", str(tmp_path / "ray"), "--ray", "--decode", "processes"]) == 2
    assert "--decode and --workers apply to single-process predict" in capsys.readouterr().err


def test_decode_jpeg_on_the_device_matches_pil(images):
    pytest.importorskip("torchvision.io", reason="torchvision is not installed (GPU JPEG decoding is optional)")
    from salicon.decode import decode_jpeg_on
    rgb = decode_jpeg_on(images[0][0].read_bytes(), torch.device("cpu"))
    ref = load_image(images[0][0], as_float=False)
    assert tuple(rgb.shape) == ref.shape
    assert np.abs(rgb.numpy().astype(int) - ref.astype(int)).mean() < 2  # IDCTs differ by a level or two
