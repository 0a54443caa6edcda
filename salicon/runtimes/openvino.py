"""The OpenVINO runtime: the test net on a CPU in fp32, bf16 or int8.

``fp32`` and ``bf16`` run the net converted from the prototxt and weights
(through the ONNX export, cached as OpenVINO IR in ``~/.cache/salicon``, so
only the first use of a model pays for the conversion); ``int8`` runs a
quantized model file made by ``scripts/quantize_int8.py`` (NNCF post-training
quantization), shipped next to the float16 weights for the default model.
Only the ``openvino`` package is needed at run time.
"""
from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError, FormatError
from ..types import PathLike
from .base import NetConfig, Runtime, cache_folder, conversion_key

OPENVINO_HINT = "pip install openvino (or pip install -e \".[openvino]\")"
#: Precisions OpenVINO runs, and the CPU plugin's inference precision for each
#: (int8 layers run in int8 whatever the hint; the rest of an int8 model in f32).
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def import_openvino():
    """The ``openvino`` module, or an EngineError naming the install command."""
    try:
        import openvino
    except ImportError:
        raise EngineError(f"runtime 'openvino' needs the openvino package: {OPENVINO_HINT}") from None
    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except EngineError:
        return False
    return True


def convert_net(prototxt: PathLike, weights: PathLike):
    """The test net of ``prototxt`` with ``weights`` as an OpenVINO model (float32),
    from the cache when this prototxt and weights file were converted before."""
    ov = import_openvino()
    core = ov.Core()
    cached = cache_folder() / f"{conversion_key(prototxt, weights)}.xml"
    if cached.is_file() and cached.with_suffix(".bin").is_file():
        try:
            return core.read_model(str(cached))
        except RuntimeError:  # a damaged cache entry: convert again
            pass
    from ..export import export_onnx

    print(f"salicon: converting {Path(weights).name} for OpenVINO (once; cached in {cached.parent})",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="salicon-openvino-") as tmp:
        onnx_path = export_onnx(Path(tmp) / "net.onnx", weights, prototxt)
        model = core.read_model(str(onnx_path))
        _store(ov, model, cached)
    return model


def _store(ov, model, path: Path) -> None:
    """Save ``model`` as ``path`` (.xml + .bin) without ever leaving a half-written pair."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".convert-") as tmp:
            staged = Path(tmp) / path.name
            ov.save_model(model, str(staged), compress_to_fp16=False)
            os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(staged, path)
    except OSError as exc:  # no cache where it cannot be written: say so, since the next run converts again
        print(f"salicon: warning: cannot keep the converted model in {path.parent} ({exc.strerror or exc}); "
              f"every run converts it again; set SALICON_CACHE to a writable folder", file=sys.stderr)


def read_ir(path: PathLike):
    """An OpenVINO model file (.xml with its .bin), checked, or a FormatError naming it."""
    ov = import_openvino()
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such OpenVINO model file")
    if not path.with_suffix(".bin").is_file():
        raise FormatError(f"{path}: its weights file {path.with_suffix('.bin').name} is missing")
    try:
        return ov.Core().read_model(str(path))
    except RuntimeError as exc:
        raise FormatError(f"{path}: not a readable OpenVINO model (truncated or damaged?): {_reason(exc)}") from None


def quantize_int8(prototxt: PathLike, weights: PathLike, samples: list[dict[str, np.ndarray]],
                  out: PathLike) -> dict:
    """Post-training int8 quantization with NNCF (needed here only, not to run the
    result): the float net of ``prototxt`` and ``weights`` calibrated on
    ``samples`` (the net's input arrays, batch of one, preprocessed as
    ``Salicon`` does) and written as ``out`` (.xml + .bin). Returns the record
    entry: file names and SHA-256s, tool versions and settings."""
    import nncf

    from ..pretrained import file_sha256

    ov = import_openvino()
    out = Path(out)
    quantized = nncf.quantize(convert_net(prototxt, weights), nncf.Dataset(samples),
                              preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(samples),
                              fast_bias_correction=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return {"file": out.name, "sha256": file_sha256(out), "bin_sha256": file_sha256(out.with_suffix(".bin")),
            "prototxt": Path(prototxt).name, "prototxt_sha256": file_sha256(prototxt),
            "format": "OpenVINO IR (.xml + .bin): int8 weights and activations where NNCF quantized them",
            "tools": {"openvino": ov.__version__, "nncf": nncf.__version__},
            "settings": {"preset": "performance", "subset_size": len(samples), "fast_bias_correction": True}}


def record_int8(weights: PathLike, entry: dict) -> Path:
    """Add ``entry`` (from :func:`quantize_int8`, with more fields if wanted) as the
    ``int8`` part of the record beside ``weights``; returns the record's path."""
    import json

    from ..pretrained import record_path

    path = record_path(weights)
    record: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"name": Path(weights).stem}
    old = record.get("int8") or {}
    if old.get("scores") and old.get("sha256") == entry.get("sha256"):
        entry = {**entry, "scores": old["scores"]}  # the same file: its measured scores still hold
    record["int8"] = entry
    text = json.dumps(record, indent=1, ensure_ascii=False) + "\n"
    from ..outputs import atomic_write_bytes
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


