"""The real-Caffe engine: the same prototxt, ``layers/`` modules and .caffemodel
files, run by pycaffe (CPU).

pycaffe aborts the whole process on a failed check (a wrong blob shape, an
unknown layer), so files are validated with the project's own reader first and
problems are reported as exceptions.
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import formats
from ..engine import Net
from ..engine.python_layers import PROJECT_LAYERS_DIR, LayerFile, find_layer_file
from ..errors import EngineError
from ..types import PathLike
from .base import NetConfig, Runtime

INSTALL_HINT = ("build it with `bash scripts/install_caffe.sh` (Debian/Ubuntu; CPU only), "
                "or install a pycaffe built with WITH_PYTHON_LAYER=1")


def _add_to_path(folder: Path) -> None:
    path = str(folder)
    if path not in sys.path:
        sys.path.append(path)


def import_caffe():
    """Import pycaffe in CPU mode, with the project's Python layers importable."""
    _add_to_path(PROJECT_LAYERS_DIR)
    os.environ.setdefault("GLOG_minloglevel", "2")  # Caffe's per-layer set-up log is noise here
    try:
        import caffe
        caffe.set_mode_cpu()
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"engine 'caffe' needs pycaffe, which cannot be imported ({exc}); "
                          f"{INSTALL_HINT}") from None
    return caffe


def caffe_available() -> bool:
    """True if pycaffe imports (without raising)."""
    try:
        import_caffe()
    except EngineError:
        return False
    return True


def set_params(caffe_net, params) -> None:
    """Copy arrays (layer name -> blobs) into a pycaffe net's parameters, for
    weights Caffe cannot read itself (safetensors); layers it lacks are skipped."""
    for name, arrays in params.items():
        if name in caffe_net.params:
            for blob, array in zip(caffe_net.params[name], arrays):
                blob.data[...] = array.reshape(blob.data.shape)


def check_layer_files(prototxt: PathLike, files: Mapping[str, LayerFile]) -> None:
    """Raise EngineError unless Caffe's own ``import`` of each Python layer module
    gives the file the project resolved (so both engines run the same code)."""
    import_caffe()
    for module, file in files.items():
        try:
            imported = str(find_layer_file(module).resolve())
        except ImportError as exc:
            raise EngineError(f"{prototxt}: Caffe cannot import Python layer module '{module}': {exc}") from None
        if imported != file.path:
            raise EngineError(f"{prototxt}: Caffe would import Python layer module '{module}' from {imported}, "
                              f"not {file.path}; put that file's folder first on sys.path (or PYTHONPATH)")


