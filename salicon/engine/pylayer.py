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

import sys
import types
from collections.abc import Sequence

import numpy as np
import torch

from .layers import Layer, Shape
from .python_layers import LayerFile


class Blob:
    """A numpy-backed blob with pycaffe's surface (data, diff, reshape, shape)."""

    def __init__(self, shape: Sequence[int] = (), data: np.ndarray | None = None):
        if data is not None:
            self.data = np.ascontiguousarray(data, dtype=np.float32)
        else:
            self.data = np.zeros(tuple(shape), dtype=np.float32)
        self.diff = np.zeros_like(self.data)
        #: Whether the blob has a shape (given, or set by ``reshape``).
        self.shaped = data is not None or bool(shape)

    def reshape(self, *shape: int) -> None:
        shape = tuple(int(d) for d in shape)
        self.shaped = True
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


def _defined_classes(mod) -> list[str]:
    return sorted(n for n, v in vars(mod).items() if isinstance(v, type) and v.__module__ == mod.__name__)


def load_layer_class(file: LayerFile, name: str, train: bool = False):
    """Execute the layer module ``file`` privately and return its class ``name``.

    The module runs under a private name with ``import caffe`` giving the
    stand-in (so ``class L(caffe.Layer)`` works with or without pycaffe) and is
    not registered under its own name, so real Caffe in the same process still
    imports the original. Everything that can go wrong with the file (a syntax
    error, an exception while importing, no such class, no ``forward``; no
    ``backward`` in a train net) is an ImportError naming the file and the cause.
    """
    try:
        code = compile(file.source, file.path, "exec")
    except SyntaxError as exc:
        raise ImportError(f"{file.path}: syntax error at line {exc.lineno}: {exc.msg}") from None
    mod = types.ModuleType(f"_salicon_pylayer_{file.module}")
    mod.__file__ = file.path
    missing = object()
    real = sys.modules.get("caffe", missing)
    sys.modules["caffe"] = _CaffeShim("caffe")
    try:
        exec(code, mod.__dict__)
    except Exception as exc:  # a user's module: report whatever it raised
        raise ImportError(f"{file.path}: importing it raised {type(exc).__name__}: {exc}") from exc
    finally:
        if real is missing:
            sys.modules.pop("caffe", None)
        else:
            sys.modules["caffe"] = real  # type: ignore[assignment]
    cls = getattr(mod, name, None)
    if not isinstance(cls, type):
        found = ", ".join(_defined_classes(mod)) or "none"
        raise ImportError(f"{file.path}: defines no class '{name}' (classes: {found})")
    needed = ("setup", "reshape", "forward") + (("backward",) if train else ())
    lacking = [m for m in needed if not callable(getattr(cls, m, None))]
    if lacking:
        raise ImportError(f"{file.path}: class '{name}' has no {', '.join(lacking)} method"
                          + (" (a train net calls backward)" if lacking == ["backward"] else ""))
    return cls


