"""Make the model card's pictures for the shipped model.

    python scripts/model_card_figures.py [--osie ../shared/data/osie] [-o docs/images]

Writes ``validation_curve.png`` (from models/salicon_osie_log.jsonl) and, when
the OSIE data is given, ``osie_test_examples.jpg``: the first three images of
splits/osie_test.txt (chosen by position, not by score), each as the model's
overlay beside the human fixation map's overlay.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from salicon import Salicon  # noqa: E402
from salicon.data import open_dataset  # noqa: E402
from salicon.evaluate import read_split  # noqa: E402
from salicon.image import load_image  # noqa: E402
from salicon.visualize import overlay, plot_validation_curve  # noqa: E402


def osie_examples(osie: Path, out: Path, count: int = 3, width: int = 400) -> None:
    dataset = open_dataset(f"osie:{osie}")
    samples = {s.name: s for s in dataset.samples}
    names = read_split(ROOT / "splits" / "osie_test.txt")[:count]
    model = Salicon(device="cpu", precision="fp32")
    rows = []
    for name in names:
        sample = samples[name]
        rgb = load_image(sample.image_path)
        _, density = dataset.ground_truth(sample, rgb.shape[:2])
        density = density / max(float(density.max()), 1e-12)
        pair = [overlay(rgb, model.compute_saliency(sample.image_path)), overlay(rgb, density)]
        height = round(rgb.shape[0] * width / rgb.shape[1])
        rows.append([Image.fromarray(p).resize((width, height), Image.LANCZOS) for p in pair])
    gap, label = 6, 22
    height = sum(r[0].height for r in rows) + gap * (len(rows) - 1) + label
    sheet = Image.new("RGB", (2 * width + gap, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((5, 5), "model (salicon_osie)", fill="black")
    draw.text((width + gap + 5, 5), "human fixations (15 observers)", fill="black")
    y = label
    for name, (left, right) in zip(names, rows):
        sheet.paste(left, (0, y))
        sheet.paste(right, (width + gap, y))
        draw.rectangle([0, y, 80, y + 18], fill="black")
        draw.text((5, y + 4), f"OSIE {name}", fill="white")
        y += left.height + gap
    sheet.save(out / "osie_test_examples.jpg", quality=88)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--osie", type=Path, help="OSIE folder (stimuli/ + fixations.mat)")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    history = [json.loads(line) for line in (ROOT / "models" / "salicon_osie_log.jsonl").open()]
    plot_validation_curve(history, args.out / "validation_curve.png")
    if args.osie:
        osie_examples(args.osie, args.out)
    print(f"wrote pictures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
