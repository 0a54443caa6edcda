"""Differential tests: the PyTorch engine against real Caffe (pycaffe) on the
same prototxt, layers/ modules and .caffemodel files.

They need pycaffe (`bash scripts/install_caffe.sh`); CI builds it. Without it
they skip, except the test of the error that says how to install it.
"""
from __future__ import annotations

import copy
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from salicon import Salicon
from salicon.engine import Net
from salicon.errors import EngineError
from salicon.runtimes.caffe import CaffeNet, caffe_available
from salicon.solver import Solver, read_solver
from salicon.weights import init_from_vgg16

from .conftest import PROTOTXT, ROOT, SHARED, VGG16, randomise

CAFFE_REQUIRED = os.environ.get("SALICON_REQUIRE_CAFFE") == "1"  # set by CI, which builds pycaffe
if CAFFE_REQUIRED and not caffe_available():
    raise RuntimeError("SALICON_REQUIRE_CAFFE=1 but pycaffe does not import; run scripts/install_caffe.sh")
needs_caffe = pytest.mark.skipif(not caffe_available(),
                                 reason="pycaffe not importable; build it with scripts/install_caffe.sh")


def _available_memory_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return float("inf")


# Real Caffe needs about 19 GB for the full-size net (per-layer im2col buffers).
needs_caffe_memory = pytest.mark.skipif(_available_memory_gb() < 20,
                                        reason="the full-size Caffe net needs about 19 GB of free memory")
needs_vgg = pytest.mark.skipif(not VGG16.exists(), reason=f"VGG-16 weights not found at {VGG16}")

BLOBS = ["pool5", "sec_pool5", "interpolated_data", "concat", "saliency_map"]


def inputs(rng, shapes, scale=0.5):
    return {name: rng.uniform(-scale, scale, shape).astype(np.float32) for name, shape in shapes.items()}


def compare(ours: dict, theirs: dict, names, atol_out=1e-4, rtol_blob=1e-4):
    for name in names:
        a = ours[name].detach().float().numpy() if isinstance(ours[name], torch.Tensor) else ours[name]
        b = theirs[name]
        assert a.shape == b.shape, name
        scale = max(1.0, float(np.abs(b).max()))
        np.testing.assert_allclose(a, b, atol=rtol_blob * scale, err_msg=name)
    np.testing.assert_allclose(ours["saliency_map_out"].detach().numpy(), theirs["saliency_map_out"], atol=atol_out)


def test_caffe_engine_without_pycaffe_says_how_to_install(monkeypatch, small_model, small_prototxt):
    monkeypatch.setitem(sys.modules, "caffe", None)  # makes `import caffe` fail
    with pytest.raises(EngineError, match="install_caffe.sh"):
        Salicon(small_model, small_prototxt, engine="caffe")


@needs_caffe
def test_small_net_random_weights(small_model, small_prototxt, rng):
    ours = Net(small_prototxt, small_model)
    theirs = CaffeNet(small_prototxt, small_model)
    feeds = inputs(rng, ours.input_shapes)
    with torch.no_grad():
        compare(ours(blobs=BLOBS, **feeds), theirs(blobs=BLOBS, **feeds), BLOBS)


@needs_caffe
@needs_vgg
@pytest.mark.parametrize("input_scale", [0.5, 127.0])  # the published 1/255 scale and VGG's own
def test_small_net_real_vgg_weights(tmp_path, small_prototxt, small_train_prototxt, rng, input_scale):
    net, _ = init_from_vgg16(VGG16, small_train_prototxt, seed=0)
    model = tmp_path / "vgg.caffemodel"
    net.save(model)
    ours = Net(small_prototxt, model)
    theirs = CaffeNet(small_prototxt, model)
    feeds = inputs(rng, ours.input_shapes, input_scale)
    with torch.no_grad():
        compare(ours(blobs=BLOBS, **feeds), theirs(blobs=BLOBS, **feeds), BLOBS)


@needs_caffe
@needs_vgg
@needs_caffe_memory
@pytest.mark.slow
def test_full_size_net_real_vgg_weights(tmp_path, rng):
    net, _ = init_from_vgg16(VGG16, seed=0)
    model = tmp_path / "vgg.caffemodel"
    net.save(model)
    del net
    prototxt = PROTOTXT / "salicon.prototxt"
    feeds = inputs(rng, {"fine_scale": (1, 3, 1200, 1600), "coarse_scale": (1, 3, 600, 800)})
    theirs = CaffeNet(prototxt, model)(blobs=["saliency_map"], **feeds)
    ours = Net(prototxt, model)
    with torch.inference_mode():
        out = ours(blobs=["saliency_map"], **feeds)
    assert out["saliency_map_out"].shape == (1, 1, 38, 50)
    compare(out, theirs, ["saliency_map"])


