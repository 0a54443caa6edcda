"""The OpenVINO runtime: fp32 equal to PyTorch, bf16 and int8 close to it, the
shipped int8 model against fp32, every bad case with a clear message."""
from __future__ import annotations

import builtins
import shutil

import numpy as np
import pytest
from PIL import Image

from salicon import Salicon
from salicon.config import SaliconConfig
from salicon.errors import EngineError, FormatError, SaliconError
from salicon.metrics import cc
from salicon.runtimes import resolve

from .conftest import ROOT

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SALICON_CACHE", str(tmp_path_factory.getbasetemp() / "salicon-cache"))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.random((9, 12, 3))
    return (np.kron(base, np.ones((10, 10, 1))) * 255).astype(np.uint8)  # 90x120, smooth blocks


@pytest.fixture(scope="module")
def small_int8(tmp_path_factory, small_model, small_prototxt):
    """The small net quantized with NNCF on 4 random images, recorded beside a copy of its weights."""
    pytest.importorskip("nncf", reason="NNCF is not installed (pip install nncf); it makes int8 models")
    from salicon.runtimes.openvino import quantize_int8, record_int8

    folder = tmp_path_factory.mktemp("int8")
    weights = folder / "small.caffemodel"
    shutil.copyfile(small_model, weights)
    reference = Salicon(weights, small_prototxt, device="cpu", postprocess="none")
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(4):
        inputs, _ = reference.preprocess((rng.random((60, 80, 3)) * 255).astype(np.uint8))
        samples.append({k: v[None].numpy() for k, v in inputs.items()})
    entry = quantize_int8(small_prototxt, weights, samples, folder / "small_int8.xml")
    record_int8(weights, entry)
    return weights


def resolve_runtime(runtime: str, precision: str, engine: str = "auto") -> str:
    """The runtime a configuration resolves to, as the registry and SaliconConfig decide it."""
    config = SaliconConfig.from_options(runtime=runtime, precision=precision, engine=engine)
    return resolve(config.runtime, precision).name


def test_runtime_follows_precision_and_refuses_what_does_not_exist():
    assert resolve_runtime("auto", "int8") == "openvino" and resolve_runtime("auto", "bf16") == "pytorch"
    assert resolve_runtime("openvino", "fp32") == "openvino" and resolve_runtime("auto", "fp32", "caffe") == "caffe"
    for runtime, precision, engine, words in (("pytorch", "int8", "auto", "int8 runs on runtime 'openvino'"),
                                              ("openvino", "tf32", "auto", "tf32 runs on runtime 'pytorch'"),
                                              ("auto", "int8", "caffe", "engine 'caffe' runs pycaffe in fp32"),
                                              ("openvino", "fp32", "caffe", "runtime 'openvino' is for the "
                                                                            "PyTorch engine's net \\(choose one"),
                                              ("tpu", "fp32", "auto", "runtime must be 'auto' or one of"),
                                              ("auto", "int4", "auto", "precision must be 'auto' or one of")):
        with pytest.raises(ValueError, match=words) as info:
            resolve_runtime(runtime, precision, engine)
        if runtime == "openvino" and engine == "caffe":  # no precision was asked for: none is blamed
            assert "precision" not in str(info.value)


def test_fp32_on_openvino_equals_pytorch_and_bf16_stays_close(small_model, small_prototxt, photo):
    plain = dict(device="cpu", postprocess="none")
    torch_map = Salicon(small_model, small_prototxt, **plain).compute_saliency(photo)
    ov32 = Salicon(small_model, small_prototxt, runtime="openvino", **plain)
    assert ov32.runtime == "openvino" and ov32.device.type == "cpu"
    assert np.abs(ov32.compute_saliency(photo) - torch_map).max() <= 1e-4
    ov16 = Salicon(small_model, small_prototxt, runtime="openvino", precision="bf16", **plain)
    assert cc(ov16.compute_saliency(photo), torch_map) >= 0.99


def test_conversion_is_cached(small_model, small_prototxt):
    from salicon.runtimes.openvino import cache_folder

    Salicon(small_model, small_prototxt, runtime="openvino", device="cpu")
    cached = sorted(cache_folder().glob("*.xml"))
    assert cached and all(p.with_suffix(".bin").is_file() for p in cached)
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    Salicon(small_model, small_prototxt, runtime="openvino", device="cpu")
    assert {p: p.stat().st_mtime_ns for p in sorted(cache_folder().glob("*.xml"))} == stamps  # read, not rewritten


