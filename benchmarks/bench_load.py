"""Time loading the shipped model: the float16 safetensors file against the
same weights as a float32 .caffemodel.

    python benchmarks/bench_load.py [--repeat 5] [--json benchmarks/results/load_2core.json]

For each file: reading the weights alone (formats.read_weights) and building
the model (``Salicon(model)``: the net, the weights copied in, channels_last).
The first call of each is reported apart; the steady state is the median of
``--repeat`` calls after it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_features  # noqa: E402

from salicon import Salicon, formats  # noqa: E402
from salicon.export import export_caffemodel  # noqa: E402
from salicon.pretrained import default_model_path  # noqa: E402


def timed(fn, repeat: int) -> dict:
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"first_s": round(first, 3), "median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shipped = default_model_path()
    with tempfile.TemporaryDirectory() as tmp:
        float32 = export_caffemodel(tmp, name="float32")["caffemodel"]
        results = {}
        for label, path in (("safetensors_fp16", shipped), ("caffemodel_fp32", float32)):
            results[label] = {
                "file_mb": round(path.stat().st_size / 1e6, 1),
                "read_weights": timed(lambda p=path: formats.read_weights(p), args.repeat),
                "Salicon()": timed(lambda p=path: Salicon(p, device="cpu", precision="fp32"), args.repeat),
            }
            print(label, json.dumps(results[label]))
    record = {"command": "python benchmarks/bench_load.py", "machine": {
        "cpu": cpu_features()["model"], "cores": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version()},
        "results": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