def _margin(net: Net, feeds) -> float:
    """Distance of the inputs from the points where the net's gradient jumps:
    the smallest |pre-activation| of the ReLUs and the smallest gap between the
    two largest values of a max-pooling window, over the layers that
    backpropagate (block 3 and up), computed in float64."""
    import re

    import torch.nn.functional as F
    ref = copy.deepcopy(net).double()
    found = []

    def relu_hook(module, args):
        found.append(float(args[0].abs().min()))

    def pool_hook(module, args):
        x = args[0]
        top, idx = F.max_pool2d(x, module.kernel, module.stride, module.pad, ceil_mode=True, return_indices=True)
        masked = x.flatten(2).scatter(2, idx.flatten(2), float("-inf")).reshape(x.shape)
        second = F.max_pool2d(masked, module.kernel, module.stride, module.pad, ceil_mode=True)
        gap = (top - second)[top > 0]
        found.append(float(gap.min()) if gap.numel() else float("inf"))

    for name, layer in zip(ref.layer_params, ref.layers.values()):
        if re.match(r"(sec_)?(relu|pool)[345]", name):
            layer.register_forward_pre_hook(relu_hook if layer.type == "ReLU" else pool_hook)
    with torch.no_grad():
        ref(**{k: torch.from_numpy(v).double() for k, v in feeds.items()})
    return min(found)


def _random_feeds(rng, shapes):
    feeds = inputs(rng, {k: v for k, v in shapes.items() if k != "ground_truth"})
    feeds["ground_truth"] = rng.uniform(0, 1, shapes["ground_truth"]).astype(np.float32)
    return feeds


@needs_caffe
def test_train_net_gradients_agree(tiny_train_prototxt, tmp_path):
    ours = randomise(Net(tiny_train_prototxt, phase="train"), seed=5)
    # ReLU and max-pooling are not differentiable at ties, where float32 rounding
    # in either engine may route a gradient differently: use inputs at least
    # 1e-5 away from every such point (activations here are O(1)).
    for seed in range(50):
        feeds = _random_feeds(np.random.default_rng(seed), ours.input_shapes)
        if _margin(ours, feeds) > 1e-5:
            break
    else:
        raise AssertionError("no input 1e-5 away from ReLU/max-pooling ties in 50 seeds")
    model = tmp_path / "train.caffemodel"
    ours.save(model)
    theirs = CaffeNet(tiny_train_prototxt, model, phase="train")
    theirs.set_inputs(**feeds)
    caffe_loss = float(theirs.net.forward()["loss"])
    theirs.net.backward()
    loss = ours.objective(ours(**feeds))
    loss.backward()
    assert loss.item() == pytest.approx(caffe_loss, rel=1e-5)
    checked = 0
    for info in ours.param_info():
        if info.lr_mult == 0:
            continue
        caffe_diff = theirs.net.params[info.layer][info.index].diff
        scale = float(np.abs(caffe_diff).max())
        assert scale > 0, info.layer
        np.testing.assert_allclose(info.param.grad.numpy(), caffe_diff, atol=1e-4 * scale, err_msg=info.layer)
        checked += 1
    assert checked == 38  # conv3_1 .. conv5_3 of both streams + saliency_map, weights and biases


SOLVER_TEXT = {
    "SGD": 'base_lr: 0.05 lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.9 weight_decay: 0.005',
    "AdaDelta": 'base_lr: 0.5 lr_policy: "fixed" momentum: 0.9 delta: 1e-6 weight_decay: 0.005 '
                'solver_type: ADADELTA',
}

# A small smooth net (no ReLU or max-pooling kinks) for comparing solvers
# exactly: the Python interpolation layer, Concat, frozen blobs (lr_mult 0),
# biases with lr_mult 2 / decay_mult 0, a weight with decay_mult 2.
SMOOTH_NET = """
name: "smooth"
layer { name: "data" type: "Python" top: "data" python_param { module: "CustomData" layer: "CustomData" param_str: "1,3,16,20" } }
layer { name: "gt" type: "Python" top: "ground_truth" python_param { module: "CustomData" layer: "CustomData" param_str: "1,1,8,10" } }
layer { name: "frozen" type: "Convolution" bottom: "data" top: "frozen" param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "t0" type: "TanH" bottom: "frozen" top: "frozen" }
layer { name: "fine" type: "Convolution" bottom: "frozen" top: "fine" param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "t1" type: "TanH" bottom: "fine" top: "fine" }
layer { name: "coarse" type: "Convolution" bottom: "frozen" top: "coarse" param { lr_mult: 2 decay_mult: 2 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 5 kernel_size: 3 stride: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "t2" type: "Sigmoid" bottom: "coarse" top: "coarse" }
layer { name: "ave" type: "Pooling" bottom: "coarse" top: "ave" pooling_param { pool: AVE kernel_size: 2 stride: 1 pad: 1 } }
layer { name: "up" type: "Python" bottom: "ave" top: "up" python_param { module: "custom_interpolation_layer" layer: "custom_interpolation_layer" param_str: "1,5,8,10" } }
layer { name: "cat" type: "Concat" bottom: "up" bottom: "fine" top: "cat" }
layer { name: "saliency_map" type: "Convolution" bottom: "cat" top: "saliency_map" param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "saliency_map" bottom: "ground_truth" top: "loss" }
"""


