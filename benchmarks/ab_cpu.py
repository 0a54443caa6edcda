#!/usr/bin/env python
"""bench_cpu.py on two versions of the code in one run: is there a CPU regression?

Extracts ``--before`` and ``--after`` (git revisions; after: HEAD) into a
temporary folder and runs each tree's ``benchmarks/bench_cpu.py`` in turns
(before, after, before, after, ... for --rounds), so both see the same machine
state (and edits to the working tree during the run change neither). Compares
each measurement's steady-state median (and predict's seconds per image)
between the two, as after / before (< 1: faster now).

    python benchmarks/ab_cpu.py --before 36c28fe --rounds 2 --json benchmarks/results/cpu_ab_2core.json

``--focus forward:nchw,saliency:pytorch`` runs only those children of
bench_cpu.py (each in its own process, as bench_cpu runs them), before and
after in turns, for more rounds in the same time on a noisy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def extract(revision: str, folder: Path, name: str) -> Path:
    """The tree of ``revision`` (tracked files, the shipped model included) in ``folder/name``."""
    archive = folder / f"{name}.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), revision], cwd=ROOT, check=True)
    tree = folder / name
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def bench(tree: Path, out: Path, extra: list[str]) -> dict:
    """That tree's bench_cpu.py, importing that tree's package."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_cpu.py"), "--json", str(out)] + extra
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def child(tree: Path, *args: str) -> dict:
    """One bench_cpu.py child measurement of that tree (its JSON line)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_cpu.py"), "--child", *args], cwd=tree,
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def focus(trees: dict[str, Path], tmp: Path, names: list[str], repeat: int) -> dict[str, list[dict]]:
    """Only the named bench_cpu children (``forward:LAYOUT``, ``saliency:ENGINE``), each
    measured alone, sides alternating: more rounds in the time of one full bench_cpu."""
    made = child(trees["after"], "prepare", str(tmp))
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for side in ("before", "after"):
        result = {}
        for name in names:
            kind, variant = name.split(":")
            extra = [made["image"]] if kind == "saliency" else []
            result[f"{kind}_{variant}"] = child(trees[side], kind, made["model"], *extra, variant, "--repeat",
                                                str(repeat))
        runs[side].append(result)
    return runs


def timings(result: dict) -> dict[str, float]:
    """Steady-state seconds of every measurement in one bench_cpu result."""
    out = {k: v["median_s"] for k, v in result.items() if isinstance(v, dict) and "median_s" in v}
    out.update({k: v["steady_s_per_image"] for k, v in result.items()
                if isinstance(v, dict) and "steady_s_per_image" in v})
    return out


def main() -> int:
    from machine import cpu_features, write_report

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--after", default="HEAD", help="git revision to compare (default HEAD)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="bench_cpu.py --repeat")
    parser.add_argument("--throughput", type=int, default=6, help="bench_cpu.py --throughput")
    parser.add_argument("--focus", help="only these bench_cpu children, comma-separated (forward:nchw, "
                                        "saliency:pytorch, saliency:openvino-int8, ...), sides alternating "
                                        "each round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    extra = (["--repeat", str(args.repeat)] + ([] if args.focus else ["--throughput", str(args.throughput)])
             + (["--focus", args.focus] if args.focus else []))
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {side: extract(getattr(args, side), Path(tmp), side) for side in ("before", "after")}
        for r in range(args.rounds):
            if args.focus:
                print(f"round {r + 1}/{args.rounds}: {args.focus}", flush=True)
                for side, results in focus(trees, Path(tmp), args.focus.split(","), args.repeat).items():
                    runs[side] += results
                continue
            for side in ("before", "after"):
                print(f"round {r + 1}/{args.rounds}: {side}", flush=True)
                runs[side].append(bench(trees[side], Path(tmp) / f"{side}_{r}.json", extra))
    rows = {}
    for key in timings(runs["before"][0]):
        before = [timings(x)[key] for x in runs["before"] if key in timings(x)]
        after = [timings(x)[key] for x in runs["after"] if key in timings(x)]
        if before and after:
            rows[key] = {"before_s": statistics.median(before), "after_s": statistics.median(after),
                         "after_over_before": statistics.median(after) / statistics.median(before),
                         "before_rounds_s": before, "after_rounds_s": after,
                         # how much the unchanged "before" code itself varies between rounds
                         "before_spread": (max(before) - min(before)) / statistics.median(before)}
            print(f"{key:44s} before {rows[key]['before_s']:8.3f} s  after {rows[key]['after_s']:8.3f} s  "
                  f"ratio {rows[key]['after_over_before']:.3f}  (before's own spread "
                  f"{100 * rows[key]['before_spread']:.1f} %)")
    worst = max(rows.values(), key=lambda r: r["after_over_before"])["after_over_before"]
    print(f"largest slow-down: {100 * (worst - 1):+.1f} %")
    after = subprocess.run(["git", "rev-parse", "--short", args.after], cwd=ROOT, capture_output=True, text=True)
    write_report(args.json, {"before": args.before, "after": after.stdout.strip(),
        "rounds": args.rounds, "bench_cpu_args": extra, "rows": rows,
        "machine": runs["after"][0].get("machine") or {**cpu_features(), "cores": os.cpu_count()},
        "largest_slowdown": worst - 1})
    return 0


if __name__ == "__main__":
    sys.exit(main())
