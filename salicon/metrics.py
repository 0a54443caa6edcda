"""The standard saliency metrics, as pure NumPy functions.

Defaults follow the MIT saliency benchmark (cvzoya/saliency, code_forMetrics):
the saliency map is resized to the ground truth's size first; location-based
metrics (AUC, NSS, IG) take the *binary fixation map*; distribution-based
metrics (CC, SIM, KLDiv, EMD) take the *continuous fixation map* (fixations
blurred with a Gaussian). Where pysaliency (matthias-k/pysaliency) differs,
``convention="pysaliency"`` selects its choice; each docstring says what
changes.

Inputs are 2-D arrays. Saliency maps must be finite and fixation maps must
hold at least one fixation; violations raise :class:`MetricError` naming
the problem. Random parts (AUC jitter and negative sampling) take a seed and
are deterministic given it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import SaliconError

#: MATLAB's eps, used where the MIT code uses it.
EPS = 2.220446049250313e-16
CONVENTIONS = ("mit", "pysaliency")


class MetricError(SaliconError, ValueError):
    """Inputs a metric cannot score (empty fixation map, NaNs, bad shapes)."""


# ----------------------------------------------------------------- helpers


def _check_map(saliency_map: np.ndarray, name: str = "saliency map") -> np.ndarray:
    arr = np.asarray(saliency_map, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise MetricError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MetricError(f"{name} contains NaN or infinite values")
    return arr


def _check_fixations(fixation_map: np.ndarray) -> np.ndarray:
    arr = np.asarray(fixation_map)
    if arr.ndim != 2:
        raise MetricError(f"fixation map must be 2-D, got shape {arr.shape}")
    fix = arr > 0
    if not fix.any():
        raise MetricError("fixation map holds no fixations")
    return fix


def resize_to(saliency_map: np.ndarray, shape: Sequence[int], convention: str = "mit") -> np.ndarray:
    """The saliency map at the ground truth's ``shape``.

    MIT: resized (the benchmark's MATLAB imresize is bicubic; here cubic
    interpolation with anti-aliasing when shrinking, via scikit-image).
    pysaliency refuses mismatched sizes: a MetricError.
    """
    arr = _check_map(saliency_map)
    shape = (int(shape[0]), int(shape[1]))
    if arr.shape == shape:
        return arr
    if convention == "pysaliency":
        raise MetricError(f"saliency map {arr.shape} and ground truth {shape} differ in size "
                          f"(pysaliency convention: no resizing)")
    from skimage.transform import resize
    return resize(arr, shape, order=3, mode="edge", anti_aliasing=arr.shape[0] > shape[0], preserve_range=True)


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise MetricError(f"convention must be one of {CONVENTIONS}, not {convention!r}")


def _normalize_minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = arr.min(), arr.max()
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _roc_area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under a ROC curve given as points (MATLAB trapz)."""
    return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


# ------------------------------------------------------------------- AUCs


def auc_judd(saliency_map: np.ndarray, fixation_map: np.ndarray, jitter: bool = True, seed: int = 0,
             convention: str = "mit") -> float:
    """AUC-Judd: every saliency value at a fixated pixel is a threshold; the
    true-positive rate counts fixated pixels above it, the false-positive rate
    all other pixels above it (MIT AUC_Judd.m).

    MIT adds uniform jitter in [0, 1e-7) to break ties and normalises the map
    to [0, 1]; ``jitter=False`` (or ``convention="pysaliency"``) skips the
    jitter, and pysaliency's exact ROC gives tied values half credit. A
    constant map scores 0.5 either way.
    """
    _check_convention(convention)
    fix = _check_fixations(fixation_map)
    sal = resize_to(saliency_map, fix.shape, convention)
    if convention == "pysaliency":
        positives = sal[fix]
        return _exact_auc(positives, sal.ravel())
    if jitter:
        sal = sal + np.random.default_rng(seed).random(sal.shape) / 1e7
    sal = _normalize_minmax(sal)
    s = sal.ravel()
    positives = np.sort(sal[fix])[::-1]
    n_fix, n_pix = positives.size, s.size
    if n_pix == n_fix:
        raise MetricError("every pixel is fixated: no negatives for the ROC curve")
    # Pixels at or above each threshold, for all thresholds at once.
    above = n_pix - np.searchsorted(np.sort(s), positives, side="left")
    tpr = np.concatenate([[0.0], np.arange(1, n_fix + 1) / n_fix, [1.0]])
    fpr = np.concatenate([[0.0], (above - np.arange(1, n_fix + 1)) / (n_pix - n_fix), [1.0]])
    return _roc_area(fpr, tpr)


