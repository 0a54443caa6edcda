"""Pack trained SALICON weights into the shipped float16 safetensors file.

    python scripts/pack_model.py SOURCE -o models/salicon_osie.safetensors
    python scripts/pack_model.py runs/osie_fast/salicon_iter_5400.caffemodel --name salicon_osie_fast \
        --prototxt models/salicon_osie_fast/salicon_model_osie_fast/salicon_osie_fast.prototxt \
        -o models/salicon_osie_fast/salicon_model_osie_fast/salicon_osie_fast.safetensors

SOURCE is a .caffemodel, a safetensors file, or a folder of ``model_part*.npz``
files whose keys are ``"<layer>/<blob index>"`` (the layout of a training
run's exported parts). The weights are checked against the test prototxt
(every layer present, every shape right) before anything is written, and the
file carries its input convention as metadata.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salicon import formats  # noqa: E402
from salicon.engine import Net  # noqa: E402
from salicon.preprocess import MEAN_BGR, PUBLISHED_INPUT_SCALE  # noqa: E402
from salicon.pretrained import prototxt_path  # noqa: E402


def read_source(source: Path) -> dict[str, list[np.ndarray]]:
    """Layer -> float32 blobs from a .caffemodel, safetensors file or npz-part folder."""
    if source.is_dir():
        tensors: dict[str, np.ndarray] = {}
        parts = sorted(source.glob("model_part*.npz"))
        if not parts:
            raise SystemExit(f"{source}: no model_part*.npz files")
        for part in parts:
            with np.load(part) as z:
                tensors.update({k: z[k] for k in z.files})
        return formats.tensors_to_params(tensors, source)
    if formats.is_safetensors(source):
        return formats.tensors_to_params(formats.read_safetensors(source)[0], source)
    return formats.load_caffemodel_arrays(source)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--name", default="salicon_osie", help="model name stored in the metadata")
    parser.add_argument("--input-scale", type=float, default=PUBLISHED_INPUT_SCALE)
    parser.add_argument("--prototxt", type=Path, default=prototxt_path("salicon.prototxt"),
                        help="the model's test net (default: prototxt/salicon.prototxt)")
    args = parser.parse_args()

    params = read_source(args.source)
    net = Net(args.prototxt, phase="test")
    net.copy_from(params, strict=True, source=str(args.source))  # validates names and shapes
    kept = {name: params[name] for name in net.params}
    metadata = {
        "format": "salicon", "name": args.name,
        "architecture": (f"prototxt/{args.prototxt.name}" if args.prototxt == prototxt_path("salicon.prototxt")
                         else args.prototxt.name),
        "input_scale": repr(args.input_scale), "mean_bgr": ",".join(repr(m) for m in MEAN_BGR),
        "channel_order": "BGR", "blob_naming": "<layer>/<blob index>",
    }
    formats.write_safetensors(args.output, formats.params_to_tensors(kept, np.float16), metadata)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB, {len(kept)} layers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
