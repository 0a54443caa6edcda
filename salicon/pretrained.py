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

import dataclasses
import functools
import hashlib
import importlib.util
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
#: The registered model used when none is given.
DEFAULT_MODEL_NAME = "salicon_osie"
#: Suffixes of files a model may be given as (a name has none of them).
MODEL_SUFFIXES = (".caffemodel", ".safetensors", ".xml", ".json")


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
    #: The folder the record and its files lie in (a registered model's; None otherwise).
    folder: Path | None = field(default=None, compare=False)
    #: The distribution that installed it (None: this package).
    distribution: str | None = field(default=None, compare=False)

    @property
    def prototxt(self) -> str | None:
        """The file name of the test net the record names (``architecture.prototxt``), if any."""
        arch = self.meta.get("architecture")
        arch = arch if isinstance(arch, dict) else {}
        return Path(arch["prototxt"]).name if arch.get("prototxt") else None

    @property
    def input_convention(self) -> dict:
        """How images become the net's inputs (channel order, mean, scale, resize)."""
        return dict(self.meta.get("input_convention") or {})

    @property
    def derived_files(self) -> dict[str, dict]:
        """Files made from the weights, by kind (``int8``: the quantized OpenVINO model)."""
        return {kind: dict(self.meta[kind]) for kind in ("int8",) if isinstance(self.meta.get(kind), dict)}

    @property
    def licence(self) -> dict:
        """The licences of the model, its training data and its initial weights."""
        return dict(self.meta.get("licence") or {})

    def scores(self) -> dict[str, float]:
        """The model's own test scores (``test_scores.<name>``), metric -> mean."""
        table = self.meta.get("test_scores")
        table = table if isinstance(table, dict) else {}
        mine = table.get(self.name)
        return {k: float(v) for k, v in mine.items()} if isinstance(mine, dict) else {}

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
    return read_record_file(path, weights, verify)


def read_record_file(path: PathLike, weights: PathLike, verify: bool = True) -> ModelRecord:
    """The record in the file ``path``, describing ``weights`` (see :func:`read_record`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SaliconError(f"{path}: the model's record is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SaliconError(f"{path}: the model's record is not a JSON object")
    files = data.get("weights")
    files = files if isinstance(files, dict) else {}
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


# ------------------------------------------------------------ named models


@dataclass(frozen=True)
class ModelSpec:
    """A model as the package runs it: its weights and test net files, and its record."""

    name: str | None
    weights: Path
    prototxt: Path
    record: ModelRecord | None


#: The models this project publishes as distributions of their own, by name.
MODEL_DISTRIBUTIONS = {"salicon_osie_fast": "salicon-model-osie-fast"}

#: Entry point group of model distributions: each entry point names a module whose
#: folder holds model records (``<name>.json``) and the files they name.
ENTRY_POINT_GROUP = "salicon.models"


def model_folders() -> list[tuple[Path, str | None]]:
    """Folders that hold model records, each with the distribution that installed
    it (None for this package's own): this package's ``models``; every installed
    model distribution (entry point group ``salicon.models``); and, run from a
    source checkout, the model distributions' own folders under ``models/``
    (``models/<name>/<package>/``), so a checkout needs no install to use them."""
    from importlib import metadata

    folders: list[tuple[Path, str | None]] = [(shipped_file("models", DEFAULT_MODEL).parent, None)]
    seen = {folders[0][0].resolve()}
    found: Any = metadata.entry_points()
    entries = (found.select(group=ENTRY_POINT_GROUP) if hasattr(found, "select")  # Python >= 3.10
               else found.get(ENTRY_POINT_GROUP, []))
    for entry in entries:
        try:
            spec = importlib.util.find_spec(entry.value.split(":")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin:
            continue  # a distribution whose module is gone: nothing to find there
        folder = Path(spec.origin).parent
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            dist = getattr(entry, "dist", None)
            folders.append((folder, dist.name if dist is not None else entry.name))
    for pyproject in sorted((PROJECT_ROOT / "models").glob("*/pyproject.toml")):
        for folder in sorted(p.parent for p in pyproject.parent.glob("*/__init__.py")):
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                folders.append((folder, _project_name(pyproject)))
    return folders


def _project_name(pyproject: Path) -> str:
    """The ``[project] name`` of a model distribution's pyproject.toml (its folder's name if unreadable)."""
    import re
    found = re.search(r'^name\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
    return found.group(1) if found else pyproject.parent.name


def model_records() -> dict[str, ModelRecord]:
    """Every registered model by name: each ``<name>.json`` in a model folder
    (:func:`model_folders`) whose ``name`` is ``<name>`` and which names a weights
    file. The first folder to register a name keeps it."""
    found: dict[str, ModelRecord] = {}
    for folder, distribution in model_folders():
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue  # not a record (a log, a damaged file): not a registered model
            if (isinstance(data, dict) and data.get("name") == path.stem and isinstance(data.get("weights"), dict)
                    and path.stem not in found):
                record = read_record_file(path, folder / str(data["weights"].get("file")), verify=False)
                found[path.stem] = dataclasses.replace(record, folder=folder, distribution=distribution)
    return found


def record_prototxt(record: ModelRecord) -> Path:
    """The test net a registered model runs: its record's ``architecture.prototxt``
    from the model's own folder when it ships one there, else from this package."""
    own = record.folder / record.prototxt if record.folder and record.prototxt else None
    return own if own is not None and own.is_file() else prototxt_path(record.prototxt or "salicon.prototxt")