def _exact_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a positive outranks a negative, ties counting half
    (the area under the exact ROC curve, as pysaliency computes it)."""
    negatives = np.sort(negatives)
    below = np.searchsorted(negatives, positives, side="left")
    equal = np.searchsorted(negatives, positives, side="right") - below
    return float((below + 0.5 * equal).sum() / (positives.size * negatives.size))


def _auc_with_negatives(positives: np.ndarray, negatives: np.ndarray, step: float) -> float:
    """MIT's AUC_Borji/AUC_shuffled inner loop: thresholds from max down to 0 in ``step``."""
    top = max(positives.max(), negatives.max())
    thresholds = np.arange(0.0, top + 1e-12, step)[::-1]
    tp = (positives[None, :] >= thresholds[:, None]).mean(axis=1)
    fp = (negatives[None, :] >= thresholds[:, None]).mean(axis=1)
    tpr = np.concatenate([[0.0], tp, [1.0]])
    fpr = np.concatenate([[0.0], fp, [1.0]])
    return _roc_area(fpr, tpr)


def auc_borji(saliency_map: np.ndarray, fixation_map: np.ndarray, n_splits: int = 100, step: float = 0.1,
              seed: int = 0) -> float:
    """AUC-Borji: positives are the (min-max normalised) saliency values at
    fixated pixels; negatives as many values at pixels drawn uniformly (with
    replacement); thresholds every ``step`` from the maximum down to 0; the
    mean over ``n_splits`` draws (MIT AUC_Borji.m: 100 splits, step 0.1)."""
    fix = _check_fixations(fixation_map)
    sal = _normalize_minmax(resize_to(saliency_map, fix.shape))
    s = sal.ravel()
    positives = sal[fix]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, s.size, size=(n_splits, positives.size))
    return float(np.mean([_auc_with_negatives(positives, s[d], step) for d in draws]))


def auc_shuffled(saliency_map: np.ndarray, fixation_map: np.ndarray, other_map: np.ndarray,
                 n_splits: int = 100, step: float = 0.1, seed: int = 0, convention: str = "mit") -> float:
    """Shuffled AUC (sAUC): like AUC-Borji, but the negatives are saliency
    values at the fixations of *other* images (``other_map``, a binary map of
    their fixations at this image's size), which discounts centre bias.

    MIT (AUC_shuffled.m): per split, min(#fixations, #other) other-image
    pixels drawn without replacement, thresholds every ``step``.
    pysaliency: every other-image fixation is a negative and the exact ROC is
    used (no sampling, no step).
    """
    _check_convention(convention)
    fix = _check_fixations(fixation_map)
    other = np.asarray(other_map) > 0
    if other.shape != fix.shape:
        raise MetricError(f"other-fixations map {other.shape} and fixation map {fix.shape} differ in size")
    if not other.any():
        raise MetricError("the other-images fixation map holds no fixations")
    sal = resize_to(saliency_map, fix.shape, convention)
    if convention == "pysaliency":
        return _exact_auc(sal[fix], sal[other])
    sal = _normalize_minmax(sal)
    positives = sal[fix]
    candidates = sal[other]
    n_neg = min(positives.size, candidates.size)
    rng = np.random.default_rng(seed)
    aucs = [_auc_with_negatives(positives, candidates[rng.permutation(candidates.size)[:n_neg]], step)
            for _ in range(n_splits)]
    return float(np.mean(aucs))


# ----------------------------------------------------- location-based others


def nss(saliency_map: np.ndarray, fixation_map: np.ndarray, convention: str = "mit") -> float:
    """Normalised scanpath saliency: the mean of the z-scored map at fixated
    pixels. MIT: standard deviation with N-1 (MATLAB std). pysaliency:
    population std (N)."""
    _check_convention(convention)
    fix = _check_fixations(fixation_map)
    sal = resize_to(saliency_map, fix.shape, convention)
    std = sal.std(ddof=1 if convention == "mit" else 0)
    if std == 0:
        raise MetricError("NSS is undefined for a constant saliency map")
    return float(((sal - sal.mean()) / std)[fix].mean())


def information_gain(saliency_map: np.ndarray, fixation_map: np.ndarray, baseline_map: np.ndarray) -> float:
    """Information gain over a baseline (e.g. centre bias), in bits per
    fixation: mean of log2(eps + P) - log2(eps + B) at fixated pixels, where P
    and B are the maps min-max normalised and then scaled to sum 1 (MIT
    InfoGain.m)."""
    fix = _check_fixations(fixation_map)
    sal = _as_distribution(_normalize_minmax(resize_to(saliency_map, fix.shape)), "saliency map")
    base = _as_distribution(_normalize_minmax(resize_to(baseline_map, fix.shape)), "baseline map")
    return float(np.mean(np.log2(EPS + sal[fix]) - np.log2(EPS + base[fix])))


