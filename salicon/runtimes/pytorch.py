"""The PyTorch runtime: the project's own engine (:class:`salicon.engine.Net`),
on the CPU or a GPU, in fp32 (exact, Caffe's numbers), tf32 or bf16 autocast.
The only runtime that runs a Python layer file as written (on the host)."""
from __future__ import annotations

from ..device import PRECISIONS
from .base import NetConfig, Runtime


class PyTorchRuntime(Runtime):
    name = "pytorch"
    precisions = PRECISIONS
    auto_for = PRECISIONS
    summary = "the project's engine on the CPU or a GPU (fp32, tf32, bf16)"
    install = "pip install torch"
    takes_tensors = True
    runs_host_layers = True

    def devices(self) -> tuple[str, ...]:
        import torch

        return ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)

    def cluster_devices(self) -> tuple[str, ...]:
        return ("cpu", "cuda")  # a cluster's GPU workers run CUDA builds, whatever this machine has

    def load(self, config: NetConfig, device):
        import torch

        from ..engine import Net

        net = Net(config.prototxt, phase="test", device=device, python_layers=config.python_layers,
                  layer_files=config.layer_files)
        net.copy_from(config.model, strict=True)
        net.eval().requires_grad_(False)
        if config.channels_last:
            net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it
            net.memory_format = torch.channels_last
        return net


RUNTIME = PyTorchRuntime()

__all__ = ["PyTorchRuntime", "RUNTIME"]
