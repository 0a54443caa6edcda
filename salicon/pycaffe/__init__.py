"""pycaffe's Python surface on the PyTorch engine, so pycaffe scripts (OpenSALICON's
``Salicon.py`` and ``finetune_salicon.py`` among them) run without Caffe:

    python -m salicon.pycaffe script.py [args]      # `import caffe` in the script gets this module

or ``import salicon.pycaffe as caffe`` in new code. What is here:

- ``set_mode_cpu()``, ``set_mode_gpu()`` (a CUDA GPU when PyTorch sees one, else
  the CPU with a warning), ``set_device(id)``, ``set_random_seed(seed)``;
  ``TRAIN``, ``TEST``; ``Layer`` (the base of Python layers);
- ``Net(prototxt, phase)``, ``Net(prototxt, weights, phase)``,
  ``Net(prototxt, phase, weights=...)``: ``blobs`` and ``params`` (ordered,
  in Caffe's order; frozen layers included), ``.data`` / ``.diff`` NumPy
  arrays written in place (``net.blobs["x"].data[...] = image``),
  ``forward(start=, end=, blobs=, **inputs)``, ``backward(**top_diffs)``,
  ``reshape()``, ``copy_from``, ``save``, ``inputs``, ``outputs``;
- ``SGDSolver(path)`` (and ``NesterovSolver``, ``AdaGradSolver``,
  ``RMSPropSolver``, ``AdaDeltaSolver``, ``AdamSolver``, ``get_solver``) with
  ``.net``, ``.step(n)``, ``.solve()``, ``.iter``, ``.snapshot()``,
  ``.restore(path)``: the engine's Caffe-exact solver on the net's current
  input blobs.

Anything else raises ``AttributeError: not supported by salicon.pycaffe: ...``
naming it.
"""
from __future__ import annotations

import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine import Net as EngineNet
from ..engine.pylayer import Blob, _ShimLayer
from ..formats import caffe_pb2
from ..solver import Solver, read_solver, solver_type
from ..types import PathLike

TRAIN, TEST = 0, 1
#: The base class of Python layers (``class MyLayer(caffe.Layer)``).
Layer = _ShimLayer
_MODE = {"gpu": False, "device_id": 0}


def _unsupported(what: str) -> AttributeError:
    return AttributeError(f"not supported by salicon.pycaffe: {what}")


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _unsupported(f"caffe.{name}")


# ------------------------------------------------------------------ modes


def set_mode_cpu() -> None:
    _MODE["gpu"] = False


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        warnings.warn("salicon.pycaffe: set_mode_gpu() but PyTorch sees no CUDA GPU; running on the CPU",
                      stacklevel=2)
    _MODE["gpu"] = True


def set_device(device_id: int) -> None:
    _MODE["device_id"] = int(device_id)


def set_random_seed(seed: int) -> None:
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2 ** 32)


def _device() -> torch.device:
    if _MODE["gpu"] and torch.cuda.is_available():
        return torch.device("cuda", _MODE["device_id"])
    return torch.device("cpu")


# ------------------------------------------------------------------ blobs


class ParamBlob(Blob):
    """A learnable blob: ``.data`` and ``.diff`` are NumPy arrays over the
    parameter and its gradient (views on the CPU; on a GPU host copies synced
    around every forward pass and solver step)."""

    def __init__(self, param: torch.nn.Parameter):  # no Blob.__init__: the parameter holds the values
        self._param = param
        self._host: np.ndarray | None = None
        self._host_diff: np.ndarray | None = None

    @property
    def _on_cpu(self) -> bool:
        return self._param.device.type == "cpu"

    @property
    def data(self) -> np.ndarray:
        if self._on_cpu:
            return self._param.detach().numpy()
        if self._host is None:
            self._host = self._param.detach().cpu().numpy()
        return self._host

    @property
    def diff(self) -> np.ndarray:
        if self._param.grad is None:
            self._param.grad = torch.zeros_like(self._param)
        if self._on_cpu:
            return self._param.grad.numpy()
        self._host_diff = self._param.grad.cpu().numpy()
        return self._host_diff

    def push(self) -> None:
        """Host copy -> device (GPU only): the script's writes reach the net."""
        if self._host is not None and not self._on_cpu:
            with torch.no_grad():
                self._param.copy_(torch.from_numpy(self._host))

    def pull(self) -> None:
        """Device -> host copy (GPU only), after the net changed the parameter."""
        if self._host is not None and not self._on_cpu:
            self._host[...] = self._param.detach().cpu().numpy()

    @property
    def reshape(self):
        raise _unsupported("Blob.reshape (of a parameter blob)")

    def __getattr__(self, name: str):
        raise _unsupported(f"Blob.{name} (of a parameter blob)")


