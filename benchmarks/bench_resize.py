#!/usr/bin/env python
"""The input resize of ``compute_saliency`` (``preprocess.image_to_inputs``: an
8-bit photo to the fine and coarse blobs) along the zoom matrices' band, with
their negligible tails set to zero, against the dense products with the whole
matrices as before, in one run, steady state (median of --repeat after a
warm-up), with the largest difference between the two.

    python benchmarks/bench_resize.py --json benchmarks/results/resize_2core.json
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import write_rows  # noqa: E402

import salicon.preprocess as pp  # noqa: E402

SIZES = {"salicon.prototxt": [(1200, 1600), (600, 800)], "salicon_fast.prototxt": [(600, 800), (300, 400)]}
PHOTOS = [(600, 800), (1080, 1920), (3000, 4000)]


def timed(rgb: np.ndarray, sizes, repeat: int) -> tuple[float, list[torch.Tensor]]:
    pp._cached_matrices.cache_clear()
    out = pp.image_to_inputs(rgb, sizes)  # warm-up: builds and caches the matrices
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = pp.image_to_inputs(rgb, sizes)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def dense_only(self, matrix, device, dtype):
    """The resize before the band: the whole zoom matrix as it is (its far tails subnormal in float32)."""
    banded_init(self, matrix, device, dtype)
    self.dense = torch.tensor(matrix, dtype=dtype, device=device)
    self.blocks = []


banded_init = pp.Zoom.__init__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for net, sizes in SIZES.items():
        for shape in PHOTOS:
            rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            pp.Zoom.__init__ = banded_init
            banded_s, banded = timed(rgb, sizes, args.repeat)
            pp.Zoom.__init__ = dense_only
            dense_s, dense = timed(rgb, sizes, args.repeat)
            pp.Zoom.__init__ = banded_init
            diff = max(float((a - b).abs().max()) for a, b in zip(banded, dense))
            rows.append({"net": net, "photo": f"{shape[0]}x{shape[1]}", "banded_ms": round(banded_s * 1e3, 1),
                         "dense_ms": round(dense_s * 1e3, 1), "speed_up": round(dense_s / banded_s, 2),
                         "max_abs_diff": diff})
            print(f"{net:22s} {rows[-1]['photo']:>9s}: banded {rows[-1]['banded_ms']:7.1f} ms, dense "
                  f"{rows[-1]['dense_ms']:7.1f} ms ({rows[-1]['speed_up']:.2f}x), max |diff| {diff:.1e}")
    write_rows(args.json, rows, repeat=args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
