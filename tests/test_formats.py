"""Prototxt and .caffemodel reading/writing, legacy upgrades and error messages."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from salicon import formats
from salicon.engine import Net
from salicon.errors import FormatError
from salicon.proto import caffe_pb2

from .conftest import PROTOTXT, randomise

TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 4 } }
"""


def _legacy_tiny_caffemodel(conv_w, conv_b, ip_w, ip_b) -> bytes:
    """The TINY net's weights in the legacy layout (V1 layers, 4-D legacy blob dims)."""
    net = caffe_pb2.NetParameter(name="tiny")
    net.input.append("data")
    net.input_dim.extend([1, 2, 5, 6])
    conv = net.layers.add(name="conv", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    conv.bottom.append("data")
    conv.top.append("conv")
    conv.convolution_param.num_output = 3
    for arr, dims in ((conv_w, conv_w.shape), (conv_b, (1, 1, 1, conv_b.size))):
        blob = conv.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
        blob.data.extend(arr.ravel().tolist())
    net.layers.add(name="relu", type=caffe_pb2.V1LayerParameter.RELU, bottom=["conv"], top=["conv"])
    ip = net.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, bottom=["conv"], top=["ip"])
    for arr, dims in ((ip_w, (1, 1) + ip_w.shape), (ip_b, (1, 1, 1, ip_b.size))):
        blob = ip.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
        blob.double_data.extend(arr.ravel().astype(np.float64).tolist())
    return net.SerializeToString()


@pytest.fixture
def tiny_prototxt(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY)
    return path


def test_prototxt_round_trip(tmp_path):
    net = formats.read_net_prototxt(PROTOTXT / "finetune_salicon.prototxt")
    out = tmp_path / "copy.prototxt"
    formats.write_prototxt(out, net)
    again = formats.read_net_prototxt(out)
    assert again == net
    names = [layer.name for layer in again.layer]
    assert names[:3] == ["FineCustomData", "CoarseCustomData", "GroundTruthCustomData"]
    assert "sec_conv5_3" in names and names[-1] == "loss"


def test_solver_prototxt_fields():
    solver = formats.read_solver_prototxt(PROTOTXT / "solver.prototxt")
    assert solver.base_lr == pytest.approx(1e-6)
    assert (solver.lr_policy, solver.stepsize, solver.iter_size, solver.display) == ("step", 4000, 1, 20)
    assert solver.momentum == pytest.approx(0.9) and solver.weight_decay == pytest.approx(5e-4)
    assert solver.gamma == pytest.approx(0.1)
    ada = formats.read_solver_prototxt(PROTOTXT / "solver_adadelta.prototxt")
    assert ada.solver_type == caffe_pb2.SolverParameter.ADADELTA
    assert ada.delta == pytest.approx(1e-6)


def test_caffemodel_round_trip_current_layout(tmp_path, tiny_prototxt, rng):
    net = Net(tiny_prototxt, seed=3)
    randomise(net)
    path = tmp_path / "tiny.caffemodel"
    net.save(path)
    # The file is the current layout: `layer` (field 100) with shaped blobs.
    raw = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert len(raw.layers) == 0 and [layer.name for layer in raw.layer] == ["data", "conv", "relu", "ip"]
    assert list(raw.layer[1].blobs[0].shape.dim) == [3, 2, 3, 3]
    assert list(raw.layer[1].blobs[1].shape.dim) == [3]
    arrays = formats.load_caffemodel_arrays(path)
    for name, blobs in net.params.items():
        for a, p in zip(arrays[name], blobs):
            np.testing.assert_array_equal(a, p.detach().numpy())
    other = Net(tiny_prototxt, weights=path)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(other(data=x)["ip"].detach().numpy(), net(data=x)["ip"].detach().numpy())


def test_legacy_caffemodel_loads(tmp_path, tiny_prototxt, rng):
    conv_w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    conv_b = rng.standard_normal(3).astype(np.float32)
    ip_w = rng.standard_normal((4, 90)).astype(np.float32)
    ip_b = rng.standard_normal(4).astype(np.float32)
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(_legacy_tiny_caffemodel(conv_w, conv_b, ip_w, ip_b))
    upgraded = formats.read_caffemodel(path)
    assert [layer.type for layer in upgraded.layer] == ["Input", "Convolution", "ReLU", "InnerProduct"]
    net = Net(tiny_prototxt, weights=path)
    np.testing.assert_array_equal(net.params["conv"][0].detach().numpy(), conv_w)
    np.testing.assert_array_equal(net.params["conv"][1].detach().numpy(), conv_b)
    np.testing.assert_array_equal(net.params["ip"][0].detach().numpy(), ip_w)
    np.testing.assert_array_equal(net.params["ip"][1].detach().numpy(), ip_b)
    # Independent numpy forward pass of conv (pad 1) -> ReLU -> inner product.
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    xp = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))
    conv = np.zeros((3, 5, 6))
    for o in range(3):
        for i in range(5):
            for j in range(6):
                conv[o, i, j] = (xp[:, i:i + 3, j:j + 3] * conv_w[o]).sum() + conv_b[o]
    expected = ip_w @ np.maximum(conv, 0).ravel() + ip_b
    np.testing.assert_allclose(net(data=x)["ip"].detach().numpy()[0], expected, rtol=1e-5, atol=1e-5)


