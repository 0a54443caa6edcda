"""Caffe's solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) over a Net.

The update follows Caffe's Solver::Step / SGDSolver::ApplyUpdate exactly,
which is NOT PyTorch's optimiser arithmetic. Per iteration:

1. ``iter_size`` forward/backward passes accumulate gradients; the loss is
   their mean and the gradients are divided by ``iter_size``;
2. the learning rate for the current ``iter`` from ``lr_policy``:
   fixed: base_lr; step: base_lr * gamma^floor(iter / stepsize);
   exp: base_lr * gamma^iter; inv: base_lr * (1 + gamma iter)^-power;
   multistep: base_lr * gamma^(number of stepvalue entries <= iter);
   poly: base_lr * (1 - iter / max_iter)^power;
   sigmoid: base_lr / (1 + exp(-gamma (iter - stepsize)));
3. ``clip_gradients`` >= 0 rescales all gradients to at most that L2 norm;
4. per blob, decay = weight_decay * decay_mult is added (L2: g += decay w,
   L1: g += decay sign(w)); rate = lr * lr_mult;
5. the update value v by solver type (history h, h2 per blob):
   SGD       h = momentum h + rate g;                        v = h
   Nesterov  h' = momentum h + rate g;                       v = (1 + momentum) h' - momentum h
   AdaGrad   h += g^2;                                       v = rate g / (sqrt(h) + delta)
   RMSProp   h = rms_decay h + (1 - rms_decay) g^2;          v = rate g / (sqrt(h) + delta)
   AdaDelta  h = m h + (1 - m) g^2; u = g sqrt((h2 + delta) / (h + delta));
             h2 = m h2 + (1 - m) u^2;                        v = rate u
   Adam      h = b1 h + (1 - b1) g; h2 = b2 h2 + (1 - b2) g^2;
             v = rate sqrt(1 - b2^t) / (1 - b1^t) h / (sqrt(h2) + delta), t = iter + 1
6. w -= v; iter += 1.

Blobs with lr_mult 0 are frozen: they get no gradient and no update (in
Caffe their update is 0 as well).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from . import formats
from .engine import Net
from .engine.net import ParamInfo
from .errors import FormatError
from .proto import caffe_pb2
from .types import PathLike

#: Lists of tensors as torch._foreach_* take and give them (lists or tuples).
Tensors = Union[list[torch.Tensor], tuple[torch.Tensor, ...]]

_LEGACY_TYPES = {caffe_pb2.SolverParameter.SGD: "SGD", caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
                 caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad", caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
                 caffe_pb2.SolverParameter.ADADELTA: "AdaDelta", caffe_pb2.SolverParameter.ADAM: "Adam"}
SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
#: Solver types that keep a second history blob per parameter.
_TWO_HISTORIES = ("AdaDelta", "Adam")


def _math_dtype(param: torch.Tensor) -> torch.dtype:
    """Updates are computed in float32, or float64 for float64 parameters."""
    return torch.promote_types(param.dtype, torch.float32)


def solver_type(param: caffe_pb2.SolverParameter) -> str:
    """The solver type, honouring the legacy ``solver_type`` enum."""
    if param.HasField("type"):
        name = param.type
    elif param.HasField("solver_type"):
        name = _LEGACY_TYPES[param.solver_type]
    else:
        name = "SGD"
    for known in SOLVER_TYPES:  # Caffe's registry is case-sensitive; accept any case
        if name.lower() == known.lower():
            return known
    raise FormatError(f"solver type '{name}' is not supported; use one of {', '.join(SOLVER_TYPES)}")


def learning_rate(param: caffe_pb2.SolverParameter, it: int) -> float:
    """Caffe's SGDSolver::GetLearningRate for iteration ``it``."""
    policy, base = param.lr_policy, param.base_lr
    if policy == "fixed":
        return base
    if policy == "step":
        if param.stepsize <= 0:
            raise FormatError("lr_policy 'step' needs a positive stepsize")
        return base * param.gamma ** (it // param.stepsize)
    if policy == "exp":
        return base * param.gamma ** it
    if policy == "inv":
        return base * (1.0 + param.gamma * it) ** (-param.power)
    if policy == "multistep":
        return base * param.gamma ** sum(1 for v in param.stepvalue if it >= v)
    if policy == "poly":
        if param.max_iter <= 0:
            raise FormatError("lr_policy 'poly' needs max_iter")
        return base * (1.0 - it / param.max_iter) ** param.power
    if policy == "sigmoid":
        return base * (1.0 / (1.0 + math.exp(-param.gamma * (it - param.stepsize))))
    raise FormatError(f"lr_policy '{policy}' is not supported; use one of {', '.join(LR_POLICIES)}")


def read_solver(path: PathLike) -> caffe_pb2.SolverParameter:
    """Read solver.prototxt and check its type and learning-rate policy."""
    param = formats.read_solver_prototxt(path)
    try:
        solver_type(param)
        learning_rate(param, 0)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    return param


def solver_net_path(param: caffe_pb2.SolverParameter, solver_path: PathLike) -> Path | None:
    """The train net file a solver names, resolved against the solver's folder
    when it is not found from the working directory."""
    name = param.net or param.train_net
    if not name:
        return None
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    return Path(solver_path).resolve().parent / path


class Solver:
    """Caffe's solver over ``net``'s learnable blobs (those with lr_mult != 0)."""

    def __init__(self, param: caffe_pb2.SolverParameter, net: Net):
        self.param = param
        self.net = net
        self.type = solver_type(param)
        learning_rate(param, 0)  # validates the policy
        self.iter = 0
        #: Leave each learnable blob's applied update in its ``.grad`` after a step
        #: (what Caffe leaves in the diff; pycaffe scripts read it).
        self.keep_updates = False
        self.infos: list[ParamInfo] = [p for p in net.param_info() if p.lr_mult != 0]
        frozen = {id(p.param) for p in net.param_info() if p.lr_mult == 0}
        for p in net.parameters():
            p.requires_grad_(id(p) not in frozen)
        n_hist = 2 if self.type in _TWO_HISTORIES else 1
        self.history: list[list[torch.Tensor]] = [
            [torch.zeros_like(info.param, dtype=_math_dtype(info.param)) for info in self.infos]
            for _ in range(n_hist)]

    # ------------------------------------------------------------- stepping
    @property
    def lr(self) -> float:
        return learning_rate(self.param, self.iter)

    def step(self, batches: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor],
             forward: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None = None) -> float:
        """One iteration: forward/backward over ``iter_size`` input dicts, then update.

        ``forward`` maps an input dict to the scalar objective (default: the
        net's weighted loss). Returns the loss averaged over the passes. A NaN or
        infinite loss raises FloatingPointError and leaves the weights unchanged.
        """
        total = 0.0
        for loss in self._forward_backward(batches, forward):
            total += float(loss)
        iter_size = max(1, self.param.iter_size)
        if not math.isfinite(total):
            for info in self.infos:  # no update: the weights stay the last good ones
                info.param.grad = None
            raise FloatingPointError(f"loss is {total / iter_size} at iteration {self.iter}")
        self.apply_update()
        return total / iter_size

    def check(self) -> list[float]:
        """Losses not yet read back: none, since :meth:`step` reads each one (see
        :meth:`MultiTensorSolver.check`)."""
        return []

    def _forward_backward(self, batches: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor],
                          forward: Callable[[Mapping[str, torch.Tensor]], torch.Tensor] | None
                          ) -> Tensors:
        """Fresh gradients from forward/backward passes over ``iter_size`` input
        dicts; their detached losses, in order."""
        if isinstance(batches, Mapping):
            batches = [batches]
        iter_size = max(1, self.param.iter_size)
        if len(batches) != iter_size:
            raise ValueError(f"iter_size is {iter_size} but {len(batches)} input batches were given")
        forward = forward or (lambda feeds: self.net.objective(self.net(**feeds)))
        for info in self.infos:
            info.param.grad = None
        losses = []
        for feeds in batches:
            loss = forward(feeds)
            loss.backward()
            losses.append(loss.detach())
        return losses

    @torch.no_grad()
    def apply_update(self) -> None:
        """Caffe's ApplyUpdate on the gradients now in ``param.grad``."""
        p = self.param
        rate = self.lr
        grads = self._gradients()
        if p.clip_gradients >= 0:
            norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
            if norm > p.clip_gradients:
                grads = [g * (p.clip_gradients / norm) for g in grads]
        for k, (info, g) in enumerate(zip(self.infos, grads)):
            w = info.param
            decay = p.weight_decay * info.decay_mult
            if decay:
                if p.regularization_type == "L2":
                    g = g + decay * w.to(g.dtype)
                elif p.regularization_type == "L1":
                    g = g + decay * torch.sign(w)
                else:
                    raise FormatError(f"unknown regularization_type '{p.regularization_type}'")
            value = self._update_value(k, g, rate * info.lr_mult).to(w.dtype)
            w.sub_(value)
            if self.keep_updates:
                w.grad = value.clone()
        self.iter += 1

    def _gradients(self) -> Tensors:
        """Each learnable blob's gradient in the update's dtype (zeros for a blob
        without one), averaged over the ``iter_size`` passes."""
        grads = [info.param.grad.to(_math_dtype(info.param)) if info.param.grad is not None
                 else torch.zeros_like(info.param, dtype=_math_dtype(info.param)) for info in self.infos]
        iter_size = max(1, self.param.iter_size)
        return torch._foreach_div(grads, iter_size) if iter_size > 1 and grads else grads

    def _update_value(self, k: int, g: torch.Tensor, rate: float) -> torch.Tensor:
        p, h = self.param, self.history
        if self.type == "SGD":
            h[0][k].mul_(p.momentum).add_(g, alpha=rate)
            return h[0][k]
        if self.type == "Nesterov":
            previous = h[0][k].clone()
            h[0][k].mul_(p.momentum).add_(g, alpha=rate)
            return (1 + p.momentum) * h[0][k] - p.momentum * previous
        if self.type == "AdaGrad":
            h[0][k].add_(g * g)
            return rate * g / (h[0][k].sqrt() + p.delta)
        if self.type == "RMSProp":
            h[0][k].mul_(p.rms_decay).add_(g * g, alpha=1 - p.rms_decay)
            return rate * g / (h[0][k].sqrt() + p.delta)
        if self.type == "AdaDelta":
            h[0][k].mul_(p.momentum).add_(g * g, alpha=1 - p.momentum)
            update = g * ((h[1][k] + p.delta) / (h[0][k] + p.delta)).sqrt()
            h[1][k].mul_(p.momentum).add_(update * update, alpha=1 - p.momentum)
            return rate * update
        # Adam
        t = self.iter + 1
        h[0][k].mul_(p.momentum).add_(g, alpha=1 - p.momentum)
        h[1][k].mul_(p.momentum2).add_(g * g, alpha=1 - p.momentum2)
        correction = math.sqrt(1 - p.momentum2 ** t) / (1 - p.momentum ** t)
        return rate * correction * h[0][k] / (h[1][k].sqrt() + p.delta)

    # ------------------------------------------------------------ snapshots
    def snapshot(self, prefix: PathLike) -> tuple[Path, Path]:
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (Caffe's names
        and formats; the state holds iter and the history blobs)."""
        model = Path(f"{prefix}_iter_{self.iter}.caffemodel")
        state_path = Path(f"{prefix}_iter_{self.iter}.solverstate")
        self.net.save(model)
        formats.write_binary(state_path, self.state_proto(model.name))
        return model, state_path

    def state_proto(self, learned_net: str = "") -> caffe_pb2.SolverState:
        """The solver state as Caffe's SolverState message."""
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=learned_net,
                                      current_step=sum(1 for v in self.param.stepvalue if self.iter >= v))
        for hist in self.history:
            for t in hist:
                state.history.append(formats.array_to_blob(t.detach().cpu().numpy()))
        return state

    def restore(self, state_path: PathLike, weights: PathLike | None = None) -> None:
        """Resume from a .solverstate (and its .caffemodel, by default the one it names)."""
        state = formats.read_solver_state(state_path)
        n = sum(len(h) for h in self.history)
        if len(state.history) != n:
            raise FormatError(f"{state_path}: holds {len(state.history)} history blobs, this {self.type} "
                              f"solver over {len(self.infos)} learnable blobs needs {n}")
        if weights is None:
            if not state.learned_net:
                raise FormatError(f"{state_path}: names no learned_net; give the weights file")
            weights = Path(state_path).resolve().parent / Path(state.learned_net).name
        self.net.copy_from(weights, strict=True)
        blobs = iter(state.history)
        for hist in self.history:
            for k, t in enumerate(hist):
                array = formats.blob_to_array(next(blobs))
                if array.size != t.numel():
                    raise FormatError(f"{state_path}: history blob for '{self.infos[k].layer}' has "
                                      f"{array.size} values, expected {t.numel()}")
                t.copy_(torch.from_numpy(np.ascontiguousarray(array)).reshape(t.shape))
        self.iter = state.iter


