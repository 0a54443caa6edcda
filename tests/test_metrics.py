"""Saliency metrics against hand-computed cases, identities and (where it
installs) pysaliency."""
from __future__ import annotations

import numpy as np
import pytest

from salicon import metrics as M


@pytest.fixture
def case(rng):
    sal = rng.random((30, 40))
    fix = np.zeros((30, 40), bool)
    fix[rng.integers(0, 30, 25), rng.integers(0, 40, 25)] = True
    density = np.exp(-((np.mgrid[:30, :40][0] - 12) ** 2 + (np.mgrid[:30, :40][1] - 20) ** 2) / 50.0)
    return sal, fix, density


def test_auc_judd_hand_computed():
    sal = np.array([[0.9, 0.1], [0.5, 0.3]])
    fix = np.array([[True, False], [False, True]])
    # Thresholds at the fixated values 0.9 and 0.3: TPR 1/2 then 1; FPR 0/2
    # (nothing else >= 0.9) then 1/2 (0.5 >= 0.3); plus the end points.
    fpr = np.array([0, 0, 0.5, 1])
    tpr = np.array([0, 0.5, 1, 1])
    expected = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert M.auc_judd(sal, fix, jitter=False) == pytest.approx(expected)
    assert expected == pytest.approx(0.875)


def test_auc_identities(case, rng):
    sal, fix, _ = case
    constant = np.full(sal.shape, 0.3)
    assert M.auc_judd(constant, fix, convention="pysaliency") == pytest.approx(0.5)
    assert M.auc_judd(constant, fix) == pytest.approx(0.5, abs=0.1)  # MIT: jitter breaks ties at random
    assert M.auc_judd(fix.astype(float), fix) == pytest.approx(1.0)  # jitter orders the tied fixated pixels
    assert M.auc_judd(-fix.astype(float), fix) < 0.05
    # An AUC is invariant to monotonic transforms of the map.
    assert M.auc_judd(sal, fix, jitter=False) == pytest.approx(M.auc_judd(np.exp(3 * sal), fix, jitter=False))
    assert M.auc_borji(fix.astype(float), fix) > 0.95
    other = np.zeros_like(fix)
    other[rng.integers(0, 30, 40), rng.integers(0, 40, 40)] = True
    assert 0.0 <= M.auc_shuffled(sal, fix, other) <= 1.0
    assert M.auc_shuffled(constant, fix, other, convention="pysaliency") == pytest.approx(0.5)


def test_auc_judd_follows_the_mit_loop(case):
    sal, fix, _ = case
    # MIT AUC_Judd.m, literally: thresholds at the fixated values, descending.
    s = (sal - sal.min()) / np.ptp(sal)
    thresholds = np.sort(s[fix])[::-1]
    n_fix, n_pix = thresholds.size, s.size
    tp, fp = [0.0], [0.0]
    for i, t in enumerate(thresholds, start=1):
        above = (s >= t).sum()
        tp.append(i / n_fix)
        fp.append((above - i) / (n_pix - n_fix))
    tp.append(1.0)
    fp.append(1.0)
    expected = sum((fp[k + 1] - fp[k]) * (tp[k + 1] + tp[k]) / 2 for k in range(len(tp) - 1))
    assert M.auc_judd(sal, fix, jitter=False) == pytest.approx(expected, abs=1e-12)
    # The trapezoids over-count against the exact rank statistic by about 1 / (2 n_fix).
    exact = (sal[fix][:, None] > sal[~fix][None, :]).mean()
    assert M.auc_judd(sal, fix, convention="pysaliency") == pytest.approx(
        (sal[fix][:, None] > sal.ravel()[None, :]).mean() + 0.5 / sal.size, abs=1e-9)
    assert 0 < M.auc_judd(sal, fix, jitter=False) - exact < 1.0 / n_fix


def test_auc_borji_is_seeded_and_near_exact(case):
    sal, fix, _ = case
    a, b = M.auc_borji(sal, fix, seed=1), M.auc_borji(sal, fix, seed=1)
    assert a == b
    exact = (sal[fix][:, None] > sal.ravel()[None, :]).mean()
    assert a == pytest.approx(exact, abs=0.06)  # 0.1 threshold steps, sampled negatives


