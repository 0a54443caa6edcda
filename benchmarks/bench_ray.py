"""Throughput of `salicon predict` (one process) against `salicon predict --ray`
(a local Ray instance with 1 and 2 CPU actors), on the full-size net and on a
small one (the shipped weights at 120x160 / 60x80 inputs).

Each configuration runs as a fresh command on a folder of copies of the
shipped examples, in interleaved rounds. Its steady cost per image is the
span between its first and last map files over the maps in between (both
paths write each map as soon as it is computed), which leaves out every
fixed cost (Python and Ray start-up, model loading, actor creation); the
fixed cost is the wall time minus images x steady cost. Ray's overhead per
image is its steady cost minus that of single-process predict, measured in
the same run.

    python benchmarks/bench_ray.py --json benchmarks/results/ray_2core.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_features  # noqa: E402

from salicon.pretrained import prototxt_path  # noqa: E402


def small_prototxt(folder: Path) -> Path:
    """The test net at a tenth of the input sizes (the shipped weights fit any size)."""
    text = prototxt_path().read_text()
    for old, new in {"1,3,1200,1600": "1,3,120,160", "1,3,600,800": "1,3,60,80",
                     "1,512,38,50": "1,512,4,5"}.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    path = folder / "salicon_small.prototxt"
    path.write_text(text)
    return path


def image_folder(folder: Path, count: int) -> Path:
    examples = sorted((ROOT / "examples").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        src = examples[i % len(examples)]
        shutil.copyfile(src, folder / f"{i:05d}_{src.name}")
    return folder


def settle(timeout: float = 60.0) -> None:
    """Wait until the local Ray instance of the last run has exited, then a few
    seconds more, so that no run pays for the previous one's shutdown."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        names = []
        for stat in Path("/proc").glob("[0-9]*/comm"):
            try:
                names.append(stat.read_text().strip())
            except OSError:
                continue
        if not any(n in ("raylet", "gcs_server") or n.startswith("ray::") for n in names):
            break
        time.sleep(0.5)
    time.sleep(3)


def run_once(command: list[str], out: Path, parallel: int = 1) -> dict:
    """Wall time of one command and its steady seconds per image: the span between
    the first and the last map written over the maps after the first ``parallel``
    ones (maps computed side by side by ``parallel`` actors finish together; every
    map is written as soon as it is computed, so start-up is left out)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    stamps = sorted(p.stat().st_mtime for p in out.rglob("*.png"))
    settle()
    return {"wall_s": wall, "steady_s_per_image": (stamps[-1] - stamps[0]) / (len(stamps) - parallel),
            "map_times_s": [round(t - stamps[0], 3) for t in stamps]}


def measure(work: Path, folder: Path, configs: dict[str, tuple[list[str], int]], rounds: int) -> dict[str, dict]:
    """Each configuration ``rounds`` times, interleaved (a drifting machine affects all alike);
    medians over the rounds."""
    import statistics

    runs: dict[str, list[dict]] = {label: [] for label in configs}
    count = len(list(folder.iterdir()))
    for r in range(rounds):
        for label, (extra, parallel) in configs.items():
            cmd = [sys.executable, "-m", "salicon", "predict", str(folder), "-o", str(work / "out"), "-q",
                   "--device", "cpu", *extra]
            runs[label].append(run_once(cmd, work / "out", parallel))
            print(f"  round {r + 1}, {label}: {count} images in {runs[label][-1]['wall_s']:.1f} s, "
                  f"{runs[label][-1]['steady_s_per_image']:.3f} s an image", file=sys.stderr, flush=True)
    out = {}
    for label, rs in runs.items():
        steady = statistics.median(x["steady_s_per_image"] for x in rs)
        wall = statistics.median(x["wall_s"] for x in rs)
        out[label] = {"images": count, "rounds": rounds, "wall_s": round(wall, 2),
                      "steady_s_per_image": round(steady, 4), "images_per_s": round(1.0 / steady, 3),
                      "fixed_cost_s": round(wall - count * steady, 2),
                      "steady_each_round": [round(x["steady_s_per_image"], 4) for x in rs],
                      "map_times_s_first_round": rs[0]["map_times_s"] if len(rs[0]["map_times_s"]) <= 20 else None}
    return out


def stage_costs(rounds: int = 5) -> dict:
    """Seconds per image of the CPU stages on one thread (what one Ray CPU slot does):
    decode + resize into the full-size blobs, and post-process + PNG encode of a map."""
    import statistics

    import numpy as np
    import torch

    from salicon.batch import decode_batch
    from salicon.decode import PreprocessSpec
    from salicon.model import Salicon
    from salicon.outputs import png_bytes
    from salicon.visualize import to_uint8

    torch.set_num_threads(1)
    model = Salicon(device="cpu", precision="fp32")
    spec = PreprocessSpec({k: tuple(v) for k, v in model.net.input_shapes.items()}, model.resize,
                          model.input_scale, tuple(model.mean_bgr), None)
    examples = sorted((ROOT / "examples").glob("*.jpg"))
    batch = {"index": np.arange(len(examples)), "source": np.array([str(p) for p in examples], dtype=object),
             "stem": np.array([p.stem for p in examples], dtype=object)}
    decode, write = [], []
    out = decode_batch(batch, spec)
    raw = torch.rand(len(examples), 38, 50)
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = decode_batch(batch, spec)
        decode.append((time.perf_counter() - t0) / len(examples))
        t0 = time.perf_counter()
        for i in range(len(examples)):
            png_bytes(to_uint8(model.post.apply(raw[i], (int(out["height"][i]), int(out["width"][i])), model.resize)))
        write.append((time.perf_counter() - t0) / len(examples))
    return {"decode_resize_s_per_image": round(statistics.median(decode), 4),
            "postprocess_png_s_per_image": round(statistics.median(write), 4),
            "images": [p.name for p in examples], "threads": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", type=int, default=8, help="images for the full-size net")
    parser.add_argument("--small", type=int, default=200, help="images for the small net")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per configuration")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nets = [("small", ["--prototxt", str(small_prototxt(work))], args.small)]
        if not args.skip_full:
            nets.append(("full", [], args.full))
        for net, net_args, count in nets:
            folder = image_folder(work / f"{net}_images", count)
            print(f"{net} net:", file=sys.stderr)
            configs = {"predict": (net_args, 1),
                       **{f"ray, {a} CPU actor(s)": (net_args + ["--ray", "--actors", str(a)], a) for a in (1, 2)}}
            results = measure(work, folder, configs, args.rounds)
            base = results["predict"]["steady_s_per_image"]
            for label, r in results.items():
                if label != "predict":
                    r["overhead_s_per_image"] = round(r["steady_s_per_image"] - base, 4)
                    r["overhead_percent"] = round(100 * (r["steady_s_per_image"] - base) / base, 1)
                rows.append({"net": net, "config": label, **r})
    result = {"rows": rows, "stage_costs": stage_costs(), "machine": {**cpu_features(), "cores": os.cpu_count(),
                                        "python": platform.python_version()},
              "command": " ".join(["python", "benchmarks/bench_ray.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d")}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