#: Integer types of the same width, to select between two float tensors by their bits.
_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
         torch.float16: torch.int16}


def _select_(dest: Tensors, new: Tensors, keep: torch.Tensor) -> None:
    """``dest = keep ? dest : new`` for whole lists, exactly and without a host sync.

    ``keep`` is a 0-dim integer 0/1 tensor on the device. The select works on the
    bit patterns (dest * keep + new * (1 - keep) in integers), so it is exact and
    a NaN in the rejected values cannot leak through, unlike a float blend."""
    if not dest:
        return
    d = [t.view(_BITS[t.dtype]) for t in dest]
    n = [t.view(_BITS[t.dtype]) for t in new]
    torch._foreach_mul_(d, keep)
    torch._foreach_mul_(n, 1 - keep)
    torch._foreach_add_(d, n)


def _gate_(values: Tensors, ok: torch.Tensor) -> None:
    """``values`` zeroed (+0.0) where ``ok`` is 0 and left exactly as they are where
    it is 1: a product of bit patterns, so a NaN value is zeroed too."""
    if values:
        torch._foreach_mul_([t.view(_BITS[t.dtype]) for t in values], ok)


class MultiTensorSolver(Solver):
    """:class:`Solver` with its update as multi-tensor (``torch._foreach_*``)
    operations and no host synchronisation per step.

    Blobs are grouped by (lr_mult, decay_mult) and each group is updated with a
    few list operations in the per-blob solver's arithmetic order, so the
    weights are bit-identical to :class:`Solver`'s on the CPU (tested for every
    solver type). :meth:`step` returns the loss as a device tensor; a NaN or
    infinite loss is not read back at once: from that step on the updates are
    rejected on the device (weights and histories keep the last good values),
    and :meth:`check`, called every ``display`` steps by the trainer, raises
    FloatingPointError naming the first bad iteration and resets ``iter`` to it.
    """

    def __init__(self, param: caffe_pb2.SolverParameter, net: Net):
        super().__init__(param, net)
        groups: dict[tuple[float, float], list[int]] = {}
        for k, info in enumerate(self.infos):
            groups.setdefault((info.lr_mult, info.decay_mult), []).append(k)
        self.groups = list(groups.items())
        device = self.infos[0].param.device if self.infos else torch.device("cpu")
        self._bad = torch.zeros((), dtype=torch.int64, device=device)
        self._pending: list[torch.Tensor] = []
        self._pending_from = self.iter

    def step(self, batches, forward=None) -> torch.Tensor:  # type: ignore[override]
        """One iteration as :meth:`Solver.step`, without reading the loss back:
        returns it as a 0-dim float64 tensor on the device."""
        total: torch.Tensor | None = None
        for loss in self._forward_backward(batches, forward):
            value = loss.double()  # float32 -> float64 is exact, as float() is
            total = value if total is None else total + value
        assert total is not None, "a step runs at least one forward pass"
        iter_size = max(1, self.param.iter_size)
        if not self._pending:
            self._pending_from = self.iter
        self._bad |= (~torch.isfinite(total)).long()
        self.apply_update()
        mean = total / iter_size
        self._pending.append(mean)
        return mean

    def check(self) -> list[float]:
        """Read back the losses since the last check (one host sync); raise
        FloatingPointError if one was not finite (``iter`` then counts the good
        updates only, and weights and histories are those after them)."""
        if not self._pending:
            return []
        losses = torch.stack(self._pending).cpu().tolist()
        self._pending = []
        for j, value in enumerate(losses):
            if not math.isfinite(value):
                self.iter = self._pending_from + j
                self._bad.zero_()
                raise FloatingPointError(f"loss is {value} at iteration {self.iter}")
        return losses

    @torch.no_grad()
    def apply_update(self) -> None:
        """Caffe's ApplyUpdate as list operations, rejected on the device after a bad loss."""
        p = self.param
        grads = self._gradients()
        if p.clip_gradients >= 0 and grads:
            grads = self._clipped(grads)
        rate = self.lr
        for (lr_mult, decay_mult), ks in self.groups:
            weights: list[torch.Tensor] = [self.infos[k].param for k in ks]
            g: Tensors = [grads[k] for k in ks]
            decay = p.weight_decay * decay_mult
            if decay:
                if p.regularization_type == "L2":
                    g = torch._foreach_add(g, torch._foreach_mul([w.to(x.dtype) for w, x in zip(weights, g)],
                                                                 decay))
                elif p.regularization_type == "L1":
                    g = torch._foreach_add(g, torch._foreach_mul([torch.sign(w) for w in weights], decay))
                else:
                    raise FormatError(f"unknown regularization_type '{p.regularization_type}'")
            old: list[Tensors] = [[h[k] for k in ks] for h in self.history]
            new, value = self._update_values(old, g, rate * lr_mult)
            if value[0].dtype != weights[0].dtype:
                value = [v.to(w.dtype) for v, w in zip(value, weights)]
            for hist_old, hist_new in zip(old, new):
                _select_(hist_old, hist_new, self._bad)
            _gate_(value, 1 - self._bad)  # after a bad loss w - (+0.0): w exactly
            torch._foreach_sub_(weights, value)
        self.iter += 1

    def _clipped(self, grads: Tensors) -> Tensors:
        """Rescaled to the L2 norm clip_gradients when above it; the norm summed
        in float64 blob by blob, as the per-blob solver does, on the device."""
        squares = torch._foreach_mul(grads, grads)
        norm = torch.zeros((), dtype=torch.float64, device=grads[0].device)
        for s in squares:
            norm = norm + s.sum().double()
        norm = norm.sqrt()
        clip = self.param.clip_gradients
        scale = torch.where(norm > clip, clip / norm, torch.ones_like(norm))
        return torch._foreach_mul(grads, scale)

    def _update_values(self, h: list[Tensors], g: Tensors, rate: float
                       ) -> tuple[list[Tensors], Tensors]:
        """(new histories, update value) of :meth:`Solver._update_value`, out of place."""
        p, f = self.param, torch
        if self.type in ("SGD", "Nesterov"):
            h0 = f._foreach_mul(h[0], p.momentum)
            f._foreach_add_(h0, g, alpha=rate)
            if self.type == "SGD":
                return [h0], h0
            return [h0], f._foreach_sub(f._foreach_mul(h0, 1 + p.momentum), f._foreach_mul(h[0], p.momentum))
        gg = f._foreach_mul(g, g)
        if self.type in ("AdaGrad", "RMSProp"):
            if self.type == "AdaGrad":
                h0 = f._foreach_add(h[0], gg)
            else:
                h0 = f._foreach_mul(h[0], p.rms_decay)
                f._foreach_add_(h0, gg, alpha=1 - p.rms_decay)
            denom = f._foreach_add(f._foreach_sqrt(h0), p.delta)
            return [h0], f._foreach_div(f._foreach_mul(g, rate), denom)
        if self.type == "AdaDelta":
            h0 = f._foreach_mul(h[0], p.momentum)
            f._foreach_add_(h0, gg, alpha=1 - p.momentum)
            ratio = f._foreach_div(f._foreach_add(h[1], p.delta), f._foreach_add(h0, p.delta))
            update = f._foreach_mul(g, f._foreach_sqrt(ratio))
            h1 = f._foreach_mul(h[1], p.momentum)
            f._foreach_add_(h1, f._foreach_mul(update, update), alpha=1 - p.momentum)
            return [h0, h1], f._foreach_mul(update, rate)
        # Adam
        t = self.iter + 1
        h0 = f._foreach_mul(h[0], p.momentum)
        f._foreach_add_(h0, g, alpha=1 - p.momentum)
        h1 = f._foreach_mul(h[1], p.momentum2)
        f._foreach_add_(h1, gg, alpha=1 - p.momentum2)
        correction = math.sqrt(1 - p.momentum2 ** t) / (1 - p.momentum ** t)
        denom = f._foreach_add(f._foreach_sqrt(h1), p.delta)
        return [h0, h1], f._foreach_div(f._foreach_mul(h0, rate * correction), denom)

    def restore(self, state_path: PathLike, weights: PathLike | None = None) -> None:
        super().restore(state_path, weights)
        self._bad.zero_()
        self._pending = []