def _looks_like_a_name(model: str) -> bool:
    return not any(sep in model for sep in ("/", "\\")) and Path(model).suffix.lower() not in MODEL_SUFFIXES


def resolve_model(model: PathLike | None = None, prototxt: PathLike | None = None) -> ModelSpec:
    """The weights, test net and record of ``model``: a registered model's name
    (None: :data:`DEFAULT_MODEL_NAME`), or a weights file (its record, if any,
    is the ``<stem>.json`` beside it). ``prototxt`` overrides the model's net."""
    model = DEFAULT_MODEL_NAME if model is None else model
    text = str(model)
    if _looks_like_a_name(text) and not Path(text).exists():
        records = model_records()
        if text not in records:
            if text in MODEL_DISTRIBUTIONS:
                raise SaliconError(f"model {text!r} is not installed: it is the distribution "
                                   f"{MODEL_DISTRIBUTIONS[text]} (from a source checkout: pip install -e "
                                   f"models/{text}; salicon models lists what is installed)")
            raise SaliconError(f"model {text!r}: no such registered model or file (registered: "
                               f"{', '.join(records) or 'none'}; salicon models lists them)")
        record = records[text]
        weights = (default_model_path() if record.distribution is None and record.weights_file == DEFAULT_MODEL
                   else (record.folder or default_model_path().parent) / (record.weights_file or ""))
        if not weights.is_file():
            raise SaliconError(f"the shipped pretrained model is missing ({weights}, model {text!r}); reinstall "
                               f"the package or pass a trained .caffemodel / .safetensors file as the model")
        if record.sha256 and file_sha256(weights) != record.sha256.lower():
            raise SaliconError(f"{weights}: SHA-256 does not match the one recorded for model {text!r}; the "
                               f"weights file is corrupt or was replaced (reinstall the package)")
        return ModelSpec(text, weights, Path(prototxt) if prototxt is not None else record_prototxt(record), record)
    weights = Path(model)
    net = Path(prototxt) if prototxt is not None else prototxt_path()
    return ModelSpec(None, weights, net, read_record(weights) if weights.is_file() else None)


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


__all__ = ["DEFAULT_MODEL_NAME", "ENTRY_POINT_GROUP", "ModelSpec", "model_folders", "model_records", "record_prototxt",
           "resolve_model", "read_record_file", "OUTPUT_BLOB", "DEFAULT_MODEL", "ModelRecord", "shipped_file",
           "prototxt_path", "default_model_path", "record_path", "read_record", "file_sha256", "model_metadata"]
