#!/usr/bin/env python
"""The documentation's benchmark plots, drawn from ``benchmarks/results/*.json``
(the documentation site runs this at build time, so the plots follow the files):

- ``speed.png``: one map's time per model, runtime and precision (``stages_models_2core.json``);
- ``quality_speed.png``: OSIE test NSS against that time (``osie_test_int8*.json`` too);
- ``serve.png``: maps a second and latency under load (``serve_models_2core.json``, ``serve_ray_2core.json``);
- ``ray.png``: images a second of ``predict`` and ``predict --ray`` with 1 and 2 actors (``ray_2core.json``);
- ``video.png``: the video path against the same frames as images (``video_speed_2core.json``).

    python benchmarks/plot_docs.py -o site-plots/
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _figure(width: float = 7.5, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(axis="x", alpha=0.3)
    return plt, fig, ax


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def speed(results: Path, out: Path) -> Path:
    rows = json.loads((results / "stages_models_2core.json").read_text())["rows"]
    rows = sorted(rows, key=lambda r: r["seconds"]["compute_saliency"])
    plt, fig, ax = _figure()
    labels = [f"{r['name']} {r['runtime']} {r['precision']}" for r in rows]
    values = [r["seconds"]["compute_saliency"] for r in rows]
    bars = ax.barh(labels, values, color=["#c2410c" if r["name"].endswith("fast") else "#1d4ed8" for r in rows])
    ax.bar_label(bars, labels=[f"{v:.2f} s" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds for one map of a 600x800 photo (compute_saliency, 2 CPU cores)")
    ax.set_xlim(0, max(values) * 1.2)
    return _save(plt, fig, out / "speed.png")


def quality_speed(results: Path, out: Path) -> Path:
    quality = {}
    for path in sorted(results.glob("osie_test_int8*.json")):
        report = json.loads(path.read_text())
        for label, means in report["means"].items():
            precision, post = label.rstrip("]").split("[")
            if post == "default":
                quality[(report.get("model", "salicon_osie"), precision)] = means["NSS"]
    rows = json.loads((results / "stages_models_2core.json").read_text())["rows"]
    plt, fig, ax = _figure(7.5, 3.8)
    for r in rows:
        nss = quality.get((r["name"], r["precision"]))
        if nss is None:
            continue
        seconds = r["seconds"]["compute_saliency"]
        colour = "#c2410c" if r["name"].endswith("fast") else "#1d4ed8"
        ax.scatter(seconds, nss, color=colour, s=40)
        ax.annotate(f"{r['name']} {r['precision']}", (seconds, nss), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per map, 600x800 photo, 2 CPU cores (log scale)")
    ax.set_ylabel("OSIE test NSS")
    ax.grid(alpha=0.3)
    return _save(plt, fig, out / "quality_speed.png")


def serve(results: Path, out: Path) -> Path:
    runs = []
    for name in ("serve_models_2core.json", "serve_ray_2core.json"):
        path = results / name
        for r in json.loads(path.read_text()) if path.exists() else []:
            model = r.get("model", "").replace(".safetensors", "")
            runs.append((f"{model} ({r.get('server', 'single')}, {r.get('precision', '')})", r))
    plt, fig, ax = _figure(7.5, 0.5 + 0.42 * len(runs))
    labels = [f"{label} #{k + 1}" for k, (label, _) in enumerate(runs)]
    p50 = [r["latency_s"]["p50"] for _, r in runs]
    p99 = [r["latency_s"]["p99"] for _, r in runs]
    ax.barh(labels, p99, color="#fdba74", label="p99")
    bars = ax.barh(labels, p50, color="#c2410c", label="p50")
    ax.bar_label(bars, labels=[f"{r['requests_per_s']:.2f} maps/s" for _, r in runs], padding=3, fontsize=8)
    ax.invert_yaxis()
    first = runs[0][1]
    ax.set_xlabel(f"latency (s) with {first['clients']} clients for {first['seconds']:g} s; label: throughput")
    ax.set_xlim(0, max(p99) * 1.35)
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, out / "serve.png")


def ray(results: Path, out: Path) -> Path:
    rows = json.loads((results / "ray_2core.json").read_text())["rows"]
    plt, fig, ax = _figure(7.5, 3.0)
    labels = [f"{r['net']} net: {r['config']}" for r in rows]
    values = [r["images_per_s"] for r in rows]
    bars = ax.barh(labels, values, color=["#1d4ed8" if r["config"] == "predict" else "#c2410c" for r in rows])
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("images a second on 2 CPU cores (log scale): predict against predict --ray")
    return _save(plt, fig, out / "ray.png")


def video(results: Path, out: Path) -> Path:
    rows = json.loads((results / "video_speed_2core.json").read_text())["rows"]
    plt, fig, ax = _figure(7.5, 2.6)
    labels = [r["config"] for r in rows]
    y = range(len(rows))
    ax.barh([k - 0.2 for k in y], [r["video_fps"] for r in rows], height=0.4, color="#c2410c", label="video path")
    ax.barh([k + 0.2 for k in y], [r["images_fps"] for r in rows], height=0.4, color="#1d4ed8",
            label="same frames as images")
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("frames a second, 1280x720 clip, every frame computed, 2 CPU cores")
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, out / "video.png")


PLOTS = (speed, quality_speed, serve, ray, video)


def draw_all(results: Path = RESULTS, out: Path = Path("plots")) -> list[Path]:
    """Every plot, written into ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    return [plot(results, out) for plot in PLOTS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("plots"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    for path in draw_all(args.results, args.output):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
