"""Pre- and post-processing of the published OpenSALICON ``compute_saliency``.

Input: RGB -> BGR, minus the VGG mean pixel, times ``input_scale`` (the
published code divides by 255, and its pretrained weights expect that), then
resized to each net input's size with scipy.ndimage.zoom (cubic spline,
order 3, mode 'nearest', aspect ratio not preserved). Output: the 38x50 map
min-max normalised to [0, 1] and zoomed the same way to the image's size.

scipy's spline zoom is separable and linear, so resizing a channel X is exactly
A_h @ X @ A_w^T with one (out, in) matrix per axis. ``resize="spline"`` (the
default) builds those matrices once per size pair by zooming an identity
matrix with scipy itself and then resizes with two matrix products: the same
numbers as scipy up to float32 rounding, tens of times faster, and runnable on
the GPU. ``resize="scipy"`` calls scipy.ndimage.zoom exactly as published.
``resize="bilinear"`` is linear interpolation with aligned corners.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.ndimage
import torch

#: VGG-16's ImageNet mean pixel, BGR order.
MEAN_BGR = (103.939, 116.779, 123.68)
#: Input scale of the published code and its pretrained weights.
PUBLISHED_INPUT_SCALE = 1.0 / 255.0
#: Resize methods accepted by :func:`resize_chw`.
RESIZE_METHODS = ("spline", "scipy", "bilinear")


@lru_cache(maxsize=64)
def zoom_matrix(n_out: int, n_in: int, order: int = 3) -> np.ndarray:
    """(n_out, n_in) float64 matrix equal to scipy.ndimage.zoom(order=order,
    mode='nearest') along one axis from n_in to n_out samples (order 3: the
    published cubic spline; order 1: linear with aligned end points)."""
    # Zoom the columns of an identity matrix along axis 0 (axis 1 keeps its
    # samples exactly); in blocks, so huge images do not need an n_in^2 array.
    mat = np.empty((n_out, n_in), dtype=np.float64)
    block = 1024
    for start in range(0, n_in, block):
        stop = min(n_in, start + block)
        eye = np.zeros((n_in, stop - start))
        eye[np.arange(start, stop), np.arange(stop - start)] = 1.0
        cols = scipy.ndimage.zoom(eye, (n_out / n_in, 1.0), order=order, mode="nearest")
        if cols.shape[0] != n_out:  # zoom rounds the output size; it must be n_out
            raise AssertionError(f"zoom gave {cols.shape[0]} rows, expected {n_out}")
        mat[:, start:stop] = cols
    mat.setflags(write=False)
    return mat


@lru_cache(maxsize=64)
def _matrices(method: str, size: tuple[int, int], in_size: tuple[int, int], device: torch.device,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    order = 3 if method == "spline" else 1
    ah = torch.tensor(zoom_matrix(size[0], in_size[0], order), dtype=dtype, device=device)
    aw = torch.tensor(zoom_matrix(size[1], in_size[1], order), dtype=dtype, device=device)
    return ah, aw


def resize_chw(x: torch.Tensor, size: Sequence[int], method: str = "spline") -> torch.Tensor:
    """Resize the last two axes of ``x`` (..., H, W) to ``size`` (height, width)."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, not {method!r}")
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if method == "scipy":
        arr = x.detach().cpu().numpy()
        factors = (1.0,) * (arr.ndim - 2) + (size[0] / arr.shape[-2], size[1] / arr.shape[-1])
        out = scipy.ndimage.zoom(arr.astype(np.float64), factors, order=3, mode="nearest")
        if out.shape[-2:] != size:  # float rounding of the zoom factor
            out = resize_chw(torch.from_numpy(out), size, "spline").numpy()
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device, x.dtype)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    ah, aw = _matrices(method, size, (int(x.shape[-2]), int(x.shape[-1])), x.device, compute)
    return (ah @ x.to(compute) @ aw.T).to(x.dtype)


def image_to_blob(rgb: np.ndarray | torch.Tensor, input_scale: float = PUBLISHED_INPUT_SCALE,
                  mean_bgr: Sequence[float] = MEAN_BGR) -> torch.Tensor:
    """HxWx3 RGB (0..255) -> 3xHxW BGR float32 tensor, mean-subtracted and scaled."""
    x = torch.as_tensor(rgb).float()
    x = x.permute(2, 0, 1).flip(0)
    mean = torch.tensor(mean_bgr, dtype=torch.float32, device=x.device)[:, None, None]
    return (x - mean) * input_scale


def saliency_to_image_size(sal: torch.Tensor, size: Sequence[int], method: str = "spline") -> np.ndarray:
    """The net's HxW map, min-max normalised, resized to ``size`` and clipped to [0, 1].

    A constant map (no spatial information) becomes all zeros. The clip only
    removes the small over- and undershoot of cubic interpolation.
    """
    sal = sal.detach().double()
    lo, hi = sal.min(), sal.max()
    if not torch.isfinite(hi - lo):
        raise FloatingPointError("the net produced NaN or infinite saliency values")
    if hi - lo <= 0:
        return np.zeros(tuple(int(s) for s in size), dtype=np.float32)
    sal = (sal - lo) / (hi - lo)
    out = resize_chw(sal, size, method)
    return out.clamp_(0.0, 1.0).float().cpu().numpy()

