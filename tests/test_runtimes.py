"""The runtime registry: one list of runtimes for the CLI, auto resolution and
worker placement; ONNX Runtime as a runtime added by its own module; the one
configuration every entry point builds; no process-wide side effects."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from salicon import runtimes
from salicon.batch import RayOptions, _placement
from salicon.cli import build_parser, main
from salicon.config import SaliconConfig
from salicon.errors import OptionError
from salicon.model import Salicon
from salicon.runtimes.base import Runtime
from salicon.serve_ray import ServeOptions, replica_resources

from .conftest import ROOT


class _Accelerator(Runtime):
    """A runtime that exists only in this test: fp8 on GPUs."""
    name = "dummy-accelerator"
    precisions = ("fp8",)
    auto_for = ("fp8",)
    summary = "a test's runtime"

    def devices(self):
        return ("cpu", "cuda")

    def load(self, config, device):
        raise AssertionError("not loaded in these tests")


@pytest.fixture
def dummy_runtime():
    runtimes.register(_Accelerator())
    yield runtimes.get("dummy-accelerator")
    runtimes.unregister("dummy-accelerator")


def test_a_registered_runtime_appears_in_choices_auto_and_placement(dummy_runtime):
    assert "dummy-accelerator" in runtimes.names() and "fp8" in runtimes.precisions()
    help_text = build_parser()._subparsers._group_actions[0].choices["predict"].format_help()
    assert "dummy-accelerator" in help_text and "fp8" in help_text
    args = build_parser().parse_args(["predict", "x.jpg", "-o", "o", "--runtime", "dummy-accelerator",
                                      "--precision", "fp8"])
    assert args.runtime == "dummy-accelerator"
    assert runtimes.resolve("auto", "fp8") is dummy_runtime
    assert SaliconConfig(precision="fp8").replace(runtime="auto").precision == "fp8"
    assert runtimes.worker_device("auto", "fp8", "auto", gpus=2) == "cuda"
    assert runtimes.worker_device("dummy-accelerator", "fp8", "cpu", gpus=2) == "cpu"
    with pytest.raises(OptionError, match="runs fp8, not fp32; fp32 runs on {runtime} 'pytorch'".replace(
            "{runtime}", "runtime")):
        runtimes.resolve("dummy-accelerator", "fp32")
    runtimes.unregister("dummy-accelerator")
    assert "dummy-accelerator" not in build_parser()._subparsers._group_actions[0].choices["predict"].format_help()


# runtime, precision, device, GPUs of the cluster -> where one worker runs
PLACEMENTS = [
    ("pytorch", "fp32", "auto", 0, "cpu"), ("pytorch", "fp32", "auto", 4, "cuda"),
    ("pytorch", "bf16", "cpu", 4, "cpu"), ("pytorch", "tf32", "cuda", 1, "cuda"),
    ("auto", "fp32", "auto", 2, "cuda"), ("auto", "auto", "auto", 2, "cuda"), ("auto", "int8", "auto", 2, "cpu"),
    ("openvino", "fp32", "auto", 8, "cpu"), ("openvino", "bf16", "auto", 8, "cpu"),
    ("openvino", "int8", "auto", 0, "cpu"), ("caffe", "fp32", "auto", 2, "cpu"),
    ("onnxruntime", "fp32", "auto", 0, "cpu"),
]


@pytest.mark.parametrize("runtime, precision, device, gpus, where", PLACEMENTS)
def test_placement_is_one_rule_for_ray_data_and_ray_serve(runtime, precision, device, gpus, where):
    assert runtimes.worker_device(runtime, precision, device, gpus) == where
    config = SaliconConfig(runtime=runtime, precision=precision, device=device)
    *_, actor_device = _placement(RayOptions(config), cpus=8.0, gpus=gpus)
    replica = replica_resources(ServeOptions(config=config), {"CPU": 8, "GPU": gpus})
    assert actor_device == where and ("num_gpus" in replica) == (where == "cuda")


def test_onnxruntime_placement_follows_its_cuda_provider():
    expected = "cuda" if "cuda" in runtimes.get("onnxruntime").devices() else "cpu"
    assert runtimes.worker_device("onnxruntime", "fp32", "auto", 2) == expected


@pytest.mark.parametrize("runtime, device", [("openvino", "cuda"), ("caffe", "cuda:1")])
def test_a_gpu_request_for_a_cpu_runtime_is_refused(runtime, device):
    with pytest.raises(OptionError, match="runs on the CPU only"):
        runtimes.worker_device(runtime, "fp32", device, gpus=2)
    with pytest.raises(OptionError, match="has no GPU"):
        runtimes.worker_device("pytorch", "fp32", "cuda", gpus=0)


def test_onnxruntime_maps_equal_pytorch_fp32(small_model, small_prototxt, photo_file, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
    monkeypatch.setenv("SALICON_CACHE", str(tmp_path / "cache"))
    common = dict(device="cpu", postprocess="none")
    ort = Salicon(small_model, small_prototxt, runtime="onnxruntime", **common)
    torch_fp32 = Salicon(small_model, small_prototxt, runtime="pytorch", precision="fp32", **common)
    assert (ort.runtime, ort.precision, ort.device.type) == ("onnxruntime", "fp32", "cpu")
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))  # exported once, kept
    a, b = ort.compute_saliency(photo_file), torch_fp32.compute_saliency(photo_file)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4
    raw_a = ort.forward({k: v[None] for k, v in ort.preprocess(photo_file)[0].items()})
    raw_b = torch_fp32.forward({k: v[None] for k, v in torch_fp32.preprocess(photo_file)[0].items()})
    assert float((raw_a - raw_b).abs().max()) <= 1e-4
    with pytest.raises(OptionError, match="runtime 'onnxruntime' runs fp32, not bf16"):
        Salicon(small_model, small_prototxt, runtime="onnxruntime", precision="bf16", device="cpu")


def test_onnxruntime_is_named_only_by_its_runtime_module_and_the_registry():
    named = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "salicon").rglob("*.py")
                   if "onnxruntime" in p.read_text() and p.parent.name != "runtimes")
    assert named == [], named


def test_importing_every_module_leaves_numpy_and_pil_as_they_were():
    code = """
