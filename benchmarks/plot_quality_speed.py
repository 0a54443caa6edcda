#!/usr/bin/env python
"""Quality against speed for every model and precision, from the results of
the benchmarks that measured them (nothing is re-run):

- quality: ``benchmarks/results/osie_test_int8*.json`` (benchmarks/int8_quality.py:
  the OSIE test split, default output, per model and precision);
- speed: ``benchmarks/results/stages_models_2core.json`` (benchmarks/bench_stages.py:
  median ``compute_saliency`` of a 600x800 photo on the 2-core machine).

    python benchmarks/plot_quality_speed.py -o docs/images/quality_speed.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
#: bench_stages row label -> (model, precision) of int8_quality's tables.
ROWS = {"pytorch fp32": ("salicon_osie", "fp32"), "int8 (CPU default)": ("salicon_osie", "int8"),
        "openvino bf16": ("salicon_osie", "bf16"),
        "salicon_osie_fast pytorch fp32": ("salicon_osie_fast", "fp32"),
        "salicon_osie_fast int8": ("salicon_osie_fast", "int8"),
        "salicon_osie_fast openvino bf16": ("salicon_osie_fast", "bf16")}


def points(photo: str = "600x800") -> list[dict]:
    """One point per (model, precision) measured both ways: seconds, NSS and CC (default output)."""
    quality = {}
    for path in sorted(RESULTS.glob("osie_test_int8*.json")):
        report = json.loads(path.read_text())
        for label, means in report["means"].items():
            precision, post = label.rstrip("]").split("[")
            if post == "default":
                quality[(report.get("model", "salicon_osie"), precision)] = means
    stages = json.loads((RESULTS / "stages_models_2core.json").read_text())
    out = []
    for row in stages["rows"]:
        key = ROWS.get(row["model"])
        if key in quality and row["photo"] == photo:
            out.append({"model": key[0], "precision": key[1], "seconds": row["seconds"]["compute_saliency"],
                        "NSS": quality[key]["NSS"], "CC": quality[key]["CC"]})
    return out


def draw(found: list[dict], path: Path, size: tuple[int, int] = (1000, 430)) -> None:
    """Two scatter panels (NSS, CC against log seconds), drawn with PIL."""
    import math

    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    colours = {"fp32": (31, 119, 180), "int8": (214, 39, 40), "bf16": (44, 160, 44)}
    seconds = [p["seconds"] for p in found]
    lo, hi = math.log10(min(seconds) / 1.5), math.log10(max(seconds) * 1.5)
    draw.text((10, 6), "Quality against speed: each model at each precision (OSIE test, default output; "
              "600x800 photo on the 2-core CPU)", fill="black")
    for panel, metric in enumerate(("NSS", "CC")):
        x0, y0, w, h = 60 + panel * (size[0] // 2), 40, size[0] // 2 - 90, size[1] - 110
        values = [p[metric] for p in found]
        vlo, vhi = min(values), max(values)
        pad = (vhi - vlo) * 0.15 or 0.05
        vlo, vhi = vlo - pad, vhi + pad
        draw.rectangle((x0, y0, x0 + w, y0 + h), outline="black")
        for decade in range(math.floor(lo), math.ceil(hi) + 1):
            for mult in (1, 2, 5):
                t = math.log10(mult) + decade
                if lo <= t <= hi:
                    x = x0 + (t - lo) / (hi - lo) * w
                    draw.line((x, y0 + h, x, y0 + h + 4), fill="black")
                    draw.text((x - 10, y0 + h + 6), f"{mult * 10 ** decade:g}", fill="black")
        for k in range(5):
            v = vlo + (vhi - vlo) * k / 4
            y = y0 + h - (v - vlo) / (vhi - vlo) * h
            draw.line((x0 - 4, y, x0, y), fill="black")
            draw.text((x0 - 40, y - 6), f"{v:.3f}", fill="black")
        draw.text((x0 + w // 2 - 90, y0 + h + 22), "seconds per map (log scale)", fill="black")
        draw.text((x0, y0 - 14), metric, fill="black")
        for p in found:
            x = x0 + (math.log10(p["seconds"]) - lo) / (hi - lo) * w
            y = y0 + h - (p[metric] - vlo) / (vhi - vlo) * h
            r = 5
            shape = draw.rectangle if p["model"].endswith("fast") else draw.ellipse
            shape((x - r, y - r, x + r, y + r), fill=colours.get(p["precision"], (0, 0, 0)))
            draw.text((x + 7, y - 12), f"{p['model'].replace('salicon_', '')} {p['precision']}", fill="black")
    draw.text((60, size[1] - 30), "circles: salicon_osie (1200x1600 / 600x800); squares: salicon_osie_fast "
              "(600x800 / 300x400); colour: precision (fp32 blue, int8 red, bf16 green)", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "images" / "quality_speed.png")
    args = parser.parse_args()
    found = points()
    if not found:
        raise SystemExit("no model and precision has both a quality and a speed result")
    draw(found, args.output)
    for p in sorted(found, key=lambda p: p["seconds"]):
        print(f"{p['model']:18s} {p['precision']:5s} {p['seconds']:6.3f} s  NSS {p['NSS']:.3f}  CC {p['CC']:.3f}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
