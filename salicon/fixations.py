"""Fixation maps: from fixation points to the maps that metrics and training use.

A *fixation map* here is the blurred fixation density: a 1 at every fixated
pixel (all subjects), convolved with a Gaussian, min-max normalised to [0, 1]
(OSIE's convention: sigma 24 px, a 168x168 window, zeros outside the image),
computed exactly as MATLAB's ``imfilter(map, fspecial('gaussian', ...))``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: OSIE's fixation-map blur: Gaussian sigma in pixels and window size.
OSIE_SIGMA = 24.0
OSIE_WINDOW = 168


@dataclass
class Fixations:
    """Fixation points of one image: parallel arrays, 0-based pixel coordinates."""

    x: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    duration: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.size)


def gaussian_window(sigma: float = OSIE_SIGMA, size: int = OSIE_WINDOW) -> np.ndarray:
    """MATLAB's fspecial('gaussian', size, sigma) as a 1-D factor (sums to 1).

    Taps sit at offsets -(size-1)/2 .. (size-1)/2 from the window centre.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-x * x / (2.0 * sigma * sigma))
    return w / w.sum()


def fixation_density(fixations: Fixations, shape: Sequence[int], sigma: float = OSIE_SIGMA,
                     window: int | None = OSIE_WINDOW) -> np.ndarray:
    """The blurred fixation map of ``fixations`` on an image of ``shape`` (H, W).

    A binary map holds a 1 at each fixated pixel (rounded, clipped into the
    image; repeated pixels count once) and is filtered as MATLAB's
    imfilter(map, fspecial('gaussian', window, sigma)) does: correlation, zero
    padding, the window's centre at index floor((window + 1) / 2). The result is
    min-max normalised to [0, 1]. ``window=None`` uses a window of 6 sigma + 1.
    Computed as a sum of separable stamps, one per fixated pixel.
    """
    h, w = int(shape[0]), int(shape[1])
    if window is None:
        window = 2 * int(np.ceil(3 * sigma)) + 1
    rows, cols = fixated_pixels(fixations, (h, w))
    density = np.zeros((h, w))
    if rows.size:
        taps = gaussian_window(sigma, window)
        centre = (window + 1) // 2 - 1  # MATLAB's 1-based floor((n+1)/2), 0-based here
        # output(i) = sum_k taps[k] * map(i + k - centre): stamp taps reversed at each fixation.
        ky = _stamps(rows, h, taps, centre)
        kx = _stamps(cols, w, taps, centre)
        density = ky.T @ kx
    lo, hi = density.min(), density.max()
    return ((density - lo) / (hi - lo)) if hi > lo else np.zeros((h, w))


def _stamps(positions: np.ndarray, length: int, taps: np.ndarray, centre: int) -> np.ndarray:
    """(n, length) rows: the response at every pixel i to a 1 at ``positions[j]``."""
    i = np.arange(length)[None, :]
    k = positions[:, None] - i + centre  # tap index that links pixel i to the fixation
    valid = (k >= 0) & (k < taps.size)
    return np.where(valid, taps[np.clip(k, 0, taps.size - 1)], 0.0)


def fixated_pixels(fixations: Fixations, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Unique (row, col) pixels of the fixations, rounded half up and clipped."""
    h, w = int(shape[0]), int(shape[1])
    if not len(fixations):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.clip(np.floor(fixations.y + 0.5).astype(np.int64), 0, h - 1)
    cols = np.clip(np.floor(fixations.x + 0.5).astype(np.int64), 0, w - 1)
    flat = np.unique(rows * w + cols)
    return flat // w, flat % w


def binary_fixation_map(fixations: Fixations, shape: Sequence[int]) -> np.ndarray:
    """Boolean HxW map with True at every fixated pixel."""
    out = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
    rows, cols = fixated_pixels(fixations, shape)
    out[rows, cols] = True
    return out


def area_resize(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a 2-D map by area averaging (each output cell is the mean of the
    input area it covers), for downsampling fixation maps to the net's output."""
    from skimage.transform import resize_local_mean
    return resize_local_mean(np.asarray(array, dtype=np.float64), tuple(int(s) for s in size))


def training_target(fixation_map: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The net's target: the fixation map area-averaged to ``size`` and scaled
    to a maximum of 1 (float32)."""
    small = area_resize(fixation_map, size)
    peak = small.max()
    return (small / peak if peak > 0 else small).astype(np.float32)


def blur_binary(binary: np.ndarray, sigma: float, window: int | None) -> np.ndarray:
    """The continuous fixation map of a binary one (see fixation_density)."""
    rows, cols = np.nonzero(binary)
    fix = Fixations(cols.astype(np.float64), rows.astype(np.float64), np.zeros(rows.size, np.int64))
    return fixation_density(fix, binary.shape, sigma, window)


__all__ = ["OSIE_SIGMA", "OSIE_WINDOW", "Fixations", "gaussian_window", "fixation_density", "fixated_pixels",
           "binary_fixation_map", "area_resize", "training_target", "blur_binary"]
