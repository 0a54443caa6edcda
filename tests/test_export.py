"""Exports of the shipped model: a float32 .caffemodel (run by real Caffe where
pycaffe is installed) and ONNX (run by onnxruntime where it is installed),
each compared with the PyTorch engine on the same weights."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from salicon import Salicon
from salicon.cli import main
from salicon.engine import Net
from salicon.export import export_caffemodel, export_onnx, load_test_net
from salicon.pretrained import default_model_path

from .conftest import ROOT
from .test_runtimes_caffe import needs_caffe, needs_caffe_memory

EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))


def _inputs(net: Net, prototxt, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Preprocessed example photos (as Salicon makes them) for ``prototxt``'s sizes."""
    model = Salicon(prototxtpath=prototxt, device="cpu")
    images = [EXAMPLES[(seed + i) % len(EXAMPLES)] for i in range(batch)]
    blobs = [model.preprocess(image)[0] for image in images]
    return {name: torch.stack([b[name] for b in blobs]).numpy() for name in net.input_shapes}


def _pytorch_outputs(net: Net, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return net(**{k: torch.from_numpy(v) for k, v in inputs.items()})["saliency_map_out"].numpy()


def test_exported_caffemodel_holds_the_shipped_weights_in_float32(tmp_path, small_prototxt):
    paths = export_caffemodel(tmp_path / "export", prototxt=small_prototxt)
    assert paths["caffemodel"].name == "salicon_osie.caffemodel"
    assert paths["prototxt"].read_text() == small_prototxt.read_text()
    assert (tmp_path / "export" / "CustomData.py").exists()
    assert (tmp_path / "export" / "custom_interpolation_layer.py").exists()
    assert paths["record"].name == "salicon_osie.json"  # the default post-processing travels along
    shipped, exported = Net(small_prototxt), Net(paths["prototxt"])
    shipped.copy_from(default_model_path(), strict=True)
    exported.copy_from(paths["caffemodel"], strict=True)
    for name, arrays in shipped.state_arrays().items():
        for a, b in zip(arrays, exported.state_arrays()[name]):
            assert b.dtype == np.float32
            np.testing.assert_array_equal(a, b)


@needs_caffe
def test_real_caffe_runs_the_exported_caffemodel_with_the_same_maps(tmp_path, small_prototxt, monkeypatch):
    from salicon.runtimes.caffe import CaffeNet
    paths = export_caffemodel(tmp_path / "export", prototxt=small_prototxt)
    monkeypatch.syspath_prepend(str(tmp_path / "export"))
    caffe_net = CaffeNet(paths["prototxt"], paths["caffemodel"])
    net = load_test_net(prototxt=small_prototxt)
    inputs = _inputs(net, small_prototxt, seed=1)
    theirs = caffe_net(**inputs)["saliency_map_out"]
    ours = _pytorch_outputs(net, inputs)
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.ptp(ours) > 0.05  # a real map, not a constant


@needs_caffe
@needs_caffe_memory
@pytest.mark.slow
def test_real_caffe_runs_the_full_size_export(tmp_path):
    from salicon.runtimes.caffe import CaffeNet
    paths = export_caffemodel(tmp_path / "export")
    caffe_net = CaffeNet(paths["prototxt"], paths["caffemodel"])
    net = load_test_net()
    inputs = _inputs(net, None, seed=2)
    theirs = caffe_net(**inputs)["saliency_map_out"]
    del caffe_net
    assert np.abs(_pytorch_outputs(net, inputs) - theirs).max() <= 1e-4


def test_export_caffemodel_command(tmp_path, small_prototxt, capsys):
    assert main(["export-caffemodel", "-o", str(tmp_path / "d"), "--prototxt", str(small_prototxt)]) == 0
    assert "caffe.Net(" in capsys.readouterr().out
    assert (tmp_path / "d" / "salicon_osie.caffemodel").stat().st_size > 100e6  # float32: 4 bytes a weight
    (tmp_path / "file").write_text("x")
    assert main(["export-caffemodel", "-o", str(tmp_path / "file")]) == 1
    assert "not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------ ONNX

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")


def _run_onnx(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.run(None, inputs)[0]


def test_onnx_export_matches_pytorch_with_dynamic_batch(tmp_path, small_prototxt):
    path = export_onnx(tmp_path / "small.onnx", prototxt=small_prototxt)
    net = load_test_net(prototxt=small_prototxt)
    for batch in (1, 3):
        inputs = _inputs(net, small_prototxt, batch, seed=batch)
        session, theirs = _run_onnx(path, inputs)
        ours = _pytorch_outputs(net, inputs)
        assert theirs.shape == (batch, 1, 4, 5)
        assert np.abs(ours - theirs).max() <= 1e-4
        assert np.ptp(ours) > 0.05
    import onnx
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert float(props["input_scale"]) == pytest.approx(1 / 255)


@pytest.mark.slow
def test_full_size_onnx_export(tmp_path):
    assert main(["export-onnx", "-o", str(tmp_path / "salicon.onnx")]) == 0
    net = load_test_net()
    inputs = _inputs(net, None, seed=4)
    session, theirs = _run_onnx(tmp_path / "salicon.onnx", inputs)
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes == {"fine_scale": ["batch", 3, 1200, 1600], "coarse_scale": ["batch", 3, 600, 800]}
    assert np.abs(_pytorch_outputs(net, inputs) - theirs).max() <= 1e-4


def test_export_onnx_refuses_to_overwrite_other_files(tmp_path, capsys):
    victim = tmp_path / "photo.jpg"
    victim.write_bytes(b"precious")
    assert main(["export-onnx", "-o", str(victim)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious"


def test_export_onnx_without_onnx_says_what_to_install(tmp_path, small_prototxt, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ModuleNotFoundError

    def export(*args, **kwargs):
        import onnx  # noqa: F401
    monkeypatch.setattr("salicon.export.export_onnx", export)
    assert main(["export-onnx", "-o", str(tmp_path / "m.onnx"), "--prototxt", str(small_prototxt)]) == 1
    assert '.[onnx]' in capsys.readouterr().err
