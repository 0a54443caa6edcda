"""salicon.engine.python_layers: Python layer modules found as Caffe's import
finds them, native layers only for the files they reproduce (fingerprints),
any other file run as written (forward and backward), bad files reported
before any work; checked against real Caffe running the same files."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from PIL import Image

from salicon import cli
from salicon.config import SaliconConfig
from salicon.engine import Net
from salicon.engine.layers import BilinearInterpolation, CustomData, PublishedInterpolation
from salicon.engine.python_layers import (
    NATIVE_LAYERS,
    PROJECT_LAYERS_DIR,
    LayerFile,
    find_layer_file,
    fingerprint,
    native_for,
    read_layer_file,
)
from salicon.errors import NetError
from salicon.proto import caffe_pb2

from .conftest import ROOT, randomise
from .test_runtimes_caffe import needs_caffe

MODULES = ("CustomData", "custom_interpolation_layer")
SCRIPTS = ROOT / "tests" / "pycaffe_scripts"

# An interpolation layer edited to cubic splines (order 3) and to follow the bottom's batch size.
CUBIC_INTERPOLATION = '''
import numpy as np
import scipy.ndimage

import caffe


class custom_interpolation_layer(caffe.Layer):
    def setup(self, bottom, top):
        self.size = [int(v) for v in self.param_str.split(",")]

    def reshape(self, bottom, top):
        n, c = bottom[0].data.shape[:2]
        top[0].reshape(n, c, self.size[2], self.size[3])

    def forward(self, bottom, top):
        src = bottom[0].data
        factors = (1, 1, self.size[2] / float(src.shape[2]), self.size[3] / float(src.shape[3]))
        top[0].data[...] = scipy.ndimage.zoom(src, factors, order=3, mode="nearest")

    def backward(self, top, propagate_down, bottom):
        pass
'''

# A data layer edited to halve the blob the driver wrote.
HALVING_DATA = '''
import caffe


class CustomData(caffe.Layer):
    def setup(self, bottom, top):
        self.shape = [int(v) for v in self.param_str.split(",")]

    def reshape(self, bottom, top):
        top[0].reshape(*self.shape)

    def forward(self, bottom, top):
        top[0].data[...] *= 0.5

    def backward(self, top, propagate_down, bottom):
        pass
'''

# The published layer's behaviour, written from its description: scipy.ndimage.zoom(order=1,
# mode='nearest') up to param_str's shape, and the top diff zoomed back down the same way.
ZOOM_DOWN_INTERPOLATION = '''
from scipy import ndimage

import caffe


class custom_interpolation_layer(caffe.Layer):
    def setup(self, bottom, top):
        self.out_shape = tuple(int(v) for v in self.param_str.split(","))

    def reshape(self, bottom, top):
        top[0].reshape(*self.out_shape)

    def forward(self, bottom, top):
        src = bottom[0].data
        up = [o / float(i) for o, i in zip(self.out_shape, src.shape)]
        top[0].data[...] = ndimage.zoom(src, up, order=1, mode="nearest")

    def backward(self, top, propagate_down, bottom):
        diff = top[0].diff
        down = [i / float(o) for i, o in zip(bottom[0].data.shape, diff.shape)]
        bottom[0].diff[...] = ndimage.zoom(diff, down, order=1, mode="nearest")
'''


@pytest.fixture
def layer_dir(tmp_path, monkeypatch):
    """A folder first on sys.path (and PYTHONPATH, for subprocesses), with the
    layer modules forgotten by the import system so Caffe imports them afresh."""
    folder = tmp_path / "mylayers"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("SALICON_PYTHON_LAYERS", raising=False)
    saved = {m: sys.modules.pop(m) for m in MODULES if m in sys.modules}
    yield folder
    for m in MODULES:
        sys.modules.pop(m, None)
    sys.modules.update(saved)


def _project(module: str) -> LayerFile:
    return read_layer_file(module, PROJECT_LAYERS_DIR / f"{module}.py")


# ------------------------------------------------------------ fingerprints


def test_project_files_select_their_native_layers():
    # Fails when a project layer file changes and the table is not updated with it.
    assert native_for(_project("CustomData"), "CustomData", "auto")[0] is CustomData
    assert native_for(_project("custom_interpolation_layer"), "custom_interpolation_layer", "auto")[0] \
        is BilinearInterpolation
    assert native_for(_project("CustomData"), "OtherClass", "auto") == (None, "as-written")


def test_fingerprint_ignores_layout_comments_docstrings_and_import_order():
    text = (PROJECT_LAYERS_DIR / "custom_interpolation_layer.py").read_text()
    digest = fingerprint(text)
    assert fingerprint(text.replace("import numpy as np\n", "import numpy as np  # arrays\n\n\n")) == digest
    assert fingerprint(text.replace('"""Caffe Python layer', '"""Edited docs. Caffe Python layer', 1)) == digest
    # the leading imports may come in any order; an import after code is code
    assert fingerprint("import sys\nimport os\nx = 1\n") == fingerprint("import os\nimport sys\nx = 1\n")
    assert fingerprint("import os\nx = 1\n") != fingerprint("x = 1\nimport os\n")


@pytest.mark.parametrize("old, new", [("n_in - 2", "n_in - 3"), ("1.0 - frac", "2.0 - frac"),
                                      ("self._ay.T", "self._ay  "), ("out_h", "out_H")])
def test_one_changed_character_runs_the_file_as_written(old, new):
    text = (PROJECT_LAYERS_DIR / "custom_interpolation_layer.py").read_text()
    assert text.count(old) >= 1
    edited = LayerFile("custom_interpolation_layer", "/x/custom_interpolation_layer.py", text.replace(old, new, 1))
    assert native_for(edited, "custom_interpolation_layer", "auto") == (None, "as-written")
    # "native" forces the native layer of that name, edit or not
    assert native_for(edited, "custom_interpolation_layer", "native")[0] is BilinearInterpolation


def test_the_table_names_distinct_files_and_native_classes():
    assert {v.factory for v in NATIVE_LAYERS.values()} == {CustomData, BilinearInterpolation,
                                                           PublishedInterpolation}
    assert all(len(fp) == 16 for fp, _ in NATIVE_LAYERS)


@pytest.mark.skipif(not os.environ.get("SALICON_OPENSALICON_DIR"),
                    reason="set SALICON_OPENSALICON_DIR to a checkout of the published OpenSALICON files")
def test_published_opensalicon_files_select_their_native_layers():
    folder = Path(os.environ["SALICON_OPENSALICON_DIR"])
    data = read_layer_file("CustomData", folder / "CustomData.py")
    interp = read_layer_file("custom_interpolation_layer", folder / "custom_interpolation_layer.py")
    assert native_for(data, "CustomData", "auto")[0] is CustomData
    assert native_for(interp, "custom_interpolation_layer", "auto")[0] is PublishedInterpolation


# -------------------------------------------------------------- resolution


def test_the_module_on_sys_path_runs_and_the_project_files_are_the_fallback(layer_dir, small_prototxt):
    net = Net(small_prototxt)  # the project's files (from layers/, or installed as top-level modules)
    assert {i.file for i in net.python_layers.values()} == {str(find_layer_file(m).resolve()) for m in MODULES}
    assert all(i.native for i in net.python_layers.values())
    (layer_dir / "custom_interpolation_layer.py").write_text(CUBIC_INTERPOLATION)
    assert find_layer_file("custom_interpolation_layer") == layer_dir / "custom_interpolation_layer.py"
    edited = Net(small_prototxt)
    info = edited.python_layers["custom_interpolation_layer"]
    assert (info.file, info.implementation) == (str(layer_dir / "custom_interpolation_layer.py"), "as-written")
    assert edited.python_layers["FineCustomData"].native
    assert "as written, on the host" in info.describe()


def test_the_environment_variable_forces_a_mode(layer_dir, small_prototxt, monkeypatch):
    monkeypatch.setenv("SALICON_PYTHON_LAYERS", "as-written")
    assert not any(i.native for i in Net(small_prototxt).python_layers.values())
    monkeypatch.setenv("SALICON_PYTHON_LAYERS", "sometimes")
    with pytest.raises(ValueError, match="SALICON_PYTHON_LAYERS must be one of auto, as-written, native"):
        Net(small_prototxt)


def test_project_files_as_written_equal_their_native_layers(small_train_prototxt, rng):
    """The adapter running layers/*.py (forward and backward) and the native layers agree."""
    nets = [Net(small_train_prototxt, phase="train", seed=3, python_layers=mode) for mode in ("auto", "as-written")]
    assert [i.native for i in nets[1].python_layers.values()] == [False] * 4
    nets[1].load_state_dict(nets[0].state_dict())
    feeds = {n: rng.uniform(-0.5, 0.5, s).astype(np.float32) for n, s in nets[0].input_shapes.items()}
    grads = []
    for net in nets:
        out = net(**{n: torch.from_numpy(v) for n, v in feeds.items()})
        net.objective(out).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("sec_conv3" in k for k in grads[0])
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-7 * float(g.abs().max()))


def test_published_interpolation_equals_a_file_that_zooms_the_diff_down(layer_dir, rng):
    (layer_dir / "custom_interpolation_layer.py").write_text(ZOOM_DOWN_INTERPOLATION)
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 7 dim: 9 } } }\n'
            'layer { name: "up" type: "Python" bottom: "x" top: "y" python_param { '
            'module: "custom_interpolation_layer" layer: "custom_interpolation_layer" param_str: "1,3,13,20" } }')
    param = text_format.Merge(text, caffe_pb2.NetParameter())
    written = Net(param)
    assert written.python_layers["up"].implementation == "as-written"
    native = PublishedInterpolation(param.layer[1], [(1, 3, 7, 9)], caffe_pb2.TEST)
    x = rng.standard_normal((1, 3, 7, 9)).astype(np.float32)
    g = rng.standard_normal((1, 3, 13, 20)).astype(np.float32)
    results = []
    for run in (lambda t: written(x=t)["y"], lambda t: native(t)[0]):
        t = torch.from_numpy(x).requires_grad_(True)
        y = run(t)
        (y * torch.from_numpy(g)).sum().backward()
        results.append((y.detach().numpy(), t.grad.numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-5)
    # ... which is not the adjoint (BilinearInterpolation's backward)
    t = torch.from_numpy(x).requires_grad_(True)
    (BilinearInterpolation(param.layer[1], [(1, 3, 7, 9)], caffe_pb2.TEST)(t)[0] * torch.from_numpy(g)).sum().backward()
    assert np.abs(t.grad.numpy() - results[0][1]).max() > 0.5


# -------------------------------------------------------------- bad files


BAD_FILES = {
    "syntax": ("class custom_interpolation_layer(:\n    pass\n", "syntax error at line 1"),
    "no forward": ("import caffe\nclass custom_interpolation_layer(caffe.Layer):\n"
                   "    def setup(self, b, t): pass\n    def reshape(self, b, t): t[0].reshape(1, 1, 2, 2)\n",
                   "has no forward method"),
    "setup raises": ("import caffe\nclass custom_interpolation_layer(caffe.Layer):\n"
                     "    def setup(self, b, t): raise RuntimeError('bad param_str')\n"
                     "    def reshape(self, b, t): pass\n    def forward(self, b, t): pass\n",
                     "custom_interpolation_layer.setup raised RuntimeError: bad param_str"),
    "top count": ("import caffe\nclass custom_interpolation_layer(caffe.Layer):\n"
                  "    def setup(self, b, t): t[1].reshape(1, 1, 2, 2)\n"
                  "    def reshape(self, b, t): pass\n    def forward(self, b, t): pass\n",
                  "setup raised IndexError.*gives it 1 bottom\\(s\\) and 1 top\\(s\\)"),
    "no top shape": ("import caffe\nclass custom_interpolation_layer(caffe.Layer):\n"
                     "    def setup(self, b, t): pass\n"
                     "    def reshape(self, b, t): pass\n    def forward(self, b, t): pass\n",
                     "gave no shape to top\\(s\\) 'interpolated_data'"),
    "no class": ("import caffe\nclass Interpolation(caffe.Layer):\n    pass\n",
                 "defines no class 'custom_interpolation_layer' \\(classes: Interpolation\\)"),
    "import fails": ("import caffe\nimport no_such_dependency_here\n",
                     "importing it raised ModuleNotFoundError"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_layer_file_is_one_clear_error_before_any_work(case, layer_dir, small_prototxt, small_model,
                                                             tmp_path, capsys):
    source, message = BAD_FILES[case]
    path = layer_dir / "custom_interpolation_layer.py"
    path.write_text(source)
    with pytest.raises(NetError) as info:
        Net(small_prototxt)
    text = str(info.value)
    assert text.startswith("layer 'custom_interpolation_layer' (type Python)") and str(path) in text
    assert re.search(message, text), text
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    out = tmp_path / "maps"
    code = cli.main(["predict", str(image), "-o", str(out), "--model", str(small_model),
                     "--prototxt", str(small_prototxt), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and str(path) in err[0] and err[0].startswith("salicon: error:"), err
    assert not out.exists() or not any(out.iterdir())


def test_a_train_net_needs_backward_of_a_layer_with_bottoms(layer_dir, small_train_prototxt):
    (layer_dir / "custom_interpolation_layer.py").write_text(
        CUBIC_INTERPOLATION.replace("    def backward(self, top, propagate_down, bottom):\n        pass\n", ""))
    with pytest.raises(NetError, match="has no backward method \\(a train net calls backward\\)"):
        Net(small_train_prototxt, phase="train")


# ----------------------------------------------------- against real Caffe


@pytest.fixture
def photo(photo_file):
    return photo_file


@needs_caffe
def test_edited_layer_files_change_the_map_as_in_caffe(layer_dir, small_prototxt, small_model, photo):
    from salicon import Salicon

    native = Salicon(small_model, small_prototxt, device="cpu").compute_saliency(photo)
    (layer_dir / "custom_interpolation_layer.py").write_text(CUBIC_INTERPOLATION)
    (layer_dir / "CustomData.py").write_text(HALVING_DATA)
    ours = Salicon(small_model, small_prototxt, device="cpu")
    assert (ours.runtime, ours.precision) == ("pytorch", "fp32")
    assert {i.implementation for i in ours.python_layers.values()} == {"as-written"}
    assert {i.file for i in ours.python_layers.values()} == {str(layer_dir / f"{m}.py") for m in MODULES}
    caffe_map = Salicon(small_model, small_prototxt, engine="caffe").compute_saliency(photo)
    our_map = ours.compute_saliency(photo)
    np.testing.assert_allclose(our_map, caffe_map, atol=1e-5)
    assert np.abs(our_map - native).max() > 1e-3  # the edits matter
    forced = Salicon(small_model, small_prototxt, device="cpu", python_layers="native").compute_saliency(photo)
    np.testing.assert_allclose(forced, native, atol=1e-6)


@needs_caffe
def test_edited_layer_files_in_a_pycaffe_script_as_in_caffe(layer_dir, small_prototxt, small_model, photo,
                                                            tmp_path):
    (layer_dir / "custom_interpolation_layer.py").write_text(CUBIC_INTERPOLATION)
    (layer_dir / "CustomData.py").write_text(HALVING_DATA)
    maps = {}
    for engine in ("caffe", "salicon", "native"):
        command = [sys.executable, str(SCRIPTS / "infer.py"), str(small_prototxt), str(small_model), str(photo),
                   str(tmp_path / f"{engine}.npz")]
        if engine != "caffe":
            command[1:1] = ["-m", "salicon.pycaffe"]
        env = {**os.environ, "SALICON_PYTHON_LAYERS": "native" if engine == "native" else "auto"}
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        maps[engine] = np.load(tmp_path / f"{engine}.npz")["map"]
    np.testing.assert_allclose(maps["salicon"], maps["caffe"], atol=1e-5)
    assert np.abs(maps["native"] - maps["caffe"]).max() > 1e-3


def _trained_and_frozen(net: Net) -> tuple[list[str], list[str]]:
    lr = {lp.name: lp.param[0].lr_mult if lp.param else 1.0 for lp in net.layer_params.values()}
    trained = [n for n in net.params if lr[n] != 0]
    return trained, [n for n in net.params if lr[n] == 0]


def _solver_updates(real, engine_solver, steps: int = 5) -> list[dict[str, list[tuple]]]:
    """Per step, for every blob: (Caffe's update, the engine's update, Caffe's new
    weights, the engine's new weights, the weights before), both solvers starting
    each step from Caffe's weights, on the same random inputs."""
    rng = np.random.RandomState(7)
    records = []
    for _ in range(steps):
        for name in ("fine_scale", "coarse_scale", "ground_truth"):
            low, high = (0.0, 1.0) if name == "ground_truth" else (-0.5, 0.5)
            value = rng.uniform(low, high, real.net.blobs[name].data.shape)
            real.net.blobs[name].data[...] = value
            engine_solver.net.blobs[name].data[...] = value
        before = {}
        for layer, blobs in real.net.params.items():
            before[layer] = [b.data.copy() for b in blobs]
            for mine, theirs in zip(engine_solver.net.params[layer], blobs):
                mine.data[...] = theirs.data  # Caffe's weights: each step's update is compared on its own
        real.step(1)
        engine_solver.step(1)
        records.append({layer: [(c.diff.copy(), o.diff.copy(), c.data.copy(), o.data.copy(), before[layer][i])
                                for i, (c, o) in enumerate(zip(blobs, engine_solver.net.params[layer]))]
                        for layer, blobs in real.net.params.items()})
    return records


def _agrees(caffe_update, update, caffe_after, after, before) -> bool:
    """The update within 1e-4 of Caffe's (relative to its largest value), and the
    new weights too, beyond 2 float32 ulps of the weight."""
    tol = 1e-4 * float(np.abs(caffe_update).max())
    ulps = 2 * np.spacing(np.abs(before).astype(np.float32))
    return bool(np.abs(update - caffe_update).max() <= tol and np.all(np.abs(after - caffe_after) <= tol + ulps))


@needs_caffe
def test_published_style_backward_trains_as_in_caffe(layer_dir, small_train_prototxt, tmp_path, monkeypatch):
    """OpenSALICON's interpolation backward (the top diff zoomed down, not the adjoint), written
    in a file: 5 SGD steps of real Caffe and of the engine (salicon.pycaffe's solver) agree blob by
    blob; the project's exact adjoint, forced in its place, does not."""
    import salicon.pycaffe as engine
    from salicon.runtimes.caffe import import_caffe

    real_caffe = import_caffe()
    (layer_dir / "custom_interpolation_layer.py").write_text(ZOOM_DOWN_INTERPOLATION)
    weights = tmp_path / "init.caffemodel"
    net = randomise(Net(small_train_prototxt, phase="train"), seed=5)  # activations O(1), every blob non-zero
    with torch.no_grad():
        net.params["saliency_map"][0].mul_(0.1)  # logits near 0: a loss that neither saturates nor diverges
    net.save(weights)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{small_train_prototxt}"\nbase_lr: 0.001\nlr_policy: "fixed"\nmomentum: 0.9\n'
                      f'weight_decay: 0.0005\ndisplay: 0\nsnapshot_prefix: "{tmp_path}/snap"\nsolver_mode: CPU\n')
    trained, frozen = _trained_and_frozen(net)
    assert "sec_conv1_1" in frozen and "sec_conv3_1" in trained
    runs = {}
    for mode in ("auto", "native"):
        monkeypatch.setenv("SALICON_PYTHON_LAYERS", mode)
        real = real_caffe.SGDSolver(str(solver))
        mine = engine.SGDSolver(str(solver))
        assert mine.net.python_layers["custom_interpolation_layer"].implementation == (
            "as-written" if mode == "auto" else "native:BilinearInterpolation (forced)")
        for s in (real, mine):
            s.net.copy_from(str(weights))
        runs[mode] = _solver_updates(real, mine)
    for step in runs["auto"]:
        for layer in trained:
            for i, record in enumerate(step[layer]):
                assert np.abs(record[0]).max() > 0, (layer, i)
                assert _agrees(*record), (layer, i)
        for layer in frozen:  # lr_mult 0: no update, weights bit-equal
            for caffe_update, update, caffe_after, after, before in step[layer]:
                assert not np.any(caffe_update) and not np.any(update)
                assert np.array_equal(after, before) and np.array_equal(caffe_after, before)
    # With the exact adjoint every coarse-stream blob's update differs from Caffe's at the first step.
    first = runs["native"][0]
    coarse = [layer for layer in trained if layer.startswith("sec_")]
    assert len(coarse) == 9 and not any(_agrees(*first[layer][0]) for layer in coarse)
    assert all(_agrees(*first[layer][0]) for layer in trained if not layer.startswith("sec_"))


# -------------------------------------------------------------------- Ray


def test_ray_actors_run_the_layer_file_the_driver_resolved(layer_dir, small_prototxt, small_model, photo,
                                                            tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install -e '.[ray]'")
    from salicon import Salicon
    from salicon.batch import RayOptions, predict_on_ray
    from salicon.inputs import Item
    from salicon.outputs import OutputSpec

    (layer_dir / "CustomData.py").write_text(HALVING_DATA)  # only on this process's sys.path
    expected = Salicon(small_model, small_prototxt, device="cpu", postprocess="none").compute_saliency(photo)
    native = Salicon(small_model, small_prototxt, device="cpu", postprocess="none",
                     python_layers="native").compute_saliency(photo)
    assert np.abs(expected - native).max() > 1e-3
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        report = predict_on_ray([Item(str(photo), "photo")], str(tmp_path / "out"),
                                RayOptions(SaliconConfig(model=str(small_model), prototxt=str(small_prototxt),
                                                         device="cpu", postprocess="none"), progress=False),
                                spec=OutputSpec(npy=True))
    finally:
        if started:
            ray.shutdown()
    assert report.written == 1, report.failed
    np.testing.assert_allclose(np.load(tmp_path / "out" / "photo.npy"), expected, atol=1e-5)


def test_predict_verbose_says_which_file_and_implementation_runs(layer_dir, small_prototxt, small_model, photo,
                                                                  tmp_path, capsys):
    args = ["predict", str(photo), "-o", str(tmp_path / "a"), "--model", str(small_model), "--prototxt",
            str(small_prototxt), "-q", "-v", "--device", "cpu"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "Python layer 'custom_interpolation_layer'" in x)
    assert line.endswith(f"from {find_layer_file('custom_interpolation_layer').resolve()}: native "
                         f"BilinearInterpolation")
    (layer_dir / "custom_interpolation_layer.py").write_text(CUBIC_INTERPOLATION)
    assert cli.main(args[:3] + [str(tmp_path / "b")] + args[4:]) == 0
    err = capsys.readouterr().err
    assert f"from {layer_dir / 'custom_interpolation_layer.py'}: as written, on the host (slower)" in err
    assert "runtime pytorch, precision fp32" in err
    assert cli.main(args[:3] + [str(tmp_path / "c")] + args[4:] + ["--python-layers", "native"]) == 0
    assert "native BilinearInterpolation (forced)" in capsys.readouterr().err


def test_serve_on_ray_ships_the_layer_files_the_driver_resolved(layer_dir, small_prototxt, small_model):
    """Each Ray Serve replica is built from the driver's configuration: the layer files travel in it."""
    from salicon.cli.serve import _checked_config
    from salicon.model import Salicon

    (layer_dir / "CustomData.py").write_text(HALVING_DATA)
    args = cli.build_parser().parse_args(["serve", "--model", str(small_model), "--prototxt", str(small_prototxt),
                                          "--device", "cpu"])
    config = _checked_config(args)
    shipped = config.layer_files["CustomData"]
    assert shipped.path == str(layer_dir / "CustomData.py") and shipped.source == HALVING_DATA
    sys.modules.pop("CustomData", None)
    (layer_dir / "CustomData.py").unlink()  # a replica elsewhere: the file is not on its path
    replica = Salicon(config=config)
    assert replica.python_layers["FineCustomData"].file == shipped.path
    assert replica.python_layers["FineCustomData"].implementation == "as-written"


def test_a_data_layer_run_as_written_transforms_the_fed_blob_not_the_callers_array(layer_dir, small_prototxt,
                                                                                   small_model, rng):
    (layer_dir / "CustomData.py").write_text(HALVING_DATA)
    net = Net(small_prototxt, small_model)
    assert net.python_layers["FineCustomData"].implementation == "as-written"
    feeds = {n: torch.from_numpy(rng.uniform(-0.5, 0.5, s).astype(np.float32)) for n, s in net.input_shapes.items()}
    kept = {n: t.clone() for n, t in feeds.items()}
    with torch.no_grad():
        out = net(**feeds)["saliency_map_out"]
        halved = Net(small_prototxt, small_model, python_layers="native")(
            **{n: t * 0.5 for n, t in kept.items()})["saliency_map_out"]
    torch.testing.assert_close(out, halved, rtol=1e-5, atol=1e-6)
    for name, tensor in feeds.items():
        assert torch.equal(tensor, kept[name]), name
