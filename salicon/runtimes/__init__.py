"""The runtimes that run a net, and the registry that names them.

    from salicon import runtimes
    runtimes.names()                       # ('pytorch', 'openvino', 'onnxruntime', 'caffe')
    runtimes.resolve("auto", "int8").name  # 'openvino'
    runtimes.worker_device("openvino", "fp32", "auto", gpus=8)   # 'cpu': OpenVINO runs on CPUs

Everything that chooses or describes a runtime asks this module: the CLI's
choices and help, ``auto`` resolution, where Ray actors and Serve replicas go,
error messages. A runtime is added by writing a module with a
:class:`~salicon.runtimes.base.Runtime` subclass and naming the module in
:data:`BUILTIN` (or, from outside the package, by :func:`register`).
"""
from __future__ import annotations

import importlib

from ..errors import OptionError
from .base import RunnableNet, Runtime

#: The package's own runtime modules (``salicon.runtimes.<name>``), in the order
#: they are listed and tried for ``auto``.
BUILTIN = ("pytorch", "openvino", "onnxruntime", "caffe")

_registry: dict[str, Runtime] = {}
_builtins_loaded = False


def _ensure_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN:  # cheap: each imports its heavy package only when it loads a net
            register(importlib.import_module(f"{__name__}.{module}").RUNTIME)


def register(runtime: Runtime) -> Runtime:
    """Add ``runtime`` (a :class:`Runtime` instance) under its name; returns it."""
    if not isinstance(runtime, Runtime):
        raise TypeError(f"a runtime must be a salicon.runtimes.Runtime, not {type(runtime).__name__}")
    if runtime.name == "auto":
        raise ValueError("'auto' is not a runtime name")
    _registry[runtime.name] = runtime
    return runtime


def unregister(name: str) -> None:
    """Remove the runtime ``name`` (for tests and plug-ins)."""
    _ensure_builtins()
    _registry.pop(name, None)


def available() -> dict[str, Runtime]:
    """Every registered runtime by name, in registration order."""
    _ensure_builtins()
    return dict(_registry)


def names() -> tuple[str, ...]:
    """The runtimes' names (without ``auto``)."""
    return tuple(available())


def precisions() -> tuple[str, ...]:
    """Every precision some runtime runs, in first-seen order (without ``auto``)."""
    seen: dict[str, None] = {}
    for runtime in available().values():
        seen.update(dict.fromkeys(runtime.precisions))
    return tuple(seen)


def get(name: str) -> Runtime:
    """The runtime called ``name``, or an OptionError listing the others."""
    found = available().get(name)
    if found is None:
        raise OptionError(f"{{runtime}} must be 'auto' or one of {', '.join(names())}, not {name!r}", "runtime")
    return found


def resolve(runtime: str = "auto", precision: str = "fp32") -> Runtime:
    """The runtime that runs ``precision``: the one named, checked, or for ``auto``
    the first registered whose ``auto_for`` has it (then the first that runs it).
    A precision no runtime runs, or a named runtime that does not run it, is an
    OptionError that says where it does run."""
    if precision not in precisions():
        raise OptionError(f"{{precision}} must be 'auto' or one of {', '.join(precisions())}, not {precision!r}",
                          "precision")
    if runtime == "auto":
        everything = list(available().values())
        chosen = next((r for r in everything if precision in r.auto_for), None)
        return chosen or next(r for r in everything if precision in r.precisions)
    found = get(runtime)
    if precision not in found.precisions:
        other = next(r.name for r in available().values() if precision in r.precisions)
        raise OptionError(f"{{runtime}} {runtime!r} runs {', '.join(found.precisions)}, not {precision}; "
                          f"{precision} runs on {{runtime}} {other!r}", "runtime", "precision")
    return found


def worker_device(runtime: str, precision: str, device: str, gpus: float) -> str:
    """``"cuda"`` or ``"cpu"``: where one worker (a Ray Data actor, a Serve replica)
    runs ``runtime`` at ``precision`` when the user asked for ``device`` on a
    cluster with ``gpus`` GPUs (precision ``auto`` is placed as fp32). The one
    placement rule of the package: a GPU only where the runtime can use one
    and the cluster has one."""
    chosen = resolve(runtime, "fp32" if precision == "auto" else precision)
    on_gpu = "cuda" in chosen.cluster_devices()
    if device.startswith("cuda"):
        if gpus < 1:
            raise OptionError(f"{{device}} {device}: the Ray cluster has no GPU", "device")
        if not on_gpu:
            raise OptionError(f"{{runtime}} {chosen.name!r} runs on the CPU only, not on {device}", "runtime",
                              "device")
        return "cuda"
    return "cuda" if device == "auto" and on_gpu and gpus >= 1 else "cpu"


def help_text() -> str:
    """One line per runtime for ``--runtime``'s help."""
    return "; ".join(f"{r.name}: {r.summary}" for r in available().values())


__all__ = ["Runtime", "RunnableNet", "BUILTIN", "register", "unregister", "available", "names", "precisions",
           "get", "resolve", "worker_device", "help_text"]