@needs_caffe
@pytest.mark.parametrize("kind", list(SOLVER_TEXT))
def test_five_solver_steps_leave_equal_weights(kind, tmp_path, rng):
    import caffe

    prototxt = tmp_path / "smooth.prototxt"
    prototxt.write_text(SMOOTH_NET)
    init = Net(prototxt, phase="train", seed=3)
    model = tmp_path / "init.caffemodel"
    init.save(model)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{prototxt}"\n{SOLVER_TEXT[kind]}\nsolver_mode: CPU\ndisplay: 0\n')
    steps = [_random_feeds(rng, init.input_shapes) for _ in range(5)]

    caffe_solver = caffe.get_solver(str(solver_file))
    caffe_solver.net.copy_from(str(model))
    for feeds in steps:
        for name, value in feeds.items():
            caffe_solver.net.blobs[name].data[...] = value
        caffe_solver.step(1)
    assert caffe_solver.iter == 5

    ours = Net(prototxt, model, phase="train")
    solver = Solver(read_solver(solver_file), ours)
    for feeds in steps:
        solver.step({k: torch.from_numpy(v) for k, v in feeds.items()})

    moved = 0
    for info in ours.param_info():
        caffe_w = caffe_solver.net.params[info.layer][info.index].data
        before = init.params[info.layer][info.index].detach().numpy()
        change = np.abs(caffe_w - before).max()
        np.testing.assert_allclose(info.param.detach().numpy(), caffe_w, atol=1e-4 * max(change, 1e-3),
                                   err_msg=f"{info.layer} blob {info.index}")
        moved += change > 0
    assert moved == 6  # fine, coarse, saliency_map weights and biases; the frozen layer did not move


@needs_caffe
def test_caffemodels_cross_load_and_give_the_same_maps(small_model, small_prototxt, tmp_path):
    from skimage import data
    image = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()[::3, ::3]).save(image)
    caffe_written = tmp_path / "by_caffe.caffemodel"
    CaffeNet(small_prototxt, small_model).save(caffe_written)  # Caffe's own Net::ToProto
    maps = {
        "ours_on_ours": Salicon(small_model, small_prototxt, device="cpu").compute_saliency(image),
        "caffe_on_ours": Salicon(small_model, small_prototxt, engine="caffe").compute_saliency(image),
        "ours_on_caffe": Salicon(caffe_written, small_prototxt, device="cpu").compute_saliency(image),
        "caffe_on_caffe": Salicon(caffe_written, small_prototxt, engine="caffe").compute_saliency(image),
    }
    reference = maps.pop("ours_on_ours")
    assert reference.shape == (100, 151)
    for name, sal in maps.items():
        np.testing.assert_allclose(sal, reference, atol=1e-4, err_msg=name)


@needs_caffe
def test_cli_predict_with_caffe_engine(small_model, small_prototxt, tmp_path):
    from salicon.cli import main
    Image.new("RGB", (40, 30), (120, 30, 200)).save(tmp_path / "a.png")
    code = main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--engine", "caffe",
                 "--model", str(small_model), "--prototxt", str(small_prototxt), "-q"])
    assert code == 0 and (tmp_path / "out" / "a.png").exists()


@needs_caffe
def test_caffe_engine_runs_the_shipped_safetensors_model(small_prototxt):
    """Caffe cannot read safetensors: the checked arrays are handed to it."""
    image = str(PROTOTXT.parent / "examples" / "coffee.jpg")
    theirs = Salicon(prototxtpath=small_prototxt, engine="caffe", postprocess="none").compute_saliency(image)
    ours = Salicon(prototxtpath=small_prototxt, device="cpu", postprocess="none").compute_saliency(image)
    assert np.abs(ours - theirs).max() <= 1e-4 and theirs.max() == 1


@needs_caffe
@needs_vgg
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "osie" / "fixations.mat").exists(), reason="OSIE not found in ../shared")
def test_ten_training_steps_on_osie_equal_caffes(tmp_path):
    """The short version of benchmarks/train_fidelity.py: 10 steps of the shipped
    solver from the VGG-16 initialisation on OSIE images, both engines fed the
    same blobs: trained blobs within 1e-3 relative, frozen ones bit-equal,
    validation NSS within 0.005."""
    import json
    import subprocess
    import sys

    out = tmp_path / "fidelity.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_fidelity.py"), "--data",
                           str(SHARED / "data" / "osie"), "--vgg16", str(VGG16), "--steps", "10", "--val", "5",
                           "--size", "160x224", "--json", str(out)], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 10 and result["bar"]["ok"] and result["bar"]["frozen_bit_equal"]
    assert set(result["checkpoints"]) == {"1", "10"}
    assert result["loss"]["max_rel_diff"] < 1e-4
