"""The ONNX Runtime runtime: the net exported to ONNX (once per prototxt and
weights file, cached in ``~/.cache/salicon/onnx``) and run by onnxruntime, in
fp32, on the CPU or, where the onnxruntime-gpu package is installed, on CUDA.
Install it with ``pip install "salicon[onnxruntime]"``."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import EngineError, FormatError
from .base import NetConfig, Runtime, cache_folder, conversion_key

INSTALL = 'pip install "salicon[onnxruntime]" (or pip install onnx onnxruntime; onnxruntime-gpu for CUDA)'


def import_onnxruntime():
    """The ``onnxruntime`` module, or an EngineError naming the install command."""
    try:
        import onnxruntime
    except ImportError:
        raise EngineError(f"runtime 'onnxruntime' needs the onnxruntime package: {INSTALL}") from None
    return onnxruntime


def exported_model(prototxt, weights) -> Path:
    """The ONNX file of the test net ``prototxt`` with ``weights``, exported on first
    use and kept in the cache (written whole or not at all)."""
    cached = cache_folder("onnx") / f"{conversion_key(prototxt, weights)}.onnx"
    if cached.is_file():
        return cached
    from ..export import export_onnx

    print(f"salicon: exporting {Path(weights).name} to ONNX for onnxruntime (once; cached in {cached.parent})",
          file=sys.stderr, flush=True)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        return export_onnx(cached, weights, prototxt)
    except OSError as exc:  # no cache where it cannot be written: export to a temporary file every run
        print(f"salicon: warning: cannot keep the ONNX model in {cached.parent} ({exc.strerror or exc}); every "
              f"run exports it again; set SALICON_CACHE to a writable folder", file=sys.stderr)
        folder = tempfile.mkdtemp(prefix="salicon-onnx-")
        return export_onnx(Path(folder) / "net.onnx", weights, prototxt)


class ONNXRuntimeNet:
    """An onnxruntime session with the surface ``Salicon`` uses: ``input_shapes``,
    ``outputs``, ``blob_shapes`` and a call from input arrays to output arrays."""

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        # No CPU memory arena: the net's intermediate buffers (about 1 GB at full size) go back after every
        # call instead of staying held, so a huge image's map and files have that memory.
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise FormatError(f"{path}: onnxruntime cannot load this model ({exc})") from None
        self.source = str(path)
        self.input_shapes = {i.name: tuple(d if isinstance(d, int) else 1 for d in i.shape)
                             for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.blob_shapes = {o.name: tuple(d if isinstance(d, int) else 1 for d in o.shape)
                            for o in self.session.get_outputs()}

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))


class ONNXRuntimeRuntime(Runtime):
    name = "onnxruntime"
    precisions = ("fp32",)
    summary = "ONNX Runtime, fp32, on the CPU (CUDA with onnxruntime-gpu); pip install \"salicon[onnxruntime]\""
    install = INSTALL

    def devices(self) -> tuple[str, ...]:
        try:
            providers = import_onnxruntime().get_available_providers()
        except EngineError:
            return ("cpu",)
        return ("cpu", "cuda") if "CUDAExecutionProvider" in providers else ("cpu",)

    def check_installed(self) -> None:
        import_onnxruntime()

    def load(self, config: NetConfig, device) -> ONNXRuntimeNet:  # type: ignore[override]
        import torch

        import_onnxruntime()
        kind = getattr(device, "type", str(device))
        threads = torch.get_num_threads() if kind == "cpu" else None
        return ONNXRuntimeNet(exported_model(config.prototxt, config.model), kind, threads)


RUNTIME = ONNXRuntimeRuntime()

__all__ = ["ONNXRuntimeRuntime", "ONNXRuntimeNet", "RUNTIME", "exported_model", "import_onnxruntime"]
