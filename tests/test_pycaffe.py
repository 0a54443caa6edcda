"""salicon.pycaffe: pycaffe scripts run unmodified on the PyTorch engine
(``python -m salicon.pycaffe script.py``), with the results real Caffe gives
to the same scripts; and the surface's own behaviour and messages."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import salicon.pycaffe as caffe
from salicon.engine import Net as EngineNet

from .conftest import ROOT, randomise
from .test_runtimes_caffe import needs_caffe

SCRIPTS = ROOT / "tests" / "pycaffe_scripts"


def _run(script: str, *args, engine: str) -> None:
    command = [sys.executable, str(SCRIPTS / script), *map(str, args)]
    if engine == "salicon":
        command[1:1] = ["-m", "salicon.pycaffe"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_solver(tmp_path_factory, tiny_train_prototxt):
    """A solver over the tiny train net, and random initial weights for it."""
    folder = tmp_path_factory.mktemp("solver")
    weights = folder / "init.caffemodel"
    net = EngineNet(tiny_train_prototxt, phase="train", seed=5)
    with torch.no_grad():
        for p in net.parameters():  # the default fillers leave some biases zero; make every blob non-trivial
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
    net.save(weights)
    solver = folder / "solver.prototxt"
    solver.write_text(f'net: "{tiny_train_prototxt}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\n'
                      f'weight_decay: 0.0005\ndisplay: 0\nsnapshot_prefix: "{folder}/snap"\nsolver_mode: CPU\n')
    return solver, weights


# ------------------------------------------------------- against real Caffe


@needs_caffe
def test_inference_script_gives_caffes_map(small_prototxt, small_model, photo_file, tmp_path):
    for engine in ("caffe", "salicon"):
        _run("infer.py", small_prototxt, small_model, photo_file, tmp_path / f"{engine}.npz", engine=engine)
    theirs, ours = np.load(tmp_path / "caffe.npz"), np.load(tmp_path / "salicon.npz")
    np.testing.assert_allclose(ours["map"], theirs["map"], atol=1e-5)
    np.testing.assert_allclose(ours["conv5"], theirs["conv5"], rtol=1e-4, atol=1e-5)
    for key in ("blobs", "params", "n_param_blobs", "inputs", "outputs"):  # the same names in Caffe's order
        assert ours[key].tolist() == theirs[key].tolist(), key


@needs_caffe
def test_finetuning_script_gives_caffes_weights(tiny_solver, tiny_train_prototxt, tmp_path):
    solver, weights = tiny_solver
    for engine in ("caffe", "salicon"):
        _run("finetune.py", solver, weights, 5, tmp_path / f"{engine}.caffemodel", tmp_path / f"{engine}.npz",
             engine=engine)
    theirs, ours = np.load(tmp_path / "caffe.npz"), np.load(tmp_path / "salicon.npz")
    assert int(ours["iter"]) == int(theirs["iter"]) == 5
    np.testing.assert_allclose(ours["losses"], theirs["losses"], rtol=1e-5)
    assert np.array_equal(ours["frozen"], theirs["frozen"])  # lr_mult 0: untouched, bit for bit
    caffe_w, our_w, init = (EngineNet(tiny_train_prototxt, path, phase="train").state_arrays()
                            for path in (tmp_path / "caffe.caffemodel", tmp_path / "salicon.caffemodel", weights))
    assert list(our_w) == list(caffe_w)
    moved = 0
    for layer, blobs in caffe_w.items():
        for i, blob in enumerate(blobs):
            a, b = np.asarray(our_w[layer][i]), np.asarray(blob)
            scale = max(np.abs(b).max(), 1e-12)
            assert np.abs(a - b).max() <= 1e-5 * scale, (layer, i, np.abs(a - b).max() / scale)
            moved += not np.array_equal(b, np.asarray(init[layer][i]))
    assert moved > 0


# ------------------------------------------------------------- the surface


def test_forward_fills_every_blob_and_honours_start_and_end(small_prototxt, small_model):
    net = caffe.Net(str(small_prototxt), str(small_model), caffe.TEST)
    rng = np.random.default_rng(1)
    assert net.inputs == []  # as in Caffe: the Python data layers' tops are not net inputs
    feeds = ["fine_scale", "coarse_scale"]
    for name in feeds:
        net.blobs[name].data[...] = rng.uniform(-0.5, 0.5, net.blobs[name].data.shape)
    out = net.forward()
    reference = EngineNet(small_prototxt, small_model).requires_grad_(False)
    expected = reference(**{n: torch.from_numpy(net.blobs[n].data.copy()) for n in feeds}, blobs=["conv5_3"])
    np.testing.assert_allclose(out["saliency_map_out"], expected["saliency_map_out"].numpy(), atol=1e-6)
    np.testing.assert_allclose(net.blobs["conv5_3"].data, expected["conv5_3"].numpy(), atol=1e-5)
    # a partial pass from the stored blobs: the same values
    saved = net.blobs["saliency_map_out"].data.copy()
    net.blobs["saliency_map_out"].data[...] = 0
    partial = net.forward(start="saliency_map", end=net._step_names[-1])
    np.testing.assert_allclose(partial[net.top_names[net._step_names[-1]][0]], saved, atol=1e-6)
    assert set(net.forward(end="pool1")) == {"pool1"}


def test_params_are_writable_views_and_listed_with_frozen_layers(tiny_train_prototxt):
    net = caffe.Net(str(tiny_train_prototxt), caffe.TRAIN)
    assert list(net.params)[0] == "conv1_1"  # frozen (lr_mult 0) layers are listed, as Caffe lists them
    net.params["saliency_map"][0].data[...] = 0.25
    assert float(net._net.params["saliency_map"][0].detach().min()) == 0.25
    net.params["saliency_map"][1].data[...] = -1.0
    assert net.params["saliency_map"][1].data.shape == tuple(net._net.params["saliency_map"][1].shape)


def _with_force_backward(prototxt, folder):
    path = folder / f"forced_{prototxt.name}"
    path.write_text("force_backward: true\n" + prototxt.read_text())
    return path


def test_backward_gives_autograd_diffs(tiny_train_prototxt, tmp_path):
    net = caffe.Net(str(_with_force_backward(tiny_train_prototxt, tmp_path)), caffe.TRAIN)
    rng = np.random.default_rng(2)
    feeds = {n: rng.uniform(0, 1, net.blobs[n].data.shape).astype(np.float32) for n in net._feeds}
    net.forward(**feeds)
    net.backward()
    reference = EngineNet(tiny_train_prototxt, phase="train")
    reference.load_state_dict(net._net.state_dict())
    inputs = {k: torch.from_numpy(v).requires_grad_(True) for k, v in feeds.items()}
    reference.objective(reference(**inputs)).backward()
    np.testing.assert_allclose(net.blobs["fine_scale"].diff, inputs["fine_scale"].grad.numpy(), rtol=1e-4,
                               atol=1e-8)
    np.testing.assert_allclose(net.params["conv5_3"][0].diff, reference.params["conv5_3"][0].grad.numpy(),
                               rtol=1e-4, atol=1e-9)


def _feed(net, seed: int = 2) -> None:
    rng = np.random.default_rng(seed)
    for name in ("fine_scale", "coarse_scale", "ground_truth"):
        blob = net.blobs[name]
        blob.data[...] = rng.uniform(0 if name == "ground_truth" else -0.5, 1 if name == "ground_truth" else 0.5,
                                     blob.data.shape)


@needs_caffe
@pytest.mark.parametrize("forced", [False, True])
def test_backward_with_start_and_end_as_in_caffe(tiny_train_prototxt, tmp_path, forced):
    """Partial and whole backward passes, diffs given for the outputs, frozen
    layers and (without force_backward) the data blobs left alone: as real Caffe."""
    from salicon.runtimes.caffe import import_caffe

    real = import_caffe()
    weights = tmp_path / "he.caffemodel"  # O(1) activations: diffs far above float32 rounding everywhere
    randomise(EngineNet(tiny_train_prototxt, phase="train"), seed=1).save(weights)
    proto = _with_force_backward(tiny_train_prototxt, tmp_path) if forced else tiny_train_prototxt
    nets = [real.Net(str(proto), str(weights), real.TRAIN), caffe.Net(str(proto), str(weights), caffe.TRAIN)]
    calls = [dict(), dict(start="saliency_map", end="concat"), dict(start="pool5", end="conv4_1"),
             dict(start="loss", end="saliency_map")]
    blobs = ["fine_scale", "pool5", "conv5_3", "interpolated_data", "sec_pool5", "conv2_2", "saliency_map"]
    results = []
    for net in nets:
        _feed(net)
        net.forward()
        got = []
        for kwargs in calls:
            out = net.backward(**kwargs)
            got.append(({k: v.copy() for k, v in out.items()},
                        {b: net.blobs[b].diff.copy() for b in blobs},
                        {n: [p.diff.copy() for p in net.params[n]] for n in ("conv1_1", "conv4_1", "saliency_map")}))
        results.append(got)
    for (theirs, ours), kwargs in zip(zip(*results), calls):
        assert theirs[0].keys() == ours[0].keys(), kwargs
        pairs = [(name, ours[g][name], theirs[g][name]) for g in (0, 1) for name in theirs[g]]
        pairs += [(f"{name}[{i}]", a, b) for name in theirs[2] for i, (a, b) in enumerate(zip(ours[2][name],
                                                                                            theirs[2][name]))]
        for name, a, b in pairs:
            scale = max(float(np.abs(b).max()), 1e-30)
            assert np.abs(a - b).max() <= 2e-4 * scale, (kwargs, name, np.abs(a - b).max() / scale)
    # lr_mult 0: no diff, and none for the data blobs, unless force_backward asks for every diff
    assert np.any(results[0][0][2]["conv1_1"][0]) == forced
    assert np.any(results[0][0][1]["fine_scale"]) == forced


@needs_caffe
def test_backward_from_given_top_diffs_as_in_caffe(small_prototxt, small_model, tmp_path):
    from salicon.runtimes.caffe import import_caffe

    real = import_caffe()
    proto = _with_force_backward(small_prototxt, tmp_path)
    rng = np.random.default_rng(8)
    diff = rng.standard_normal((1, 1, 4, 5)).astype(np.float32)
    results = []
    for module in (real, caffe):
        net = module.Net(str(proto), str(small_model), module.TEST)
        for name in ("fine_scale", "coarse_scale"):
            net.blobs[name].data[...] = np.random.default_rng(9).uniform(-0.5, 0.5, net.blobs[name].data.shape)
        net.forward()
        out = net.backward(diffs=["pool5"], saliency_map_out=diff)
        results.append((out["pool5"].copy(), net.blobs["coarse_scale"].diff.copy(),
                        net.params["conv5_3"][0].diff.copy()))
    for theirs, ours in zip(*results):
        assert np.abs(theirs).max() > 0
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
    with pytest.raises(ValueError, match="give all of them or none"):
        net.backward(pool5=np.zeros((1, 512, 4, 5), np.float32))


@needs_caffe
def test_solver_leaves_the_update_in_diff_and_runs_test_nets_as_caffe(tiny_solver, tiny_train_prototxt, tmp_path,
                                                                    capsys):
    from salicon.runtimes.caffe import import_caffe

    real = import_caffe()
    _, weights = tiny_solver
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tiny_train_prototxt}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\n'
                           f'weight_decay: 0.0005\ndisplay: 0\ntest_iter: 2\ntest_interval: 2\n'
                           f'test_initialization: true\nsnapshot_prefix: "{tmp_path}/snap"\nsolver_mode: CPU\n')
    solvers = [real.SGDSolver(str(solver_file)), caffe.SGDSolver(str(solver_file))]
    diffs, tests = [], []
    for solver in solvers:
        solver.net.copy_from(str(weights))
        assert len(solver.test_nets) == 1
        _feed(solver.net, 3)
        _feed(solver.test_nets[0], 4)
        got = []
        for _ in range(3):
            before = solver.net.params["saliency_map"][0].data.copy()
            solver.step(1)
            after = solver.net.params["saliency_map"][0].data
            got.append((solver.net.params["saliency_map"][0].diff.copy(), before - after,
                        solver.net.params["conv1_1"][0].diff.copy()))
        diffs.append(got)
        tests.append(float(solver.test_nets[0].forward()["loss"]))  # the shared weights, after 3 steps
    for (c_diff, _, c_frozen), (o_diff, o_delta, o_frozen) in zip(*diffs):
        scale = float(np.abs(c_diff).max())
        assert scale > 0 and np.abs(o_diff - c_diff).max() <= 1e-4 * scale
        np.testing.assert_allclose(o_diff, o_delta, rtol=1e-3, atol=1e-3 * scale)  # the diff is the update
        assert not np.any(c_frozen) and not np.any(o_frozen)
    np.testing.assert_allclose(tests[1], tests[0], rtol=1e-5)
    err = capsys.readouterr().err
    assert err.count("Testing net (#0)") == 2  # at iter 0 (test_initialization) and 2
    lines = [line for line in err.splitlines() if "Test net output #0" in line]
    value = float(lines[-1].split("loss = ")[1].split()[0])
    assert len(lines) == 2 and lines[-1].startswith("    Test net output #0: loss = ")
    assert lines[-1].endswith(f"(* 1 = {value:g} loss)")
    # the test at iter 2 ran on the weights after 2 steps: recompute it with Caffe
    check = real.Net(str(tiny_train_prototxt), real.TEST)
    _feed(check, 4)
    twice = real.SGDSolver(str(solver_file))
    twice.net.copy_from(str(weights))
    _feed(twice.net, 3)
    twice.step(2)
    for name in twice.net.params:
        for i, blob in enumerate(twice.net.params[name]):
            check.params[name][i].data[...] = blob.data
    np.testing.assert_allclose(value, float(check.forward()["loss"]), rtol=1e-4)


def test_solver_steps_snapshots_and_types(tiny_solver, tmp_path, monkeypatch):
    solver_file, weights = tiny_solver
    monkeypatch.chdir(tmp_path)
    solver = caffe.get_solver(str(solver_file))
    assert isinstance(solver, caffe.SGDSolver) and solver.iter == 0
    solver.net.copy_from(str(weights))
    for name in ("fine_scale", "coarse_scale", "ground_truth"):
        solver.net.blobs[name].data[...] = 0.5
    before = solver.net.params["saliency_map"][0].data.copy()
    solver.step(2)
    assert solver.iter == 2 and not np.array_equal(before, solver.net.params["saliency_map"][0].data)
    solver.snapshot()
    assert (solver_file.parent / "snap_iter_2.caffemodel").is_file()
    assert (solver_file.parent / "snap_iter_2.solverstate").is_file()
    with pytest.raises(ValueError, match="a SGD solver, not Adam"):
        adam = tmp_path / "adam.prototxt"
        adam.write_text(solver_file.read_text() + 'type: "SGD"\n')
        caffe.AdamSolver(str(adam))


@pytest.mark.parametrize("access, message", [
    (lambda: caffe.io, "caffe.io"),
    (lambda: caffe.Classifier, "caffe.Classifier"),
    (lambda n: n.share_with, "Net.share_with"),
    (lambda n: n.layers, "Net.layers"),
    (lambda n: n.params["conv1_1"][0].reshape, "Blob.reshape"),
])
def test_anything_outside_the_surface_says_so(access, message, small_prototxt):
    args = () if access.__code__.co_argcount == 0 else (caffe.Net(str(small_prototxt), caffe.TEST),)
    with pytest.raises(AttributeError, match=f"not supported by salicon.pycaffe: {message}"):
        access(*args)


def test_net_signatures_and_bad_phase(small_prototxt, small_model):
    a = caffe.Net(str(small_prototxt), str(small_model), caffe.TEST)
    b = caffe.Net(str(small_prototxt), caffe.TEST, weights=str(small_model))
    np.testing.assert_array_equal(a.params["conv1_1"][0].data, b.params["conv1_1"][0].data)
    with pytest.raises(ValueError, match="caffe.TRAIN or caffe.TEST"):
        caffe.Net(str(small_prototxt), 7)
    with pytest.raises(TypeError, match="needs a phase"):
        caffe.Net(str(small_prototxt))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without a GPU")
def test_set_mode_gpu_without_a_gpu_warns_and_runs_on_the_cpu(small_prototxt):
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            caffe.set_mode_gpu()
        assert any("no CUDA GPU" in str(w.message) for w in caught)
        assert caffe.Net(str(small_prototxt), caffe.TEST)._net.device.type == "cpu"
    finally:
        caffe.set_mode_cpu()


def test_runner_usage_and_missing_script(tmp_path):
    done = subprocess.run([sys.executable, "-m", "salicon.pycaffe"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "usage: python -m salicon.pycaffe" in done.stderr
    done = subprocess.run([sys.executable, "-m", "salicon.pycaffe", str(tmp_path / "nope.py")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "nope.py: no such script" in done.stderr
    script = tmp_path / "uses_caffe.py"
    script.write_text("import sys, caffe\nprint(caffe.__name__, caffe.TEST, sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-m", "salicon.pycaffe", str(script), "a", "--b"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "salicon.pycaffe 1 ['a', '--b']"


def test_runner_answers_caffe_proto_and_names_unsupported_submodules(tmp_path):
    script = tmp_path / "imports.py"
    script.write_text("from caffe.proto import caffe_pb2\nprint(caffe_pb2.NetParameter.__name__)\n"
                      "import caffe.proto.caffe_pb2\nfrom caffe import layers as L\n")
    done = subprocess.run([sys.executable, "-m", "salicon.pycaffe", str(script)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.stdout.strip() == "NetParameter"
    assert done.returncode == 1 and done.stderr.strip().endswith(
        "ImportError: not supported by salicon.pycaffe: caffe.layers"), done.stderr[-500:]
