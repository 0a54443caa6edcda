"""Forward variants (salicon.engine.fast): each equals the plain Net.forward on the CPU."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from salicon.device import precision_context
from salicon.engine import Net
from salicon.engine.fast import (
    VARIANTS,
    FastForward,
    ForwardOptions,
    FusedConvReLU,
    GraphCache,
    fuse_conv_relu,
    run_steps,
)
from salicon.errors import EngineError
from salicon.model import Salicon
from salicon.preprocess import image_to_inputs, image_to_inputs_nhwc

from .conftest import randomise

OUTPUT = "saliency_map_out"


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(0)
    return {"fine_scale": torch.rand((2, 3, 120, 160), generator=gen) - 0.5,
            "coarse_scale": torch.rand((2, 3, 60, 80), generator=gen) - 0.5}


def plain(prototxt, inputs, precision="fp32"):
    net = randomise(Net(prototxt), seed=2).eval().requires_grad_(False)
    with torch.inference_mode(), precision_context(precision, net.device):
        return net(**inputs)[OUTPUT].float()


def variant(prototxt, inputs, options, precision="fp32"):
    net = randomise(Net(prototxt), seed=2).eval().requires_grad_(False)
    fast = FastForward(net, OUTPUT, options, precision)
    with torch.inference_mode(), precision_context(precision, net.device):
        return fast(**inputs).float(), fast


def assert_equal_within_1e5(got, ref):
    assert got.shape == ref.shape
    assert float(ref.std()) > 0  # a real map, not a constant
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("names", ["", "channels_last", "fuse_relu", "cast_weights", "channels_last,fuse_relu",
                                   "channels_last,fuse_relu,cast_weights"])
def test_each_variant_equals_the_plain_path_fp32(small_prototxt, inputs, names):
    ref = plain(small_prototxt, inputs)
    got, fast = variant(small_prototxt, inputs, ForwardOptions.parse(names))
    assert_equal_within_1e5(got, ref)
    if "fuse_relu" in names:
        fused = [s for s in fast.steps if isinstance(s[0], FusedConvReLU)]
        assert len(fused) == 26  # every conv+ReLU pair of both VGG-16 streams
    if "channels_last" in names:
        assert fast.net.layer("conv1_1").weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_compile_variant_equals_the_plain_path(small_prototxt, inputs):
    ref = plain(small_prototxt, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would be a failure here
        got, fast = variant(small_prototxt, inputs, ForwardOptions(compile=True, fuse_relu=True))
    assert fast._fn.failure is None and fast._fn.compiled is not None
    assert_equal_within_1e5(got, ref)


def test_compile_failure_falls_back_with_one_clear_warning(small_prototxt, inputs, monkeypatch):
    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found\nlong trace")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    ref = plain(small_prototxt, inputs)
    with pytest.warns(RuntimeWarning, match=r"torch.compile could not compile the net \(RuntimeError: no C\+\+ "
                                            r"compiler found\); running it eagerly"):
        got, fast = variant(small_prototxt, inputs, ForwardOptions(compile=True))
    assert_equal_within_1e5(got, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, then eager without trying again
        with torch.inference_mode():
            fast(**inputs)


def test_cast_weights_in_bf16_matches_autocast(small_prototxt, inputs):
    ref = plain(small_prototxt, inputs, "bf16")
    got, fast = variant(small_prototxt, inputs, ForwardOptions(cast_weights=True, channels_last=True), "bf16")
    assert fast.net.dtype == torch.bfloat16 and fast.input_dtype == torch.bfloat16 and not fast.autocast
    a, b = got.flatten() - got.mean(), ref.flatten() - ref.mean()
    assert float(a @ b / (a.norm() * b.norm())) > 0.999


def test_fused_conv_relu_under_cpu_autocast_and_with_gradients():
    from salicon.engine.layers import Convolution, ReLU
    from salicon.proto import caffe_pb2
    lp = caffe_pb2.LayerParameter(name="c", type="Convolution", bottom=["x"], top=["y"])
    lp.convolution_param.num_output = 4
    lp.convolution_param.kernel_size.append(3)
    lp.convolution_param.pad.append(1)
    conv = Convolution(lp, [(1, 3, 9, 9)], caffe_pb2.TEST)
    relu_lp = caffe_pb2.LayerParameter(name="r", type="ReLU", bottom=["y"], top=["y"])
    relu = ReLU(relu_lp, [(1, 4, 9, 9)], caffe_pb2.TEST)
    leaky_lp = caffe_pb2.LayerParameter(name="l", type="ReLU", bottom=["y"], top=["y"])
    leaky_lp.relu_param.negative_slope = 0.1
    leaky = ReLU(leaky_lp, [(1, 4, 9, 9)], caffe_pb2.TEST)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    x = torch.randn(1, 3, 9, 9)
    steps = fuse_conv_relu([(conv, ("x",), ("y",)), (relu, ("y",), ("y",))])
    assert len(steps) == 1 and isinstance(steps[0][0], FusedConvReLU)
    assert len(fuse_conv_relu([(conv, ("x",), ("y",)), (leaky, ("y",), ("y",))])) == 2  # leaky: not fused
    assert len(fuse_conv_relu([(conv, ("x",), ("y",)), (relu, ("y",), ("y",))], keep={"y"})) == 2
    ref = torch.relu(conv(x)[0])
    torch.testing.assert_close(run_steps(steps, {"x": x}, "y"), ref)  # with autograd on: conv2d + relu_
    with torch.no_grad():
        torch.testing.assert_close(run_steps(steps, {"x": x}, "y"), ref, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run_steps(steps, {"x": x}, "y")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)


def test_graph_cache_replays_per_shape_and_hands_out_copies(small_prototxt, inputs):
    """The CUDA-graph wrapper's bookkeeping, with a stand-in capture on the CPU:
    one capture per input shape, inputs copied into the static buffers, results
    that a later replay does not overwrite."""
    net = randomise(Net(small_prototxt), seed=2).eval().requires_grad_(False)
    captures = []

    def capture(fn):
        output = fn()
        captures.append(output)
        return (lambda: output.copy_(fn())), output

    cache = GraphCache(lambda feeds: run_steps(net._steps, feeds, OUTPUT), capture=capture)
    ref = plain(small_prototxt, inputs)
    one = {k: v[:1] for k, v in inputs.items()}
    with torch.inference_mode():
        first = cache(inputs)
        second = cache({k: v.flip(0) for k, v in inputs.items()})  # same shape: replayed, not captured
        single = cache(one)
    assert len(captures) == 2 and len(cache.graphs) == 2
    assert_equal_within_1e5(first, ref)
    assert_equal_within_1e5(second, ref.flip(0))  # the new inputs were copied in
    assert_equal_within_1e5(single, ref[:1])
    assert first.data_ptr() != captures[0].data_ptr()  # a copy, unchanged by the second replay


def test_cuda_graphs_need_a_gpu(small_prototxt):
    net = Net(small_prototxt)
    with pytest.raises(EngineError, match="cuda-graphs needs a CUDA device; the net is on cpu"):
        FastForward(net, OUTPUT, ForwardOptions(cuda_graphs=True))


def test_options_parse():
    assert ForwardOptions.parse("fuse-relu, compile").names() == ["fuse_relu", "compile"]
    assert ForwardOptions.parse("all").names() == list(VARIANTS)
    assert not ForwardOptions.parse("none") and not ForwardOptions.parse("")
    with pytest.raises(ValueError, match="unknown forward variant.*fused; choose from channels-last"):
        ForwardOptions.parse("fused")


def test_nhwc_inputs_equal_the_chw_ones(rng):
    rgb = rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)
    sizes = [(120, 160), (60, 80), (75, 101)]
    for method in ("spline", "bilinear", "scipy"):
        ref = image_to_inputs(rgb, sizes, method)
        got = image_to_inputs_nhwc(rgb, sizes, method)
        for a, b in zip(got, ref):
            assert a.shape == b.shape
            assert a.unsqueeze(0).is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        for a, b in zip(image_to_inputs_nhwc(torch.from_numpy(rgb), sizes, method), ref):  # pixels on a device
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_salicon_with_variants_equals_the_plain_model(small_prototxt, small_model, tmp_path):
    from PIL import Image
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(img)
    ref = Salicon(small_model, small_prototxt, device="cpu", precision="fp32").compute_saliency(img)
    fast = Salicon(small_model, small_prototxt, device="cpu", precision="fp32",
                   variants="channels-last,fuse-relu,cast-weights")
    assert fast.fast is not None and fast.fast.options.names() == ["channels_last", "fuse_relu", "cast_weights"]
    got = fast.compute_saliency(img)
    assert float(ref.std()) > 0
    np.testing.assert_allclose(got, ref, atol=1e-5)
    with pytest.raises(ValueError, match="forward variants .* are for the PyTorch runtime"):
        Salicon(small_model, small_prototxt, device="cpu", precision="fp32", runtime="openvino", variants="fuse-relu")


def test_cli_variants_option_is_checked(capsys):
    from salicon.cli import main
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "x.jpg", "-o", "out", "--variants", "fused"])
    assert exit_info.value.code == 2
    assert "unknown forward variant(s) fused" in capsys.readouterr().err
