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

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.ndimage
import torch

#: VGG-16's ImageNet mean pixel, BGR order.
MEAN_BGR = (103.939, 116.779, 123.68)
#: Input scale of the published code and its pretrained weights.
PUBLISHED_INPUT_SCALE = 1.0 / 255.0
#: Resize methods accepted by :func:`resize_chw`.
RESIZE_METHODS = ("spline", "scipy", "bilinear")


#: Zoom matrices up to this many entries are cached (a few per size pair in
#: use); those of huge images are rebuilt, so the cache stays small.
_CACHE_ENTRIES = 4_000_000


def zoom_matrix(n_out: int, n_in: int, order: int = 3) -> np.ndarray:
    """(n_out, n_in) float64 matrix equal to scipy.ndimage.zoom(order=order,
    mode='nearest') along one axis from n_in to n_out samples (order 3: the
    published cubic spline; order 1: linear with aligned end points)."""
    if n_out * n_in <= _CACHE_ENTRIES:
        return _cached_zoom_matrix(n_out, n_in, order)
    if n_in > LOCAL_FROM:
        return _build_zoom_matrix_local(n_out, n_in, order)
    return _build_zoom_matrix(n_out, n_in, order)


def _build_zoom_matrix(n_out: int, n_in: int, order: int) -> np.ndarray:
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


_cached_zoom_matrix = lru_cache(maxsize=64)(_build_zoom_matrix)

#: Longer input axes have their zoom matrix built window by window (:func:`_build_zoom_matrix_local`).
LOCAL_FROM = 4096
#: Samples around each block of columns that the local build keeps: the spline prefilter's
#: response falls by 0.268 per sample, so what lies further moves an entry by < 1e-30.
_WINDOW = 96