class CaffeNet:
    """A pycaffe ``caffe.Net`` behind the surface Salicon uses.

    ``net`` is the pycaffe net itself, for everything else (backward, diffs).
    """

    def __init__(self, prototxt: PathLike, weights: PathLike | None = None, phase: str = "test",
                 layer_files: Mapping[str, LayerFile] | None = None):
        caffe = import_caffe()
        # Validate with the project's reader: clear errors instead of an abort. Its Python layers
        # run as written here, so a bad layer file is reported before Caffe imports it.
        check = Net(prototxt, phase=phase, python_layers="as-written", layer_files=layer_files)
        check_layer_files(prototxt, check.layer_files)
        if weights is not None:
            check.copy_from(weights, strict=True)
        self.input_shapes = dict(check.input_shapes)
        self.outputs = list(check.outputs)
        self.source = str(prototxt)
        mode = caffe.TEST if phase == "test" else caffe.TRAIN
        if weights is not None and not formats.is_safetensors(weights):
            self.net = caffe.Net(str(prototxt), mode, weights=str(weights))
        else:
            self.net = caffe.Net(str(prototxt), mode)
            if weights is not None:  # Caffe reads only .caffemodels: hand it the checked arrays
                set_params(self.net, check.state_arrays())
        del check

    def set_inputs(self, **inputs: np.ndarray) -> None:
        """Copy arrays into the input blobs, reshaping them (and the net) if needed."""
        reshaped = False
        for name, value in inputs.items():
            if name not in self.input_shapes:
                raise ValueError(f"unknown input blob '{name}'; inputs are {list(self.input_shapes)}")
            value = np.asarray(value, dtype=np.float32)
            blob = self.net.blobs[name]
            if blob.data.shape != value.shape:
                blob.reshape(*value.shape)
                reshaped = True
            blob.data[...] = value
        if reshaped:
            self.net.reshape()

    def forward(self, blobs: Sequence[str] | None = None, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run the net; returns copies of the outputs and of the blobs asked for."""
        self.set_inputs(**inputs)
        self.net.forward()
        names = list(self.outputs) + [b for b in (blobs or ()) if b not in self.outputs]
        return {name: np.array(self.net.blobs[name].data, copy=True) for name in names}

    __call__ = forward

    def save(self, path: PathLike) -> None:
        """Write the weights with Caffe's own Net::ToProto."""
        self.net.save(str(path))


class CaffeSolverBackend:
    """Training steps on real Caffe: pycaffe's own solver, fed blob by blob (CPU).

    ``solver_param`` is the run's solver (its ``net`` is replaced by
    ``net_path``; snapshots are named by ``prefix`` and taken on request);
    ``workdir`` receives the solver prototxt Caffe reads; ``loss_tops`` maps
    each loss blob to its weight; ``weights`` (a .caffemodel or safetensors
    file) initialises the net.
    """

    #: Caffe applies the update before the loss can be checked.
    keeps_weights_on_nan = False

    def __init__(self, solver_param, net_path: PathLike, prefix: PathLike, workdir: PathLike,
                 loss_tops: dict[str, float], weights: PathLike | None = None):
        caffe = import_caffe()
        param = formats.caffe_pb2.SolverParameter()
        param.CopyFrom(solver_param)
        param.ClearField("train_net")
        param.net = str(Path(net_path).resolve())  # Caffe resolves paths from the working directory
        param.snapshot_prefix = str(Path(prefix).resolve())
        param.snapshot = 0  # snapshots are taken by the training loop
        param.solver_mode = formats.caffe_pb2.SolverParameter.CPU
        path = Path(workdir) / "caffe_solver.prototxt"
        formats.write_prototxt(path, param)
        self.prefix = Path(prefix)
        self.loss_tops = loss_tops
        self.solver = caffe.get_solver(str(path))
        if weights:
            if formats.is_safetensors(weights):  # pycaffe reads only .caffemodels
                set_params(self.solver.net, formats.read_weights(weights)[0])
            else:
                self.solver.net.copy_from(str(weights))

    @property
    def iter(self) -> int:
        return int(self.solver.iter)

    def _set(self, feeds) -> None:
        for name, value in feeds.items():
            self.solver.net.blobs[name].data[...] = value.detach().float().cpu().numpy()

    def step(self, feeds, read: bool = True) -> list[float]:
        """One step of Caffe's own solver; its loss (always read back)."""
        self._set(feeds)
        self.solver.step(1)
        loss = self._weighted(self.solver.net.blobs)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at iteration {self.iter - 1}")
        return [loss]

    def flush(self) -> list[float]:
        return []

    def loss(self, feeds) -> float:
        self._set(feeds)
        self.solver.net.forward()
        return self._weighted(self.solver.net.blobs)

    def evaluate(self, feeds, map_blob: str) -> tuple[float, np.ndarray]:
        loss = self.loss(feeds)
        data = self.solver.net.blobs[map_blob].data
        return loss, np.array(data, dtype=np.float32).reshape(data.shape[-2:])

    def _weighted(self, blobs) -> float:
        return sum(w * float(np.sum(blobs[name].data)) for name, w in self.loss_tops.items())

    def snapshot(self, prefix=None) -> tuple[Path, Path]:
        self.solver.snapshot()  # Caffe names them <prefix>_iter_N.caffemodel / .solverstate
        stem = f"{self.prefix}_iter_{self.iter}"
        return Path(stem + ".caffemodel"), Path(stem + ".solverstate")

    def restore(self, state) -> None:
        self.solver.restore(str(state))


class CaffeRuntime(Runtime):
    name = "caffe"
    precisions = ("fp32",)
    summary = "real Caffe through pycaffe, CPU, fp32 (what --engine caffe selects)"
    install = INSTALL_HINT
    runs_host_layers = True  # Caffe imports and runs every Python layer file itself

    def check_installed(self) -> None:
        import_caffe()

    def load(self, config: NetConfig, device):
        return CaffeNet(config.prototxt, config.model, layer_files=config.layer_files)


RUNTIME = CaffeRuntime()

__all__ = ["CaffeRuntime", "RUNTIME", "CaffeNet", "CaffeSolverBackend", "check_layer_files", "import_caffe",
           "caffe_available", "set_params", "INSTALL_HINT"]
