"""The files shipped with the package, and the record that says what a model is.

Every weights file may have a *model record* beside it, ``<stem>.json`` (as
torchvision's weight enums carry their ``meta``): what the model is, the file
it describes and that file's SHA-256, its learned centre prior and default
post-processing, and its scores. :func:`read_record` reads it and checks the
hash, so a corrupt or replaced weights file is named before it is used.

    from salicon.pretrained import default_model_path, read_record
    record = read_record(default_model_path())    # ModelRecord(name='salicon_osie', ...)
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import SaliconError
from .types import PathLike

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Output blob read by default (the shipped test prototxt's Sigmoid top).
OUTPUT_BLOB = "saliency_map_out"
#: File name of the shipped pretrained model (SALICON trained on OSIE; see models/salicon_osie.json).
DEFAULT_MODEL = "salicon_osie.safetensors"


def shipped_file(folder: str, name: str) -> Path:
    """Path of a file shipped in ``folder`` (``prototxt``, ``models`` or ``examples``):
    in the source tree when run from a checkout, else the installed package data
    (``salicon.prototxt``, ``salicon.models``, ``salicon.examples``). The path
    may not exist; callers say what is missing."""
    local = PROJECT_ROOT / folder / name
    if local.exists():
        return local
    try:
        return Path(str(resources.files(f"salicon.{folder}") / name))
    except ModuleNotFoundError:
        return local


def prototxt_path(name: str = "salicon.prototxt") -> Path:
    """Path of a prototxt shipped with the project (source tree or installed)."""
    found = shipped_file("prototxt", name)
    if not found.exists():
        raise SaliconError(f"shipped prototxt '{name}' not found (looked in {PROJECT_ROOT / 'prototxt'} "
                           f"and the installed package)")
    return found


def default_model_path() -> Path:
    """The shipped pretrained model (source tree or installed package)."""
    return shipped_file("models", DEFAULT_MODEL)


def record_path(weights: PathLike) -> Path:
    """Where the record of the weights file ``weights`` lies: ``<stem>.json`` beside it."""
    return Path(weights).with_suffix(".json")


@dataclass(frozen=True)
class ModelRecord:
    """What a weights file is, read from its ``<stem>.json``.

    Attributes:
        name: the model's name (``salicon_osie``).
        weights_file: the file name the record describes (``weights.file``).
        sha256: that file's SHA-256 (hex), checked on load when present.
        center_prior: the learned centre prior's parameters, or None.
        postprocess: the default post-processing's parameters, or None.
        meta: the whole record (architecture, training, scores, licence, ...).
    """

    name: str
    weights_file: str | None = None
    sha256: str | None = None
    center_prior: dict | None = None
    postprocess: dict | None = None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def describes(self, weights: PathLike) -> bool:
        """Whether this record was written for ``weights`` (same file name); a record
        copied beside another file (an exported .caffemodel) still gives its
        post-processing but not its hash."""
        return self.weights_file is not None and Path(weights).name == self.weights_file


def read_record(weights: PathLike, verify: bool = True) -> ModelRecord | None:
    """The record beside ``weights``, or None if there is none. With ``verify``,
    a record that names this file and its SHA-256 must match the file's bytes."""
    path = record_path(weights)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SaliconError(f"{path}: the model's record is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SaliconError(f"{path}: the model's record is not a JSON object")
    files = data.get("weights") if isinstance(data.get("weights"), dict) else {}
    record = ModelRecord(name=str(data.get("name", Path(weights).stem)), weights_file=files.get("file"),
                         sha256=files.get("sha256"), center_prior=data.get("center_prior") or None,
                         postprocess=data.get("postprocess") or None, meta=data)
    if verify and record.sha256 and record.describes(weights) and Path(weights).is_file():
        actual = file_sha256(weights)
        if actual != record.sha256.lower():
            raise SaliconError(f"{weights}: SHA-256 {actual[:12]}... does not match {record.sha256[:12]}... "
                               f"recorded in {path}; the weights file is corrupt or was replaced (reinstall "
                               f"the package, or remove the record if the file is your own)")
    return record


def file_sha256(path: PathLike) -> str:
    """The SHA-256 (hex) of a file; computed once per file version in a process."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_metadata(path: PathLike) -> dict[str, str]:
    """The metadata a safetensors weights file carries ({} for a .caffemodel)."""
    from .formats import is_safetensors, read_safetensors_metadata
    return read_safetensors_metadata(path) if is_safetensors(path) else {}


__all__ = ["OUTPUT_BLOB", "DEFAULT_MODEL", "ModelRecord", "shipped_file", "prototxt_path", "default_model_path", "record_path",
           "read_record", "file_sha256", "model_metadata"]
