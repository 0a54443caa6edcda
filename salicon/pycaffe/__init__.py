"""pycaffe's Python surface on the PyTorch engine, so pycaffe scripts (OpenSALICON's
``Salicon.py`` and ``finetune_salicon.py`` among them) run without Caffe:

    python -m salicon.pycaffe script.py [args]      # `import caffe` in the script gets this module

or ``import salicon.pycaffe as caffe`` in new code. What is here:

- ``set_mode_cpu()``, ``set_mode_gpu()`` (a CUDA GPU when PyTorch sees one, else
  the CPU with a warning), ``set_device(id)``, ``set_random_seed(seed)``;
  ``TRAIN``, ``TEST``; ``Layer`` (the base of Python layers);
- ``Net(prototxt, phase)``, ``Net(prototxt, weights, phase)``,
  ``Net(prototxt, phase, weights=...)``: ``blobs`` and ``params`` (ordered,
  in Caffe's order; frozen layers included), ``.data`` / ``.diff`` NumPy
  arrays written in place (``net.blobs["x"].data[...] = image``),
  ``forward(start=, end=, blobs=, **inputs)``,
  ``backward(start=, end=, diffs=, **top_diffs)`` (Caffe's rules for which
  blobs get diffs), ``reshape()``, ``copy_from``, ``save``, ``inputs``,
  ``outputs``, ``python_layers`` (which file each Python layer runs);
- ``SGDSolver(path)`` (and ``NesterovSolver``, ``AdaGradSolver``,
  ``RMSPropSolver``, ``AdaDeltaSolver``, ``AdamSolver``, ``get_solver``) with
  ``.net``, ``.test_nets``, ``.step(n)``, ``.solve()``, ``.iter``,
  ``.snapshot()``, ``.restore(path)``: the engine's Caffe-exact solver on the
  net's current input blobs, each parameter's diff left holding its applied
  update, the test nets run at ``test_interval`` with Caffe's output lines.

Python layer modules are found and run as Caffe runs them (see
:mod:`salicon.engine.python_layers`).

Anything else raises ``AttributeError: not supported by salicon.pycaffe: ...``
naming it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..engine.pylayer import Blob, _ShimLayer
from .net import _MODE, TEST, TRAIN, Net, ParamBlob, _unsupported
from .solvers import AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver, get_solver

#: The base class of Python layers (``class MyLayer(caffe.Layer)``).
Layer = _ShimLayer


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise _unsupported(f"caffe.{name}")


# ------------------------------------------------------------------ modes


def set_mode_cpu() -> None:
    _MODE["gpu"] = False


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        warnings.warn("salicon.pycaffe: set_mode_gpu() but PyTorch sees no CUDA GPU; running on the CPU",
                      stacklevel=2)
    _MODE["gpu"] = True


def set_device(device_id: int) -> None:
    _MODE["device_id"] = int(device_id)


def set_random_seed(seed: int) -> None:
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2 ** 32)


__all__ = ["TRAIN", "TEST", "Layer", "Net", "Blob", "ParamBlob", "SGDSolver", "NesterovSolver", "AdaGradSolver",
           "RMSPropSolver", "AdaDeltaSolver", "AdamSolver", "get_solver", "set_mode_cpu", "set_mode_gpu",
           "set_device", "set_random_seed"]
