"""Running user-written Caffe Python layers inside the PyTorch engine.

A Caffe Python layer is a class with ``setup(bottom, top)``,
``reshape(bottom, top)``, ``forward(bottom, top)`` and
``backward(top, propagate_down, bottom)`` working on blobs that expose numpy
``.data`` and ``.diff`` and a ``.reshape(*shape)`` method. :class:`Blob` is that
blob; :class:`PythonLayer` wraps such a class in an autograd function so it
runs unmodified, forward and backward, on CPU or GPU tensors (through host
memory).
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .layers import Layer, Shape


class Blob:
    """A numpy-backed blob with pycaffe's surface (data, diff, reshape, shape)."""

    def __init__(self, shape: Sequence[int] = (), data: np.ndarray | None = None):
        if data is not None:
            self.data = np.ascontiguousarray(data, dtype=np.float32)
        else:
            self.data = np.zeros(tuple(shape), dtype=np.float32)
        self.diff = np.zeros_like(self.data)

    def reshape(self, *shape: int) -> None:
        shape = tuple(int(d) for d in shape)
        if shape != self.data.shape:
            self.data = np.zeros(shape, dtype=np.float32)
            self.diff = np.zeros(shape, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def count(self) -> int:
        return int(self.data.size)

    def _legacy(self, i: int) -> int:
        shape = (1,) * (4 - self.data.ndim) + self.data.shape
        return int(shape[i])

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))


class _ShimLayer:
    """Stand-in for ``caffe.Layer``: pycaffe's own base class can only be
    created by Caffe's C++ side, so layers run by this engine derive from this."""

    def __init__(self, *args, **kwargs):
        pass


class _CaffeShim(types.ModuleType):
    """The ``caffe`` module a layer module sees when this engine imports it:
    ``caffe.Layer`` is the stand-in; any other name comes from real pycaffe
    when it is installed."""

    Layer = _ShimLayer

    def __getattr__(self, name):
        real = sys.modules.get("caffe")
        if real is None or isinstance(real, _CaffeShim):
            raise AttributeError(f"module 'caffe' (stand-in; pycaffe is not installed) has no attribute '{name}'")
        return getattr(real, name)


def load_layer_class(module: str, name: str, search_path: Iterable[Path] = ()):
    """Import Python layer ``module`` privately and return its class ``name``.

    The module is found on ``search_path`` and sys.path, executed under a
    private name with ``import caffe`` giving the stand-in (so ``class
    L(caffe.Layer)`` works with or without pycaffe), and not registered under
    its own name, so real Caffe in the same process still imports the original.
    """
    paths = [str(p) for p in search_path] + sys.path
    spec = None
    for folder in paths:
        for candidate in (Path(folder) / f"{module.replace('.', '/')}.py",
                          Path(folder) / module.replace(".", "/") / "__init__.py"):
            if candidate.is_file():
                spec = importlib.util.spec_from_file_location(f"_salicon_pylayer_{module}", candidate)
                break
        if spec is not None:
            break
    if spec is None:
        raise ImportError(f"no module named '{module}' in {[str(p) for p in search_path]} or sys.path")
    mod = importlib.util.module_from_spec(spec)
    missing = object()
    real = sys.modules.get("caffe", missing)
    sys.modules["caffe"] = _CaffeShim("caffe")
    try:
        spec.loader.exec_module(mod)
    finally:
        if real is missing:
            sys.modules.pop("caffe", None)
        else:
            sys.modules["caffe"] = real
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ImportError(f"module '{module}' ({spec.origin}) has no class '{name}'") from None


class _PythonLayerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, owner: "PythonLayer", *bottoms: torch.Tensor):
        bottom_blobs = [Blob(data=b.detach().float().cpu().numpy()) for b in bottoms]
        top_blobs = [Blob(s) for s in owner.top_shapes]
        owner.impl.reshape(bottom_blobs, top_blobs)
        owner.impl.forward(bottom_blobs, top_blobs)
        ctx.owner, ctx.bottom_blobs, ctx.top_blobs = owner, bottom_blobs, top_blobs
        ctx.meta = [(b.device, b.dtype) for b in bottoms]
        device, dtype = (bottoms[0].device, bottoms[0].dtype) if bottoms else (owner.anchor.device, torch.float32)
        outs = tuple(torch.from_numpy(t.data.copy()).to(device, dtype) for t in top_blobs)
        return outs if len(outs) != 1 else outs[0]

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        for blob, g in zip(ctx.top_blobs, grads):
            blob.diff = (g.detach().float().cpu().numpy().reshape(blob.data.shape)
                         if g is not None else np.zeros_like(blob.data))
        for blob in ctx.bottom_blobs:
            blob.diff = np.zeros_like(blob.data)
        propagate = [bool(n) for n in ctx.needs_input_grad[1:]]
        if any(propagate):
            ctx.owner.impl.backward(ctx.top_blobs, propagate, ctx.bottom_blobs)
        out = [None]
        for blob, need, (device, dtype) in zip(ctx.bottom_blobs, propagate, ctx.meta):
            out.append(torch.from_numpy(np.array(blob.diff, dtype=np.float32)).to(device, dtype) if need else None)
        return tuple(out)


class PythonLayer(Layer):
    """``Python`` layer running a user class through the Caffe layer interface."""

    n_bottoms = None
    n_tops = None

    def __init__(self, param, bottom_shapes, phase, generator=None, search_path: Iterable[Path] = ()):
        super().__init__(param, bottom_shapes, phase, generator)
        pp = param.python_param
        if not pp.module or not pp.layer:
            raise self.error("python_param needs both 'module' and 'layer'")
        try:
            cls = load_layer_class(pp.module, pp.layer, search_path)
        except ImportError as exc:
            raise self.error(f"cannot import Python layer {pp.module}.{pp.layer}: {exc}") from None
        try:
            impl = cls()
        except TypeError:
            impl = cls(param)
        impl.param_str = pp.param_str
        impl.phase = phase
        self.impl = impl
        # Follows the net's device, for layers without bottoms (data layers).
        self.register_buffer("anchor", torch.empty(0), persistent=False)
        # Setup and a first reshape on zero-filled bottoms give the top shapes.
        bottoms = [Blob(s) for s in self.bottom_shapes]
        tops = [Blob(()) for _ in param.top]
        try:
            impl.setup(bottoms, tops)
            impl.reshape(bottoms, tops)
        except Exception as exc:  # a user's layer: report whatever it raised
            raise self.error(f"setup/reshape of {pp.module}.{pp.layer} failed with shapes "
                             f"{self.bottom_shapes}: {type(exc).__name__}: {exc}") from exc
        if len(getattr(impl, "blobs", ())):
            raise self.error(f"{pp.module}.{pp.layer} creates parameter blobs (self.blobs); Python layers "
                             f"with learnable parameters are not supported by the PyTorch engine")
        self.top_shapes: list[Shape] = [tuple(t.shape) for t in tops]

    def forward(self, *bottoms):
        out = _PythonLayerFunction.apply(self, *bottoms)
        return out if isinstance(out, tuple) else (out,)
