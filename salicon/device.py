"""Where and with which numerics the net runs: device choice and precision.

``fp32`` is exact (TF32 off on GPUs, so numbers match Caffe's); ``tf32`` lets
GPU convolutions use TensorFloat-32; ``bf16`` runs under bfloat16 autocast.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import EngineError

#: The precisions of the PyTorch engine (the runtimes' own lists: salicon.runtimes).
PRECISIONS = ("fp32", "tf32", "bf16")

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


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Numerics for a forward pass: fp32 (no TF32), tf32, or bf16 autocast (``precision``
    was checked when the model's configuration was made, not on every forward)."""
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




def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (None where it cannot be told)."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        import psutil
        return psutil.virtual_memory().available
    except (ImportError, RuntimeError):
        return None


__all__ = ["PRECISIONS", "resolve_device", "check_precision", "precision_context", "free_memory"]
