"""Faster forward passes of a :class:`Net`, each behind one switch.

The plain path is ``Net.forward`` under :func:`salicon.device.precision_context`.
:class:`FastForward` runs the same layers with any of these switched on:

- ``channels_last``: parameters and inputs in NHWC memory order (what cuDNN's
  and oneDNN's fastest convolutions read), inputs made in that order directly;
- ``fuse_relu``: each Convolution followed by an in-place ReLU becomes one call
  (cuDNN's convolution+bias+ReLU on a GPU, oneDNN's fused convolution on a CPU,
  else the convolution and an in-place ReLU on its fresh output);
- ``cast_weights``: for bf16, parameters converted to bfloat16 once and inputs
  cast once on the device, instead of autocast converting every weight on every
  call (no dtype round trips); a no-op in fp32 and tf32;
- ``compile``: ``torch.compile`` of the whole forward; if it cannot compile,
  one warning says why and the net runs eagerly;
- ``cuda_graphs``: one captured CUDA graph per input shape, replayed with the
  inputs copied into its static buffers (CUDA only).

Each switch keeps the numbers of the plain path (tests: within 1e-5 in fp32 on
the CPU). Which ones pay off is measured by ``benchmarks/gpu_check.sh``.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EngineError
from .layers import Convolution, ReLU
from .net import Net

#: The switches of :class:`ForwardOptions`, in the order they are applied.
VARIANTS = ("channels_last", "fuse_relu", "cast_weights", "compile", "cuda_graphs")

Inputs = Mapping[str, torch.Tensor]
#: ``capture(fn) -> (replay, output)``: records ``fn`` once; ``replay()`` reruns it into ``output``.
Capture = Callable[[Callable[[], torch.Tensor]], tuple[Callable[[], None], torch.Tensor]]


@dataclass(frozen=True)
class ForwardOptions:
    """Which forward variants are on (all off: the plain path)."""

    channels_last: bool = False
    fuse_relu: bool = False
    cast_weights: bool = False
    compile: bool = False
    cuda_graphs: bool = False

    @classmethod
    def parse(cls, text: str) -> ForwardOptions:
        """``"fuse_relu,compile"`` (dashes or underscores), ``"all"``, ``"none"`` or ``""``."""
        names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
        if names == ["none"]:
            return cls()
        if names == ["all"]:
            names = list(VARIANTS)
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown forward variant(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(v.replace('_', '-') for v in VARIANTS)}, all or none")
        return cls(**{n: True for n in names})

    def names(self) -> list[str]:
        """The switches that are on."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]

    def __bool__(self) -> bool:
        return bool(self.names())


class FusedConvReLU(nn.Module):
    """A Convolution layer and the in-place ReLU after it as one call (shares the
    convolution's parameters)."""

    def __init__(self, conv: Convolution):
        super().__init__()
        self.conv = conv
        #: False once cuDNN refused the fused call (a dtype or layout it lacks): then the unfused pair.
        self.cudnn_fused = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        c = self.conv
        weight: torch.Tensor = c.weight  # type: ignore[assignment]  # parameters
        bias: torch.Tensor | None = c.bias  # type: ignore[assignment]
        if torch.is_autocast_enabled(x.device.type):  # these ops are not on autocast's lists
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        if x.is_cuda and self.cudnn_fused and not torch.is_grad_enabled():
            try:
                return (torch.cudnn_convolution_relu(x, weight, bias, c.stride, c.pad, c.dilation, c.group),)
            except RuntimeError as exc:
                self.cudnn_fused = False
                warnings.warn(f"layer {c.name}: cuDNN's fused convolution+ReLU is not available for "
                              f"{x.dtype} ({str(exc).splitlines()[0][:200]}); running them one after the other",
                              RuntimeWarning, stacklevel=2)
        if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
                and torch.backends.mkldnn.is_available()):
            return (torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(c.pad), list(c.stride),
                                                            list(c.dilation), c.group, "relu", [], ""),)
        return (F.relu_(F.conv2d(x, weight, bias, c.stride, c.pad, c.dilation, c.group)),)


Step = tuple[nn.Module, tuple[str, ...], tuple[str, ...]]


def fuse_conv_relu(steps: list[Step], keep: Collection[str] = frozenset()) -> list[Step]:
    """``steps`` with each Convolution whose top an in-place, non-leaky ReLU
    overwrites next merged with it (a top in ``keep`` is left as is)."""
    out: list[Step] = []
    i = 0
    while i < len(steps):
        layer, bottoms, tops = steps[i]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        if (isinstance(layer, Convolution) and nxt is not None and isinstance(nxt[0], ReLU)
                and not nxt[0].negative_slope and nxt[1] == tops and nxt[2] == tops and tops[0] not in keep):
            out.append((FusedConvReLU(layer), bottoms, tops))
            i += 2
        else:
            out.append(steps[i])
            i += 1
    return out