def _build_zoom_matrix_local(n_out: int, n_in: int, order: int, block: int = 1024) -> np.ndarray:
    """:func:`_build_zoom_matrix` in time and memory linear in ``n_in``: each block
    of columns (unit impulses) is interpolated by scipy on a window of ``_WINDOW``
    samples either side, at the output coordinates zoom uses (i (n_in - 1) / (n_out - 1)),
    for the output rows within ``_WINDOW / 2`` of the block; the rest of the
    column is below 1e-20 and left at zero."""
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    coords = np.arange(n_out, dtype=np.float64) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 1.0)
    for start in range(0, n_in, block):
        stop = min(n_in, start + block)
        lo, hi = max(0, start - _WINDOW), min(n_in, stop + _WINDOW)
        i0 = int(np.searchsorted(coords, start - _WINDOW // 2))
        i1 = int(np.searchsorted(coords, stop + _WINDOW // 2))
        if i0 >= i1:
            continue
        impulses = np.zeros((hi - lo, stop - start))
        impulses[np.arange(start, stop) - lo, np.arange(stop - start)] = 1.0
        rows = np.broadcast_to((coords[i0:i1] - lo)[:, None], (i1 - i0, stop - start))
        cols = np.broadcast_to(np.arange(stop - start, dtype=np.float64)[None, :], rows.shape)
        mat[i0:i1, start:stop] = scipy.ndimage.map_coordinates(impulses, [rows, cols], order=order, mode="nearest")
    mat.setflags(write=False)
    return mat


#: Entries of a zoom matrix below this fraction of the matrix's largest are left out of
#: its band: the cubic spline's prefilter decays by 0.268 per sample, so the band is a few
#: dozen samples wide, and what is left out moves a resized value by < 1e-9 of its range.
BAND_TOLERANCE = 1e-12
#: Output rows per dense block of a banded zoom.
BAND_BLOCK = 128


class Zoom:
    """One axis's resize as a linear operator: the zoom matrix A (n_out x n_in),
    applied as dense blocks along its band (each block of output rows reads only
    the input rows its spline weights reach) when that saves most of the
    arithmetic, else as one dense product. Same numbers as A @ x up to the
    entries left out (< BAND_TOLERANCE of the largest) and float rounding."""

    def __init__(self, matrix: np.ndarray, device: torch.device, dtype: torch.dtype):
        self.n_out, self.n_in = matrix.shape
        tolerance = BAND_TOLERANCE * max(float(matrix.max()), -float(matrix.min()))

        def kept(rows: np.ndarray) -> np.ndarray:
            # The entries left out become exact zeros: the spline's far tails are subnormal in float32,
            # and products with subnormals run about ten times slower on x86 CPUs.
            return np.where(np.abs(rows) > tolerance, rows, 0.0)

        # Each block of output rows and the input columns its kept entries reach, a block at a
        # time (a huge image's matrix gets no full-size temporaries).
        extents: list[tuple[int, int, int, int]] = []
        work, banded = 0, True
        for r0 in range(0, self.n_out, BAND_BLOCK):
            r1 = min(self.n_out, r0 + BAND_BLOCK)
            keep = np.abs(matrix[r0:r1]) > tolerance
            if not keep.any(axis=1).all():  # a row with no weight at all (never for a zoom): stay dense
                banded = False
                break
            columns = np.flatnonzero(keep.any(axis=0))
            extents.append((r0, r1, int(columns[0]), int(columns[-1]) + 1))
            work += (r1 - r0) * (extents[-1][3] - extents[-1][2])
        self.blocks: list[tuple[int, int, int, torch.Tensor]] = []
        self.dense: torch.Tensor | None = None
        if banded and work <= 0.5 * self.n_out * self.n_in:  # a band: worth the blocks' overhead
            # The blocks hold every entry that counts; a huge image's matrix is not kept.
            self.blocks = [(r0, r1, c0, torch.tensor(kept(matrix[r0:r1, c0:c1]), dtype=dtype, device=device))
                           for r0, r1, c0, c1 in extents]
        else:
            self.dense = torch.tensor(kept(matrix), dtype=dtype, device=device)

    def _dense(self) -> torch.Tensor:
        assert self.dense is not None, "a banded operator has blocks, not a dense matrix"
        return self.dense

    @property
    def entries(self) -> int:
        """How many numbers this operator keeps."""
        return sum(b[3].numel() for b in self.blocks) if self.blocks else self._dense().numel()

    def matrix_rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of the (truncated) zoom matrix, dense."""
        if not self.blocks:
            return self._dense()[start:stop]
        part = torch.zeros((stop - start, self.n_in), dtype=self.blocks[0][3].dtype, device=self.blocks[0][3].device)
        for r0, r1, c0, block in self.blocks:
            lo, hi = max(r0, start), min(r1, stop)
            if lo < hi:
                part[lo - start:hi - start, c0:c0 + block.shape[1]] = block[lo - r0:hi - r0]
        return part

    @property
    def banded(self) -> bool:
        return bool(self.blocks)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """A @ x for x of shape (..., n_in, k): resized along its second-to-last axis."""
        if not self.blocks:
            return self._dense() @ x
        out = x.new_empty((*x.shape[:-2], self.n_out, x.shape[-1]))
        for r0, r1, c0, block in self.blocks:
            torch.matmul(block, x[..., c0:c0 + block.shape[1], :], out=out[..., r0:r1, :])
        return out

    def cols(self, x: torch.Tensor) -> torch.Tensor:
        """x @ A^T for x of shape (..., k, n_in): resized along its last axis."""
        if not self.blocks:
            return x @ self._dense().T
        # Along rows, on a transposed copy: each block then reads whole contiguous rows (a product
        # with column slices of x falls off the fast BLAS path and takes tens of times longer).
        return self.rows(x.transpose(-1, -2).contiguous()).transpose(-1, -2).contiguous()

    def along(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """x resized along axis ``dim``."""
        return self.rows(x.movedim(dim, -2)).movedim(-2, dim)


def _build_matrices(method: str, size: tuple[int, int], in_size: tuple[int, int], device: torch.device,
                    dtype: torch.dtype) -> tuple[Zoom, Zoom]:
    order = 3 if method == "spline" else 1
    return (Zoom(zoom_matrix(size[0], in_size[0], order), device, dtype),
            Zoom(zoom_matrix(size[1], in_size[1], order), device, dtype))


class _ZoomCache:
    """The last 64 operator pairs built, those that keep few enough numbers
    (banded ones almost always do: a 4000-pixel axis to 1600 keeps 0.6 M)."""

    def __init__(self, size: int = 64):
        self.size = size
        self.items: dict = {}

    def get(self, *key) -> tuple[Zoom, Zoom]:
        if key in self.items:
            self.items[key] = self.items.pop(key)  # most recently used last
            return self.items[key]
        built = _build_matrices(*key)
        if sum(z.entries for z in built) <= _CACHE_ENTRIES:
            self.items[key] = built
            while len(self.items) > self.size:
                self.items.pop(next(iter(self.items)))
        return built

    def cache_clear(self) -> None:
        self.items.clear()


_cached_matrices = _ZoomCache()


def _matrices(method: str, size: tuple[int, int], in_size: tuple[int, int], device: torch.device,
              dtype: torch.dtype) -> tuple[Zoom, Zoom]:
    return _cached_matrices.get(method, size, in_size, device, dtype)


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
    return aw.cols(ah.rows(x.to(compute))).to(x.dtype)


def image_to_blob(rgb: np.ndarray | torch.Tensor, input_scale: float = PUBLISHED_INPUT_SCALE,
                  mean_bgr: Sequence[float] = MEAN_BGR) -> torch.Tensor:
    """HxWx3 RGB (0..255) -> 3xHxW BGR float32 tensor, mean-subtracted and scaled."""
    x = torch.as_tensor(rgb).float()
    x = x.permute(2, 0, 1).flip(0)
    mean = torch.tensor(mean_bgr, dtype=torch.float32, device=x.device)[:, None, None]
    return (x - mean) * input_scale


def image_to_inputs(rgb: np.ndarray, sizes: Sequence[Sequence[int]], method: str = "spline",
                    input_scale: float = PUBLISHED_INPUT_SCALE, mean_bgr: Sequence[float] = MEAN_BGR,
                    device: torch.device | str = "cpu", band: int = 1024) -> list[torch.Tensor]:
    """HxWx3 RGB (0..255, uint8 or float) -> one 3 x h x w BGR blob per size:
    mean-subtracted, scaled and resized, as :func:`image_to_blob` followed by
    :func:`resize_chw`.

    The image is read in bands of ``band`` columns, each converted to float
    only while it is resized along the height, so a huge 8-bit image never
    exists in float32 as a whole (a 13000 x 13000 photo: 0.5 GB as uint8, 2 GB
    in float32).
    """
    device = torch.device(device)
    if method == "scipy":  # the published whole-image call
        blob = image_to_blob(torch.from_numpy(np.array(rgb)).to(device), input_scale, mean_bgr)
        return [resize_chw(blob, size, method) for size in sizes]
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    pairs = [(int(h), int(w)) for h, w in sizes]
    mats = [_matrices(method, size, (height, width), device, torch.float32) for size in pairs]
    columns = [torch.empty((3, size[0], width), dtype=torch.float32, device=device) for size in pairs]
    for start in range(0, width, band):
        stop = min(width, start + band)
        chunk = torch.from_numpy(np.array(rgb[:, start:stop])).to(device).float()  # a writable copy
        for c in range(3):  # BGR channel c is RGB channel 2 - c
            x = (chunk[:, :, 2 - c] - float(mean_bgr[c])) * input_scale
            for (ah, _), out in zip(mats, columns):
                out[c, :, start:stop] = ah.rows(x) if ah.n_out != height else x
    return [out if aw.n_out == width else aw.cols(out) for (_, aw), out in zip(mats, columns)]


def image_to_inputs_nhwc(rgb: np.ndarray | torch.Tensor, sizes: Sequence[Sequence[int]], method: str = "spline",
                         input_scale: float = PUBLISHED_INPUT_SCALE, mean_bgr: Sequence[float] = MEAN_BGR,
                         device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """:func:`image_to_inputs` computed in the image's own H x W x 3 order: each
    blob is returned as a 3 x h x w view of an h x w x 3 tensor, i.e. already in
    channels_last memory order, so a channels_last net takes it without a copy.

    The 8-bit image goes to ``device`` as it is and becomes float there (the
    whole image at once: meant for a GPU, not for huge images on small hosts).
    """
    if method == "scipy":  # scipy runs on the host
        host = rgb.cpu().numpy() if isinstance(rgb, torch.Tensor) else np.asarray(rgb)
        return [b.unsqueeze(0).contiguous(memory_format=torch.channels_last)[0]
                for b in image_to_inputs(host, sizes, method, input_scale, mean_bgr, device)]
    device = torch.device(device)
    if isinstance(rgb, np.ndarray) and not rgb.flags.writeable:  # a decoder's read-only buffer
        rgb = rgb.copy()
    x = torch.as_tensor(rgb).to(device, non_blocking=True).flip(-1).float()  # BGR
    x = (x - torch.tensor(mean_bgr, dtype=torch.float32, device=device)) * input_scale
    height, width = int(x.shape[0]), int(x.shape[1])
    blobs = []
    for size in sizes:
        size = (int(size[0]), int(size[1]))
        ah, aw = _matrices(method, size, (height, width), device, torch.float32)
        y = x if size[0] == height else ah.rows(x.reshape(height, -1)).reshape(size[0], width, 3)
        y = y if size[1] == width else aw.along(y, 1).contiguous()
        blobs.append(y.permute(2, 0, 1))
    return blobs


def saliency_to_image_size(sal: torch.Tensor, size: Sequence[int], method: str = "spline",
                           band_bytes: int = 64 << 20) -> np.ndarray:
    """The net's HxW map, min-max normalised, resized to ``size`` and clipped to [0, 1].

    A constant map (no spatial information) becomes all zeros. The clip only
    removes the small over- and undershoot of cubic interpolation. The
    float32 result is filled in bands of rows, so a huge output needs no
    float64 copy of its own size.
    """
    sal = sal.detach().double()
    size = (int(size[0]), int(size[1]))
    lo, hi = sal.min(), sal.max()
    if not torch.isfinite(hi - lo):
        raise FloatingPointError("the net produced NaN or infinite saliency values")
    if hi - lo <= 0:
        return np.zeros(size, dtype=np.float32)
    sal = (sal - lo) / (hi - lo)
    if method == "scipy" or tuple(sal.shape) == size:
        return resize_chw(sal, size, method).clamp_(0.0, 1.0).float().cpu().numpy()
    ah, aw = _matrices(method, size, (int(sal.shape[0]), int(sal.shape[1])), sal.device, torch.float64)
    across = aw.cols(sal)  # (h, W): resized along the width once
    out = np.empty(size, dtype=np.float32)
    rows = max(1, band_bytes // (8 * size[1]))
    for start in range(0, size[0], rows):
        stop = min(size[0], start + rows)
        out[start:stop] = (ah.matrix_rows(start, stop) @ across).clamp_(0.0, 1.0).float().cpu().numpy()
    return out
