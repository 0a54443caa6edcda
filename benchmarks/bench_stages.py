#!/usr/bin/env python
"""Where the time of one ``compute_saliency`` goes: decode, input resize, net,
post-processing and PNG encoding, each timed on its own (median of --repeat
after a warm-up), for each model (salicon_osie, salicon_osie_fast) and
precision (int8 on OpenVINO, the CPU default; PyTorch fp32; OpenVINO bf16), on
photos of three sizes. The stages add up to ``compute_saliency`` plus
``salicon predict``'s encoding.

    python benchmarks/bench_stages.py --repeat 3 --json benchmarks/results/stages_2core.json \
        --configs "int8 (CPU default),pytorch fp32"
    python benchmarks/bench_stages.py --repeat 5 --photos 600x800 --json benchmarks/results/stages_models_2core.json
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import write_rows  # noqa: E402

from salicon import Salicon  # noqa: E402
from salicon.image import load_image  # noqa: E402
from salicon.outputs import png_bytes  # noqa: E402
from salicon.visualize import to_uint8  # noqa: E402

PHOTOS = [(600, 800), (1080, 1920), (3000, 4000)]
MODELS = {"int8 (CPU default)": {"precision": "auto"}, "pytorch fp32": {"precision": "fp32", "runtime": "pytorch"},
          "openvino bf16": {"precision": "bf16", "runtime": "openvino"},
          "salicon_osie_fast int8": {"model": "salicon_osie_fast", "precision": "auto"},
          "salicon_osie_fast openvino bf16": {"model": "salicon_osie_fast", "precision": "bf16", "runtime": "openvino"},
          "salicon_osie_fast pytorch fp32": {"model": "salicon_osie_fast", "precision": "fp32",
                                             "runtime": "pytorch"}}


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def photo_jpeg(shape: tuple[int, int], seed: int = 0) -> bytes:
    """A smooth random photo-like image as JPEG bytes (quality 90)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (shape[0] // 40 + 2, shape[1] // 40 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((shape[1], shape[0]), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def stages(model: Salicon, data: bytes, repeat: int) -> dict[str, float]:
    rgb = load_image(data, as_float=False)
    size = rgb.shape[:2]
    spec = model.preprocess_spec()
    inputs = {k: v[None] for k, v in spec.inputs(rgb, model.input_device, False).items()}
    raw = model.forward(inputs)
    saliency = model.postprocess(raw[0], size)
    times = {
        "decode": median_time(lambda: load_image(data, as_float=False), repeat),
        "resize": median_time(lambda: spec.inputs(rgb, model.input_device, False), repeat),
        "net": median_time(lambda: model.forward(inputs), repeat),
        "postprocess": median_time(lambda: model.postprocess(raw[0], size), repeat),
        "encode_png": median_time(lambda: png_bytes(to_uint8(saliency)), repeat),
        "compute_saliency": median_time(lambda: model.compute_saliency(data), repeat),
    }
    return {k: round(v, 4) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--configs", default=",".join(MODELS), help="which of: " + ", ".join(MODELS))
    parser.add_argument("--photos", default=",".join(f"{h}x{w}" for h, w in PHOTOS),
                        help="photo sizes HxW, comma-separated (default: 600x800,1080x1920,3000x4000)")
    args = parser.parse_args()
    rows = []
    for label in args.configs.split(","):
        options = dict(MODELS[label])
        model = Salicon(options.pop("model", None), device="cpu", **options)
        for shape in [tuple(int(v) for v in p.split("x")) for p in args.photos.split(",")]:
            times = stages(model, photo_jpeg(shape), args.repeat)
            rows.append({"model": label, "name": model.name, "runtime": model.runtime, "precision": model.precision,
                         "photo": f"{shape[0]}x{shape[1]}", "seconds": times})
            print(f"{label:20s} {shape[0]:>5d}x{shape[1]:<5d} " + "  ".join(f"{k} {v:.3f}" for k, v in times.items()))
    write_rows(args.json, rows, repeat=args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