def test_nss_hand_computed_and_conventions(case):
    sal, fix, _ = case
    z = (sal - sal.mean()) / sal.std(ddof=1)
    assert M.nss(sal, fix) == pytest.approx(z[fix].mean())
    z0 = (sal - sal.mean()) / sal.std()
    assert M.nss(sal, fix, convention="pysaliency") == pytest.approx(z0[fix].mean())
    with pytest.raises(M.MetricError, match="constant"):
        M.nss(np.ones((4, 4)), np.eye(4, dtype=bool))


def test_cc_sim_kldiv_identities(case):
    sal, fix, density = case
    assert M.cc(density, density) == pytest.approx(1.0)
    assert M.cc(-density, density) == pytest.approx(-1.0)
    assert M.cc(sal, density) == pytest.approx(np.corrcoef(sal.ravel(), density.ravel())[0, 1])
    assert M.sim(density, density) == pytest.approx(1.0)
    assert M.kldiv(density, density) == pytest.approx(0.0, abs=1e-9)
    a = np.zeros((4, 4))
    a[0, 0] = 1
    b = np.zeros((4, 4))
    b[3, 3] = 1
    assert M.sim(a, b) == pytest.approx(0.0)
    # KLDiv by the MIT formula, written out.
    p, q = sal / sal.sum(), density / density.sum()
    assert M.kldiv(sal, density) == pytest.approx(np.sum(q * np.log(M.EPS + q / (p + M.EPS))))
    assert M.kldiv(sal, density) > 0


def test_information_gain(case):
    sal, fix, density = case
    assert M.information_gain(density, fix, density) == pytest.approx(0.0, abs=1e-12)
    p = (sal - sal.min()) / np.ptp(sal)
    p = p / p.sum()
    b = (density - density.min()) / np.ptp(density)
    b = b / b.sum()
    expected = np.mean(np.log2(M.EPS + p[fix]) - np.log2(M.EPS + b[fix]))
    assert M.information_gain(sal, fix, density) == pytest.approx(expected)


def test_emd(case):
    _, _, density = case
    assert M.emd(density, density, downsize=4) == pytest.approx(0.0, abs=1e-9)
    a = np.zeros((8, 8))
    a[0, 0] = 1
    b = np.zeros((8, 8))
    b[0, 5] = 1
    # All mass moves 5 cells (no reduction): distance 5.
    assert M.emd(a, b, downsize=1) == pytest.approx(5.0, rel=1e-6)


def test_resizing_and_errors(case):
    sal, fix, density = case
    big = np.kron(sal, np.ones((2, 2)))
    assert np.isfinite(M.nss(big, fix))  # MIT: the prediction is resized to the ground truth
    with pytest.raises(M.MetricError, match="differ in size"):
        M.nss(big, fix, convention="pysaliency")
    with pytest.raises(M.MetricError, match="no fixations"):
        M.auc_judd(sal, np.zeros_like(fix))
    bad = sal.copy()
    bad[0, 0] = np.nan
    with pytest.raises(M.MetricError, match="NaN"):
        M.cc(bad, density)
    with pytest.raises(M.MetricError, match="constant"):
        M.cc(np.ones_like(sal), density)
    with pytest.raises(M.MetricError, match="convention"):
        M.nss(sal, fix, convention="matlab")


def test_against_pysaliency_where_installed(case, monkeypatch):
    if not hasattr(np, "trapz"):  # pysaliency's AUC calls np.trapz, gone in numpy 2.4
        monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    pytest.importorskip("pysaliency", reason="pysaliency is not installed (optional reference)")
    import pysaliency.metrics as PM
    from pysaliency.roc import general_roc
    sal, fix, density = case
    ys, xs = np.nonzero(fix)
    assert M.nss(sal, fix, convention="pysaliency") == pytest.approx(np.mean(PM.NSS(sal, xs, ys)), rel=1e-9)
    assert M.cc(sal, density) == pytest.approx(PM.CC(sal, density), rel=1e-9)
    assert M.sim(sal, density, convention="pysaliency") == pytest.approx(float(PM.SIM(sal, density)), rel=1e-9)
    assert M.kldiv(sal, density) == pytest.approx(float(PM.MIT_KLDiv(sal, density)), rel=1e-6)
    auc = general_roc(sal[fix].astype(float), sal.ravel().astype(float))[0]
    assert M.auc_judd(sal, fix, convention="pysaliency") == pytest.approx(auc, rel=1e-9)
    other = np.zeros_like(fix)
    other[::3, ::4] = True
    sauc = general_roc(sal[fix].astype(float), sal[other].astype(float))[0]
    assert M.auc_shuffled(sal, fix, other, convention="pysaliency") == pytest.approx(sauc, rel=1e-9)