class OpenVINONet:
    """A compiled OpenVINO model with the small surface ``Salicon`` uses:
    ``input_shapes``, ``outputs``, ``blob_shapes`` and a call that maps input
    arrays (N x 3 x H x W, float32) to output arrays."""

    def __init__(self, model, precision: str = "fp32", threads: int | None = None, source: str = "<model>"):
        ov = import_openvino()
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO runs precisions {tuple(PRECISIONS)}, not {precision!r}")
        self.source, self.precision = source, precision
        self.input_shapes = {inp.get_any_name(): _static_shape(inp, source) for inp in model.inputs}
        self.outputs = [out.get_any_name() for out in model.outputs]
        self.blob_shapes = {out.get_any_name(): _static_shape(out, source) for out in model.outputs}
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as exc:
            if precision != "bf16":
                raise FormatError(f"{source}: OpenVINO cannot compile this model ({_reason(exc)})") from None
            # No bfloat16 kernels for some layer on this CPU: the model still runs, in fp32.
            print(f"salicon: warning: OpenVINO cannot run {Path(source).name} in bf16 on this CPU "
                  f"({_reason(exc)}); running it in fp32", file=sys.stderr)
            self.precision = "fp32"
            self.compiled = core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": "f32"})

    def check_net(self, input_shapes: Mapping[str, tuple], output: str) -> None:
        """Refuse a model made for another net: other inputs, sizes or output."""
        mine = {k: tuple(v[1:]) for k, v in self.input_shapes.items()}
        theirs = {k: tuple(v[1:]) for k, v in input_shapes.items()}
        if mine != theirs or output not in self.outputs:
            raise FormatError(f"{self.source}: this OpenVINO model is for another net (inputs {mine}, outputs "
                              f"{self.outputs}); the prototxt has inputs {theirs} and output '{output}'")

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        request = self.compiled.create_infer_request()  # one per call: callers may share the net
        results = request.infer({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()})
        return {out.get_any_name(): np.array(value) for out, value in results.items()}

    def release_memory(self) -> None:
        """Give back the buffers OpenVINO keeps between calls (the full-size net's
        activations: about 0.9 GB for int8); the next call allocates them again."""
        self.compiled.release_memory()


def _reason(exc: Exception) -> str:
    """The informative line of an OpenVINO error (its first lines only say where it was raised)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[-1][:300]


def _static_shape(port, source: str) -> tuple[int, ...]:
    shape = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else 1 for d in shape]  # a dynamic batch reads as 1
    if any(not d.is_static for d in list(shape)[1:]):
        raise FormatError(f"{source}: '{port.get_any_name()}' has dynamic sizes {shape}; export it with the "
                          f"prototxt's fixed input sizes")
    return tuple(dims)


class OpenVINORuntime(Runtime):
    name = "openvino"
    precisions = ("fp32", "bf16", "int8")
    auto_for = ("int8",)
    summary = "OpenVINO on the CPU (fp32, bf16, int8: the model's quantized file)"
    install = OPENVINO_HINT

    def check_installed(self) -> None:
        import_openvino()

    def load(self, config: NetConfig, device):
        """The model's int8 file, an OpenVINO model given as the model, or the
        weights converted (fp32, bf16)."""
        import torch

        from ..engine import Net
        from ..pretrained import OUTPUT_BLOB

        model = Path(config.model)
        threads = torch.get_num_threads()
        if model.suffix.lower() == ".xml" or config.precision == "int8":
            source = model if model.suffix.lower() == ".xml" else int8_file(model)
            net = OpenVINONet(read_ir(source), config.precision, threads=threads, source=str(source))
            shapes = Net(config.prototxt, phase="test", python_layers=config.python_layers,
                         layer_files=config.layer_files).input_shapes
            net.check_net(shapes, OUTPUT_BLOB if OUTPUT_BLOB in net.outputs else net.outputs[0])
            return net
        return OpenVINONet(convert_net(config.prototxt, model), config.precision, threads=threads,
                           source=str(model))


def int8_file(model: PathLike) -> Path:
    """The quantized OpenVINO model recorded for the weights file ``model``
    (``int8.file`` of its record), checked against the record's hashes."""
    from ..errors import SaliconError
    from ..pretrained import file_sha256, read_record, record_path

    record = read_record(model, verify=False)
    entry = (record.meta.get("int8") if record else None) or {}
    if not entry.get("file"):
        raise SaliconError(f"{model}: no int8 model is recorded for it; make one with "
                           f"python scripts/quantize_int8.py --model {model}, or give the "
                           f"quantized .xml file as the model")
    path = Path(model).parent / entry["file"]
    for part, digest in ((path, entry.get("sha256")), (path.with_suffix(".bin"), entry.get("bin_sha256"))):
        if digest and part.is_file() and file_sha256(part) != digest:
            raise SaliconError(f"{part}: its SHA-256 does not match the one recorded in "
                               f"{record_path(model)}; the int8 model file is "
                               f"truncated, damaged or was replaced; run with precision 'fp32' (--precision "
                               f"fp32: the exact net, no int8 file needed) or reinstall the package")
    return path


RUNTIME = OpenVINORuntime()

__all__ = ["OpenVINORuntime", "RUNTIME", "int8_file", "OPENVINO_HINT", "PRECISIONS", "OpenVINONet", "convert_net",
           "read_ir", "quantize_int8", "record_int8", "import_openvino", "openvino_available", "cache_folder",
           "conversion_key"]
