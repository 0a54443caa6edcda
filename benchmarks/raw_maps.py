#!/usr/bin/env python
"""The net's raw maps (sigmoid output, before any post-processing) of OSIE
images, for choosing a model's post-processing on training data
(benchmarks/postprocess_study.py --raw-maps).

    python benchmarks/raw_maps.py --osie path/to/osie --model salicon_osie_fast \\
        --names splits/osie_train.txt splits/osie_val.txt -o runs/postprocess_fast/raw_maps.npz

Writes ``<name>`` -> float16 raw map for each image, resumable (the file is
rewritten every 20 images and images already in it are skipped).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from salicon import Salicon  # noqa: E402
from salicon.data import open_dataset  # noqa: E402
from salicon.evaluate import read_split  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--osie", type=Path, required=True)
    parser.add_argument("--model", default="salicon_osie", help="a registered model's name or a weights file")
    parser.add_argument("--runtime", default="pytorch")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--names", type=Path, nargs="+", default=[ROOT / "splits" / "osie_train.txt",
                                                                   ROOT / "splits" / "osie_val.txt"])
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    test = set(read_split(ROOT / "splits" / "osie_test.txt"))
    names = [n for split in args.names for n in read_split(split)]
    if test & set(names):
        raise SystemExit("the test split's images are never used to choose anything")
    samples = {s.name: s for s in open_dataset(f"osie:{args.osie}").samples}
    model = Salicon(args.model, device="cpu", runtime=args.runtime, precision=args.precision)
    out: dict[str, np.ndarray] = {}
    if args.output.exists():
        with np.load(args.output) as z:
            out.update({k: z[k] for k in z.files})
    start = time.perf_counter()
    todo = [n for n in names if n not in out]
    for i, name in enumerate(todo, 1):
        inputs, _ = model.preprocess(samples[name].image_path)
        out[name] = model.forward({k: v[None] for k, v in inputs.items()})[0].numpy().astype(np.float16)
        if i % 20 == 0 or i == len(todo):
            args.output.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.output, **out)
            rate = (time.perf_counter() - start) / i
            print(f"{i}/{len(todo)} ({rate:.2f} s an image)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