class _PythonLayerFunction(torch.autograd.Function):
    """A Python layer's Reshape + Forward (as Caffe's Layer::Forward calls them)
    and Backward, on host copies of the blobs. A data layer (no bottoms) gets
    the blobs fed to the net as its tops' data, as the driver leaves them in Caffe."""

    @staticmethod
    def forward(ctx, owner: PythonLayer, *inputs: torch.Tensor):
        # Copies: the layer may write its blobs in place, and the tensors are the caller's.
        host = [Blob(data=b.detach().float().cpu().numpy().copy()) for b in inputs]
        bottom_blobs, top_blobs = ([], host) if owner.is_input else (host, [Blob(s) for s in owner.top_shapes])
        try:
            owner.impl.reshape(bottom_blobs, top_blobs)
            owner.impl.forward(bottom_blobs, top_blobs)
        except Exception as exc:
            raise owner.failure("forward", exc) from exc
        ctx.owner, ctx.bottom_blobs, ctx.top_blobs = owner, bottom_blobs, top_blobs
        ctx.meta = [(b.device, b.dtype) for b in inputs]
        anchor: torch.Tensor = owner.anchor  # type: ignore[assignment]  # a registered buffer
        device, dtype = (inputs[0].device, inputs[0].dtype) if inputs else (anchor.device, torch.float32)
        outs = tuple(torch.from_numpy(np.array(t.data, dtype=np.float32)).to(device, dtype) for t in top_blobs)
        return outs if len(outs) != 1 else outs[0]

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        if ctx.owner.is_input:  # data layers have no bottoms to propagate to
            return (None,) * (1 + len(ctx.meta))
        for blob, g in zip(ctx.top_blobs, grads):
            blob.diff = (g.detach().float().cpu().numpy().reshape(blob.data.shape)
                         if g is not None else np.zeros_like(blob.data))
        for blob in ctx.bottom_blobs:
            blob.diff = np.zeros_like(blob.data)
        propagate = [bool(n) for n in ctx.needs_input_grad[1:]]
        if any(propagate):
            try:
                ctx.owner.impl.backward(ctx.top_blobs, propagate, ctx.bottom_blobs)
            except Exception as exc:
                raise ctx.owner.failure("backward", exc) from exc
        out: list[torch.Tensor | None] = [None]
        for blob, need, (device, dtype) in zip(ctx.bottom_blobs, propagate, ctx.meta):
            out.append(torch.from_numpy(np.array(blob.diff, dtype=np.float32)).to(device, dtype) if need else None)
        return tuple(out)


class PythonLayer(Layer):
    """``Python`` layer running a user's class from its file, as written, through
    the Caffe layer interface (forward and backward on the host).

    A layer without bottoms is a data layer: its tops are net inputs, fed by the
    caller, and its forward then runs on them (as Caffe runs a Python data layer
    on the blobs the driver wrote).
    """

    n_bottoms = None
    n_tops = None

    def __init__(self, param, bottom_shapes, phase, generator=None, *, file: LayerFile):
        super().__init__(param, bottom_shapes, phase, generator)
        pp = param.python_param
        if not pp.module or not pp.layer:
            raise self.error("python_param needs both 'module' and 'layer'")
        self.file = file
        self.class_name = pp.layer
        self.n_top_blobs = len(param.top)
        self.is_input = len(param.bottom) == 0
        train = phase == 0 and not self.is_input  # caffe_pb2.TRAIN; data layers need no backward
        try:
            cls = load_layer_class(file, pp.layer, train=train)
        except ImportError as exc:
            raise self.error(f"cannot import Python layer {pp.module}.{pp.layer}: {exc}") from None
        try:
            try:
                impl = cls()
            except TypeError:
                impl = cls(param)
        except Exception as exc:
            raise self.failure("construction", exc) from exc
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
        except Exception as exc:  # a user's layer: report whatever it raised
            raise self.failure("setup", exc) from exc
        try:
            impl.reshape(bottoms, tops)
        except Exception as exc:
            raise self.failure("reshape", exc) from exc
        unshaped = [name for name, t in zip(param.top, tops) if not t.shaped]
        if unshaped:
            raise self.error(f"{file.path}: {pp.layer}.setup/reshape gave no shape to top(s) "
                             f"{', '.join(repr(n) for n in unshaped)}: the prototxt gives {len(param.top)} top(s), "
                             f"does the layer make that many?")
        if len(getattr(impl, "blobs", ())):
            raise self.error(f"{file.path}: {pp.layer} creates parameter blobs (self.blobs); Python layers "
                             f"with learnable parameters are not supported by the PyTorch engine")
        self.top_shapes: list[Shape] = [tuple(t.shape) for t in tops]

    def failure(self, stage: str, exc: Exception) -> Exception:
        """A NetError naming the file, the layer, the stage and what the user's code raised."""
        counts = ""
        if isinstance(exc, IndexError):  # most often a layer written for other bottom/top counts
            counts = f" (the prototxt gives it {len(self.bottom_shapes)} bottom(s) and {self.n_top_blobs} top(s))"
        return self.error(f"{self.file.path}: {self.class_name}.{stage} raised {type(exc).__name__}: {exc}{counts}; "
                          f"bottom shapes {self.bottom_shapes}")

    def forward(self, *bottoms):
        out = _PythonLayerFunction.apply(self, *bottoms)
        return out if isinstance(out, tuple) else (out,)
