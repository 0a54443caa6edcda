"""What a runtime is: the small interface every runtime module implements.

A runtime runs a test net given by a prototxt and a weights file: PyTorch (the
project's own engine), OpenVINO, ONNX Runtime or real Caffe. It declares the
precisions it runs, the devices it can use here, which precisions ``auto``
picks it for, and how to install it; :meth:`Runtime.load` builds the net.
The registry (:mod:`salicon.runtimes`) is the only place the rest of the
package learns which runtimes exist.
"""
from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .._version import __version__
from ..errors import EngineError
from ..types import PathLike


class NetConfig(Protocol):
    """What loading a net reads from a resolved :class:`~salicon.config.SaliconConfig`."""

    model: str
    prototxt: str
    precision: str
    python_layers: str | None
    layer_files: Mapping[str, Any] | None
    channels_last: bool


class RunnableNet(Protocol):
    """What a loaded net offers: its input and output blobs and a forward call.

    ``input_shapes`` maps each input blob to N x 3 x H x W; ``blob_shapes``
    gives at least the outputs' shapes; calling it with the inputs by name
    returns the outputs by name (tensors for PyTorch, arrays for the others).
    A net that keeps buffers between calls may also offer ``release_memory()``
    (``Salicon`` calls it before making a huge image's full-size map).
    """

    input_shapes: Mapping[str, tuple]
    outputs: list[str]
    blob_shapes: Mapping[str, tuple]

    def __call__(self, **inputs: Any) -> Mapping[str, Any]: ...


class Runtime(ABC):
    """One way to run the net. Subclasses set the class attributes and :meth:`load`.

    Attributes:
        name: how users choose it (``--runtime NAME``, ``runtime="NAME"``).
        precisions: the precisions it runs.
        auto_for: precisions for which ``runtime="auto"`` picks it.
        summary: one line for ``--help``.
        install: how to install what it needs (for messages).
        takes_tensors: it takes PyTorch tensors on its device (else NumPy
            arrays on the host).
        runs_host_layers: it can run a Python layer file as written.
    """

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    auto_for: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    install: ClassVar[str] = ""
    takes_tensors: ClassVar[bool] = False
    runs_host_layers: ClassVar[bool] = False

    def devices(self) -> tuple[str, ...]:
        """Device types it can use in this installation (``"cpu"``, ``"cuda"``)."""
        return ("cpu",)

    def cluster_devices(self) -> tuple[str, ...]:
        """Device types its workers on a cluster can use (default: as here)."""
        return self.devices()

    def check_installed(self) -> None:  # noqa: B027  # optional: most runtimes need nothing more
        """Raise EngineError, naming the install command, when what it needs is absent."""

    def missing(self) -> str | None:
        """Why it cannot run here (a package is absent, with the install command), or None."""
        try:
            self.check_installed()
        except EngineError as exc:
            return str(exc)
        return None

    @abstractmethod
    def load(self, config: NetConfig, device: Any) -> RunnableNet:
        """The net of a resolved ``config`` (prototxt, weights, precision, Python
        layers), ready on ``device`` (a ``torch.device``)."""

    def __repr__(self) -> str:
        return f"<runtime {self.name}: {', '.join(self.precisions)} on {', '.join(self.devices())}>"


def cache_folder(kind: str = "openvino") -> Path:
    """Where converted models of ``kind`` are kept: $SALICON_CACHE/kind, else ~/.cache/salicon/kind."""
    root = os.environ.get("SALICON_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "salicon"
    return Path(root) / kind


def conversion_key(prototxt: PathLike, weights: PathLike) -> str:
    from ..pretrained import file_sha256

    digest = hashlib.sha256()
    for part in (Path(prototxt).read_bytes(), file_sha256(weights).encode(), __version__.encode()):
        digest.update(part)
    return digest.hexdigest()[:24]



__all__ = ["Runtime", "RunnableNet", "NetConfig", "cache_folder", "conversion_key"]
