#!/usr/bin/env python
"""Peak resident memory of one map of a huge image, whole and stage by stage.

For each runtime and precision: ``salicon predict BIG.png -o OUT --overlay
--npy`` in a child process (its peak resident set, as ``/usr/bin/time -v``
reports it), then the same steps one by one in another child that samples its
own resident set every 2 ms: the model loaded, the image decoded, the net's
inputs made, the forward pass, the post-processing to the image's size, and the
three files written (map PNG, .npy, overlay PNG). Each stage's row says the
peak during it and how far above the memory held before it that peak went.

    python benchmarks/bench_memory.py --json benchmarks/results/memory_2core.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONFIGS = {
    "int8 (CPU default)": ["--precision", "auto"],
    "openvino fp32": ["--runtime", "openvino", "--precision", "fp32"],
    "pytorch fp32": ["--runtime", "pytorch", "--precision", "fp32"],
    "onnxruntime fp32": ["--runtime", "onnxruntime", "--precision", "fp32"],
}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process's resident set in bytes, now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Sampler:
    """The resident set's peak between :meth:`stage` calls, sampled every 2 ms."""

    def __init__(self):
        self.peak = rss()
        self.rows: list[dict] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def stage(self, name: str, fn):
        """Run ``fn`` as the stage ``name``; its result."""
        gc.collect()
        before = rss()
        self.peak = before
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        self.peak = max(self.peak, rss())
        self.rows.append({"stage": name, "before_gb": before / 1e9, "peak_gb": self.peak / 1e9,
                          "above_gb": (self.peak - before) / 1e9, "seconds": round(seconds, 2)})
        return result

    def close(self):
        self._stop = True
        self._thread.join()


class _Handover(dict):
    """A dict whose items are handed over once (so the stage after owns them)."""

    def popitem_all(self) -> dict:
        items = dict(self)
        self.clear()
        return items


def staged(image: str, options: list[str]) -> dict:
    """The stages of one map in this process (see the module's docstring)."""
    from salicon.cli import build_parser
    from salicon.cli.options import build_salicon
    from salicon.image import load_image, load_image_rows
    from salicon.outputs import OutputSpec, npy_parts, overlay_png

    args = build_parser().parse_args(["predict", image, "-o", "unused", *options])
    sampler = Sampler()
    model = sampler.stage("load model", lambda: build_salicon(args))
    # As salicon predict: a worker decodes and makes the net's inputs, and lets the pixels go.
    pixels = _Handover({"rgb": sampler.stage("decode", lambda: load_image(image, as_float=False, max_pixels=None))})
    spec = model.preprocess_spec()
    inputs = _Handover(sampler.stage("net inputs", lambda: spec.inputs(pixels.popitem_all()["rgb"],
                                                                      model.input_device, False)))
    size = _image_size(image)
    raw = sampler.stage("forward", lambda: model.forward({k: v[None] for k, v in inputs.popitem_all().items()}))
    saliency_map = sampler.stage("post-process", lambda: model.postprocess(raw[0], size))
    # The files, made as write_map makes them (npy first, then the overlay from the image decoded
    # again, then the map), each let go before the next.
    sampler.stage(".npy", lambda: sum(len(p) for p in npy_parts(saliency_map)))
    sampler.stage("overlay PNG", lambda: len(overlay_png(load_image_rows(image, max_pixels=None), saliency_map)))
    sampler.stage("map PNG", lambda: len(OutputSpec().encode_map(saliency_map)))
    sampler.close()
    return {"stages": sampler.rows, "peak_gb": max(r["peak_gb"] for r in sampler.rows)}


def _image_size(image: str) -> tuple[int, int]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # the benchmark's own picture
    with Image.open(image) as img:
        return img.height, img.width


def cli_peak(image: str, options: list[str]) -> tuple[float, float, int]:
    """(peak resident GB, seconds, exit status) of ``salicon predict`` on ``image``."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from salicon.cli import main; sys.exit(main())",
                                 "predict", image, "-o", out, "--overlay",
                                 "--npy", "--device", "cpu", "-q", *options])
        _, status, usage = os.wait4(proc.pid, 0)
        return usage.ru_maxrss * 1024 / 1e9, time.perf_counter() - start, os.waitstatus_to_exitcode(status)


def make_image(path: Path, side: int) -> None:
    """A ``side`` x ``side`` PNG with structure at every scale (a small random picture enlarged)."""
    import numpy as np
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own picture, written by this script
    small = np.random.default_rng(0).integers(0, 256, (130, 130, 3), dtype=np.uint8)
    Image.fromarray(small).resize((side, side), Image.BILINEAR).save(path, compress_level=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=13000, help="the square test image's side (default 13000)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which of: " + ", ".join(CONFIGS))
    parser.add_argument("--image", help="use this image instead of making one")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("IMAGE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(staged(args.child[0], CONFIGS[args.child[1]])))
        return 0
    from machine import write_rows

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image or str(Path(tmp) / f"big_{args.size}.png")
        if not args.image:
            make_image(Path(image), args.size)
        for name in args.configs.split(","):
            peak, seconds, status = cli_peak(image, CONFIGS[name])
            child = subprocess.run([sys.executable, __file__, "--child", image, name], capture_output=True,
                                   text=True)
            if child.returncode != 0:
                print(child.stderr[-2000:], file=sys.stderr)
                return 1
            stages = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append({"config": name, "options": CONFIGS[name], "predict_peak_gb": round(peak, 3),
                         "predict_seconds": round(seconds, 1), "predict_exit": status, **stages})
            print(f"{name:>20}: salicon predict peak {peak:.2f} GB ({seconds:.0f} s, exit {status}); stages:")
            for r in stages["stages"]:
                print(f"{'':>22}{r['stage']:<14} peak {r['peak_gb']:6.2f} GB  (+{r['above_gb']:5.2f})  "
                      f"{r['seconds']:6.1f} s")
    write_rows(args.json, rows, image=f"{args.size}x{args.size} PNG" if not args.image else args.image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
