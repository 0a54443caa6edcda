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

import contextlib
import importlib
import sys
import types
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
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
    """Stand-in for ``caffe.Layer`` when pycaffe is not installed."""

    def __init__(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def caffe_module_available():
    """Make ``import caffe`` succeed while importing a user layer module.

    With pycaffe installed nothing changes. Without it, a minimal ``caffe``
    module offering ``caffe.Layer`` is visible during the import only, so the
    usual ``class MyLayer(caffe.Layer)`` works and no other code is misled into
    thinking pycaffe is present.
    """
    try:
        import caffe  # noqa: F401
        yield
        return
    except ImportError:
        pass
    shim = types.ModuleType("caffe")
    shim.Layer = _ShimLayer
    sys.modules["caffe"] = shim
    try:
        yield
    finally:
        if sys.modules.get("caffe") is shim:
            del sys.modules["caffe"]


def import_layer_class(module: str, name: str, search_path: Iterable[Path]):
    """Import ``module`` (from sys.path or ``search_path``) and return class ``name``."""
    extra = [str(p) for p in search_path if str(p) not in sys.path]
    sys.path[:0] = extra
    try:
        with caffe_module_available():
            mod = importlib.import_module(module)
    finally:
        for p in extra:
            if p in sys.path:
                sys.path.remove(p)
    try:
        return getattr(mod, name)
    except AttributeError:
        raise ImportError(f"module '{module}' ({getattr(mod, '__file__', '?')}) has no class '{name}'") from None


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
            cls = import_layer_class(pp.module, pp.layer, search_path)
        except ImportError as exc:
            raise self.error(f"cannot import Python layer {pp.module}.{pp.layer}: {exc}") from None
        try:
            impl = cls(param)
        except TypeError:
            impl = cls()
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


def is_python_layer(param: caffe_pb2.LayerParameter) -> bool:
    return param.type == "Python"
