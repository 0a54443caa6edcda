"""``salicon init-weights``, ``export-caffemodel`` and ``export-onnx``: model files in and out."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import SaliconError
from .options import add_model, add_out, error, subcommand, usage_error


def add_parsers(sub) -> None:
    p = subcommand(sub, "export-caffemodel", "write the model as a float32 .caffemodel for real Caffe",
                   "Write OUT/<name>.caffemodel (float32, current Caffe layout), the test "
                   "prototxt and the Python layer modules it needs, so real Caffe runs the "
                   "model with the same maps as this package.")
    add_out(p, "OUTDIR", "folder to write")
    add_model(p, fast=False)
    p.add_argument("--name", help="file name stem of the .caffemodel (default: the model's)")
    p.set_defaults(func=cmd_export_caffemodel)

    p = subcommand(sub, "export-onnx", "write the model as an ONNX graph (ONNX Runtime, TensorRT, ...)",
                   "Write the test net with its weights as ONNX (float32; inputs fine_scale "
                   "and coarse_scale at the prototxt's sizes, dynamic batch; output "
                   "saliency_map_out, the raw 38x50 map). Inputs are the preprocessed blobs: "
                   "BGR, mean-subtracted, times the input scale (stored in the file's metadata).")
    add_out(p, "MODEL.onnx", "file to write")
    add_model(p, fast=False)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (17 or newer)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1")
    p.add_argument("--force", action="store_true", help="overwrite OUT even if it is not an .onnx file")
    p.set_defaults(func=cmd_export_onnx)

    p = subcommand(sub, "init-weights", "make an untrained model from VGG-16 conv weights",
                   "Copy VGG-16's conv1_1..conv5_3 into both streams of the SALICON net "
                   "(fc layers ignored) and initialise saliency_map from the prototxt's "
                   "fillers, seeded. Reads the legacy Model Zoo layout and the current one.")
    p.add_argument("--vgg16", required=True, metavar="FILE.caffemodel", help="VGG-16 weights")
    add_out(p, "OUT.caffemodel", "file to write")
    p.add_argument("--prototxt", help="train net prototxt (default: prototxt/finetune_salicon.prototxt)")
    p.add_argument("--seed", type=int, default=0, help="seed of the saliency_map initialisation")
    p.add_argument("--force", action="store_true", help="overwrite OUT even if it is not a .caffemodel")
    p.set_defaults(func=cmd_init_weights)


def cmd_init_weights(args: argparse.Namespace) -> int:
    from ..weights import init_from_vgg16

    out = Path(args.out)
    if out.resolve() == Path(args.vgg16).resolve():
        return usage_error(args, "-o must differ from --vgg16")
    if out.is_dir():
        error(f"-o {out}: is a folder; give the .caffemodel file to write")
        return 1
    if out.exists() and out.suffix.lower() != ".caffemodel" and not args.force:
        error(f"-o {out}: exists and is not a .caffemodel; refusing to overwrite it (use --force)")
        return 1
    try:
        net, report = init_from_vgg16(args.vgg16, args.prototxt, seed=args.seed)
        net.save(out)
    except (SaliconError, OSError) as exc:
        error(str(exc))
        return 1
    print(f"copied VGG-16 into {len(report.copied)} layers; initialised from fillers (seed {args.seed}): "
          f"{', '.join(report.initialised) or 'none'}; ignored VGG-16 layers: "
          f"{', '.join(report.ignored) or 'none'}")
    print(f"wrote {out}")
    return 0


def cmd_export_caffemodel(args: argparse.Namespace) -> int:
    from ..export import export_caffemodel

    try:
        paths = export_caffemodel(args.out, args.model, args.prototxt, name=args.name)
    except (SaliconError, OSError) as exc:
        error(str(exc))
        return 1
    for path in paths.values():
        print(f"wrote {path}")
    print(f"run it in Caffe with {Path(args.out)} on PYTHONPATH (for the Python layers): "
          f"caffe.Net('{paths['prototxt']}', caffe.TEST, weights='{paths['caffemodel']}')")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and (out.is_dir() or out.suffix.lower() != ".onnx") and not args.force:
        error(f"{out}: exists and is not an .onnx file; refusing to overwrite it (use --force)")
        return 1
    try:
        from .. import export
        export.export_onnx(out, args.model, args.prototxt, opset=args.opset, dynamic_batch=not args.static_batch)
    except ModuleNotFoundError as exc:
        error(f"ONNX export needs the '{exc.name}' package: pip install -e \".[onnx]\"")
        return 1
    except (SaliconError, OSError) as exc:
        error(str(exc))
        return 1
    print(f"wrote {out}")
    return 0
