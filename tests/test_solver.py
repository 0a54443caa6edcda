"""Solver updates against hand-written Caffe update rules (numpy), lr policies,
lr_mult/decay_mult of 0, 1 and 2, and exact resumption from snapshots."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from salicon.engine import Net
from salicon.errors import FormatError
from salicon.formats import parse_net_prototxt
from salicon.proto import caffe_pb2
from salicon.solver import MultiTensorSolver, Solver, learning_rate

NET = """
layer { name: "data" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "act" type: "TanH" bottom: "h" top: "h" }
layer { name: "frozen" type: "InnerProduct" bottom: "h" top: "h2"
        param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h2" top: "y"
        param { lr_mult: 2 decay_mult: 2 } param { lr_mult: 1 decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "constant" value: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
"""

SPECS = {("ip1", 0): (1, 1), ("ip1", 1): (2, 0), ("frozen", 0): (0, 0), ("frozen", 1): (0, 0),
         ("ip2", 0): (2, 2), ("ip2", 1): (1, 0)}


def make(seed=0) -> Net:
    return Net(parse_net_prototxt(NET), phase="train", seed=seed)


def solver_param(text: str) -> caffe_pb2.SolverParameter:
    return text_format.Parse(text, caffe_pb2.SolverParameter())


def feeds(rng, n=3):
    return [{"x": torch.from_numpy(rng.standard_normal((4, 3)).astype(np.float32)),
             "t": torch.from_numpy(rng.standard_normal((4, 2)).astype(np.float32))} for _ in range(n)]


def gradients(net: Net, feed) -> dict:
    """d loss / d blob for every blob of ``net`` (autograd on a copy of the weights)."""
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    net.objective(net(**feed)).backward()
    return {(i.layer, i.index): i.param.grad.detach().double().numpy().copy() for i in net.param_info()}


def caffe_reference(param, weights0, grads_fn, n_iter):
    """Caffe's ApplyUpdate written out in numpy (float64), independent of salicon.solver."""
    w = {k: v.astype(np.float64).copy() for k, v in weights0.items()}
    h = {k: np.zeros_like(v) for k, v in w.items()}
    h2 = {k: np.zeros_like(v) for k, v in w.items()}
    kind = param.type
    for it in range(n_iter):
        rate = learning_rate(param, it)
        g_all = grads_fn(it, w)
        if param.clip_gradients >= 0:
            norm = math.sqrt(sum((g ** 2).sum() for k, g in g_all.items() if SPECS[k][0]))
            if norm > param.clip_gradients:
                g_all = {k: g * param.clip_gradients / norm for k, g in g_all.items()}
        for k in w:
            lr_mult, decay_mult = SPECS[k]
            if lr_mult == 0:
                continue
            g = g_all[k] + param.weight_decay * decay_mult * w[k]
            r = rate * lr_mult
            m, d = param.momentum, param.delta
            if kind == "SGD":
                h[k] = m * h[k] + r * g
                v = h[k]
            elif kind == "Nesterov":
                prev = h[k].copy()
                h[k] = m * h[k] + r * g
                v = (1 + m) * h[k] - m * prev
            elif kind == "AdaGrad":
                h[k] += g * g
                v = r * g / (np.sqrt(h[k]) + d)
            elif kind == "RMSProp":
                h[k] = param.rms_decay * h[k] + (1 - param.rms_decay) * g * g
                v = r * g / (np.sqrt(h[k]) + d)
            elif kind == "AdaDelta":
                h[k] = m * h[k] + (1 - m) * g * g
                u = g * np.sqrt((h2[k] + d) / (h[k] + d))
                h2[k] = m * h2[k] + (1 - m) * u * u
                v = r * u
            else:  # Adam
                t = it + 1
                h[k] = m * h[k] + (1 - m) * g
                h2[k] = param.momentum2 * h2[k] + (1 - param.momentum2) * g * g
                v = r * math.sqrt(1 - param.momentum2 ** t) / (1 - m ** t) * h[k] / (np.sqrt(h2[k]) + d)
            w[k] = w[k] - v
    return w


SOLVERS = {
    "SGD": 'type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "step" gamma: 0.5 stepsize: 2',
    "Nesterov": 'type: "Nesterov" base_lr: 0.05 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed"',
    "AdaGrad": 'type: "AdaGrad" base_lr: 0.1 weight_decay: 0.01 lr_policy: "fixed" delta: 1e-6',
    "RMSProp": 'type: "RMSProp" base_lr: 0.01 rms_decay: 0.9 weight_decay: 0.01 lr_policy: "inv" gamma: 0.1 power: 0.75',
    "AdaDelta": 'solver_type: ADADELTA base_lr: 1.0 momentum: 0.95 delta: 1e-6 weight_decay: 0.01 lr_policy: "fixed"',
    "Adam": 'type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 delta: 1e-8 weight_decay: 0.01 lr_policy: "exp" gamma: 0.9',
    "SGD-clip": 'type: "SGD" base_lr: 0.1 momentum: 0.5 clip_gradients: 0.1 lr_policy: "multistep" gamma: 0.1 '
                'stepvalue: 1 stepvalue: 3',
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_updates_equal_hand_computed_caffe_rules(name, rng):
    param = solver_param(SOLVERS[name])
    if name == "AdaDelta":
        param.type = "AdaDelta"  # the reference reads .type; the solver resolved the legacy enum itself
    net = make(seed=1)
    data = feeds(rng, 4)
    weights0 = {(i.layer, i.index): i.param.detach().numpy().copy() for i in net.param_info()}

    def grads_fn(it, w):  # gradients at the reference's current weights
        ref = make(seed=1)
        with torch.no_grad():
            for info in ref.param_info():
                info.param.copy_(torch.from_numpy(w[(info.layer, info.index)].astype(np.float32)))
        return gradients(ref, data[it])

    expected = caffe_reference(param, weights0, grads_fn, 4)
    solver = Solver(solver_param(SOLVERS[name]), net)
    for it in range(4):
        solver.step(data[it])
    assert solver.iter == 4
    for info in net.param_info():
        got = info.param.detach().numpy()
        key = (info.layer, info.index)
        np.testing.assert_allclose(got, expected[key], rtol=2e-4, atol=2e-6, err_msg=str(key))
        if info.lr_mult == 0:
            np.testing.assert_array_equal(got, weights0[key])  # frozen
        else:
            assert not np.allclose(got, weights0[key])


def test_learning_rate_policies():
    p = solver_param('base_lr: 0.1 gamma: 0.5 power: 2 stepsize: 3 max_iter: 10 stepvalue: 2 stepvalue: 5')
    cases = {
        "fixed": lambda it: 0.1,
        "step": lambda it: 0.1 * 0.5 ** (it // 3),
        "exp": lambda it: 0.1 * 0.5 ** it,
        "inv": lambda it: 0.1 * (1 + 0.5 * it) ** -2,
        "multistep": lambda it: 0.1 * 0.5 ** ((it >= 2) + (it >= 5)),
        "poly": lambda it: 0.1 * (1 - it / 10) ** 2,
        "sigmoid": lambda it: 0.1 / (1 + math.exp(-0.5 * (it - 3))),
    }
    for policy, formula in cases.items():
        p.lr_policy = policy
        for it in (0, 1, 2, 3, 4, 5, 7, 9):
            assert learning_rate(p, it) == pytest.approx(formula(it), rel=1e-6), (policy, it)
    p.lr_policy = "cosine"
    with pytest.raises(FormatError, match="cosine"):
        learning_rate(p, 0)


def test_iter_size_averages_gradients(rng):
    data = feeds(rng, 2)
    a, b = make(seed=2), make(seed=2)
    Solver(solver_param('base_lr: 0.1 lr_policy: "fixed" iter_size: 2'), a).step(data)
    # Same as one step on the mean gradient: run the two passes by hand.
    g1, g2 = gradients(make(seed=2), data[0]), gradients(make(seed=2), data[1])
    for info in b.param_info():
        key = (info.layer, info.index)
        expected = info.param.detach().numpy() - 0.1 * info.lr_mult * (g1[key] + g2[key]) / 2
        np.testing.assert_allclose(a.layer(info.layer).blobs[info.index].detach().numpy(), expected,
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["SGD", "AdaDelta", "Adam"])
def test_snapshot_restore_reproduces_uninterrupted_run(kind, rng, tmp_path):
    text = {"SGD": SOLVERS["SGD"], "AdaDelta": SOLVERS["AdaDelta"], "Adam": SOLVERS["Adam"]}[kind]
    data = feeds(rng, 6)
    straight = Solver(solver_param(text), make(seed=3))
    for it in range(6):
        straight.step(data[it])
    first = Solver(solver_param(text), make(seed=3))
    for it in range(3):
        first.step(data[it])
    model, state = first.snapshot(tmp_path / "snap")
    assert model.name == "snap_iter_3.caffemodel" and state.name == "snap_iter_3.solverstate"
    resumed = Solver(solver_param(text), make(seed=99))  # different init: everything comes from the snapshot
    resumed.restore(state)
    assert resumed.iter == 3
    for it in range(3, 6):
        resumed.step(data[it])
    for a, b in zip(straight.net.parameters(), resumed.net.parameters()):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


def test_restore_rejects_mismatched_state(rng, tmp_path):
    sgd = Solver(solver_param(SOLVERS["SGD"]), make())
    sgd.step(feeds(rng, 1)[0])
    _, state = sgd.snapshot(tmp_path / "s")
    ada = Solver(solver_param(SOLVERS["Adam"]), make())
    with pytest.raises(FormatError, match="history blobs"):
        ada.restore(state)


# ---------------------------------------------------------------- multi-tensor
MULTI_TENSOR = dict(SOLVERS, **{
    "SGD-L1": 'type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.02 regularization_type: "L1" '
              'lr_policy: "fixed"',
    "AdaGrad-iter2": 'type: "AdaGrad" base_lr: 0.1 weight_decay: 0.01 lr_policy: "fixed" delta: 1e-6 iter_size: 2',
    "SGD-noclip": 'type: "SGD" base_lr: 0.1 momentum: 0.5 clip_gradients: 1e6 lr_policy: "fixed"',
})


def _run_both(text: str, data, steps: int):
    per_blob, multi = make(seed=3), make(seed=3)
    a = Solver(solver_param(text), per_blob)
    b = MultiTensorSolver(solver_param(text), multi)
    n = max(1, a.param.iter_size)
    losses_a, losses_b = [], []
    for it in range(steps):
        batch = data[(it * n) % len(data):(it * n) % len(data) + n]
        losses_a.append(a.step(batch))
        losses_b.append(b.step(batch))
    return a, b, losses_a, losses_b


@pytest.mark.parametrize("name", list(MULTI_TENSOR))
def test_multi_tensor_solver_is_bit_identical_after_20_steps(name, rng):
    data = feeds(rng, 8)
    a, b, losses_a, losses_b = _run_both(MULTI_TENSOR[name], data, 20)
    assert b.check() == losses_a  # the losses read back at once equal the per-step ones
    assert [float(x) for x in losses_b] == losses_a
    assert a.iter == b.iter == 20
    for ia, ib in zip(a.net.param_info(), b.net.param_info()):
        assert torch.equal(ia.param, ib.param), (name, ia.layer, ia.index)
        assert ia.param.dtype == ib.param.dtype
    for ha, hb in zip(a.history, b.history):
        for x, y in zip(ha, hb):
            assert torch.equal(x, y)
    frozen = [i for i in b.net.param_info() if i.lr_mult == 0]
    fresh = {(i.layer, i.index): i.param for i in make(seed=3).param_info()}
    assert frozen and all(torch.equal(i.param, fresh[(i.layer, i.index)]) for i in frozen)
    assert {key for key, _ in b.groups} == {(1.0, 1.0), (2.0, 0.0), (2.0, 2.0), (1.0, 0.0)}


@pytest.mark.parametrize("name", ["SGD", "AdaDelta", "Adam"])
def test_multi_tensor_solver_rejects_updates_after_a_nan_loss(name, rng):
    data = feeds(rng, 10)
    bad = 6  # the 7th step's loss is NaN
    data[bad]["t"] = data[bad]["t"].clone()
    data[bad]["t"][0, 0] = float("nan")
    a, b = Solver(solver_param(SOLVERS[name]), make(seed=4)), MultiTensorSolver(solver_param(SOLVERS[name]),
                                                                                  make(seed=4))
    for it in range(bad):
        a.step(data[it])
    with pytest.raises(FloatingPointError):
        a.step(data[bad])
    for it in range(10):  # steps after the NaN go on without a host sync, and change nothing
        b.step(data[it])
    with pytest.raises(FloatingPointError, match=f"iteration {bad}"):
        b.check()
    assert b.iter == a.iter == bad
    for ia, ib in zip(a.net.param_info(), b.net.param_info()):
        assert torch.equal(ia.param, ib.param)
    for ha, hb in zip(a.history, b.history):
        assert all(torch.equal(x, y) for x, y in zip(ha, hb))
    assert b.check() == []  # nothing pending; a resumed run starts clean


def test_multi_tensor_solver_step_does_not_read_back_from_the_device(rng, monkeypatch):
    """No host synchronisation per step: nothing in step() turns a tensor into a
    Python number (on a GPU each of these would wait for the device)."""
    solver = MultiTensorSolver(solver_param(MULTI_TENSOR["SGD-noclip"]), make(seed=5))
    data = feeds(rng, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host during step()")

    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, refuse)
        for feed in data:
            loss = solver.step(feed)
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float64
    assert len(solver.check()) == 3


def test_multi_tensor_solver_snapshot_restore(rng, tmp_path):
    data = feeds(rng, 6)
    text = SOLVERS["Adam"]
    straight = MultiTensorSolver(solver_param(text), make(seed=6))
    for feed in data:
        straight.step(feed)
    first = MultiTensorSolver(solver_param(text), make(seed=6))
    for feed in data[:3]:
        first.step(feed)
    first.check()
    _, state = first.snapshot(tmp_path / "run")
    resumed = MultiTensorSolver(solver_param(text), make(seed=99))
    resumed.restore(state)
    for feed in data[3:]:
        resumed.step(feed)
    for x, y in zip(straight.net.parameters(), resumed.net.parameters()):
        assert torch.equal(x, y)
