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
                 level: int = 0, stages: Any = None):
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
                              device=_device())
        self._net.requires_grad_(False)
        if weights is not None:
            self.copy_from(weights)
        self._layer_names = list(self._net.layer_params)
        self._step_names = [n for n in self._layer_names if not self._net.layer(n).is_input]
        self.blobs: OrderedDict[str, Blob] = OrderedDict(
            (name, Blob(shape)) for name, shape in self._net.blob_shapes.items())
        self.params: OrderedDict[str, list[ParamBlob]] = OrderedDict(
            (name, [ParamBlob(p) for p in blobs]) for name, blobs in self._net.params.items())
        # Caffe's net inputs are the tops of Input layers; Python data layers' tops are blobs like any other.
        self.inputs = [t for lp in self._net.layer_params.values() if lp.type == "Input" for t in lp.top]
        self.outputs = list(self._net.outputs)
        self.top_names = OrderedDict((n, list(lp.top)) for n, lp in self._net.layer_params.items())
        self.bottom_names = OrderedDict((n, list(lp.bottom)) for n, lp in self._net.layer_params.items())

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
    def _span(self, start: str | None, end: str | None) -> range:
        def index(name: str, what: str) -> int:
            if name not in self._step_names:
                raise ValueError(f"{what}={name!r}: no such computing layer; layers: {', '.join(self._step_names)}")
            return self._step_names.index(name)
        first = index(start, "start") if start is not None else 0
        last = index(end, "end") if end is not None else len(self._step_names) - 1
        return range(first, last + 1)

    def _tensor(self, name: str, grad: bool = False) -> torch.Tensor:
        tensor = torch.from_numpy(self.blobs[name].data).to(self._net.device)
        if grad:
            tensor = tensor.clone().requires_grad_(True)
        return tensor

    def _run(self, span: range, grad: bool = False) -> dict[str, torch.Tensor]:
        """Run the layers of ``span`` on the blobs' current data; store every top."""
        self._push()
        values: dict[str, torch.Tensor] = {}
        leaves: dict[str, torch.Tensor] = {}
        steps = self._net._steps
        for i in span:
            layer, bottoms, tops = steps[i]
            args = []
            for b in bottoms:
                if b not in values:
                    values[b] = leaves[b] = self._tensor(b, grad)
                args.append(values[b])
            for t, o in zip(tops, layer(*args)):
                if grad and o.requires_grad:
                    o.retain_grad()
                values[t] = o
        for name, tensor in values.items():
            if name not in leaves:
                self._store(self.blobs[name], "data", tensor)
        values.update({f"{name}@input": t for name, t in leaves.items()})
        return values

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
        """Backward pass: the loss layers (with their loss weights) and the top
        diffs given as ``kwargs`` are propagated to every blob's and parameter's
        ``.diff`` (parameter diffs accumulate, as in Caffe). The forward pass is
        recomputed from the blobs' data. Returns {input blob: diff} plus ``diffs``."""
        if start is not None or end is not None:
            raise _unsupported("Net.backward(start=..., end=...)")
        params = [p for blobs in self._net.params.values() for p in blobs]
        flags = [p.requires_grad for p in params]  # a solver's net keeps its frozen layers frozen
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            try:
                values = self._run(self._span(None, None), grad=True)
                total = sum(w * values[n].sum() for n, w in self._net.loss_weights.items() if n in values)
                for name, diff in kwargs.items():
                    total = total + (values[name] * torch.as_tensor(np.asarray(diff, np.float32),
                                                                    device=values[name].device)).sum()
                if not torch.is_tensor(total):
                    raise ValueError("nothing to back-propagate: the net has no loss layer and no top diff was given")
                total.backward()
            finally:
                for p, flag in zip(params, flags):
                    p.requires_grad_(flag)
        for name, tensor in values.items():
            blob = self.blobs[name.split("@")[0]]
            if tensor.grad is not None:
                self._store(blob, "diff", tensor.grad)
        wanted = list(self.inputs) + list(diffs or [])
        return {name: self.blobs[name].diff for name in dict.fromkeys(wanted)}

    @property
    def _feeds(self) -> list[str]:
        """The blobs the net reads from outside: Input layers' and Python data layers' tops."""
        return list(self._net.input_shapes)

    def _objective(self) -> torch.Tensor:
        """The weighted loss of a forward pass on the blobs' data (for the solver)."""
        values = self._run(self._span(None, None), grad=False)
        return self._net.objective(values)


# ---------------------------------------------------------------- solvers


class SGDSolver:
    """pycaffe's solver: ``SGDSolver(solver.prototxt)``; the net named by the
    solver's ``net`` (relative to the working directory, as in Caffe, else to
    the solver file's folder) in phase TRAIN."""

    _TYPE: str | None = "SGD"

    def __init__(self, solver_file: PathLike):
        self._param = read_solver(solver_file)
        if self._TYPE is not None:
            found = solver_type(self._param)
            if self._param.HasField("type") and found != self._TYPE:
                raise ValueError(f"{solver_file}: a {found} solver, not {self._TYPE}; use caffe.get_solver")
            self._param.type = self._TYPE
        if any(len(getattr(self._param, f, ())) for f in ("test_iter", "test_net", "test_net_param")):
            warnings.warn(f"{solver_file}: salicon.pycaffe does not run the solver's test nets", stacklevel=2)
        self.net = Net(_net_path(self._param, solver_file), TRAIN)
        self.test_nets: list[Net] = []
        self._solver = Solver(self._param, self.net._net)

    def __getattr__(self, name: str):
        raise _unsupported(f"Solver.{name}")

    @property
    def iter(self) -> int:
        return self._solver.iter

    def step(self, iters: int) -> None:
        """``iters`` iterations on the net's current input blobs, snapshots at the
        solver's interval, the loss printed every ``display`` iterations."""
        param = self._param
        for _ in range(int(iters)):
            loss = self._solver.step([{}] * max(1, param.iter_size), forward=lambda _: self.net._objective())
            self.net._pull()
            if param.display and (self.iter - 1) % param.display == 0:
                print(f"Iteration {self.iter - 1}, loss = {loss:g}, lr = {self._solver.lr:g}", file=sys.stderr)
            if param.snapshot and self.iter % param.snapshot == 0:
                self.snapshot()

    def solve(self, resume_file: PathLike | None = None) -> None:
        """Step to ``max_iter``, then snapshot (unless ``snapshot_after_train`` is false)."""
        if resume_file is not None:
            self.restore(resume_file)
        self.step(max(0, self._param.max_iter - self.iter))
        if self._param.snapshot_after_train:
            self.snapshot()

    def snapshot(self) -> None:
        """``<snapshot_prefix>_iter_N.caffemodel`` and ``.solverstate``, as Caffe names them."""
        self.net._push()
        self._solver.snapshot(self._param.snapshot_prefix or "")

    def restore(self, state_file: PathLike) -> None:
        self._solver.restore(state_file)
        self.net._pull()


def _net_path(param: caffe_pb2.SolverParameter, solver_file: PathLike) -> Path:
    name = param.net or param.train_net
    if not name:
        raise _unsupported("solvers without a `net` (or `train_net`) file (net_param, train_net_param)")
    for candidate in (Path(name), Path(solver_file).resolve().parent / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{solver_file}: net {name!r} not found (relative to the working directory "
                            f"or the solver's folder)")


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
