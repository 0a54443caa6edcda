"""pycaffe's solvers on the engine's Caffe-exact solver, with Caffe's test nets
(see :mod:`salicon.pycaffe`)."""
from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..formats import caffe_pb2
from ..solver import Solver, read_solver, solver_type
from ..types import PathLike
from .net import TEST, TRAIN, Net, ParamBlob, _unsupported

# ---------------------------------------------------------------- solvers


class SGDSolver:
    """pycaffe's solver: ``SGDSolver(solver.prototxt)``; the net named by the
    solver's ``net`` (relative to the working directory, as in Caffe, else to
    the solver file's folder) in phase TRAIN, and its test nets (``test_net``
    files, else the ``net`` in phase TEST once per ``test_iter`` entry), which
    share the train net's weights, as Caffe's do."""

    _TYPE: str | None = "SGD"

    def __init__(self, solver_file: PathLike):
        self._param = read_solver(solver_file)
        if self._TYPE is not None:
            found = solver_type(self._param)
            if self._param.HasField("type") and found != self._TYPE:
                raise ValueError(f"{solver_file}: a {found} solver, not {self._TYPE}; use caffe.get_solver")
            self._param.type = self._TYPE
        self.net = Net(_net_path(self._param, solver_file), TRAIN)
        self.test_nets: list[Net] = _test_nets(self._param, solver_file, self.net)
        self._solver = Solver(self._param, self.net._net)
        self._solver.keep_updates = True  # each blob's diff is its applied update after a step, as in Caffe

    def __getattr__(self, name: str):
        raise _unsupported(f"Solver.{name}")

    @property
    def iter(self) -> int:
        return self._solver.iter

    def step(self, iters: int) -> None:
        """``iters`` iterations on the net's current input blobs (Caffe's
        Solver::Step): the test nets run first whenever ``iter`` is a multiple
        of ``test_interval`` (at 0 only with ``test_initialization``), the loss
        is printed every ``display`` iterations, snapshots at the solver's interval.
        After a step each learnable blob's ``.diff`` holds the update that was
        subtracted from it (0 for frozen blobs), as Caffe leaves it."""
        param = self._param
        for _ in range(int(iters)):
            if (param.test_interval and self.iter % param.test_interval == 0
                    and (self.iter > 0 or param.test_initialization)):
                self.test_all()
            for blobs in self.net._net.params.values():  # Caffe's ClearParamDiffs
                for p in blobs:
                    if p.grad is not None:
                        p.grad.zero_()
            loss = self._solver.step([{}] * max(1, param.iter_size), forward=lambda _: self.net._objective())
            self.net._pull()
            self.net._pull_diffs()
            if param.display and (self.iter - 1) % param.display == 0:
                print(f"Iteration {self.iter - 1}, loss = {loss:g}, lr = {self._solver.lr:g}", file=sys.stderr)
            if param.snapshot and self.iter % param.snapshot == 0:
                self.snapshot()

    def solve(self, resume_file: PathLike | None = None) -> None:
        """Step to ``max_iter``, snapshot (unless ``snapshot_after_train`` is false)
        and test once more when ``max_iter`` is a multiple of ``test_interval``."""
        if resume_file is not None:
            self.restore(resume_file)
        self.step(max(0, self._param.max_iter - self.iter))
        if self._param.snapshot_after_train:
            self.snapshot()
        if self._param.test_interval and self.iter % self._param.test_interval == 0:
            self.test_all()

    def test_all(self) -> list[list[float]]:
        """Run every test net (Caffe's Solver::TestAll); returns each net's mean outputs."""
        return [self.test(k) for k in range(len(self.test_nets))]

    def test(self, k: int = 0) -> list[float]:
        """``test_iter[k]`` forward passes of test net ``k`` on its blobs' current
        data; prints and returns the mean of every output value, as Caffe's
        ``Test net output #i: name = value`` lines."""
        net, iters = self.test_nets[k], self._param.test_iter[k]
        print(f"Iteration {self.iter}, Testing net (#{k})", file=sys.stderr)
        names: list[str] = []
        scores: np.ndarray | None = None
        for _ in range(iters):
            out = net.forward()
            flat = np.concatenate([np.asarray(out[n], np.float32).ravel() for n in net.outputs])
            if scores is None:
                names = [n for n in net.outputs for _ in range(np.asarray(out[n]).size)]
                scores = flat.copy()
            else:
                scores += flat  # float32 sums, as Caffe's Dtype test_score
        means = [float(v) / iters for v in (scores if scores is not None else [])]
        for i, (name, mean) in enumerate(zip(names, means)):
            weight = net._net.loss_weights.get(name, 0.0)
            loss = f" (* {weight:g} = {weight * mean:g} loss)" if weight else ""
            print(f"    Test net output #{i}: {name} = {mean:g}{loss}", file=sys.stderr)
        return means

    def snapshot(self) -> None:
        """``<snapshot_prefix>_iter_N.caffemodel`` and ``.solverstate``, as Caffe names them."""
        self.net._push()
        self._solver.snapshot(self._param.snapshot_prefix or "")

    def restore(self, state_file: PathLike) -> None:
        self._solver.restore(state_file)
        self.net._pull()


