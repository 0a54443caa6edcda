#!/usr/bin/env python
"""Training benchmark on the full-size net: data preparation, per-image solver
steps, and the peak memory of a whole `salicon train` run.

    python benchmarks/bench_train.py --data ../shared/data/osie --steps 3 --device cpu
    python benchmarks/bench_train.py --data ../shared/data/osie --steps 200 --device cuda --precision bf16

Runs the real trainer (all images prepared, held-out split, solver steps with
the shipped solver and train prototxt, VGG-16 initialisation when
../shared/weights/vgg16_conv.caffemodel exists) for --steps iterations in a
fresh process, and reports: the time to prepare every image (decode + fixation
map + target), the steady-state step rate (excluding the first --warmup
steps), and the peak resident memory of the process.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VGG16 = ROOT.parent / "shared" / "weights" / "vgg16_conv.caffemodel"


def child(args) -> dict:
    import torch

    from salicon.train import TrainConfig, Trainer
    from salicon.weights import init_from_vgg16

    with tempfile.TemporaryDirectory() as tmp:
        weights = None
        if VGG16.exists():
            net, _ = init_from_vgg16(VGG16, seed=0)
            weights = Path(tmp) / "untrained.caffemodel"
            net.save(weights)
            del net
        messages = []
        cfg = TrainConfig(data=args.data, out=str(Path(tmp) / "run"), weights=str(weights) if weights else None,
                          device=args.device, precision=args.precision, max_iter=args.steps, seed=0,
                          test=args.test, snapshot=0)
        trainer = Trainer(cfg, log=messages.append)
        t = time.perf_counter()
        train, test = trainer.load_data()
        prepare_s = time.perf_counter() - t
        times = []
        order = list(range(len(train)))
        for i in range(args.steps):
            feeds = trainer.feeds(train[order[i % len(train)]])
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            trainer.backend.step(feeds)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        steady = times[args.warmup:] or times
        return {"images": len(train) + len(test), "prepare_s": prepare_s,
                "step_s_median": sorted(steady)[len(steady) // 2], "img_per_s": len(steady) / sum(steady),
                "first_step_s": times[0], "steps": args.steps, "device": str(trainer.device),
                "precision": args.precision,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "gpu": torch.cuda.get_device_name() if trainer.device.type == "cuda" else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "osie"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--test", type=float, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    cmd = [sys.executable, __file__, "--child", "--data", args.data, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--device", args.device, "--precision", args.precision,
           "--test", str(args.test)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    result = json.loads(out.stdout.strip().splitlines()[-1])
    from bench_cpu import machine  # noqa: E402 (same folder)
    result["machine"] = machine()
    print(f"{result['images']} images prepared in {result['prepare_s']:.1f} s; "
          f"{result['steps']} steps on {result['device']} ({result['precision']}): median "
          f"{result['step_s_median']:.3f} s/step = {1 / result['step_s_median']:.2f} img/s; "
          f"peak RSS {result['peak_rss_mb'] / 1024:.2f} GB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