def test_conversion_says_so_once_and_warns_where_the_cache_cannot_be_written(small_model, small_prototxt, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.setenv("SALICON_CACHE", str(tmp_path / "fresh"))
    Salicon(small_model, small_prototxt, runtime="openvino", device="cpu")
    assert f"converting small.caffemodel for OpenVINO (once; cached in {tmp_path / 'fresh'}" in capsys.readouterr().err
    Salicon(small_model, small_prototxt, runtime="openvino", device="cpu")
    assert "converting" not in capsys.readouterr().err  # read from the cache
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("SALICON_CACHE", str(blocked))
    Salicon(small_model, small_prototxt, runtime="openvino", device="cpu")
    err = capsys.readouterr().err
    assert f"warning: cannot keep the converted model in {blocked / 'openvino'}" in err
    assert err.count("\n") == 2  # the conversion line and the warning, one line each


def test_int8_from_the_record_and_as_a_file(small_int8, small_prototxt, photo):
    fp32 = Salicon(small_int8, small_prototxt, device="cpu", postprocess="none").compute_saliency(photo)
    int8 = Salicon(small_int8, small_prototxt, precision="int8", postprocess="none")
    assert int8.runtime == "openvino"
    assert cc(int8.compute_saliency(photo), fp32) >= 0.95  # random weights, 4 random calibration images
    direct = Salicon(small_int8.with_name("small_int8.xml"), small_prototxt, precision="int8", postprocess="none")
    assert np.array_equal(direct.compute_saliency(photo), int8.compute_saliency(photo))


def test_int8_bad_files_are_named(small_int8, small_model, small_prototxt, tmp_path):
    with pytest.raises(SaliconError, match=r"small.caffemodel: no int8 model is recorded for it; make one with"):
        Salicon(small_model, small_prototxt, precision="int8")
    folder = tmp_path / "copy"
    shutil.copytree(small_int8.parent, folder)
    weights = folder / small_int8.name
    bin_file = folder / "small_int8.bin"
    data = bin_file.read_bytes()
    bin_file.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(SaliconError, match=r"small_int8.bin: its SHA-256 does not match .* truncated, damaged"
                                           r".*--precision fp32"):
        Salicon(weights, small_prototxt, precision="int8")
    with pytest.raises(FormatError, match=r"small_int8.xml: (not a readable OpenVINO model|OpenVINO cannot)"):
        Salicon(folder / "small_int8.xml", small_prototxt, precision="int8")
    bin_file.unlink()
    with pytest.raises(SaliconError, match=r"small_int8.xml: its weights file small_int8.bin is missing"):
        Salicon(folder / "small_int8.xml", small_prototxt, precision="int8")
    (folder / "small_int8.xml").unlink()
    with pytest.raises(SaliconError, match=r"small_int8.xml: no such OpenVINO model file"):
        Salicon(weights, small_prototxt, precision="int8")


def test_int8_of_another_net_is_refused(small_int8, tmp_path):
    from .conftest import PROTOTXT, edit_prototxt

    other = tmp_path / "other.prototxt"
    sizes = {"1,3,1200,1600": "1,3,64,96", "1,3,600,800": "1,3,32,48", "1,512,38,50": "1,512,2,3"}
    other.write_text(edit_prototxt((PROTOTXT / "salicon.prototxt").read_text(), sizes))
    with pytest.raises(FormatError, match=r"small_int8.xml: this OpenVINO model is for another net"):
        Salicon(small_int8.with_name("small_int8.xml"), other, precision="int8")


def test_openvino_absent_names_the_install_command(small_model, small_prototxt, monkeypatch):
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(EngineError, match=r"runtime 'openvino' needs the openvino package: pip install openvino"):
        Salicon(small_model, small_prototxt, runtime="openvino", device="cpu")


def test_openvino_runs_on_the_cpu_only(small_model, small_prototxt):
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(EngineError):
            Salicon(small_model, small_prototxt, runtime="openvino", device="cuda")
    with pytest.raises(ValueError, match="engine 'caffe'"):
        Salicon(small_model, small_prototxt, engine="caffe", precision="int8")


def test_cli_options_and_usage_errors(small_int8, small_prototxt, tmp_path, capsys):
    from salicon.cli import main

    Image.fromarray((np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    common = ["--model", str(small_int8), "--prototxt", str(small_prototxt), "-q"]
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "o8"), "--precision", "int8",
                 "--npy", *common]) == 0
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "o32"), "--npy", *common]) == 0
    assert cc(np.load(tmp_path / "o8" / "a.npy"), np.load(tmp_path / "o32" / "a.npy")) >= 0.95
    capsys.readouterr()
    for extra, words in ((["--engine", "caffe", "--precision", "int8"], "engine 'caffe' runs pycaffe in fp32"),
                         (["--runtime", "pytorch", "--precision", "int8"], "int8 runs on --runtime 'openvino'")):
        assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "x"), *extra, *common]) == 2
        assert words in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_int8_model_against_fp32_on_the_examples():
    fp32 = Salicon(device="cpu", precision="fp32", postprocess="none")
    int8 = Salicon(precision="int8", postprocess="none")
    bf16 = Salicon(runtime="openvino", precision="bf16", postprocess="none")
    for path in EXAMPLES:
        reference = fp32.compute_saliency(path)
        assert cc(int8.compute_saliency(path), reference) >= 0.99, path.name
        assert cc(bf16.compute_saliency(path), reference) >= 0.99, path.name


