"""benchmarks/gpu_check.sh --device cpu --small: the GPU check's own smoke test, on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_usage_without_an_output_folder():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: bash benchmarks/gpu_check.sh [--device cpu]" in proc.stderr


@pytest.mark.slow
def test_small_cpu_run_writes_every_section(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHON"] = sys.executable
    # Options before the output folder, as a user may write them.
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--small", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / "gpu_check.json"
    assert path.stat().st_size < 1_000_000
    report = json.loads(path.read_text())
    # Each part stops itself at its budget (plus its start-up and shutdown; killed 10 s past it), so the
    # whole run is bounded whatever the machine's speed (about 50-60 s on 2 shared cores).
    for part in ("forward", "end_to_end", "train", "serve", "ray"):
        assert report[part]["seconds"] <= report[part]["budget_s"] + 10, (part, report[part]["seconds"])
    assert report["seconds"] < 100, report["seconds"]
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    for part in ("forward", "end_to_end", "train", "serve", "ray"):
        assert report[part]["status"] in ("ok", "stopped at its time budget"), (part, report[part])
    rows = report["forward"]["rows"]
    measured = {(r["variant"], r["precision"], r["batch"]) for r in rows if r.get("img_per_s")}
    wanted = [("plain", "fp32"), ("plain", "tf32"), ("plain", "bf16"), ("channels_last", "bf16"),
              ("fuse_relu", "bf16"), ("cast_weights", "bf16")]  # the rows that come first
    for variant, precision in wanted:
        assert {(variant, precision, 1), (variant, precision, 8)} <= measured, (variant, precision)
    for r in rows:
        if r.get("img_per_s"):
            assert r["map_std_min"] > 0  # the shipped model on photos: real maps
            assert r["cc_vs_fp32"] > (0.9999 if r["precision"] != "bf16" else 0.99), r
    assert any(r.get("skipped") == "CUDA graphs need a GPU" for r in rows)
    e2e = report["end_to_end"]
    assert e2e["predict"] and all(r["exit_code"] == 0 and r["maps"] == e2e["images"] for r in e2e["predict"])
    assert e2e["compute_saliency"] and all(r["img_per_s"] > 0 for r in e2e["compute_saliency"])
    train = report["train"]
    assert {r["update"] for r in train["rows"]} == {"per-blob", "multi-tensor"}
    assert train["max_abs_weight_diff_between_updates"] == 0.0  # bit-identical on the CPU
    serve = report["serve"]
    assert serve["status"] == "ok" and serve["load_seconds"] >= 1
    assert serve["maps"] > 0 and serve["failures"] == 0 and sum(serve["batches"].values()) >= serve["maps"]
    ray = report["ray"]
    if "skipped" not in ray:
        assert ray["exit_code"] == 0 and ray["maps"] == ray["images"]
