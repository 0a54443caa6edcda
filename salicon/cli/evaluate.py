"""``salicon evaluate``: a model (or precomputed maps) scored on eye-tracking data.

Score a model (or precomputed maps) with the standard saliency metrics (MIT
benchmark conventions), next to a centre-bias Gaussian and the
inter-observer bound (each subject predicted from the others) where the data
has per-subject fixations. Writes OUT/per_image.csv and OUT/summary.json and
prints mean ± std.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import SaliconError
from ..metrics import METRICS
from .options import (
    add_engine,
    add_model,
    add_out,
    add_postprocess,
    add_quiet,
    build_salicon,
    error,
    model_problem,
    positive_int,
    subcommand,
    usage_error,
)


def add_parser(sub) -> None:
    p = subcommand(sub, "evaluate", "score saliency maps on eye-tracking data, with baselines", __doc__)
    p.add_argument("--dataset", required=True,
                   help="KIND:PATH with KIND osie, folder, mit1003, cat2000 or salicon (or a bare path)")
    add_model(p)
    p.add_argument("--saliency-maps", metavar="DIR", help="score precomputed maps (<name>.npy or images) instead")
    add_postprocess(p, repeat=True)
    p.add_argument("--baselines-only", action="store_true", help="score only the baselines")
    p.add_argument("--no-baselines", action="store_true", help="skip the centre-bias and inter-observer rows")
    p.add_argument("--split", help="split.json (its test list) or a text file of image names")
    p.add_argument("--limit", type=positive_int, help="only the first N images (of the split)")
    p.add_argument("--metrics", help=f"comma-separated subset of: {', '.join(METRICS)}")
    add_out(p, "OUT", "output folder", required=False, default="evaluation")
    p.add_argument("--pictures", action="store_true", help="also write score histograms and a contact sheet")
    add_engine(p, "pytorch (auto) or real Caffe through pycaffe (CPU)", precision="fp32")  # scores: exact
    p.add_argument("--seed", type=int, default=0, help="seed of AUC jitter and negative sampling")
    add_quiet(p)
    p.set_defaults(func=cmd_evaluate)


def _model_predictor(args: argparse.Namespace):
    """(predict(sample) -> {label: map}, labels): one forward pass an image, every configuration."""
    specs = args.postprocess or ["default"]
    model = build_salicon(args, postprocess=specs[0])
    posts = [model.resolve_postprocess(spec) for spec in specs]
    labels = ["salicon"] if len(posts) == 1 else [f"salicon[{spec}]" for spec in specs]

    def predict(sample):
        inputs, size = model.preprocess(sample.image_path)
        raw = model.forward({k: v[None] for k, v in inputs.items()})[0]
        return {label: model.postprocess(raw, size, post) for label, post in zip(labels, posts)}
    return predict, labels


def _names(args: argparse.Namespace, dataset) -> list[str] | None:
    from ..evaluate import read_split

    names = read_split(args.split) if args.split else None
    if names is None and args.limit:
        return dataset.names()[:args.limit]
    return names[:args.limit] if names is not None and args.limit else names


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data import DataError, open_dataset
    from ..evaluate import evaluate, saliency_maps_from_folder

    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else list(METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        return usage_error(args, f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    if args.model and args.saliency_maps:
        return usage_error(args, "give --model or --saliency-maps, not both")
    try:
        dataset = open_dataset(args.dataset)
        names = _names(args, dataset)
        predict, model_names = None, ["model"]
        if args.saliency_maps:
            predict, model_names = saliency_maps_from_folder(args.saliency_maps), [Path(args.saliency_maps).name]
        elif args.model or not args.baselines_only:
            predict, model_names = _model_predictor(args)
        total = len(names) if names is not None else len(dataset)
        with tqdm(total=total, unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True) as bar:
            result = evaluate(dataset, predict, names, metrics, baselines=not args.no_baselines,
                              model_name=model_names, seed=args.seed, progress=bar.update,
                              on_error=lambda m: bar.write(f"salicon: error: {m}", file=sys.stderr))
    except (SaliconError, DataError, ValueError, OSError) as exc:
        return model_problem(exc, args)
    status = _check_result(result, args, model_names if predict is not None else [])
    if status is None:
        return 1
    out = Path(args.out)
    result.write(out)
    print(result.table())
    print(f"wrote {out / 'per_image.csv'} and {out / 'summary.json'}", file=sys.stderr)
    if args.pictures:
        _pictures(result, dataset, predict, model_names, out)
    return status


def _check_result(result, args: argparse.Namespace, model_names: list[str]) -> int | None:
    """The exit status the scores call for, or None when there is nothing to report."""
    status = 0
    for metric, why in result.unavailable.items():
        error(f"metric {metric} cannot be computed: {why}")
        status = 1 if args.metrics else status  # asked for by name: the run did not do what was asked
    if not result.metrics:
        error("none of the requested metrics can be computed on this data set")
        return None
    for name in model_names:
        failed, scored = result.failed.get(name, 0), result.scored(name)
        if not scored:
            error(f"{name}: no image could be scored ({failed} failed); nothing to report")
            return None
        if failed:
            error(f"{name}: {failed} of {failed + scored} image(s) could not be scored; "
                  f"its means are over the other {scored}")
            status = 1
    return status


def _pictures(result, dataset, predict, model_names: list[str], out: Path) -> None:
    from ..visualize import contact_sheet, score_histograms

    score_histograms(result, out / "histograms.png")
    if predict is not None:
        contact_sheet(result, dataset, lambda s: _first_map(predict(s)), out / "contact_sheet.png",
                      metric="NSS", model=model_names[0])
    print(f"wrote pictures to {out}", file=sys.stderr)


def _first_map(prediction):
    return next(iter(prediction.values())) if isinstance(prediction, dict) else prediction