def test_legacy_prototxt_with_input_dim_builds():
    text = """
    name: "legacy"
    input: "data"
    input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
    layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
             blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
             convolution_param { num_output: 4 kernel_size: 3 } }
    layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
             pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    """
    net = Net(formats.parse_net_prototxt(text))
    assert net.input_shapes == {"data": (1, 3, 8, 8)}
    assert net.blob_shapes["pool1"] == (1, 4, 3, 3)
    info = {(p.layer, p.index): (p.lr_mult, p.decay_mult) for p in net.param_info()}
    assert info == {("conv1", 0): (1.0, 1.0), ("conv1", 1): (2.0, 0.0)}


def test_blob_shape_mismatch_names_file_layer_and_shapes(tmp_path, tiny_prototxt):
    net = Net(tiny_prototxt)
    bad = {"conv": [np.zeros((3, 2, 5, 5), np.float32), np.zeros(3, np.float32)],
           "ip": [np.zeros((4, 90), np.float32), np.zeros(4, np.float32)]}
    path = tmp_path / "bad.caffemodel"
    formats.write_caffemodel(path, formats.read_net_prototxt(tiny_prototxt), bad)
    with pytest.raises(FormatError) as err:
        net.copy_from(path)
    message = str(err.value)
    assert str(path) in message and "'conv'" in message
    assert "(3, 2, 5, 5)" in message and "(3, 2, 3, 3)" in message


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b"name: \"net\"\nlayer { name: \"a\" type: \"ReLU\" }\n", "text file"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" * 4, "not a valid .caffemodel"),
])
def test_bad_caffemodel_files(tmp_path, content, expected):
    path = tmp_path / "model.caffemodel"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=expected) as err:
        formats.read_caffemodel(path)
    assert str(path) in str(err.value)


def test_truncated_caffemodel(tmp_path, tiny_prototxt):
    path = tmp_path / "full.caffemodel"
    Net(tiny_prototxt, seed=1).save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(data[: len(data) - 37])
    with pytest.raises(FormatError, match="truncated") as err:
        formats.read_caffemodel(cut)
    assert str(cut) in str(err.value)


def test_missing_files_and_bad_prototxt(tmp_path):
    with pytest.raises(FormatError, match="no such"):
        formats.read_caffemodel(tmp_path / "absent.caffemodel")
    with pytest.raises(FormatError, match="no such"):
        formats.read_net_prototxt(tmp_path / "absent.prototxt")
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer { name: "x" type: "ReLU" bogus_field: 3 }')
    with pytest.raises(FormatError, match="bad.prototxt") as err:
        formats.read_net_prototxt(bad)
    assert "bogus_field" in str(err.value)


def test_missing_weights_warn_or_raise(tmp_path, tiny_prototxt):
    path = tmp_path / "conv_only.caffemodel"
    formats.write_caffemodel(path, formats.read_net_prototxt(tiny_prototxt),
                             {"conv": [np.ones((3, 2, 3, 3), np.float32), np.ones(3, np.float32)]})
    net = Net(tiny_prototxt)
    with pytest.warns(UserWarning, match="'?ip'?"):
        assert net.copy_from(path) == ["ip"]
    with pytest.raises(FormatError, match="ip"):
        net.copy_from(path, strict=True)


def test_array_to_blob_is_exact(rng):
    arr = rng.standard_normal((7, 3, 2)).astype(np.float32)
    blob = formats.array_to_blob(arr)
    assert tuple(blob.shape.dim) == (7, 3, 2)
    np.testing.assert_array_equal(formats.blob_to_array(blob), arr)
    again = caffe_pb2.BlobProto.FromString(blob.SerializeToString())
    np.testing.assert_array_equal(np.asarray(again.data, np.float32).reshape(7, 3, 2), arr)


def test_shipped_prototxts_have_published_learning_rates():
    net = formats.read_net_prototxt(PROTOTXT / "finetune_salicon.prototxt")
    layers = {layer.name: layer for layer in net.layer}
    for prefix in ("", "sec_"):
        for name in ("conv1_1", "conv1_2", "conv2_1", "conv2_2"):
            specs = layers[prefix + name].param
            assert [(s.lr_mult, s.decay_mult) for s in specs] == [(0, 0), (0, 0)]
        for name in ("conv3_1", "conv4_2", "conv5_3"):
            specs = layers[prefix + name].param
            assert [(s.lr_mult, s.decay_mult) for s in specs] == [(1, 1), (2, 0)]
    assert [(s.lr_mult, s.decay_mult) for s in layers["saliency_map"].param] == [(1, 1), (2, 0)]
    assert layers["loss"].type == "SigmoidCrossEntropyLoss"
    assert list(layers["loss"].bottom) == ["saliency_map", "ground_truth"]
    assert list(layers["concat"].bottom) == ["interpolated_data", "pool5"]
    text = text_format.MessageToString(layers["custom_interpolation_layer"])
    assert 'param_str: "1,512,38,50"' in text


