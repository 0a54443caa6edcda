"""OSIE images changed the way unseen data differs from OSIE, with their
fixations moved along, for choosing post-processing that does not overfit
OSIE's object-centred 800x600 photos.

    python benchmarks/osie_transforms.py --osie path/to/osie --names splits/osie_val.txt --limit 30 \
        -o runs/postprocess/transformed_raw.npz

Transforms of an 800x600 image (fixations follow; those cut away are dropped):
  lowres     downscaled to 256 px wide and enlarged back (a small photo shown large)
  crop16x9   the central 800x450 (landscape video framing)
  portrait   the central 450x600 (a portrait crop)
  letterbox  the image in an 800x800 black canvas (bars above and below)

Writes the net's raw 38x50 maps (--model, default the shipped one; fp32) as ``<transform>/<name>``,
the transformed fixations as ``<transform>/<name>/xy`` (x, y, subject) and the
transformed image sizes as ``<transform>/<name>/size``. The net takes about
10 s an image on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from salicon import Salicon  # noqa: E402
from salicon.data import open_dataset  # noqa: E402
from salicon.evaluate import read_split  # noqa: E402
from salicon.image import load_image  # noqa: E402

TRANSFORMS = ("lowres", "crop16x9", "portrait", "letterbox")


def transform(rgb: np.ndarray, x: np.ndarray, y: np.ndarray, kind: str):
    """(image uint8, x, y, keep mask) after ``kind``."""
    h, w = rgb.shape[:2]
    keep = np.ones(x.shape, bool)
    if kind == "lowres":
        small = Image.fromarray(rgb).resize((256, round(256 * h / w)), Image.BICUBIC)
        return np.asarray(small.resize((w, h), Image.BICUBIC)), x, y, keep
    if kind in ("crop16x9", "portrait"):
        ch, cw = (round(w * 9 / 16), w) if kind == "crop16x9" else (h, round(h * 3 / 4))
        top, left = (h - ch) // 2, (w - cw) // 2
        x, y = x - left, y - top
        keep = (x >= 0) & (x < cw) & (y >= 0) & (y < ch)
        return rgb[top:top + ch, left:left + cw], x, y, keep
    if kind == "letterbox":
        side = max(h, w)
        canvas = np.zeros((side, side, 3), np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top:top + h, left:left + w] = rgb
        return canvas, x + left, y + top, keep
    raise ValueError(kind)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--osie", type=Path, required=True)
    parser.add_argument("--names", type=Path, default=ROOT / "splits" / "osie_val.txt")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--model", default="salicon_osie", help="a registered model's name or a weights file")
    parser.add_argument("--runtime", default="pytorch")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    dataset = open_dataset(f"osie:{args.osie}")
    samples = {s.name: s for s in dataset.samples}
    names = read_split(args.names)[:args.limit]
    model = Salicon(args.model, device="cpu", runtime=args.runtime, precision=args.precision)
    out: dict[str, np.ndarray] = {}
    if args.output.exists():
        with np.load(args.output) as z:
            out.update({k: z[k] for k in z.files})
    for i, name in enumerate(names):
        sample = samples[name]
        rgb = load_image(sample.image_path, as_float=False)
        fix = sample.fixations
        for kind in TRANSFORMS:
            if f"{kind}/{name}" in out:
                continue
            image, x, y, keep = transform(rgb, fix.x.astype(float), fix.y.astype(float), kind)
            inputs, _ = model.preprocess(np.ascontiguousarray(image))
            raw = model.forward({k: v[None] for k, v in inputs.items()})[0].numpy()
            out[f"{kind}/{name}"] = raw.astype(np.float32)
            out[f"{kind}/{name}/xy"] = np.stack([x[keep], y[keep], fix.subject[keep]]).astype(np.float32)
            out[f"{kind}/{name}/size"] = np.array(image.shape[:2])
        args.output.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.output, **out)  # after every image: an interrupted run resumes where it stopped
        print(f"{i + 1}/{len(names)} {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
