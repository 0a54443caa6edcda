"""pycaffe's ``Net`` and its blobs on the PyTorch engine (see :mod:`salicon.pycaffe`)."""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..engine import Net as EngineNet
from ..engine.pylayer import Blob
from ..types import PathLike

TRAIN, TEST = 0, 1
#: Where nets are built: set by salicon.pycaffe.set_mode_gpu / set_device.
_MODE = {"gpu": False, "device_id": 0}


def _unsupported(what: str) -> AttributeError:
    return AttributeError(f"not supported by salicon.pycaffe: {what}")


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
    def data(self) -> np.ndarray:  # type: ignore[override]  # a parameter's, read from it
        if self._on_cpu:
            return self._param.detach().numpy()
        if self._host is None:
            self._host = self._param.detach().cpu().numpy()
        return self._host

    @property
    def diff(self) -> np.ndarray:  # type: ignore[override]
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
                seeds: list = []
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
