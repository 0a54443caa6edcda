"""One configuration of the model, from the command line or the API to every worker.

    from salicon.config import SaliconConfig
    config = SaliconConfig(model="salicon_osie", device="cpu").resolved()
    config.precision, config.runtime      # ('int8', 'openvino') on a CPU with OpenVINO

A :class:`SaliconConfig` is built once (from keyword arguments, a dict or the
command line), validated when it is made, and resolved once by
:meth:`SaliconConfig.resolved` on the driver: the named model becomes its
weights and prototxt, ``auto`` precision and runtime are decided, the Python
layer files are read. The resolved value is what ``Salicon``, the decode
workers, the Ray Data actors and the Ray Serve replicas are given, whole.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import formats, pretrained, runtimes
from .decode import DECODERS
from .engine.fast import ForwardOptions
from .engine.python_layers import MODES, LayerFile, plan_python_layers, resolve_layer_files, resolve_mode
from .errors import OptionError
from .image import DEFAULT_MAX_PIXELS
from .postprocess import PostProcess
from .preprocess import MEAN_BGR, RESIZE_METHODS

#: ``engine`` values: the PyTorch engine, or real Caffe (the runtime ``caffe``).
ENGINES = ("auto", "pytorch", "caffe")


@dataclass(frozen=True)
class SaliconConfig:
    """How a model runs. Fields as :class:`~salicon.Salicon`'s arguments.

    Attributes:
        model: a registered model's name (``salicon_osie``), a weights file
            (.caffemodel, .safetensors, an OpenVINO .xml), or None (the
            shipped default model).
        prototxt: the test net (default: the named model's, else the shipped one).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        runtime: ``auto`` or a registered runtime (:func:`salicon.runtimes.names`).
        precision: ``auto`` or a precision some runtime runs.
        variants: forward variants of the PyTorch net (names, comma-separated).
        input_scale: factor after mean subtraction (None: the model's own).
        resize: how inputs and maps are resized (:data:`~salicon.preprocess.RESIZE_METHODS`).
        mean_bgr: the mean subtracted from each BGR channel.
        postprocess: a post-processing specification or object.
        max_pixels: images with more pixels are refused (None: no limit).
        decode: how many images are decoded (:data:`~salicon.decode.DECODERS`).
        channels_last: the PyTorch net's weights in NHWC order.
        python_layers: ``auto``, ``as-written``, ``native`` (None: the environment's, else auto).
        layer_files: module -> file each Python layer runs (filled by :meth:`resolved`).
        name: the registered model's name (filled by :meth:`resolved`; None for a file).
    """

    model: str | None = None
    prototxt: str | None = None
    device: str = "auto"
    runtime: str = "auto"
    precision: str = "auto"
    variants: str = ""
    input_scale: float | None = None
    resize: str = "spline"
    mean_bgr: tuple[float, ...] = tuple(MEAN_BGR)
    postprocess: str | PostProcess = "default"
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    decode: str = "threads"
    channels_last: bool = True
    python_layers: str | None = None
    layer_files: Mapping[str, LayerFile] | None = field(default=None, compare=False)
    name: str | None = None

    def __post_init__(self):
        for name in ("model", "prototxt"):  # paths are kept as text: picklable and printable
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))
        object.__setattr__(self, "device", str(self.device))
        object.__setattr__(self, "mean_bgr", tuple(float(m) for m in self.mean_bgr))
        self._validate()

    def _validate(self) -> None:
        if self.runtime != "auto" and self.runtime not in runtimes.names():
            runtimes.get(self.runtime)  # raises, listing the runtimes
        if self.precision != "auto" and self.precision not in runtimes.precisions():
            runtimes.resolve("auto", self.precision)  # raises, listing the precisions
        if self.resize not in RESIZE_METHODS:
            raise OptionError(f"{{resize}} must be one of {', '.join(RESIZE_METHODS)}, not {self.resize!r}",
                              "resize")
        if self.decode not in DECODERS:
            raise OptionError(f"{{decode}} must be one of {', '.join(DECODERS)}, not {self.decode!r}", "decode")
        if self.max_pixels is not None and (not isinstance(self.max_pixels, int) or self.max_pixels < 1):
            raise OptionError(f"{{max_pixels}} must be a whole number of pixels >= 1 or None (no limit), "
                              f"not {self.max_pixels!r}", "max_pixels")
        if self.input_scale is not None and not (math.isfinite(self.input_scale) and self.input_scale > 0):
            raise OptionError(f"{{input_scale}} must be a positive number, not {self.input_scale!r}", "input_scale")
        if len(self.mean_bgr) != 3:
            raise OptionError(f"{{mean_bgr}} must have 3 values (B, G, R), not {len(self.mean_bgr)}", "mean_bgr")
        if self.python_layers is not None and self.python_layers not in MODES:
            raise OptionError(f"{{python_layers}} must be one of {', '.join(MODES)}, not {self.python_layers!r}",
                              "python_layers")
        try:
            ForwardOptions.parse(self.variants)
        except ValueError as exc:
            raise OptionError(f"{{variants}}: {exc}", "variants") from None

    # ------------------------------------------------------------ building
    @classmethod
    def from_options(cls, engine: str = "auto", prototxtpath: str | None = None, **options: Any) -> SaliconConfig:
        """A config from ``Salicon``'s keyword arguments, ``engine`` and OpenSALICON's
        ``prototxtpath`` included (``engine="caffe"`` is the runtime ``caffe``)."""
        if prototxtpath is not None:
            if options.get("prototxt") is not None:
                raise OptionError("give {prototxt} or {prototxtpath} (its OpenSALICON name), not both",
                                  "prototxt", "prototxtpath")
            options["prototxt"] = prototxtpath
        if engine not in ENGINES:
            raise OptionError(f"{{engine}} must be one of {', '.join(ENGINES)}, not {engine!r}", "engine")
        if engine == "caffe":
            runtime = options.get("runtime", "auto")
            if runtime not in ("auto", "caffe"):
                raise OptionError(f"{{engine}} 'caffe' runs the net on pycaffe; {{runtime}} {runtime!r} is for the "
                                  f"PyTorch engine's net (choose one of them)", "engine", "runtime")
            precision = options.get("precision", "auto")
            if precision not in ("auto", "fp32"):
                raise OptionError(f"{{engine}} 'caffe' runs pycaffe in fp32; {{precision}} {precision!r} is for the "
                                  f"PyTorch engine's net", "engine", "precision")
            options["runtime"] = "caffe"
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unknown Salicon option(s): {', '.join(unknown)}")
        return cls(**options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SaliconConfig:
        """A config from a mapping of its fields (``engine``/``prototxtpath`` accepted)."""
        return cls.from_options(**dict(data))

    def replace(self, **changes: Any) -> SaliconConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (layer files as module -> path)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["postprocess"] = str(self.postprocess) if isinstance(self.postprocess, PostProcess) else self.postprocess
        data["layer_files"] = {m: f.path for m, f in (self.layer_files or {}).items()}
        data["mean_bgr"] = list(self.mean_bgr)
        return data

    # ------------------------------------------------------------ resolving
    @property
    def engine(self) -> str:
        """``caffe`` when real Caffe runs the net, else ``pytorch`` (the project's engine)."""
        return "caffe" if self.runtime == "caffe" else "pytorch"

    def resolved(self, gpus: float | None = None) -> SaliconConfig:
        """The config with every ``auto`` that can be decided here decided: the
        model's weights and prototxt as absolute paths, the Python layer mode
        and files, the precision and the runtime (the device stays as given:
        each worker's own placement decides it). ``gpus``: the GPUs of the
        cluster the workers run on (None: this machine's). Resolving twice
        changes nothing."""
        spec = pretrained.resolve_model(self.model, self.prototxt)
        model, prototxt = str(spec.weights.resolve()), str(spec.prototxt.resolve())
        mode = resolve_mode(self.python_layers)
        files = resolve_layer_files(formats.read_net_prototxt(prototxt), files=self.layer_files)
        done = dataclasses.replace(self, model=model, prototxt=prototxt, python_layers=mode, layer_files=files,
                                   name=spec.name or self.name)
        precision = self.precision if self.precision != "auto" else done._auto_precision(gpus)
        runtime = runtimes.resolve(self.runtime, precision).name
        return dataclasses.replace(done, precision=precision, runtime=runtime)

    def host_layers(self) -> list:
        """The Python layers that run as written, on the host (resolved configs)."""
        assert self.prototxt, "resolved configurations name their files"
        plan = plan_python_layers(formats.read_net_prototxt(self.prototxt), self.python_layers,
                                  files=self.layer_files)
        return [info for info in plan.values() if not info.native]

    def _auto_precision(self, gpus: float | None = None) -> str:
        """int8 where it is the fast path (a CPU, a runtime for int8 installed, an
        int8 file recorded for this model and made from this prototxt, every Python
        layer native), fp32 (exact) everywhere else."""
        import torch

        no_gpu = not torch.cuda.is_available() if gpus is None else gpus < 1
        on_cpu = self.device == "cpu" or (self.device == "auto" and no_gpu)
        int8 = runtimes.resolve("auto", "int8")
        if self.runtime not in ("auto", int8.name) or not on_cpu or int8.missing() or self.host_layers():
            return "fp32"
        assert self.model and self.prototxt, "resolved configurations name their files"
        record = pretrained.read_record(self.model, verify=False)
        entry = (record.meta.get("int8") if record else None) or {}
        made_for = entry.get("prototxt_sha256")
        if not (Path(self.model).parent / entry.get("file", "")).is_file() or not made_for:
            return "fp32"
        return "int8" if pretrained.file_sha256(self.prototxt) == made_for else "fp32"


__all__ = ["SaliconConfig", "ENGINES"]
