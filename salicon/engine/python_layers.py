"""Which file a ``Python`` layer runs, and whether a native layer may stand in for it.

Caffe builds a ``Python`` layer by importing ``python_param.module`` and taking
its class ``python_param.layer``; whatever file that import finds is what runs,
forward and backward. This module does the same, in one place for every entry
point:

1. :func:`find_layer_file` finds the module as ``import`` would (modules
   already imported, then ``sys.path``, which holds ``PYTHONPATH`` and the
   running script's folder), with the project's ``layers/`` folder as the last
   fallback;
2. :func:`fingerprint` hashes the file's normalised syntax tree (comments,
   docstrings, formatting and the order of the leading imports do not count;
   every other character does);
3. :func:`choose` picks the implementation: a native PyTorch layer when the
   (fingerprint, class) pair is in :data:`NATIVE_LAYERS` (files whose forward
   *and* backward the native layer reproduces), else the file as written,
   through the Python-layer adapter on the host. ``python_layers`` (or the
   environment variable ``SALICON_PYTHON_LAYERS``) forces either way.

A :class:`LayerFile` carries the file's text, so a net built elsewhere (a Ray
worker) runs exactly the file the driver resolved.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import NetError
from ..proto import caffe_pb2

#: The project's own layer modules: the last place a module is looked for.
PROJECT_LAYERS_DIR = Path(__file__).resolve().parents[2] / "layers"
#: How Python layers are implemented: by fingerprint (auto), always the file
#: as written, or native wherever a native layer of that name exists.
MODES = ("auto", "as-written", "native")
#: The environment variable that sets the mode when none is given.
MODE_ENV = "SALICON_PYTHON_LAYERS"


@dataclass(frozen=True)
class LayerFile:
    """One Python layer module: where it was found and what it says."""

    module: str
    path: str
    source: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.source, self.path)


@dataclass(frozen=True)
class PythonLayerInfo:
    """What runs for one ``Python`` layer of a net (see ``Net.python_layers``)."""

    module: str
    layer: str
    file: str
    fingerprint: str
    #: ``"native:<class>"`` or ``"as-written"``.
    implementation: str

    @property
    def native(self) -> bool:
        return self.implementation.startswith("native")

    def describe(self) -> str:
        if self.native:
            how = f"native {self.implementation.split(':', 1)[1]}"
        elif self.implementation == "caffe":
            how = "as written, run by Caffe"
        else:
            how = "as written, on the host (slower)"
        return f"{self.module}.{self.layer} from {self.file}: {how}"

    def to_dict(self) -> dict[str, str]:
        return {"module": self.module, "layer": self.layer, "file": self.file,
                "fingerprint": self.fingerprint, "implementation": self.implementation}


def resolve_mode(mode: str | None = None) -> str:
    """``mode``, else ``$SALICON_PYTHON_LAYERS``, else ``"auto"``; checked against :data:`MODES`."""
    source = "python_layers"
    if mode is None:
        mode, source = os.environ.get(MODE_ENV) or "auto", MODE_ENV
    if mode not in MODES:
        raise ValueError(f"{source} must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


# ------------------------------------------------------------------ finding


def _spec_file(spec) -> str | None:
    origin = getattr(spec, "origin", None) if spec is not None else None
    if origin and origin not in ("built-in", "frozen") and origin.endswith(".py") and os.path.isfile(origin):
        return origin
    return None


def find_layer_file(module: str, search_path: Iterable[os.PathLike | str] = ()) -> Path:
    """The source file ``import <module>`` gives Caffe, or the project's fallback.

    Order: the folders of ``search_path`` (as if prepended to ``sys.path``);
    a module already imported under that name (Python's import returns it);
    the import system over ``sys.path``; ``layers/`` of this project.
    Raises ImportError listing where it looked.
    """
    folders = [str(p) for p in search_path]
    if folders:
        found = _find_in(module, folders)
        if found:
            return Path(found)
    loaded = sys.modules.get(module)
    origin = _spec_file(getattr(loaded, "__spec__", None)) if loaded is not None else None
    if origin:
        return Path(origin)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError, AttributeError):
        spec = None
    origin = _spec_file(spec)
    if origin:
        return Path(origin)
    found = _find_in(module, [str(PROJECT_LAYERS_DIR)])
    if found:
        return Path(found)
    where = folders + ["sys.path", str(PROJECT_LAYERS_DIR)]
    raise ImportError(f"no module named '{module}' (looked in {', '.join(where)})")


def _find_in(module: str, folders: list[str]) -> str | None:
    """The module's source file under ``folders`` (packages followed for dotted names)."""
    path: list[str] | None = folders
    spec = None
    for part in module.split("."):
        if path is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(part, path)
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or []) or None
    return _spec_file(spec)