import importlib, pkgutil, numpy, PIL.Image
before = (hasattr(numpy, "trapz"), PIL.Image.MAX_IMAGE_PIXELS)
import salicon
skip = {"salicon.__main__", "salicon.pycaffe.__main__"}
for info in pkgutil.walk_packages(salicon.__path__, "salicon."):
    if info.name not in skip:
        try:
            importlib.import_module(info.name)
        except ImportError:
            pass  # an optional extra that is not installed
from salicon.image import load_image
load_image(numpy.zeros((4, 4, 3), numpy.uint8), max_pixels=None)
print(before == (hasattr(numpy, "trapz"), PIL.Image.MAX_IMAGE_PIXELS), before)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[0] == "True", done.stdout


def test_pil_limit_is_not_written_when_a_user_lifts_ours(tmp_path):
    from PIL import Image

    from salicon.image import load_image
    path = tmp_path / "wide.png"
    Image.new("L", (3000, 2000)).save(path)  # 6 MP: over PIL's refusal threshold below
    before = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 1_000_000  # PIL refuses > 2 MP (another library's setting, say)
        assert load_image(path, as_float=False, max_pixels=None).shape == (2000, 3000, 3)
        assert load_image(path, as_float=False, max_pixels=10_000_000).shape == (2000, 3000, 3)
        assert Image.MAX_IMAGE_PIXELS == 1_000_000
    finally:
        Image.MAX_IMAGE_PIXELS = before


def test_max_pixels_none_is_no_limit_in_every_configuration():
    assert SaliconConfig(max_pixels=None).max_pixels is None
    assert RayOptions().with_fields(max_pixels=None).config.max_pixels is None
    assert ServeOptions(config=SaliconConfig(max_pixels=None)).config.max_pixels is None
    with pytest.raises(OptionError, match="max_pixels"):
        SaliconConfig(max_pixels=0)


def test_config_resolves_once_and_is_what_salicon_runs(small_model, small_prototxt):
    config = SaliconConfig(model=str(small_model), prototxt=str(small_prototxt), device="cpu", precision="fp32")
    resolved = config.resolved()
    assert resolved.resolved() == resolved and resolved.runtime == "pytorch" and resolved.layer_files
    model = Salicon(config=config)
    assert model.config == resolved and model.runtime == "pytorch"
    with pytest.raises(OptionError) as info:
        SaliconConfig.from_options(engine="caffe", runtime="openvino")
    assert info.value.options == ("engine", "runtime")
    assert info.value.describe(lambda n: f"--{n}").startswith("--engine 'caffe'")


def test_models_lists_the_registered_models_and_model_name_runs_them(capsys, photo_file, tmp_path):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "salicon_osie: inputs 1200x1600 / 600x800" in out and "salicon_osie_fast: inputs 600x800 / 300x400" in out
    assert "NSS 2.709" in out
    fast = Salicon("salicon_osie_fast", device="cpu", precision="fp32")
    assert fast.name == "salicon_osie_fast" and fast.prototxt_path.name == "salicon_osie_fast.prototxt"
    assert dict(fast.net.input_shapes)["fine_scale"][2:] == (600, 800)
    assert main(["predict", str(photo_file), "-o", str(tmp_path / "o"), "--model", "salicon_osie_fast",
                 "--precision", "fp32", "--device", "cpu", "-q", "-v"]) == 0
    err = capsys.readouterr().err
    assert "model salicon_osie_fast (" in err and "salicon_osie_fast.prototxt" in err
    assert main(["predict", str(photo_file), "-o", str(tmp_path / "p"), "--model", "no_such_model", "-q"]) == 1
    assert "no such registered model" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["serve"], ["evaluate", "--dataset", "osie:nowhere"]])
def test_model_name_in_serve_and_evaluate(command):
    from salicon.cli.options import salicon_config
    args = build_parser().parse_args([*command, "--model", "salicon_osie_fast"])
    resolved = salicon_config(args).resolved()
    assert resolved.name == "salicon_osie_fast" and resolved.prototxt.endswith("salicon_osie_fast.prototxt")


def test_model_name_in_pysaliency():
    pysaliency_models = pytest.importorskip("salicon.pysaliency", reason="the pysaliency extra is not installed")
    model = pysaliency_models.SaliconSaliencyMapModel("salicon_osie_fast", device="cpu")
    assert model.salicon.name == "salicon_osie_fast" and model.salicon.precision == "fp32"
