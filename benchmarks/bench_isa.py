"""The forward pass on CPUs without VNNI, AMX or native bfloat16, emulated on this
one: each row runs in a child process with oneDNN (which both PyTorch's and
OpenVINO's CPU kernels use) capped at an instruction set through
ONEDNN_MAX_CPU_ISA (and PyTorch's own kernels through ATEN_CPU_CAPABILITY).
Reports the steady state (median of --repeat calls after a warm-up) of
PyTorch fp32 and OpenVINO int8 / bf16 on the shipped model, per cap.

    python benchmarks/bench_isa.py --json benchmarks/results/cpu_isa_2core.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: name -> (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY): what each cap leaves of the CPU.
CAPS = {"as is (AVX-512 with VNNI and BF16)": (None, None),
        "AVX-512 without VNNI or BF16": ("AVX512_CORE", "avx512"),
        "AVX2 only (no VNNI, no AVX-512)": ("AVX2", "avx2")}
RUNS = (("pytorch", "fp32"), ("openvino", "int8"), ("openvino", "bf16"))


def child(runtime: str, precision: str, repeat: int) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from salicon import Salicon

    model = Salicon(device="cpu", runtime=runtime, precision=precision)
    rng = np.random.default_rng(0)
    arrays = {k: rng.uniform(-0.5, 0.5, (1,) + tuple(v[1:])).astype(np.float32)
              for k, v in model.net.input_shapes.items()}
    if runtime == "pytorch":
        import torch
        inputs = {k: torch.from_numpy(v) for k, v in arrays.items()}
    else:
        inputs = arrays
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        model.forward(inputs) if runtime == "pytorch" else model.net(**inputs)
        times.append(time.perf_counter() - start)
    ran_as = getattr(model.net, "precision", precision)  # OpenVINO runs bf16 as fp32 where it has no bf16 kernels
    return {"first_s": times[0], "median_s": float(np.median(times[1:])), "ran_as": ran_as}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.repeat)))
        return 0
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import cpu_features, write_report

    rows = []
    for cap, (onednn, aten) in CAPS.items():
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
        env.update({k: v for k, v in (("ONEDNN_MAX_CPU_ISA", onednn), ("ATEN_CPU_CAPABILITY", aten)) if v})
        for runtime, precision in RUNS:
            out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--child", runtime,
                                  precision], env=env, capture_output=True, text=True, check=False)
            result = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {
                "error": out.stderr.strip().splitlines()[-1:]}
            rows.append({"cap": cap, "ONEDNN_MAX_CPU_ISA": onednn, "runtime": runtime, "precision": precision,
                         **result})
            print(f"{cap:40s} {runtime:9s} {precision:5s} " +
                  (f"{result['median_s']:.2f} s (ran as {result['ran_as']})" if "median_s" in result else str(result)),
                  flush=True)
    report = {"command": "python benchmarks/bench_isa.py", "machine": cpu_features(), "repeat": args.repeat,
              "rows": rows}
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
