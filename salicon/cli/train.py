"""``salicon train``: fine-tuning with Caffe's solver semantics.

Fine-tune with Caffe's solver semantics: one solver step per image, a new
random order every epoch, a seeded held-out split (OUT/split.json),
snapshots (.caffemodel + .solverstate) at the solver's interval and at the
end, a time limit, Ctrl-C stops cleanly with a snapshot. Writes
OUT/log.jsonl and OUT/loss.png.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import SaliconError
from .options import (
    INPUT_SCALES,
    add_engine,
    add_out,
    add_quiet,
    duration,
    error,
    non_negative_int,
    positive_float,
    positive_int,
    subcommand,
)


def add_parser(sub) -> None:
    p = subcommand(sub, "train", "fine-tune SALICON on eye-tracking data", __doc__)
    p.add_argument("--data", required=True,
                   help="an OSIE folder (stimuli/ + fixations.mat), a folder with images/ and maps/, or an "
                        "image folder with --maps")
    p.add_argument("--maps", help="fixation-map folder (same base names as the images)")
    add_out(p, "OUT", "output folder (snapshots, split, log)")
    p.add_argument("--solver", help="solver prototxt (default: prototxt/solver.prototxt)")
    p.add_argument("--prototxt", help="train net (default: the solver's `net`)")
    p.add_argument("--weights", help="start from these weights: a registered model's name (salicon_osie, to "
                                     "fine-tune the shipped model; salicon models lists them) or a .caffemodel or "
                                     ".safetensors file (untrained.caffemodel from init-weights)")
    p.add_argument("--resume", metavar="STATE", help="continue from a .solverstate")
    p.add_argument("--time-limit", type=duration, default="2.5h",
                   help="stop after this long (seconds, or with s/m/h)")
    p.add_argument("--max-iter", type=positive_int,
                   help="stop after this many iterations (default: the solver's)")
    p.add_argument("--snapshot", type=non_negative_int,
                   help="snapshot interval in iterations, 0 for none but the last (default: the solver's)")
    add_engine(p, "pytorch (auto), or real Caffe's own solver through pycaffe (CPU)", inference=False)
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the image order and fillers")
    p.add_argument("--test", type=positive_float, default=0.1,
                   help="held-out images: a count, or a fraction if < 1")
    p.add_argument("--split", help="reuse this split.json instead of drawing one")
    p.add_argument("--sigma", type=positive_float, default=24.0, help="fixation-map blur (px) for fixation points")
    p.add_argument("--workers", type=positive_int, help="data preparation threads (default: cores, at most 8)")
    p.add_argument("--update", default="per-blob", choices=["per-blob", "multi-tensor"],
                   help="how the PyTorch solver updates: blob by blob (default), or as multi-tensor list "
                        "operations with the same numbers and the loss read back every `display` steps only "
                        "(faster on a GPU; a NaN loss is still caught before it reaches the weights)")
    p.add_argument("--cache-frozen", action="store_true",
                   help="compute the layers that do not learn (lr_mult 0, from the inputs up) once per image and "
                        "keep their top blobs in memory (the size is printed): the same weights as without, "
                        "faster when the lower layers are frozen (PyTorch engine)")
    add_quiet(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from ..data import DataError
    from ..pretrained import prototxt_path
    from ..train import TrainConfig, TrainingError, train

    config = TrainConfig(
        data=args.data, out=args.out, solver=args.solver or str(prototxt_path("solver.prototxt")),
        prototxt=args.prototxt, weights=args.weights, resume=args.resume, time_limit=args.time_limit,
        max_iter=args.max_iter, device=args.device, precision=args.precision, seed=args.seed,
        test=args.test, input_scale=args.input_scale or INPUT_SCALES["published"],
        sigma=args.sigma, workers=args.workers, snapshot=args.snapshot, split=args.split, maps=args.maps,
        engine=args.engine, update=args.update, python_layers=args.python_layers,
        cache_frozen=args.cache_frozen)
    try:
        result = train(config, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    except (SaliconError, DataError, TrainingError, ValueError, OSError) as exc:
        error(str(exc))
        return 1
    return 130 if result.stop_reason == "interrupted" else 0  # 128 + SIGINT, as shells expect
