"""What the benchmarks record about the machine they ran on."""
from __future__ import annotations

import json
import platform
from pathlib import Path


def cpu_features() -> dict:
    """The CPU's model name, its SIMD flags that matter for convolutions, whether
    it computes bfloat16 natively (AVX512-BF16 or AMX) and PyTorch's view of it."""
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                if flags and model:
                    break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile",
              "amx_int8")
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older PyTorch
        capability = "unknown"
    return {"model": model, "flags": [f for f in wanted if f in flags],
            "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags), "torch_capability": capability}


def write_rows(path: Path | None, rows: list, **fields) -> None:
    """Write a CPU benchmark's rows with the command that made them and the machine."""
    import sys

    import torch

    write_report(path, {"command": "python " + " ".join(sys.argv), "machine": {
        "cpu": cpu_features(), "threads": torch.get_num_threads(), "torch": torch.__version__}, **fields,
        "rows": rows})


def write_report(path: Path | None, report: dict) -> None:
    """Write a benchmark's results as JSON (when a path is given) and say where."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")