# ------------------------------------------------- distribution-based metrics


def _as_distribution(arr: np.ndarray, name: str) -> np.ndarray:
    total = arr.sum()
    if total <= 0:
        raise MetricError(f"{name} sums to {total}; it cannot be a distribution")
    return arr / total


def cc(saliency_map: np.ndarray, fixation_density: np.ndarray) -> float:
    """Pearson's linear correlation coefficient between the saliency map and
    the continuous fixation map (MIT CC.m: both z-scored, then corr2)."""
    gt = _check_map(fixation_density, "fixation density")
    sal = resize_to(saliency_map, gt.shape)
    a, b = sal - sal.mean(), gt - gt.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if denom == 0:
        raise MetricError("CC is undefined when either map is constant")
    return float((a * b).sum() / denom)


def sim(saliency_map: np.ndarray, fixation_density: np.ndarray, convention: str = "mit") -> float:
    """Similarity (histogram intersection): the sum of the pixel-wise minima of
    the two maps as distributions. 1 for identical distributions, 0 for
    disjoint ones. MIT (SIM.m): each map min-max normalised, then scaled to
    sum 1. pysaliency: no min-max; a map is shifted only if it has negative
    values, then scaled to sum 1 (so a map's offset counts)."""
    _check_convention(convention)
    gt = _check_map(fixation_density, "fixation density")
    sal = resize_to(saliency_map, gt.shape, convention)
    if convention == "mit":
        p = _as_distribution(_normalize_minmax(sal), "saliency map")
        q = _as_distribution(_normalize_minmax(gt), "fixation density")
    else:
        p = _as_distribution(sal - min(sal.min(), 0.0), "saliency map")
        q = _as_distribution(gt - min(gt.min(), 0.0), "fixation density")
    return float(np.minimum(p, q).sum())


def kldiv(saliency_map: np.ndarray, fixation_density: np.ndarray) -> float:
    """KL divergence of the saliency map from the fixation distribution:
    sum Q log(eps + Q / (P + eps)), with P and Q the maps scaled to sum 1 and
    eps = 2.2204e-16 (MIT KLdiv.m). Lower is better; 0 for identical maps."""
    gt = _check_map(fixation_density, "fixation density")
    sal = resize_to(saliency_map, gt.shape)
    if sal.min() < 0 or gt.min() < 0:
        raise MetricError("KLDiv needs non-negative maps")
    p = _as_distribution(sal, "saliency map")
    q = _as_distribution(gt, "fixation density")
    return float(np.sum(q * np.log(EPS + q / (p + EPS))))


def emd(saliency_map: np.ndarray, fixation_density: np.ndarray, downsize: int = 32) -> float:
    """Earth mover's distance between the two maps as distributions, with
    Euclidean ground distance in pixels of the reduced maps (MIT EMD.m shrinks
    both maps by 1/32 first, then scales each to sum 1). Solved exactly with
    POT (Python Optimal Transport, ``ot.emd2``)."""
    import ot
    from skimage.transform import resize

    gt = _check_map(fixation_density, "fixation density")
    sal = resize_to(saliency_map, gt.shape)
    shape = (max(1, int(round(gt.shape[0] / downsize))), max(1, int(round(gt.shape[1] / downsize))))
    p = _as_distribution(np.clip(resize(sal, shape, order=3, anti_aliasing=True), 0, None), "saliency map")
    q = _as_distribution(np.clip(resize(gt, shape, order=3, anti_aliasing=True), 0, None), "fixation density")
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    coords = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)
    cost = ot.dist(coords, coords, metric="euclidean")
    return float(ot.emd2(p.ravel(), q.ravel(), cost, numItermax=1_000_000))


#: Metric name -> (function, what it needs, higher is better).
METRICS = {
    "AUC_Judd": (auc_judd, "fixations", True),
    "AUC_Borji": (auc_borji, "fixations", True),
    "sAUC": (auc_shuffled, "fixations+other", True),
    "NSS": (nss, "fixations", True),
    "CC": (cc, "density", True),
    "SIM": (sim, "density", True),
    "KLDiv": (kldiv, "density", False),
    "IG": (information_gain, "fixations+baseline", True),
    "EMD": (emd, "density", False),
}
