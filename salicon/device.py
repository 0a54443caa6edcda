"""Where and with which numerics the net runs: device choice and precision.

``fp32`` is exact (TF32 off on GPUs, so numbers match Caffe's); ``tf32`` lets
GPU convolutions use TensorFloat-32; ``bf16`` runs under bfloat16 autocast.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import EngineError

PRECISIONS = ("fp32", "tf32", "bf16")
#: Where a net runs: PyTorch (CPU or GPU) or OpenVINO (CPU); "auto" picks by precision.
RUNTIMES = ("auto", "pytorch", "openvino")
#: The precisions each runtime runs.
RUNTIME_PRECISIONS = {"pytorch": PRECISIONS, "openvino": ("fp32", "bf16", "int8")}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a CUDA request without CUDA fails clearly."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"invalid device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but CUDA is not available to PyTorch "
                          f"{torch.__version__}; choose device 'cpu' or 'auto'")
    return dev


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return precision


def resolve_runtime(runtime: str = "auto", precision: str = "fp32", engine: str = "auto") -> str:
    """The runtime that runs ``precision``: ``"auto"`` is OpenVINO for int8 and
    PyTorch otherwise. A combination that does not exist (int8 on PyTorch, tf32
    on OpenVINO, either with real Caffe) is a ValueError saying what does."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    known = sorted({p for ps in RUNTIME_PRECISIONS.values() for p in ps})
    if precision not in known:
        raise ValueError(f"precision must be 'auto' or one of {', '.join(known)}, not {precision!r}")
    if engine == "caffe":
        if runtime == "openvino":
            raise ValueError("engine 'caffe' runs the net on pycaffe; runtime 'openvino' is for the PyTorch "
                             "engine's net (choose one of them)")
        if precision != "fp32":
            raise ValueError(f"engine 'caffe' runs pycaffe in fp32; precision {precision!r} is for the "
                             f"PyTorch engine's net")
        return "caffe"
    if runtime == "auto":
        runtime = "openvino" if precision == "int8" else "pytorch"
    if precision not in RUNTIME_PRECISIONS[runtime]:
        other = next(r for r, ps in RUNTIME_PRECISIONS.items() if precision in ps)
        raise ValueError(f"runtime {runtime!r} runs {', '.join(RUNTIME_PRECISIONS[runtime])}, not {precision}; "
                         f"{precision} runs on runtime {other!r}")
    return runtime


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Numerics for a forward pass: fp32 (no TF32), tf32, or bf16 autocast."""
    check_precision(precision)
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
        return
    if device.type != "cuda":
        yield
        return
    allow = precision == "tf32"
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow
    cudnn = torch.backends.cudnn
    try:
        # Input shapes are fixed by the prototxt, so cuDNN's autotuner pays off.
        with cudnn.flags(enabled=cudnn.enabled, benchmark=True, deterministic=cudnn.deterministic,
                         allow_tf32=allow):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


__all__ = ["PRECISIONS", "RUNTIMES", "RUNTIME_PRECISIONS", "resolve_runtime", "resolve_device", "check_precision", "precision_context"]
