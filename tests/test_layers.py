"""Every layer type of the PyTorch engine against an independent numpy/scipy
reference written from Caffe's definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.special
import torch

from salicon.engine import Blob, Net
from salicon.engine.pylayer import load_layer_class
from salicon.engine.python_layers import PROJECT_LAYERS_DIR, read_layer_file
from salicon.formats import parse_net_prototxt


def make_net(body: str, inputs: dict[str, tuple], phase: str = "test", seed: int = 0) -> Net:
    head = "".join(
        f'layer {{ name: "{n}" type: "Input" top: "{n}" input_param {{ shape {{ '
        + " ".join(f"dim: {d}" for d in s) + " } } }\n" for n, s in inputs.items())
    return Net(parse_net_prototxt(head + body), phase=phase, seed=seed)


def project_layer_file(module: str):
    return read_layer_file(module, PROJECT_LAYERS_DIR / f"{module}.py")


def run(net: Net, **inputs) -> dict[str, np.ndarray]:
    out = net(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return {k: v.detach().numpy() for k, v in out.items()}


def randomise(net: Net, rng) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))


# --------------------------------------------------------------- references


def conv_ref(x, w, b, stride, pad, dilation, group):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                hs, ws = i * stride[0], j * stride[1]
                patch = xp[:, g * cg:(g + 1) * cg, hs:hs + dilation[0] * (kh - 1) + 1:dilation[0],
                           ws:ws + dilation[1] * (kw - 1) + 1:dilation[1]]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + (b[oc] if b is not None else 0)
    return out


def pool_ref(x, kernel, stride, pad, method):
    """Caffe's pooling_layer.cpp, literally (ceil rounding, clipped windows)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    oh = int(math.ceil((h + 2 * ph - kh) / sh)) + 1
    ow = int(math.ceil((w + 2 * pw - kw) / sw)) + 1
    if ph and (oh - 1) * sh >= h + ph:
        oh -= 1
    if pw and (ow - 1) * sw >= w + pw:
        ow -= 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            out[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / size
    return out


# ------------------------------------------------------------------ layers


@pytest.mark.parametrize("spec, kw", [
    ("num_output: 4 kernel_size: 3", dict(stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1)),
    ("num_output: 4 kernel_size: 3 pad: 1 stride: 2", dict(stride=(2, 2), pad=(1, 1), dilation=(1, 1), group=1)),
    ("num_output: 6 kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride_h: 2 stride_w: 3 group: 2",
     dict(stride=(2, 3), pad=(2, 1), dilation=(1, 1), group=2)),
    ("num_output: 2 kernel_size: 3 dilation: 2 pad: 2 bias_term: false",
     dict(stride=(1, 1), pad=(2, 2), dilation=(2, 2), group=1)),
    ("num_output: 3 kernel_size: 1", dict(stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1)),
])
def test_convolution(spec, kw, rng):
    net = make_net(f'layer {{ name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param {{ {spec} }} }}',
                   {"x": (2, 4, 9, 11)})
    randomise(net, rng)
    x = rng.standard_normal((2, 4, 9, 11)).astype(np.float32)
    blobs = net.params["c"]
    b = blobs[1].detach().numpy() if len(blobs) > 1 else None
    expected = conv_ref(x, blobs[0].detach().numpy(), b, **kw)
    y = run(net, x=x)["y"]
    assert y.shape == expected.shape == net.blob_shapes["y"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size, kernel, stride, pad", [
    ((7, 7), 2, 2, 0),    # odd size: ceil keeps a clipped last window
    ((8, 8), 2, 2, 0),    # even size
    ((75, 100), 2, 2, 0),  # the SALICON pool5 case: 75 -> 38
    ((7, 9), 3, 2, 1),    # padded: AVE counts padding, last window dropped if in padding
    ((6, 5), 3, 3, 1),
    ((10, 9), 3, 2, 2),   # pad > kernel/2: beyond what PyTorch pools natively
])
def test_pooling_matches_caffe(method, size, kernel, stride, pad, rng):
    body = (f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ pool: {method} '
            f'kernel_size: {kernel} stride: {stride} pad: {pad} }} }}')
    net = make_net(body, {"x": (1, 3) + size})
    x = rng.standard_normal((1, 3) + size).astype(np.float32)
    expected = pool_ref(x, (kernel,) * 2, (stride,) * 2, (pad,) * 2, method)
    y = run(net, x=x)["y"]
    assert y.shape == expected.shape == net.blob_shapes["y"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_global_pooling_and_rectangular_kernels(rng):
    body = ('layer { name: "g" type: "Pooling" bottom: "x" top: "g" pooling_param { pool: AVE global_pooling: true } }\n'
            'layer { name: "r" type: "Pooling" bottom: "x" top: "r" pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 '
            'stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 } }')
    net = make_net(body, {"x": (2, 3, 5, 6)})
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    out = run(net, x=x)
    np.testing.assert_allclose(out["g"], x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["r"], pool_ref(x, (3, 2), (2, 1), (1, 0), "MAX"), rtol=1e-6)


def test_elementwise_layers(rng):
    body = """
    layer { name: "relu" type: "ReLU" bottom: "x" top: "relu" }
    layer { name: "leaky" type: "ReLU" bottom: "x" top: "leaky" relu_param { negative_slope: 0.1 } }
    layer { name: "sig" type: "Sigmoid" bottom: "x" top: "sig" }
    layer { name: "tanh" type: "TanH" bottom: "x" top: "tanh" }
    layer { name: "soft" type: "Softmax" bottom: "x" top: "soft" }
    layer { name: "soft3" type: "Softmax" bottom: "x" top: "soft3" softmax_param { axis: -1 } }
    layer { name: "drop" type: "Dropout" bottom: "x" top: "drop" dropout_param { dropout_ratio: 0.3 } }
    """
    net = make_net(body, {"x": (2, 4, 3, 5)})
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    out = run(net, x=x)
    np.testing.assert_allclose(out["relu"], np.maximum(x, 0))
    np.testing.assert_allclose(out["leaky"], np.where(x > 0, x, 0.1 * x), rtol=1e-6)
    np.testing.assert_allclose(out["sig"], scipy.special.expit(x), rtol=1e-6)
    np.testing.assert_allclose(out["tanh"], np.tanh(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["soft"], scipy.special.softmax(x, axis=1), rtol=1e-5)
    np.testing.assert_allclose(out["soft3"], scipy.special.softmax(x, axis=3), rtol=1e-5)
    np.testing.assert_array_equal(out["drop"], x)  # test phase: identity


def test_dropout_train_phase_scales_kept_values(rng):
    net = make_net('layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.25 } }',
                   {"x": (1, 1, 100, 100)}, phase="train")
    x = np.ones((1, 1, 100, 100), np.float32)
    y = run(net, x=x)["y"]
    kept = y[y != 0]
    np.testing.assert_allclose(kept, 1 / 0.75, rtol=1e-6)
    assert 0.70 < kept.size / y.size < 0.80


def test_concat_eltwise_flatten_reshape(rng):
    body = """
    layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
    layer { name: "cat3" type: "Concat" bottom: "a" bottom: "a" top: "cat3" concat_param { axis: 3 } }
    layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "c" top: "sum" eltwise_param { coeff: 2 coeff: -0.5 } }
    layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "c" top: "prod" eltwise_param { operation: PROD } }
    layer { name: "max" type: "Eltwise" bottom: "a" bottom: "c" top: "max" eltwise_param { operation: MAX } }
    layer { name: "flat" type: "Flatten" bottom: "a" top: "flat" }
    layer { name: "flat2" type: "Flatten" bottom: "a" top: "flat2" flatten_param { axis: 1 end_axis: 2 } }
    layer { name: "resh" type: "Reshape" bottom: "a" top: "resh" reshape_param { shape { dim: 0 dim: -1 dim: 4 } } }
    layer { name: "resh2" type: "Reshape" bottom: "a" top: "resh2"
            reshape_param { shape { dim: 2 dim: 1 } axis: 1 num_axes: 1 } }
    """
    net = make_net(body, {"a": (2, 2, 3, 4), "b": (2, 5, 3, 4), "c": (2, 2, 3, 4)})
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in [(2, 2, 3, 4), (2, 5, 3, 4), (2, 2, 3, 4)])
    out = run(net, a=a, b=b, c=c)
    np.testing.assert_array_equal(out["cat"], np.concatenate([a, b], axis=1))
    np.testing.assert_array_equal(out["cat3"], np.concatenate([a, a], axis=3))
    np.testing.assert_allclose(out["sum"], 2 * a - 0.5 * c, rtol=1e-6)
    np.testing.assert_allclose(out["prod"], a * c, rtol=1e-6)
    np.testing.assert_array_equal(out["max"], np.maximum(a, c))
    np.testing.assert_array_equal(out["flat"], a.reshape(2, 24))
    np.testing.assert_array_equal(out["flat2"], a.reshape(2, 6, 4))
    np.testing.assert_array_equal(out["resh"], a.reshape(2, 6, 4))
    np.testing.assert_array_equal(out["resh2"], a.reshape(2, 2, 1, 3, 4))


def test_inner_product_and_scale(rng):
    body = """
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 3 } }
    layer { name: "ipt" type: "InnerProduct" bottom: "x" top: "ipt"
            inner_product_param { num_output: 2 axis: 2 transpose: true bias_term: false } }
    layer { name: "sc" type: "Scale" bottom: "x" top: "sc" scale_param { bias_term: true } }
    layer { name: "sc2" type: "Scale" bottom: "x" bottom: "s" top: "sc2" scale_param { axis: 1 } }
    """
    net = make_net(body, {"x": (2, 4, 3, 5), "s": (4, 3)})
    randomise(net, rng)
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    s = rng.standard_normal((4, 3)).astype(np.float32)
    out = run(net, x=x, s=s)
    w, bias = (p.detach().numpy() for p in net.params["ip"])
    np.testing.assert_allclose(out["ip"], x.reshape(2, -1) @ w.T + bias, rtol=1e-4, atol=1e-5)
    wt = net.params["ipt"][0].detach().numpy()
    assert wt.shape == (15, 2)
    np.testing.assert_allclose(out["ipt"], x.reshape(2, 4, 15) @ wt, rtol=1e-4, atol=1e-5)
    gamma, beta = (p.detach().numpy() for p in net.params["sc"])
    np.testing.assert_allclose(out["sc"], x * gamma[:, None, None] + beta[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(out["sc2"], x * s[:, :, None], rtol=1e-6)


def test_sigmoid_cross_entropy_loss_matches_caffe_formula(rng):
    body = 'layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss" }'
    net = make_net(body, {"x": (2, 1, 4, 5), "t": (2, 1, 4, 5)}, phase="train")
    x = (rng.standard_normal((2, 1, 4, 5)) * 5).astype(np.float32)
    t = rng.uniform(0, 1, (2, 1, 4, 5)).astype(np.float32)  # soft targets
    pos = (x >= 0).astype(np.float64)
    expected = -np.sum(x * (t - pos) - np.log1p(np.exp(x - 2 * x * pos))) / 2  # normaliser: batch size
    xt = torch.from_numpy(x).requires_grad_()
    out = net(x=xt, t=torch.from_numpy(t))
    np.testing.assert_allclose(out["loss"].item(), expected, rtol=1e-5)
    net.objective(out).backward()
    np.testing.assert_allclose(xt.grad.numpy(), (scipy.special.expit(x) - t) / 2, rtol=1e-5, atol=1e-7)


def test_euclidean_loss(rng):
    net = make_net('layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" }',
                   {"a": (3, 4), "b": (3, 4)}, phase="train")
    a, b = rng.standard_normal((2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run(net, a=a, b=b)["l"], ((a - b) ** 2).sum() / 6, rtol=1e-5)


# ------------------------------------------------------------ interpolation


INTERP = ('layer {{ name: "interp" type: "Python" bottom: "x" top: "y" python_param {{ '
          'module: "custom_interpolation_layer" layer: "custom_interpolation_layer" param_str: "{}" }} }}')


@pytest.mark.parametrize("src, dst", [((19, 25), (38, 50)), ((4, 7), (9, 5)), ((1, 3), (2, 6))])
def test_interpolation_equals_scipy_zoom_order1(src, dst, rng):
    x = rng.standard_normal((2, 3) + src).astype(np.float32)
    factors = (1, 1, dst[0] / src[0], dst[1] / src[1])
    expected = scipy.ndimage.zoom(x.astype(np.float64), factors, order=1, mode="nearest")
    assert expected.shape[2:] == dst
    net = make_net(INTERP.format(f"1,3,{dst[0]},{dst[1]}"), {"x": (2, 3) + src})
    np.testing.assert_allclose(run(net, x=x)["y"], expected, atol=1e-5)
    # The Caffe Python layer module itself (numpy), through its Caffe interface.
    layer = load_layer_class(project_layer_file("custom_interpolation_layer"), "custom_interpolation_layer")()
    layer.param_str = f"1,3,{dst[0]},{dst[1]}"
    bottom, top = [Blob(data=x)], [Blob()]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, expected, atol=1e-5)


def test_interpolation_backward_is_the_adjoint(rng):
    src, dst = (19, 25), (38, 50)
    x = rng.standard_normal((1, 4) + src)
    y = rng.standard_normal((1, 4) + dst)
    # <A x, y> = <x, A^T y> for the native op (autograd) ...
    net = make_net(INTERP.format("1,4,38,50"), {"x": (1, 4) + src})
    xt = torch.from_numpy(x).float().requires_grad_()
    ax = net(x=xt)["y"]
    (ax * torch.from_numpy(y)).sum().backward()
    np.testing.assert_allclose((ax.detach().numpy() * y).sum(), (x * xt.grad.numpy()).sum(), rtol=1e-6)
    # ... and for the Caffe layer's backward.
    layer = load_layer_class(project_layer_file("custom_interpolation_layer"), "custom_interpolation_layer")()
    layer.param_str = "1,4,38,50"
    bottom, top = [Blob(data=x)], [Blob()]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    top[0].diff = y.astype(np.float32)
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose((top[0].data * y).sum(), (x * bottom[0].diff).sum(), rtol=1e-4)
    np.testing.assert_allclose(bottom[0].diff, xt.grad.numpy(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------- user layers


USER_LAYER = '''
import caffe
import numpy as np


class ScaledSquare(caffe.Layer):
    """top = k * bottom^2, k from param_str."""

    def setup(self, bottom, top):
        self.k = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data ** 2

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * self.k * bottom[0].data * top[0].diff
'''


def test_user_python_layer_forward_and_gradient(tmp_path, rng, monkeypatch):
    (tmp_path / "my_layers.py").write_text(USER_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))  # found as Caffe's import finds it
    body = """
    layer { name: "sq" type: "Python" bottom: "x" top: "y" python_param { module: "my_layers" layer: "ScaledSquare"
            param_str: "1.5" } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
    """
    proto = tmp_path / "net.prototxt"
    proto.write_text('layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 3 } } }\n'
                     + body)
    net = Net(proto, phase="train")
    x = rng.standard_normal((2, 3))
    t = rng.standard_normal((2, 3))
    xt = torch.from_numpy(x.astype(np.float32)).requires_grad_()
    out = net(x=xt, t=torch.from_numpy(t.astype(np.float32)))
    y = 1.5 * x ** 2
    np.testing.assert_allclose(out["loss"].item(), ((y - t) ** 2).sum() / 4, rtol=1e-5)
    net.objective(out).backward()
    analytic = (y - t) / 2 * 3.0 * x  # d loss / dy = (y - t) / N, dy/dx = 2 k x
    np.testing.assert_allclose(xt.grad.numpy(), analytic, rtol=1e-4, atol=1e-6)
    # Finite differences through the whole net.
    eps, numeric = 1e-2, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        for sign in (1, -1):
            xp = x.copy()
            xp[i] += sign * eps
            loss = net(x=torch.from_numpy(xp.astype(np.float32)), t=torch.from_numpy(t.astype(np.float32)))["loss"]
            numeric[i] += sign * loss.item() / (2 * eps)
    np.testing.assert_allclose(xt.grad.numpy(), numeric, rtol=2e-2, atol=2e-3)


def test_user_layer_import_failure_is_clear(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
                     'layer { name: "odd" type: "Python" bottom: "x" top: "y" '
                     'python_param { module: "no_such_module_here" layer: "L" } }')
    with pytest.raises(Exception, match="layer 'odd' \\(type Python\\).*no_such_module_here"):
        Net(proto)


# ------------------------------------------------------------------- nets


def test_unsupported_layer_type_fails_at_build():
    with pytest.raises(Exception, match="layer 'norm1' \\(type LRN\\): unsupported layer type"):
        make_net('layer { name: "norm1" type: "LRN" bottom: "x" top: "y" }', {"x": (1, 3, 4, 4)})


def test_phase_rules_in_place_and_blobs(rng):
    body = """
    layer { name: "conv" type: "Convolution" bottom: "x" top: "conv" convolution_param { num_output: 2 kernel_size: 1 } }
    layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
    layer { name: "out_test" type: "Sigmoid" bottom: "conv" top: "prob" include { phase: TEST } }
    layer { name: "out_train" type: "TanH" bottom: "conv" top: "prob" exclude { phase: TEST } }
    """
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    test_net = make_net(body, {"x": (1, 2, 4, 4)})
    train_net = make_net(body, {"x": (1, 2, 4, 4)}, phase="train")
    assert "out_test" in test_net.layer_params and "out_train" not in test_net.layer_params
    assert "out_train" in train_net.layer_params and "out_test" not in train_net.layer_params
    randomise(test_net, rng)
    out = test_net(x=x, blobs=["conv"])  # batch 3 although the prototxt says 1
    conv = out["conv"].detach().numpy()
    assert conv.shape == (3, 2, 4, 4) and (conv >= 0).all()  # in-place ReLU applied
    np.testing.assert_allclose(out["prob"].detach().numpy(), scipy.special.expit(conv), rtol=1e-6)
    assert list(test_net.blobs) == ["x", "conv", "prob"]
    assert test_net.outputs == ["prob"]


def test_edited_input_size_without_interpolation_fails_at_build(tmp_path):
    from .conftest import PROTOTXT
    text = (PROTOTXT / "salicon.prototxt").read_text().replace('"1,3,1200,1600"', '"1,3,600,800"')
    path = tmp_path / "edited.prototxt"
    path.write_text(text)
    with pytest.raises(Exception) as err:
        Net(path)
    message = str(err.value)
    assert "layer 'concat' (type Concat)" in message
    assert "(1, 512, 19, 25)" in message and "(1, 512, 38, 50)" in message


def test_missing_input_and_wrong_shape_are_reported(rng):
    net = make_net('layer { name: "r" type: "ReLU" bottom: "x" top: "y" }', {"x": (1, 3, 4, 4)})
    with pytest.raises(ValueError, match="missing input"):
        net()
    with pytest.raises(ValueError, match="input 'x' has shape \\(1, 3, 5, 4\\)"):
        net(x=np.zeros((1, 3, 5, 4), np.float32))


def test_input_without_shape_and_caffe_phase_constants():
    with pytest.raises(Exception, match="layer 'data' \\(type Input\\): input_param gives no shape"):
        Net(parse_net_prototxt('layer { name: "data" type: "Input" top: "data" }'))
    from salicon.proto import caffe_pb2
    net = Net(parse_net_prototxt('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
                                 'layer { name: "d" type: "Dropout" bottom: "x" top: "y" }'), phase=caffe_pb2.TRAIN)
    assert net.phase == "train"