def run_steps(steps: list[Step], inputs: Inputs, output: str) -> torch.Tensor:
    """Run ``steps`` on ``inputs`` and return blob ``output``, freeing each blob
    after its last reader (as ``Net.forward`` does)."""
    last_use: dict[str, int] = {}
    for i, (_, bottoms, _) in enumerate(steps):
        for b in bottoms:
            last_use[b] = i
    values = dict(inputs)
    for i, (layer, bottoms, tops) in enumerate(steps):
        outs = layer(*(values[b] for b in bottoms))
        for b in bottoms:
            if last_use.get(b) == i and b != output:
                values.pop(b, None)
        values.update(zip(tops, outs))
    return values[output]


class GraphCache:
    """One captured graph per input signature: the inputs are copied into the
    graph's static buffers, the graph is replayed and its output cloned (so a
    later replay cannot overwrite a result already handed out).

    ``capture(fn)`` runs and records ``fn`` and returns ``(replay, output)``;
    the default records a CUDA graph after two warm-up runs on a side stream.
    """

    def __init__(self, fn: Callable[[Inputs], torch.Tensor], capture: Capture | None = None):
        self.fn = fn
        self.capture = capture or capture_cuda_graph
        self.graphs: dict[tuple, tuple[dict[str, torch.Tensor], Callable[[], None], torch.Tensor]] = {}

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        key = tuple((k, tuple(v.shape), v.dtype, v.stride()) for k, v in sorted(inputs.items()))
        if key not in self.graphs:
            static = {k: v.clone() for k, v in inputs.items()}  # clone keeps the memory format
            replay, output = self.capture(lambda: self.fn(static))
            self.graphs[key] = (static, replay, output)
        static, replay, output = self.graphs[key]
        for name, value in inputs.items():
            static[name].copy_(value)
        replay()
        return output.clone()


def capture_cuda_graph(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """Warm ``fn`` up on a side stream (library autotuning, allocations), then
    record it into a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()
    return graph.replay, output


class _CompileOrEager:
    """``torch.compile(fn)``, falling back to ``fn`` with one warning when it fails."""

    def __init__(self, fn: Callable[[Inputs], torch.Tensor], mode: str | None = None):
        self.eager = fn
        self.compiled: Callable | None = torch.compile(fn, mode=mode, dynamic=False)
        #: Why compilation failed, or None.
        self.failure: str | None = None

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(inputs)
            except Exception as exc:  # compile errors come as many types, from many back ends
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                self.failure = f"{type(exc).__name__}: {first}"[:300]
                self.compiled = None
                warnings.warn(f"torch.compile could not compile the net ({self.failure}); running it eagerly "
                              f"(forward variant 'compile' off)", RuntimeWarning, stacklevel=2)
        return self.eager(inputs)


class FastForward:
    """``net``'s forward to blob ``output`` with the variants ``options`` switches on.

    Call it with the net's inputs (name -> N x C x H x W tensor, any device and
    float dtype) inside the precision's context; it returns the output blob.
    Building it converts the net in place (memory order, and the dtype with
    ``cast_weights`` in bf16), so build it once, for one precision.
    """

    def __init__(self, net: Net, output: str, options: ForwardOptions, precision: str = "fp32"):
        self.net, self.output, self.options, self.precision = net, output, options, precision
        if options.cuda_graphs and net.device.type != "cuda":
            raise EngineError(f"forward variant cuda-graphs needs a CUDA device; the net is on {net.device}")
        if options.channels_last:
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it
            net.memory_format = torch.channels_last
        steps: list[Step] = list(net._steps)
        if options.fuse_relu:
            steps = fuse_conv_relu(steps, keep={output})
        self.steps = steps
        if options.cast_weights and precision == "bf16":
            net.to(torch.bfloat16)  # the inputs follow the parameters' dtype (Net.prepare_inputs)
        fn: Callable[[Inputs], torch.Tensor] = lambda inputs: run_steps(self.steps, inputs, self.output)  # noqa: E731
        if options.compile:
            fn = _CompileOrEager(fn)
        if options.cuda_graphs:
            fn = GraphCache(fn)
        self._fn = fn

    @property
    def input_dtype(self) -> torch.dtype:
        """What the inputs are cast to: the parameters' dtype (bfloat16 with cast_weights in bf16)."""
        return self.net.dtype

    @property
    def autocast(self) -> bool:
        """Whether the caller should run it under bf16 autocast (not once the weights are bf16)."""
        return self.precision == "bf16" and self.input_dtype != torch.bfloat16

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self._fn(self.net.prepare_inputs(inputs))
