#!/usr/bin/env python
"""One run that measures every GPU path of the project (``benchmarks/gpu_check.sh``).

    bash benchmarks/gpu_check.sh OUT_DIR                        # a GPU machine: under 4 minutes
    bash benchmarks/gpu_check.sh OUT_DIR --device cpu --small   # the same on a CPU, small net: under a minute

Needs only python3 and PyTorch with the repository on PYTHONPATH (the shell
script sets it): no installs, no data set; the shipped model's weights.
Each part runs in its own process with its own time budget and writes its
results as they come, so a slow part stops at its budget, keeps what it
measured, and cannot eat the others' time:

  forward     img/s of the net alone per precision (fp32, tf32, bf16) and
              forward variant (salicon.engine.fast) at batch 1 and 8, with the
              maps' CC against fp32 on real photos (maps must not be constant);
  end_to_end  compute_saliency and `salicon predict` over generated 800x600
              JPEGs (256; 16 small ones with --small), per decoder;
  train       per-image solver steps/s, per-blob and multi-tensor updates;
  serve       the service behind `salicon serve` on the device with 8
              concurrent clients (over HTTP when FastAPI is installed): maps
              served, failures and the batch sizes the server formed;
  ray         `salicon predict --ray` on 64 images with one actor on the
              device, if Ray is importable (else recorded as skipped).

Writes OUT_DIR/gpu_check.json (under 1 MB) and prints progress.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Seconds per part on a GPU (sum 200: the 4 minutes leave room for five start-ups).
BUDGETS = {"forward": 75, "end_to_end": 40, "train": 30, "serve": 30, "ray": 25}
#: The same on a CPU with --small (sum 56: with start-ups, about a minute on 2 shared cores;
#: training gets room for both updates' set-up, forward's first rows (the ones checked) take
#: about 6 s, and a local Ray job's start and shutdown up to 20 s on a slow machine).
SMALL_BUDGETS = {"forward": 10, "end_to_end": 6, "train": 7, "serve": 9, "ray": 24}
#: What the bar asks of an H100/H200 (img/s or steps/s).
BAR = {"forward_bf16": 300, "forward_tf32": 150, "predict": 250, "train": 120}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for gpu_check.json")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--small", action="store_true", help="a small edited net and small counts (CI)")
    parser.add_argument("--parts", default=",".join(BUDGETS), help="comma-separated parts to run")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # the child process of one part
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)  # its seconds
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part:
        return run_part(args)
    budgets = SMALL_BUDGETS if args.small else BUDGETS
    report = {"command": " ".join(["benchmarks/gpu_check.sh"] + sys.argv[1:]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "small": args.small, "machine": machine(args.device)}
    start = time.perf_counter()
    for part in args.parts.split(","):
        print(f"[{time.perf_counter() - start:5.1f} s] {part}: budget {budgets[part]} s", flush=True)
        report[part] = finish_child(args, part, start_child(args, part, budgets[part]))
        write(args.out / "gpu_check.json", report)
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["bar"] = bar(report) if not args.small else {"note": "the bar is for an H100/H200 run, not --small"}
    write(args.out / "gpu_check.json", report)
    print(f"[{report['seconds']:5.1f} s] done: {args.out / 'gpu_check.json'}", flush=True)
    print(json.dumps(report["bar"], indent=1))
    return 0


def start_child(args, part: str, budget: float) -> tuple[subprocess.Popen, float, float]:
    """One part in its own process (it stops itself at its budget; killed 10 s later)."""
    (args.out / f".{part}.json").unlink(missing_ok=True)
    cmd = [sys.executable, __file__, str(args.out), "--device", args.device, "--part", part,
           "--budget", str(budget)] + (["--small"] if args.small else [])
    return subprocess.Popen(cmd, cwd=ROOT), time.perf_counter(), budget


def finish_child(args, part: str, child: tuple[subprocess.Popen, float, float]) -> dict:
    """Wait for a part; what it wrote survives if it had to be killed."""
    proc, start, budget = child
    try:
        code = proc.wait(timeout=max(1.0, start + budget + 10 - time.perf_counter()))
        status = "ok" if code == 0 else f"exit code {code}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        status = "stopped at its time budget"
    partial = args.out / f".{part}.json"
    result = json.loads(partial.read_text()) if partial.exists() else {}
    partial.unlink(missing_ok=True)
    result.update(status=result.get("status", status) if status == "ok" else status,
                  seconds=round(time.perf_counter() - start, 1), budget_s=budget)
    return result


def run_part(args) -> int:
    import gpu_check_parts as parts  # beside this file (its rows and parts; it imports nothing from here)

    ctx = parts.Context(device=args.device, small=args.small, budget=args.budget,
                        out=args.out / f".{args.part}.json")
    try:
        getattr(parts, f"part_{args.part}")(ctx)
    except parts.OutOfTime:
        ctx.result["status"] = "stopped at its time budget"
    except Exception as exc:  # record it, and let the other parts run
        import traceback
        ctx.result["status"] = f"failed: {type(exc).__name__}: {exc}"
        ctx.result["traceback"] = traceback.format_exc()[-3000:]
        print(ctx.result["traceback"], file=sys.stderr)
    ctx.save()
    return 0


def machine(device: str) -> dict:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def bar(report: dict) -> dict:
    """The issue's bar against what was measured (None where a figure is missing)."""
    def best(precision: str) -> float | None:
        rows = [r["img_per_s"] for r in report.get("forward", {}).get("rows", [])
                if r.get("precision") == precision and r.get("img_per_s")]
        return max(rows) if rows else None

    predict = [r["img_per_s"] for r in report.get("end_to_end", {}).get("predict", []) if r.get("exit_code") == 0]
    train = [r["steps_per_s"] for r in report.get("train", {}).get("rows", []) if r.get("steps_per_s")]
    figures = {"forward_bf16": best("bf16"), "forward_tf32": best("tf32"),
               "predict": max(predict) if predict else None, "train": max(train) if train else None}
    out = {k: {"measured": v, "wanted": BAR[k], "met": None if v is None else v >= BAR[k]} for k, v in figures.items()}
    serve = report.get("serve", {})
    out["serve_works"] = bool(serve.get("maps")) and not serve.get("failures")
    ray = report.get("ray", {})
    ray_ok = ray.get("exit_code") == 0 and ray.get("maps") == ray.get("images")
    out["ray_works"] = None if ray.get("skipped") else ray_ok
    return out


def write(path: Path, report: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