# ---------------------------------------------------------------- safetensors


def test_safetensors_round_trip_and_metadata(tmp_path, rng):
    tensors = {"conv/0": rng.standard_normal((3, 2, 3, 3)).astype(np.float16),
               "conv/1": rng.standard_normal(3).astype(np.float32),
               "ip/0": rng.standard_normal((4, 90)).astype(np.float64), "scalar": np.array(7, dtype=np.int64)}
    path = tmp_path / "w.safetensors"
    formats.write_safetensors(path, tensors, {"input_scale": "0.5"})
    assert formats.is_safetensors(path)
    back, metadata = formats.read_safetensors(path)
    assert metadata == {"input_scale": "0.5"}
    assert formats.read_safetensors_metadata(path) == metadata
    for key, array in tensors.items():
        assert back[key].dtype == array.dtype and back[key].shape == array.shape
        np.testing.assert_array_equal(back[key], array)
    # the header length is a multiple of 8 (data alignment)
    assert int.from_bytes(path.read_bytes()[:8], "little") % 8 == 0


def test_safetensors_agrees_with_the_reference_library(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is not installed")
    ours = {"a/0": rng.standard_normal((2, 3)).astype(np.float16), "b/1": rng.standard_normal(5).astype(np.float32)}
    path = tmp_path / "ours.safetensors"
    formats.write_safetensors(path, ours, {"k": "v"})
    theirs = st.load_file(str(path))  # the library reads what we write
    for key in ours:
        np.testing.assert_array_equal(theirs[key], ours[key])
    other = tmp_path / "theirs.safetensors"
    st.save_file(ours, str(other), metadata={"k": "v"})  # and we read what it writes
    back, metadata = formats.read_safetensors(other)
    assert metadata == {"k": "v"}
    for key in ours:
        np.testing.assert_array_equal(back[key], ours[key])


def test_safetensors_bfloat16_is_widened(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact in bfloat16
    header = b'{"x":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}'
    path = tmp_path / "bf.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bf16.tobytes())
    np.testing.assert_array_equal(formats.read_safetensors(path)[0]["x"], values)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d[:-4], "truncated"),
    (lambda d: d[:8] + b"[" + d[9:], "not valid JSON|not a JSON object"),
    (lambda d: (10 ** 9).to_bytes(8, "little") + d[8:], "header claims"),
    (lambda d: d + b"\0\0", "bytes after the last tensor"),
    (lambda d: d[:5], "too short"),
])
def test_bad_safetensors_files(tmp_path, mutate, expected):
    path = tmp_path / "w.safetensors"
    formats.write_safetensors(path, {"a/0": np.arange(6, dtype=np.float32)})
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(FormatError, match=expected):
        formats.read_safetensors(path)


def test_weights_of_either_format_load_into_a_net(tmp_path, tiny_prototxt):
    net = randomise(Net(tiny_prototxt), seed=3)
    caffemodel, safetensors = tmp_path / "w.caffemodel", tmp_path / "w.safetensors"
    net.save(caffemodel)
    formats.write_safetensors(safetensors, formats.params_to_tensors(net.state_arrays(), np.float32))
    for path in (caffemodel, safetensors):
        other = Net(tiny_prototxt)
        assert other.copy_from(path, strict=True) == []
        for name, arrays in net.state_arrays().items():
            for a, b in zip(arrays, other.state_arrays()[name]):
                np.testing.assert_array_equal(a, b)


def test_safetensors_with_wrong_names_or_shapes(tmp_path, tiny_prototxt):
    net = Net(tiny_prototxt)
    tensors = formats.params_to_tensors(net.state_arrays(), np.float32)
    bad_name = tmp_path / "name.safetensors"
    formats.write_safetensors(bad_name, {**tensors, "conv_weights": tensors["conv/0"]})
    with pytest.raises(FormatError, match="conv_weights.*'<layer>/<blob index>'"):
        net.copy_from(bad_name)
    bad_shape = tmp_path / "shape.safetensors"
    formats.write_safetensors(bad_shape, {**tensors, "conv/0": np.zeros((3, 2, 5, 5), np.float32)})
    with pytest.raises(FormatError, match=r"layer 'conv' blob 0 .*\(3, 2, 5, 5\).*\(3, 2, 3, 3\)"):
        net.copy_from(bad_shape)
    gap = tmp_path / "gap.safetensors"
    formats.write_safetensors(gap, {k: v for k, v in tensors.items() if k != "conv/0"})
    with pytest.raises(FormatError, match="layer 'conv' has blobs \\[1\\]"):
        net.copy_from(gap)


def test_a_solver_given_as_net_is_named_as_such():
    with pytest.raises(FormatError, match="this is a solver prototxt"):
        formats.read_net_prototxt(PROTOTXT / "solver.prototxt")


def test_missing_weights_file_is_named_neutrally(tmp_path, tiny_prototxt):
    with pytest.raises(FormatError, match=r"no such weights file \(.caffemodel or .safetensors\)"):
        Net(tiny_prototxt).copy_from(tmp_path / "nonexist.safetensors")