def read_layer_file(module: str, path: os.PathLike | str) -> LayerFile:
    """The module's text (undecodable bytes are an ImportError naming the file)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportError(f"{path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise ImportError(f"{path}: cannot be read ({exc.strerror})") from None
    return LayerFile(module, str(Path(path).resolve()), text)


def resolve_layer_files(net_param: caffe_pb2.NetParameter, search_path: Iterable[os.PathLike | str] = (),
                        files: Mapping[str, LayerFile] | None = None) -> dict[str, LayerFile]:
    """Module name -> :class:`LayerFile` for every ``Python`` layer of ``net_param``
    (all phases): ``files`` where they have the module (shipped from elsewhere),
    else what a net built from it here would run, read once."""
    found: dict[str, LayerFile] = dict(files or {})
    for layer in net_param.layer:
        if layer.type == "Python" and layer.python_param.module and layer.python_param.module not in found:
            found[layer.python_param.module] = layer_file_for(layer, search_path)
    return found


# -------------------------------------------------------------- fingerprints

#: Fields that differ between Python versions without changing what code does.
_SKIPPED_FIELDS = {"ctx", "type_comment", "kind", "type_params", "type_ignores"}


def _is_docstring(node: ast.AST) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def _strip_docstrings(node: ast.AST) -> None:
    for child in ast.walk(node):
        if isinstance(child, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = child.body
            if body and _is_docstring(body[0]):
                child.body = body[1:] or [ast.Pass()]


def _canonical(node) -> str:
    """A text form of a syntax tree that is the same on every Python version."""
    if isinstance(node, ast.AST):
        parts = []
        for field in node._fields:
            if field in _SKIPPED_FIELDS:
                continue
            value = getattr(node, field, None)
            if value is None or value == []:
                continue
            parts.append(f"{field}={_canonical(value)}")
        return f"{type(node).__name__}({','.join(parts)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(v) for v in node) + "]"
    return repr(node)


@functools.lru_cache(maxsize=64)  # every net built from the same files asks again
def fingerprint(source: str, filename: str = "<layer>") -> str:
    """SHA-256 (hex, first 16 digits) of the module's normalised syntax tree.

    Comments, docstrings and layout do not count, nor the order of the
    module's leading block of imports; any change to what the code does (one
    character of a name, a number, an argument) gives another fingerprint.
    A file that does not parse raises SyntaxError.
    """
    tree = ast.parse(source, filename=filename)
    _strip_docstrings(tree)
    head = 0
    while head < len(tree.body) and isinstance(tree.body[head], (ast.Import, ast.ImportFrom)):
        head += 1
    tree.body = sorted(tree.body[:head], key=_canonical) + tree.body[head:]
    return hashlib.sha256(_canonical(tree).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ choosing


@dataclass(frozen=True)
class NativeLayer:
    """A native layer class standing in for one known layer file's class."""

    factory: Callable[..., object]
    #: Where the known file comes from (for messages and the docs).
    origin: str


