"""Make the int8 OpenVINO model of a SALICON model: NNCF post-training quantization.

    python scripts/quantize_int8.py --data ../shared/data/osie            # the shipped model
    python scripts/quantize_int8.py --model mine.safetensors --data my_osie_like/ --images 64

Reproducible: the net is converted from the prototxt and weights (through the
ONNX export), calibrated on the first N images of the *training* split
(``splits/osie_train.txt``; never a test image) preprocessed exactly as
``Salicon`` does, quantized with NNCF's default (performance) preset, and
written as ``<model stem>_int8.xml`` / ``.bin`` beside the weights. The
model's record (``<stem>.json``) gets an ``int8`` entry: the file names and
SHA-256s, the calibration images, the tool versions and the settings, so
``Salicon(precision="int8")`` finds the file and checks it. NNCF and the data
are needed only here; running the int8 model needs only ``openvino``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from salicon import Salicon  # noqa: E402
from salicon.pretrained import default_model_path, prototxt_path  # noqa: E402
from salicon.runtimes.openvino import quantize_int8, record_int8  # noqa: E402


def calibration_names(split: Path, count: int) -> list[str]:
    names = [line.strip() for line in split.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if len(names) < count:
        raise SystemExit(f"{split}: {len(names)} names, fewer than the {count} calibration images asked for")
    return names[:count]


def calibration_inputs(model: Salicon, stimuli: Path, names: list[str]) -> list[dict]:
    """Each calibration image as the net's input arrays (batch of one)."""
    out = []
    for name in names:
        found = sorted(stimuli.glob(f"{name}.*"))
        if not found:
            raise SystemExit(f"{stimuli}: no image named {name}.*")
        inputs, _ = model.preprocess(found[0])
        out.append({k: v[None].numpy() for k, v in inputs.items()})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path(), help="weights to quantize")
    parser.add_argument("--prototxt", type=Path, default=prototxt_path(), help="test net")
    parser.add_argument("--data", type=Path, required=True, help="OSIE folder (stimuli/ + fixations.mat)")
    parser.add_argument("--split", type=Path, default=ROOT / "splits" / "osie_train.txt",
                        help="names of the training images to calibrate on")
    parser.add_argument("--images", type=int, default=64, help="calibration images (the first N of the split)")
    parser.add_argument("-o", "--out", type=Path, help="output .xml (default: <model stem>_int8.xml beside it)")
    args = parser.parse_args()

    out = args.out or args.model.with_name(f"{args.model.stem}_int8.xml")
    names = calibration_names(args.split, args.images)
    start = time.perf_counter()
    reference = Salicon(args.model, args.prototxt, device="cpu", precision="fp32", postprocess="none")
    samples = calibration_inputs(reference, args.data / "stimuli", names)
    entry = quantize_int8(args.prototxt, args.model, samples, out)
    seconds = time.perf_counter() - start
    split = args.split.resolve()
    entry.update({"made_by": f"python scripts/quantize_int8.py --data OSIE --images {args.images}",
                  "calibration": {"split": str(split.relative_to(ROOT)) if split.is_relative_to(ROOT) else str(split),
                                  "images": names},
                  "seconds": round(seconds, 1)})
    record = record_int8(args.model, entry)
    print(f"wrote {out} ({out.with_suffix('.bin').stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s, calibrated on "
          f"{len(names)} training images; recorded in {record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
