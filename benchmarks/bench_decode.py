#!/usr/bin/env python
"""How fast the CPU feeds the net: images/s of decoding (and resizing) per core.

Over N generated 800x600 JPEGs (distinct images, decoded from disk), for 1..W
workers of each kind (``salicon.decode``):

  decode          8-bit pixels only (what a GPU needs from the CPU with
                  --decode processes: the resize then runs on the device);
  decode+resize   the net's two inputs (1200x1600 and 600x800, published cubic
                  spline) made on the CPU, as `salicon predict` does on a CPU.

Each row: images/s after a warm-up pass, the median of --repeat passes, and
images/s per worker. Threads and processes side by side show where threads
stop scaling (the GIL) and processes are needed.

    python benchmarks/bench_decode.py --images 48 --json benchmarks/results/decode_2core.json
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def make_jpegs(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 800x600 JPEGs (a sample photo, shifted), quality 90."""
    import numpy as np
    from PIL import Image
    from skimage import data

    base = np.asarray(Image.fromarray(data.astronaut()).resize((800, 600)))
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.roll(base, 7 * i, axis=1)).save(path, quality=90)
        paths.append(path)
    return paths


def rate(fn, paths: list[Path], kind: str, workers: int, repeat: int) -> dict:
    """Images/s of ``fn`` over ``paths`` in ``workers`` workers of ``kind`` (after a warm-up pass)."""
    from salicon.decode import make_executor, prefetch

    with make_executor(kind, workers) as pool:
        list(prefetch(fn, paths[: 2 * workers], pool, 2 * workers))  # start-up and warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _, out in prefetch(fn, paths, pool, 2 * workers):
                if isinstance(out, Exception):
                    raise out
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"kind": kind, "workers": workers, "img_per_s": len(paths) / median,
            "img_per_s_per_worker": len(paths) / median / workers, "seconds": times}


def main() -> int:
    import torch
    from bench_cpu import machine
    from machine import write_report

    from salicon.decode import PreprocessSpec, decode_inputs, decode_rgb
    from salicon.engine import Net
    from salicon.preprocess import MEAN_BGR, PUBLISHED_INPUT_SCALE
    from salicon.pretrained import prototxt_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per worker: the rate per worker is the rate per core
    shapes = {k: tuple(v) for k, v in Net(prototxt_path()).input_shapes.items()}
    spec = PreprocessSpec(shapes, "spline", PUBLISHED_INPUT_SCALE, MEAN_BGR, None)
    jobs = {"decode": functools.partial(decode_rgb, max_pixels=None),
            "decode+resize": functools.partial(decode_inputs, spec=spec)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        for job, fn in jobs.items():
            for kind in ("threads", "processes"):
                for workers in sorted({1, args.max_workers}):
                    row = {"job": job, **rate(fn, paths, kind, workers, args.repeat)}
                    rows.append(row)
                    print(f"{job:14s} {kind:9s} x{workers}: {row['img_per_s']:7.1f} img/s "
                          f"({row['img_per_s_per_worker']:.1f} per worker)", flush=True)
    write_report(args.json, {"machine": machine(), "images": args.images, "image_size": [600, 800],
                             "net_inputs": shapes, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
