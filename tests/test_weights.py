"""init-weights: both streams from VGG-16 conv layers (legacy and current layouts)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from salicon import formats
from salicon.cli import main
from salicon.engine import Net
from salicon.errors import FormatError
from salicon.proto import caffe_pb2
from salicon.weights import VGG16_CONV_LAYERS, init_from_vgg16

from .conftest import PROTOTXT, VGG16

CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def _legacy_vgg16(path, rng, with_fc=True):
    """A VGG-16-shaped .caffemodel in the legacy Model Zoo layout (random values)."""
    net = caffe_pb2.NetParameter(name="VGG_ILSVRC_16_layers")
    net.input.append("data")
    net.input_dim.extend([10, 3, 224, 224])
    arrays, cin = {}, 3
    for name in VGG16_CONV_LAYERS:
        cout = CHANNELS[int(name[4])]
        layer = net.layers.add(name=name, type=caffe_pb2.V1LayerParameter.CONVOLUTION)
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
        b = rng.standard_normal(cout).astype(np.float32)
        for arr, dims in ((w, w.shape), (b, (1, 1, 1, cout))):
            blob = layer.blobs.add()
            blob.CopyFrom(formats.array_to_blob(arr))
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = dims
        arrays[name] = (w, b)
        cin = cout
    if with_fc:
        fc = net.layers.add(name="fc8", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
        blob = fc.blobs.add(num=1, channels=1, height=10, width=7)
        blob.data.extend(np.zeros(70).tolist())
    path.write_bytes(net.SerializeToString())
    return arrays


def test_init_from_synthetic_legacy_vgg16(tmp_path, rng, small_train_prototxt):
    vgg = tmp_path / "vgg.caffemodel"
    arrays = _legacy_vgg16(vgg, rng)
    out = tmp_path / "untrained.caffemodel"
    assert main(["init-weights", "--vgg16", str(vgg), "-o", str(out), "--prototxt",
                 str(small_train_prototxt), "--seed", "7"]) == 0
    net = Net(small_train_prototxt, phase="train", weights=out)
    for name, (w, b) in arrays.items():
        for target in (name, "sec_" + name):
            np.testing.assert_array_equal(net.params[target][0].detach().numpy(), w)
            np.testing.assert_array_equal(net.params[target][1].detach().numpy(), b)
    # saliency_map from the prototxt fillers (gaussian std 0.01, bias 0), seeded.
    sal_w = net.params["saliency_map"][0].detach().numpy()
    assert sal_w.shape == (1, 1024, 1, 1) and 0.008 < sal_w.std() < 0.012
    assert not net.params["saliency_map"][1].detach().numpy().any()
    again, _ = init_from_vgg16(vgg, small_train_prototxt, seed=7)
    np.testing.assert_array_equal(again.params["saliency_map"][0].detach().numpy(), sal_w)
    other, report = init_from_vgg16(vgg, small_train_prototxt, seed=8)
    assert not np.array_equal(other.params["saliency_map"][0].detach().numpy(), sal_w)
    assert report.ignored == ["fc8"] and report.initialised == ["saliency_map"]


def test_init_rejects_non_vgg_file(tmp_path, small_train_prototxt):
    path = tmp_path / "other.caffemodel"
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="conv1_1", type="Convolution")
    layer.blobs.add().CopyFrom(formats.array_to_blob(np.zeros((64, 3, 3, 3), np.float32)))
    path.write_bytes(net.SerializeToString())
    with pytest.raises(FormatError, match="conv1_2"):
        init_from_vgg16(path, small_train_prototxt)


@pytest.mark.skipif(not VGG16.exists(), reason=f"real VGG-16 weights not found at {VGG16} (../shared absent)")
def test_init_from_real_vgg16(tmp_path):
    out = tmp_path / "untrained.caffemodel"
    assert main(["init-weights", "--vgg16", str(VGG16), "-o", str(out)]) == 0
    source = formats.load_caffemodel_arrays(VGG16)
    net = Net(PROTOTXT / "salicon.prototxt", weights=out)
    for name in VGG16_CONV_LAYERS:
        for target in (name, "sec_" + name):
            np.testing.assert_array_equal(net.params[target][0].detach().numpy(), source[name][0])
            np.testing.assert_array_equal(net.params[target][1].detach().numpy(), source[name][1].ravel())
    # The written file is the current layout, as Caffe's Net::ToProto writes it.
    raw = caffe_pb2.NetParameter.FromString(out.read_bytes())
    assert not raw.layers and raw.layer[0].type == "Python"
    # ImageNet features respond to an image: conv1_1 filters are not random noise.
    w = torch.from_numpy(source["conv1_1"][0])
    assert w.shape == (64, 3, 3, 3) and float(w.abs().mean()) > 0.05


def test_init_rejects_a_trained_salicon_model(tmp_path, small_prototxt):
    from salicon.engine import Net as _Net
    model = tmp_path / "trained.caffemodel"
    _Net(small_prototxt).save(model)  # every VGG layer, plus sec_* and saliency_map
    with pytest.raises(FormatError, match="SALICON model, not ImageNet VGG-16"):
        init_from_vgg16(model)