def _native_table() -> tuple[dict[tuple[str, str], NativeLayer], dict[tuple[str, str], Callable[..., object]]]:
    from .layers import BilinearInterpolation, CustomData, PublishedInterpolation

    project = "this project's layers/"
    published = "OpenSALICON's published layer file"
    by_fingerprint = {
        # layers/CustomData.py and layers/custom_interpolation_layer.py (tests/test_python_layers.py
        # fails when either file changes and its fingerprint here does not).
        ("4920f72f5e4f3c02", "CustomData"): NativeLayer(CustomData, project),
        ("08f2ff8e83db6eb3", "custom_interpolation_layer"): NativeLayer(BilinearInterpolation, project),
        # OpenSALICON's CustomData.py and custom_interpolation_layer.py (both published versions: with and
        # without the unused numpy/pdb imports, imports in either order). Their backward zooms the top diff
        # down (PublishedInterpolation); their data layer passes the driver's blob through.
        ("e27e634a9e29b467", "CustomData"): NativeLayer(CustomData, published),
        ("023d638a3c7c87b2", "CustomData"): NativeLayer(CustomData, published),
        ("83562648deaaa0e0", "custom_interpolation_layer"): NativeLayer(PublishedInterpolation, published),
    }
    by_name: dict[tuple[str, str], Callable[..., object]] = {("CustomData", "CustomData"): CustomData,
               ("custom_interpolation_layer", "custom_interpolation_layer"): BilinearInterpolation}
    return by_fingerprint, by_name


NATIVE_LAYERS, NATIVE_BY_NAME = _native_table()


def native_for(file: LayerFile, layer: str, mode: str) -> tuple[Callable[..., object] | None, str]:
    """(native class or None, implementation label) for class ``layer`` of ``file`` under ``mode``."""
    if mode == "as-written":
        return None, "as-written"
    try:
        known = NATIVE_LAYERS.get((file.fingerprint, layer))
    except SyntaxError:
        known = None  # reported with the file's line by the adapter
    if known is not None:
        return known.factory, f"native:{known.factory.__name__}"
    if mode == "native":
        factory = NATIVE_BY_NAME.get((file.module, layer))
        if factory is not None:
            return factory, f"native:{factory.__name__} (forced)"
    return None, "as-written"


def layer_file_for(lp: caffe_pb2.LayerParameter, search_path: Iterable[os.PathLike | str],
                   files: Mapping[str, LayerFile] | None = None) -> LayerFile:
    """The file a ``Python`` layer runs: from ``files`` (shipped) when it has the module, else found here."""
    module = lp.python_param.module
    if files and module in files:
        return files[module]
    try:
        return read_layer_file(module, find_layer_file(module, search_path))
    except ImportError as exc:
        raise NetError(lp.name, "Python", f"cannot import module '{module}': {exc}") from None


def plan_python_layers(net_param: caffe_pb2.NetParameter, mode: str | None = None,
                       search_path: Iterable[os.PathLike | str] = (),
                       files: Mapping[str, LayerFile] | None = None) -> dict[str, PythonLayerInfo]:
    """Layer name -> what each ``Python`` layer of ``net_param`` (all phases) would
    run, without building the net (for choosing a runtime before loading one)."""
    mode = resolve_mode(mode)
    found = resolve_layer_files(net_param, search_path, files)
    plan: dict[str, PythonLayerInfo] = {}
    for lp in net_param.layer:
        if lp.type != "Python" or not lp.python_param.module:
            continue
        file = found[lp.python_param.module]
        try:
            _, implementation = native_for(file, lp.python_param.layer, mode)
            digest = file.fingerprint
        except SyntaxError:
            implementation, digest = "as-written", ""
        plan[lp.name] = PythonLayerInfo(lp.python_param.module, lp.python_param.layer, file.path, digest,
                                        implementation)
    return plan


_ANNOUNCED: set[tuple[str, str]] = set()


def announce(info: PythonLayerInfo) -> None:
    """One line on stderr, once per file and class in a process, for a layer run as written."""
    key = (info.file, info.layer)
    if info.native or key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    print(f"salicon: Python layer {info.module}.{info.layer} runs as written from {info.file}, "
          f"on the host (slower than a native layer)", file=sys.stderr)


__all__ = ["MODES", "MODE_ENV", "PROJECT_LAYERS_DIR", "LayerFile", "PythonLayerInfo", "NativeLayer",
           "NATIVE_LAYERS", "NATIVE_BY_NAME", "find_layer_file", "read_layer_file", "resolve_layer_files",
           "fingerprint", "native_for", "layer_file_for", "resolve_mode", "announce", "plan_python_layers"]