def test_serve_with_int8_on_a_small_net(small_int8, small_prototxt, photo):
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    import io

    from fastapi.testclient import TestClient

    from salicon.serve import SaliencyService
    from salicon.webapp import create_app

    model = Salicon(small_int8, small_prototxt, precision="int8")
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    with TestClient(create_app(SaliencyService(model))) as client:
        health = client.get("/api/health").json()
        assert (health["precision"], health["runtime"]) == ("int8", "openvino")
        r = client.post("/api/saliency", params={"format": "npy"}, files={"file": ("p.png", buf.getvalue())})
        assert r.status_code == 200
        served = np.load(io.BytesIO(r.content))
    assert np.abs(served - model.compute_saliency(photo)).max() <= 1e-6


@pytest.mark.slow
def test_ray_with_int8_on_a_small_net(small_int8, small_prototxt, photo, tmp_path):
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install -e '.[ray]')")
    import ray

    from salicon.batch import predict_on_ray
    from salicon.inputs import list_inputs
    from salicon.outputs import OutputSpec

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.roll(photo, 7 * i, axis=1)).save(folder / f"p{i}.png")
    items, _ = list_inputs([str(folder)])
    try:
        report = predict_on_ray(items, str(tmp_path / "maps"), model_path=small_int8, prototxt=small_prototxt,
                                precision="int8", spec=OutputSpec(npy=True), progress=False, num_cpus=2)
    finally:
        ray.shutdown()
    assert report.ok and report.written == 4 and report.device == "cpu"
    model = Salicon(small_int8, small_prototxt, precision="int8")
    for it in items:
        assert np.abs(np.load(tmp_path / "maps" / f"{it.stem}.npy") - model.compute_saliency(it.source)).max() <= 1e-5


def test_a_huge_image_has_the_net_give_back_its_buffers_first(small_model, small_prototxt, photo, monkeypatch):
    import salicon.model as model_module
    model = Salicon(small_model, small_prototxt, runtime="openvino", precision="fp32")
    before = model.compute_saliency(photo)
    released = []
    real = model.net.release_memory
    monkeypatch.setattr(model.net, "release_memory", lambda: released.append(1) or real(), raising=False)
    model.compute_saliency(photo)
    assert released == []  # an ordinary image keeps the buffers for the next call
    monkeypatch.setattr(model_module, "HUGE_PIXELS", 100)
    after = model.compute_saliency(photo)
    assert released == [1]
    np.testing.assert_array_equal(after, before)  # and the net still runs, with the same numbers
    np.testing.assert_array_equal(model.compute_saliency(photo), before)


def test_the_fast_models_int8_maps_follow_its_fp32_maps_on_the_examples():
    from salicon.metrics import cc
    from salicon.pretrained import PROJECT_ROOT
    fp32 = Salicon("salicon_osie_fast", device="cpu", precision="fp32", postprocess="none")
    int8 = Salicon("salicon_osie_fast", device="cpu", precision="int8", postprocess="none")
    assert int8.runtime == "openvino" and Salicon("salicon_osie_fast", device="cpu").precision == "int8"
    photos = sorted((PROJECT_ROOT / "examples").glob("*.jpg"))
    assert len(photos) >= 3
    for photo in photos:
        assert cc(int8.compute_saliency(photo), fp32.compute_saliency(photo)) >= 0.99, photo.name
