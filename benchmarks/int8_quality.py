"""Quality of a model (default: the shipped one) at each precision, measured as its model card is:
`salicon evaluate`'s metrics on the OSIE test split for PyTorch fp32 (the exact
path), OpenVINO int8 and OpenVINO bf16, each with the plain output
(--postprocess none) and the default post-processing, in one run; plus, per
image, the correlation of the raw 38x50 maps of int8 and bf16 with fp32.

    python benchmarks/int8_quality.py --data ../shared/data/osie --json benchmarks/results/osie_test_int8.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_features, write_report  # noqa: E402

from salicon import Salicon  # noqa: E402
from salicon.data import open_dataset  # noqa: E402
from salicon.evaluate import evaluate, read_split  # noqa: E402

PRECISIONS = {"fp32": {"precision": "fp32", "runtime": "pytorch"},
              "int8": {"precision": "int8", "runtime": "openvino"},
              "bf16": {"precision": "bf16", "runtime": "openvino"}}
METRICS = ["AUC_Judd", "sAUC", "NSS", "CC", "SIM", "KLDiv", "IG"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="OSIE folder")
    parser.add_argument("--split", type=Path, default=ROOT / "splits" / "osie_test.txt")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick check)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model", default="salicon_osie", help="a registered model's name (default salicon_osie)")
    args = parser.parse_args()

    models = {name: Salicon(args.model, device="cpu", **kw) for name, kw in PRECISIONS.items()}
    posts = {spec: models["fp32"].resolve_postprocess(spec) for spec in ("none", "default")}
    labels = [f"{m}[{p}]" for m in PRECISIONS for p in posts]
    raw_cc: dict[str, list[float]] = {"int8": [], "bf16": []}
    seconds = {name: [] for name in PRECISIONS}

    def predict(sample):
        out, raws = {}, {}
        for name, model in models.items():
            inputs, size = model.preprocess(sample.image_path)
            start = time.perf_counter()
            raws[name] = model.forward({k: v[None] for k, v in inputs.items()})[0]
            seconds[name].append(time.perf_counter() - start)
            for spec, post in posts.items():
                out[f"{name}[{spec}]"] = model.postprocess(raws[name], size, post)
        for name in raw_cc:
            raw_cc[name].append(float(np.corrcoef(raws[name].numpy().ravel(), raws["fp32"].numpy().ravel())[0, 1]))
        return out

    names = read_split(args.split)[:args.limit] if args.limit else read_split(args.split)
    start = time.perf_counter()
    result = evaluate(open_dataset(f"osie:{args.data}"), predict, names, METRICS, baselines=False,
                      model_name=labels, progress=lambda n: print(".", end="", flush=True, file=sys.stderr))
    print(file=sys.stderr)
    summary = result.summary()
    means = {label: {m: summary[label][m]["mean"] for m in METRICS} for label in labels}
    differences = {f"{name}[{spec}]": {m: means[f"{name}[{spec}]"][m] - means[f"fp32[{spec}]"][m] for m in METRICS}
                   for name in ("int8", "bf16") for spec in posts}
    report = {
        "command": "python benchmarks/int8_quality.py --data OSIE" + (f" --limit {args.limit}" if args.limit else "")
                   + (f" --model {args.model}" if args.model != "salicon_osie" else ""),
        "model": args.model,
        "split": str(args.split.relative_to(ROOT)) if args.split.resolve().is_relative_to(ROOT) else str(args.split),
        "images": len(names), "wall_time_s": round(time.perf_counter() - start, 1),
        "machine": {**cpu_features()},
        "means": means, "differences_from_fp32": differences,
        "raw_map_cc_with_fp32": {name: {"min": min(v), "median": float(np.median(v)), "mean": float(np.mean(v))}
                                 for name, v in raw_cc.items()},
        "forward_s_median": {name: float(np.median(v)) for name, v in seconds.items()},
    }
    for label in labels:
        print(f"{label:16s} " + " ".join(f"{m} {means[label][m]:.4f}" for m in METRICS))
    for name, stats in report["raw_map_cc_with_fp32"].items():
        print(f"raw 38x50 maps, {name} vs fp32: CC min {stats['min']:.5f}, median {stats['median']:.5f}")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