def _test_nets(param: caffe_pb2.SolverParameter, solver_file: PathLike, train: Net) -> list[Net]:
    """The solver's test nets (Caffe's Solver::InitTestNets for net files), their
    layers' parameters shared with the train net's layers of the same name."""
    if len(param.test_net_param):
        raise _unsupported("test_net_param (give test nets as files: test_net)")
    files = [_find(name, solver_file) for name in param.test_net]
    generic = len(param.test_iter) - len(files)
    if generic < 0 or (generic > 0 and not (param.net or param.train_net)):
        raise ValueError(f"{solver_file}: {len(param.test_iter)} test_iter value(s) for {len(files)} test net(s)")
    files += [_net_path(param, solver_file)] * generic
    if param.test_state and len(param.test_state) != len(files):
        raise ValueError(f"{solver_file}: {len(param.test_state)} test_state value(s) for {len(files)} test net(s)")
    nets = []
    for k, path in enumerate(files):
        state = param.test_state[k] if param.test_state else None
        net = Net(path, TEST, level=state.level if state else 0, stages=list(state.stage) if state else ())
        _share_weights(net, train, path)
        nets.append(net)
    return nets


def _share_weights(test: Net, train: Net, source: PathLike) -> None:
    """Caffe's ShareTrainedLayersWith: same-named layers use the train net's blobs."""
    for name, layer_blobs in test._net.params.items():
        if name not in train._net.params:
            continue
        layer, theirs = test._net.layer(name), train._net.params[name]
        for attr, mine, other in zip(layer.blob_names, layer_blobs, theirs):
            if tuple(mine.shape) != tuple(other.shape):
                raise ValueError(f"{source}: layer '{name}' blob {attr} has shape {tuple(mine.shape)} in the test "
                                 f"net but {tuple(other.shape)} in the train net")
            setattr(layer, attr, other)
    test.params = OrderedDict((name, [ParamBlob(p) for p in blobs]) for name, blobs in test._net.params.items())


def _find(name: str, solver_file: PathLike) -> Path:
    for candidate in (Path(name), Path(solver_file).resolve().parent / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{solver_file}: net {name!r} not found (relative to the working directory "
                            f"or the solver's folder)")


def _net_path(param: caffe_pb2.SolverParameter, solver_file: PathLike) -> Path:
    name = param.net or param.train_net
    if not name:
        raise _unsupported("solvers without a `net` (or `train_net`) file (net_param, train_net_param)")
    return _find(name, solver_file)


class NesterovSolver(SGDSolver):
    _TYPE = "Nesterov"


class AdaGradSolver(SGDSolver):
    _TYPE = "AdaGrad"


class RMSPropSolver(SGDSolver):
    _TYPE = "RMSProp"


class AdaDeltaSolver(SGDSolver):
    _TYPE = "AdaDelta"


class AdamSolver(SGDSolver):
    _TYPE = "Adam"


class _AnySolver(SGDSolver):
    _TYPE = None


def get_solver(solver_file: PathLike) -> SGDSolver:
    """The solver of the type the file names."""
    return _AnySolver(solver_file)