# -------------------------------------------------------------------- net


def _phase_name(phase: Any) -> str:
    if phase in (TRAIN, "train", "TRAIN"):
        return "train"
    if phase in (TEST, "test", "TEST"):
        return "test"
    raise ValueError(f"phase must be caffe.TRAIN or caffe.TEST, not {phase!r}")


class Net:
    """A net with pycaffe's surface on the PyTorch engine (see the module's doc)."""

    def __init__(self, network_file: PathLike, *args, phase: Any = None, weights: PathLike | None = None,
                 level: int = 0, stages: Any = None, python_layers: str | None = None):
        if len(args) == 2:                      # Net(prototxt, weights, phase)
            weights, phase = args
        elif len(args) == 1:                    # Net(prototxt, phase)
            phase = args[0]
        elif args:
            raise TypeError("Net(prototxt, phase), Net(prototxt, weights, phase) or Net(prototxt, phase, "
                            "weights=...)")
        if phase is None:
            raise TypeError("Net() needs a phase: caffe.TRAIN or caffe.TEST")
        self._net = EngineNet(str(network_file), phase=_phase_name(phase), level=level, stages=list(stages or ()),
                              device=_device(), python_layers=python_layers)
        self._net.requires_grad_(False)
        if weights is not None:
            self.copy_from(weights)
        self._layer_names = list(self._net.layer_params)
        self._step_names = list(self._net.step_names)
        self.blobs: OrderedDict[str, Blob] = OrderedDict(
            (name, Blob(shape)) for name, shape in self._net.blob_shapes.items())
        self.params: OrderedDict[str, list[ParamBlob]] = OrderedDict(
            (name, [ParamBlob(p) for p in blobs]) for name, blobs in self._net.params.items())
        # Caffe's net inputs are the tops of Input layers; Python data layers' tops are blobs like any other.
        self.inputs = [t for lp in self._net.layer_params.values() if lp.type == "Input" for t in lp.top]
        self.outputs = list(self._net.outputs)
        self.top_names = OrderedDict((n, list(lp.top)) for n, lp in self._net.layer_params.items())
        self.bottom_names = OrderedDict((n, list(lp.bottom)) for n, lp in self._net.layer_params.items())
        # As Caffe's Net::Init: a loss top's diff holds its loss weight (what backward starts from) ...
        for name, weight in self._net.loss_weights.items():
            self.blobs[name].diff[...] = weight
        # ... and a blob needs backward when a layer below it has learnable blobs (lr_mult != 0)
        # or needs backward itself. force_backward: every blob, and every parameter's diff.
        force = self._net.net_param.force_backward
        self._learnable = {id(i.param) for i in self._net.param_info() if i.lr_mult != 0 or force}
        self._need_backward: set[str] = set(self._feeds) if force else set()
        for (layer, bottoms, tops) in self._net._steps:
            if force or any(b in self._need_backward for b in bottoms) or any(
                    id(p) in self._learnable for p in layer.blobs):
                self._need_backward.update(tops)

    @property
    def python_layers(self):
        """Layer name -> which file and implementation each Python layer runs."""
        return self._net.python_layers
    def __getattr__(self, name: str):
        raise _unsupported(f"Net.{name}")

    # ----------------------------------------------------------- weights
    def copy_from(self, weights: PathLike) -> None:
        """Copy parameters of the layers the file has (others keep theirs, as in Caffe)."""
        with warnings.catch_warnings():  # Caffe skips layers the file lacks silently
            warnings.simplefilter("ignore")
            self._net.copy_from(str(weights))
        self._pull()

    def save(self, path: PathLike) -> None:
        self._push()
        self._net.save(str(path))

    def reshape(self) -> None:
        """Blob shapes follow the inputs' at the next forward pass."""

    def _push(self) -> None:
        for blobs in getattr(self, "params", {}).values():
            for b in blobs:
                b.push()

    def _pull(self) -> None:
        for blobs in getattr(self, "params", {}).values():
            for b in blobs:
                b.pull()

    # ----------------------------------------------------------- running
    def _span(self, low: str | None, high: str | None, backward: bool = False) -> list[int]:
        """The steps of the layers from ``low`` to ``high`` (layer names, inclusive,
        in net order; data and Input layers count as layers, as in Caffe)."""
        order = {name: i for i, name in enumerate(self._layer_names)}

        def index(name: str | None, what: str, default: int) -> int:
            if name is None:
                return default
            if name not in order:
                raise ValueError(f"{what}={name!r}: no such layer; layers: {', '.join(self._layer_names)}")
            return order[name]
        if backward:  # backward(start=top-most layer, end=bottom-most layer)
            lo, hi = index(high, "end", 0), index(low, "start", len(order) - 1)
        else:
            lo, hi = index(low, "start", 0), index(high, "end", len(order) - 1)
        return [k for k, name in enumerate(self._step_names) if lo <= order[name] <= hi]

    def _tensor(self, name: str, grad: bool = False) -> torch.Tensor:
        tensor = torch.from_numpy(self.blobs[name].data).to(self._net.device)
        if grad:
            tensor = tensor.clone().requires_grad_(True)
        return tensor

    def _run(self, span: list[int], grad: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Run the layers of ``span`` on the blobs' current data; store every top.

        Returns (each blob's last value, each blob's first value in the span):
        the first is what a blob's diff is taken from, since an in-place layer
        (a ReLU) writes its bottom diff into the blob it shares with its top."""
        self._push()
        values: dict[str, torch.Tensor] = {}
        first: dict[str, torch.Tensor] = {}
        leaves: set[str] = set()
        steps = self._net._steps
        for i in span:
            layer, bottoms, tops = steps[i]
            args = []
            for b in bottoms:
                if b not in values:
                    values[b] = first[b] = self._tensor(b, grad and b in self._need_backward)
                    leaves.add(b)
                args.append(values[b])
            for t, o in zip(tops, layer(*args)):
                if grad and o.requires_grad:
                    o.retain_grad()
                values[t] = o
                first.setdefault(t, o)
        for name, tensor in values.items():
            if name not in leaves or tensor is not first[name]:
                self._store(self.blobs[name], "data", tensor)
        return values, first

    @staticmethod
    def _store(blob: Blob, field: str, tensor: torch.Tensor) -> None:
        array = tensor.detach().float().cpu().numpy()
        if blob.data.shape != array.shape:
            blob.reshape(*array.shape)
        getattr(blob, field)[...] = array

    def _set_inputs(self, inputs: dict[str, Any]) -> None:
        for name, value in inputs.items():
            if name not in self.blobs:
                raise KeyError(f"no blob named {name!r}")
            value = np.asarray(value, dtype=np.float32)
            if self.blobs[name].data.shape != value.shape:
                self.blobs[name].reshape(*value.shape)
            self.blobs[name].data[...] = value

    def forward(self, blobs: list[str] | None = None, start: str | None = None, end: str | None = None,
                **kwargs) -> dict[str, np.ndarray]:
        """Forward pass (from ``start`` to ``end``, layer names) on the blobs' data
        (``kwargs``: input arrays set first). Returns {output blob: data}, the
        ``end`` layer's tops when ``end`` is given, plus ``blobs``."""
        self._set_inputs(kwargs)
        with torch.no_grad():
            self._run(self._span(start, end))
        wanted = (self.top_names[end] if end is not None else self.outputs) + list(blobs or [])
        return {name: self.blobs[name].data for name in dict.fromkeys(wanted)}

    def backward(self, diffs: list[str] | None = None, start: str | None = None, end: str | None = None,
                 **kwargs) -> dict[str, np.ndarray]:
        """Caffe's backward pass from layer ``start`` (default: the last) down to
        layer ``end`` (default: the first), inclusive.

        ``kwargs`` (all of the net's outputs, or none) are written into the
        outputs' diffs first. Each layer of the span back-propagates the diffs
        its tops hold: a top that no later layer of the span reads gives its
        stored diff (a loss top holds its loss weight, as in Caffe), the others
        what the layers above computed. Blob diffs are overwritten, parameter
        diffs accumulate; layers and blobs Caffe would not back-propagate
        (below frozen layers, net inputs without ``force_backward``) keep their
        diffs. The forward pass of the span is recomputed from the blobs' data.
        Returns {blob: diff} for the inputs (``end``: that layer's bottoms) plus ``diffs``.
        """
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise ValueError(f"top diffs given for {sorted(kwargs)} but the net's outputs are "
                                 f"{sorted(self.outputs)}; give all of them or none (as pycaffe)")
            for top, diff in kwargs.items():
                diff = np.asarray(diff, dtype=np.float32)
                if diff.shape[:1] != self.blobs[top].diff.shape[:1]:
                    raise ValueError(f"diff for '{top}' has shape {diff.shape}, not batch sized "
                                     f"({self.blobs[top].diff.shape})")
                self.blobs[top].diff[...] = diff
        span = self._span(start, end, backward=True)
        steps = self._net._steps
        read_later: dict[str, int] = {}
        for i in span:
            for b in steps[i][1]:
                read_later[b] = i
        params = [p for blobs in self._net.params.values() for p in blobs]
        flags = [p.requires_grad for p in params]  # a solver's net keeps its frozen layers frozen
        with torch.enable_grad():
            for p in params:  # Caffe computes no diff for a blob with lr_mult 0 (without force_backward)
                p.requires_grad_(id(p) in self._learnable)
            try:
                values, first = self._run(span, grad=True)
                seeds = []
                for i in span:  # tops that no later layer of the span reads start the pass
                    for t in steps[i][2]:
                        if read_later.get(t, -1) <= i and values[t].requires_grad and t not in {s for s, _ in seeds}:
                            diff = torch.as_tensor(self.blobs[t].diff, device=values[t].device)
                            seeds.append((t, (values[t] * diff.reshape(values[t].shape)).sum()))
                if seeds:
                    torch.autograd.backward([total for _, total in seeds])
            finally:
                for p, flag in zip(params, flags):
                    p.requires_grad_(flag)
        for name, tensor in first.items():
            if tensor.grad is not None:
                self._store(self.blobs[name], "diff", tensor.grad)
        self._pull_diffs()
        wanted = (self.bottom_names[end] if end is not None else list(self.inputs)) + list(diffs or [])
        return {name: self.blobs[name].diff for name in dict.fromkeys(wanted)}

    def _pull_diffs(self) -> None:
        for blobs in self.params.values():
            for b in blobs:
                b.diff  # noqa: B018 (GPU: refreshes the host copy)

    @property
    def _feeds(self) -> list[str]:
        """The blobs the net reads from outside: Input layers' and Python data layers' tops."""
        return list(self._net.input_shapes)

    def _objective(self) -> torch.Tensor:
        """The weighted loss of a forward pass on the blobs' data (for the solver)."""
        values, _ = self._run(self._span(None, None), grad=False)
        return self._net.objective(values)


# ---------------------------------------------------------------- solvers


class SGDSolver:
    """pycaffe's solver: ``SGDSolver(solver.prototxt)``; the net named by the
    solver's ``net`` (relative to the working directory, as in Caffe, else to
    the solver file's folder) in phase TRAIN, and its test nets (``test_net``
    files, else the ``net`` in phase TEST once per ``test_iter`` entry), which
    share the train net's weights, as Caffe's do."""

    _TYPE: str | None = "SGD"

    def __init__(self, solver_file: PathLike):
        self._param = read_solver(solver_file)
        if self._TYPE is not None:
            found = solver_type(self._param)
            if self._param.HasField("type") and found != self._TYPE:
                raise ValueError(f"{solver_file}: a {found} solver, not {self._TYPE}; use caffe.get_solver")
            self._param.type = self._TYPE
        self.net = Net(_net_path(self._param, solver_file), TRAIN)
        self.test_nets: list[Net] = _test_nets(self._param, solver_file, self.net)
        self._solver = Solver(self._param, self.net._net)
        self._solver.keep_updates = True  # each blob's diff is its applied update after a step, as in Caffe

    def __getattr__(self, name: str):
        raise _unsupported(f"Solver.{name}")

    @property
    def iter(self) -> int:
        return self._solver.iter

    def step(self, iters: int) -> None:
        """``iters`` iterations on the net's current input blobs (Caffe's
        Solver::Step): the test nets run first whenever ``iter`` is a multiple
        of ``test_interval`` (at 0 only with ``test_initialization``), the loss
        is printed every ``display`` iterations, snapshots at the solver's interval.
        After a step each learnable blob's ``.diff`` holds the update that was
        subtracted from it (0 for frozen blobs), as Caffe leaves it."""
        param = self._param
        for _ in range(int(iters)):
            if (param.test_interval and self.iter % param.test_interval == 0
                    and (self.iter > 0 or param.test_initialization)):
                self.test_all()
            for blobs in self.net._net.params.values():  # Caffe's ClearParamDiffs
                for p in blobs:
                    if p.grad is not None:
                        p.grad.zero_()
            loss = self._solver.step([{}] * max(1, param.iter_size), forward=lambda _: self.net._objective())
            self.net._pull()
            self.net._pull_diffs()
            if param.display and (self.iter - 1) % param.display == 0:
                print(f"Iteration {self.iter - 1}, loss = {loss:g}, lr = {self._solver.lr:g}", file=sys.stderr)
            if param.snapshot and self.iter % param.snapshot == 0:
                self.snapshot()

    def solve(self, resume_file: PathLike | None = None) -> None:
        """Step to ``max_iter``, snapshot (unless ``snapshot_after_train`` is false)
        and test once more when ``max_iter`` is a multiple of ``test_interval``."""
        if resume_file is not None:
            self.restore(resume_file)
        self.step(max(0, self._param.max_iter - self.iter))
        if self._param.snapshot_after_train:
            self.snapshot()
        if self._param.test_interval and self.iter % self._param.test_interval == 0:
            self.test_all()

    def test_all(self) -> list[list[float]]:
        """Run every test net (Caffe's Solver::TestAll); returns each net's mean outputs."""
        return [self.test(k) for k in range(len(self.test_nets))]

    def test(self, k: int = 0) -> list[float]:
        """``test_iter[k]`` forward passes of test net ``k`` on its blobs' current
        data; prints and returns the mean of every output value, as Caffe's
        ``Test net output #i: name = value`` lines."""
        net, iters = self.test_nets[k], self._param.test_iter[k]
        print(f"Iteration {self.iter}, Testing net (#{k})", file=sys.stderr)
        names: list[str] = []
        scores: np.ndarray | None = None
        for _ in range(iters):
            out = net.forward()
            flat = np.concatenate([np.asarray(out[n], np.float32).ravel() for n in net.outputs])
            if scores is None:
                names = [n for n in net.outputs for _ in range(np.asarray(out[n]).size)]
                scores = flat.copy()
            else:
                scores += flat  # float32 sums, as Caffe's Dtype test_score
        means = [float(v) / iters for v in (scores if scores is not None else [])]
        for i, (name, mean) in enumerate(zip(names, means)):
            weight = net._net.loss_weights.get(name, 0.0)
            loss = f" (* {weight:g} = {weight * mean:g} loss)" if weight else ""
            print(f"    Test net output #{i}: {name} = {mean:g}{loss}", file=sys.stderr)
        return means

    def snapshot(self) -> None:
        """``<snapshot_prefix>_iter_N.caffemodel`` and ``.solverstate``, as Caffe names them."""
        self.net._push()
        self._solver.snapshot(self._param.snapshot_prefix or "")

    def restore(self, state_file: PathLike) -> None:
        self._solver.restore(state_file)
        self.net._pull()


def _test_nets(param: caffe_pb2.SolverParameter, solver_file: PathLike, train: Net) -> list[Net]:
    """The solver's test nets (Caffe's Solver::InitTestNets for net files), their
    layers' parameters shared with the train net's layers of the same name."""
    if len(param.test_net_param):
        raise _unsupported("test_net_param (give test nets as files: test_net)")
    files = [_find(name, solver_file) for name in param.test_net]
    generic = len(param.test_iter) - len(files)
    if generic < 0 or (generic > 0 and not (param.net or param.train_net)):
        raise ValueError(f"{solver_file}: {len(param.test_iter)} test_iter value(s) for {len(files)} test net(s)")
    files += [_net_path(param, solver_file)] * generic
    if param.test_state and len(param.test_state) != len(files):
        raise ValueError(f"{solver_file}: {len(param.test_state)} test_state value(s) for {len(files)} test net(s)")
    nets = []
    for k, path in enumerate(files):
        state = param.test_state[k] if param.test_state else None
        net = Net(path, TEST, level=state.level if state else 0, stages=list(state.stage) if state else ())
        _share_weights(net, train, path)
        nets.append(net)
    return nets


def _share_weights(test: Net, train: Net, source: PathLike) -> None:
    """Caffe's ShareTrainedLayersWith: same-named layers use the train net's blobs."""
    for name, layer_blobs in test._net.params.items():
        if name not in train._net.params:
            continue
        layer, theirs = test._net.layer(name), train._net.params[name]
        for attr, mine, other in zip(layer.blob_names, layer_blobs, theirs):
            if tuple(mine.shape) != tuple(other.shape):
                raise ValueError(f"{source}: layer '{name}' blob {attr} has shape {tuple(mine.shape)} in the test "
                                 f"net but {tuple(other.shape)} in the train net")
            setattr(layer, attr, other)
    test.params = OrderedDict((name, [ParamBlob(p) for p in blobs]) for name, blobs in test._net.params.items())


def _find(name: str, solver_file: PathLike) -> Path:
    for candidate in (Path(name), Path(solver_file).resolve().parent / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{solver_file}: net {name!r} not found (relative to the working directory "
                            f"or the solver's folder)")


def _net_path(param: caffe_pb2.SolverParameter, solver_file: PathLike) -> Path:
    name = param.net or param.train_net
    if not name:
        raise _unsupported("solvers without a `net` (or `train_net`) file (net_param, train_net_param)")
    return _find(name, solver_file)


class NesterovSolver(SGDSolver):
    _TYPE = "Nesterov"


class AdaGradSolver(SGDSolver):
    _TYPE = "AdaGrad"


class RMSPropSolver(SGDSolver):
    _TYPE = "RMSProp"


class AdaDeltaSolver(SGDSolver):
    _TYPE = "AdaDelta"


class AdamSolver(SGDSolver):
    _TYPE = "Adam"


class _AnySolver(SGDSolver):
    _TYPE = None


def get_solver(solver_file: PathLike) -> SGDSolver:
    """The solver of the type the file names."""
    return _AnySolver(solver_file)


__all__ = ["TRAIN", "TEST", "Layer", "Net", "Blob", "ParamBlob", "SGDSolver", "NesterovSolver", "AdaGradSolver",
           "RMSPropSolver", "AdaDeltaSolver", "AdamSolver", "get_solver", "set_mode_cpu", "set_mode_gpu",
           "set_device", "set_random_seed"]
