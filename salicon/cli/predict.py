"""``salicon predict``: a saliency map for each image, in this process or as a Ray job.

Write a saliency map PNG (8-bit, the image's size) for each image, or with
--format probability / log-density one float64 <name>.npy (a benchmark
submission: the MIT/Tübingen benchmark's and pysaliency's form). Inputs are
image files, folders (their image files), globs and .txt/.csv/.parquet lists
of paths. A file that fails is reported and skipped; the exit status is 1 if
any failed.

Videos among the inputs (.mp4, .mov, .mkv, .webm, .avi, ...) get a map video
each, with the same size, frame count and timing (see the video options).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ..errors import SaliconError
from ..image import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image_rows
from ..inputs import Item, is_uri, list_inputs
from ..outputs import (
    MAP_FORMATS,
    STORES,
    OutputError,
    OutputSpec,
    OutputStore,
    WriteCounts,
    check_output_folder,
    find_clashes,
    remove_empty_folders,
    write_map,
)
from .options import (
    add_engine,
    add_max_pixels,
    add_model,
    add_out,
    add_postprocess,
    add_quiet,
    build_salicon,
    error,
    model_problem,
    phrase,
    plural,
    positive_int,
    ray_problem,
    salicon_config,
    subcommand,
    usage_error,
)
from .video import add_video_options, run_videos, split_videos, video_outputs, videos_problem

#: What --ray accepts as a cluster address (anything else after --ray is an input).
RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]+:\d+)$")
#: Options of --ray jobs only, with their defaults.
_RAY_ONLY = {"actors": None, "store": "png", "parquet_map": "png"}


def unit_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_parser(sub) -> None:
    p = subcommand(sub, "predict", "write a saliency map for each image", __doc__)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image and video files, folders, globs or list files")
    add_out(p, "OUTDIR", "folder for the maps")
    add_model(p)
    add_engine(p, "pytorch (auto) or real Caffe through pycaffe (CPU; scripts/install_caffe.sh)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass")
    p.add_argument("--decode", default="threads", choices=["threads", "processes", "gpu"],
                   help="how images are decoded ahead of the net: worker threads (default), worker processes "
                        "(pixels copied to a GPU through pinned memory and resized there), or gpu (JPEGs decoded "
                        "on the GPU by torchvision)")
    p.add_argument("--workers", type=positive_int,
                   help="decode workers (default: the cores, at most 8); map files are written by as many threads")
    add_max_pixels(p, DEFAULT_MAX_PIXELS, "PIL's own limit")
    p.add_argument("--resize", default="spline", choices=["spline", "scipy", "bilinear"],
                   help="resize method (spline = the published cubic zoom, computed fast)")
    add_postprocess(p)
    p.add_argument("--format", default="png", choices=MAP_FORMATS,
                   help="the map file: an 8-bit PNG (default), or <name>.npy holding the float64 probability map "
                        "(sums to 1) or its log-density, as the MIT/Tübingen benchmark and pysaliency read them")
    p.add_argument("--npy", action="store_true", help="also write the float32 map as .npy")
    p.add_argument("--overlay", action="store_true", help="also write a heatmap over the image (_overlay.png)")
    p.add_argument("--threshold", type=unit_fraction, metavar="T",
                   help="zero map values below T (0..1) for crisper maps")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    add_quiet(p, "no progress bar or summary")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="say how the net runs first: runtime, precision, device and, for each Python layer, "
                        "the file and its implementation (native or as written)")
    add_video_options(p)
    _add_ray_options(p)
    p.set_defaults(func=cmd_predict)


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("many images on Ray (pip install -e \".[ray]\"; see docs/guides/ray.md)")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run as a Ray Data job: decode on CPU workers, the net in actors, outputs written by "
                          "the workers, finished images skipped on a rerun, OUT/manifest.csv. Without ADDRESS a "
                          "local Ray instance; 'auto' or ray://HOST:10001 joins a cluster. Inputs may also be "
                          "URIs (s3://, gs://, file://)")
    ray.add_argument("--actors", type=positive_int,
                     help="net actors (default: one per GPU of the cluster, else one CPU actor)")
    ray.add_argument("--store", default="png", choices=list(STORES),
                     help="PNG maps mirroring the input tree, Parquet shards (OUT/shards/), or both")
    ray.add_argument("--parquet-map", default="png", choices=["png", "float16"],
                     help="map column of the shards: 8-bit PNG bytes or float16 (height x width, row-major)")


def _spec(args: argparse.Namespace) -> OutputSpec:
    """What to write; options that contradict each other are a ValueError (exit status 2)."""
    asked = {k.strip().lower(): v.strip().lower() for k, _, v in
             (item.partition("=") for item in str(args.postprocess).split(","))}
    if args.format != "png" and asked.get("normalize") == "minmax":
        raise ValueError(f"--format {args.format} writes a probability map (its values sum to 1), which "
                         f"--postprocess normalize=minmax contradicts; drop one of them")
    return OutputSpec(store=args.store, npy=args.npy, overlay=args.overlay, threshold=args.threshold,
                      parquet_map=args.parquet_map, format=args.format)


def _prepare(args: argparse.Namespace, spec: OutputSpec, local_only: bool) -> tuple[list[Item], int, list] | int:
    """The inputs, the number of inputs that name no image and the output folders
    created, after every check that needs no model: inputs, the output folder,
    outputs that would overwrite inputs. An exit status instead when the job
    cannot start."""
    from ..video import VIDEO_SUFFIXES

    items, problems = list_inputs(args.inputs, args.recursive, IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    if local_only:
        remote = [it for it in items if is_uri(it.source)]
        problems += [f"{it.source}: URIs are read by --ray jobs; download the file or add --ray" for it in remote]
        items = [it for it in items if not is_uri(it.source)]
    for problem in problems:
        error(problem)
    videos = set(split_videos(items)[1])
    if not items:
        error("no images or videos to process")
        return 1
    outputs = video_outputs(args)
    clashes = find_clashes(items, args.out, spec,
                           lambda it: outputs.files(it.stem) if it in videos else spec.files(it.stem))
    if clashes:
        kind = "video" if any(it.source == clashes[0][0] for it in videos) else "image"
        error(f"output {clashes[0][1]} would overwrite the input {kind} {clashes[0][0]}"
              + (f" (and {plural(len(clashes) - 1, 'other')})" if len(clashes) > 1 else "")
              + "; choose another -o")
        return 1
    try:
        created = [] if is_uri(args.out) else check_output_folder(args.out)
    except OutputError as exc:
        error(str(exc))
        return 1
    return items, len(problems), created


def cmd_predict(args: argparse.Namespace) -> int:
    problem = _ray_problem(args) if args.ray is not None else _local_problem(args)
    if problem is not None:
        return problem
    try:
        spec = _spec(args)
    except ValueError as exc:
        return usage_error(args, str(exc))
    prepared = _prepare(args, spec, local_only=args.ray is None)
    if isinstance(prepared, int):
        return prepared
    items, not_found, created = prepared
    unfit = videos_problem(args, split_videos(items)[1])
    if unfit is not None:
        remove_empty_folders(created)
        return usage_error(args, unfit)
    run = _predict_on_ray if args.ray is not None else _predict_here
    return run(args, items, spec, not_found, created)


def _local_problem(args: argparse.Namespace) -> int | None:
    for name, default in _RAY_ONLY.items():
        if getattr(args, name) != default:
            return usage_error(args, f"--{name.replace('_', '-')} applies to --ray jobs only")
    return None


def _predict_here(args: argparse.Namespace, items: list[Item], spec: OutputSpec, not_found: int,
                  created: list) -> int:
    try:
        model = build_salicon(args)
    except (SaliconError, ValueError) as exc:
        remove_empty_folders(created)
        return model_problem(exc, args)
    from ..decode import gpu_decode_problem
    if args.decode == "gpu" and (problem := gpu_decode_problem(model.device)):
        remove_empty_folders(created)
        return usage_error(args, f"--decode gpu: {problem}")
    if args.verbose:
        for line in describe_model(model):
            print(f"salicon: {line}", file=sys.stderr)
    images, videos = split_videos(items)
    counts = WriteCounts(spec.kinds(), failed=not_found)
    if images:
        _run(model, images, args, spec, counts)
    clips_written, clips_failed = run_videos(model, videos, args) if videos else (0, 0)
    if not any(counts.written.values()) and not clips_written:
        remove_empty_folders(created)
    if not args.quiet:
        if images or not videos:
            print(counts.summary(args.out), file=sys.stderr)
        if videos:
            print(f"salicon: {plural(clips_written, 'video')} written to {args.out}"
                  + (f", {clips_failed} failed" if clips_failed else ""), file=sys.stderr)
    return 1 if counts.failed or clips_failed else 0


def describe_model(model) -> list[str]:
    """What runs: the net's files, runtime, precision, device and each Python layer."""
    named = f"{model.name} ({model.model_path})" if model.name else str(model.model_path)
    lines = [f"model {named}, net {model.prototxt_path}",
             f"runtime {model.runtime}, precision {model.precision}, device {model.device}"]
    for name, info in model.python_layers.items():
        lines.append(f"Python layer '{name}': {info.describe()}")
    return lines


def _run(model, items: list[Item], args: argparse.Namespace, spec: OutputSpec, counts: WriteCounts) -> None:
    """Maps computed in order while a writer pool encodes and writes the files."""
    from tqdm import tqdm

    store = OutputStore(args.out)
    bar = tqdm(total=len(items), unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)

    def report(source: str, message: str) -> None:
        bar.write(f"salicon: error: {message if source in message else f'{source}: {message}'}", file=sys.stderr)

    def image_of(source: str) -> Callable:
        return lambda: load_image_rows(source, max_pixels=args.max_pixels)  # a huge one's rows on demand

    writers = args.workers or min(8, os.cpu_count() or 1)  # PNG encoding releases the GIL: threads scale
    with ThreadPoolExecutor(max_workers=writers) as writer:
        pending: deque = deque()

        def collect(block: bool) -> None:
            while pending and (block or pending[0][1].done()):
                source, future = pending.popleft()
                result = future.result()
                counts.add(result)
                if not result.ok:
                    report(source, result.message())

        for index, result in model.iter_saliency([it.source for it in items], batch_size=args.batch_size,
                                                 workers=args.workers, decode=args.decode):
            item = items[index]
            bar.update(1)
            if isinstance(result, Exception):
                counts.add(None)
                report(item.source, phrase(result))
                continue
            pending.append((item.source, writer.submit(write_map, store, item.stem, result, spec,
                                                       image_of(item.source))))
            collect(block=len(pending) > 2 * writers)
        collect(block=True)
    bar.close()


def _ray_problem(args: argparse.Namespace) -> int | None:
    from ..batch import ray_dependencies_missing

    if args.decode != "threads" or args.workers:
        return usage_error(args, "--decode and --workers apply to single-process predict; "
                                 "--ray jobs decode on Ray's CPU workers")
    problem = ray_problem(args, _address(args), ray_dependencies_missing, "single-process predict")
    if problem is not None:
        return problem
    return None


def _address(args: argparse.Namespace) -> str | None:
    return None if args.ray == "local" else args.ray


def _predict_on_ray(args: argparse.Namespace, items: list[Item], spec: OutputSpec, not_found: int,
                    created: list) -> int:
    from ..batch import RayOptions, predict_on_ray
    from ..batch_video import VideoSettings

    try:
        options = RayOptions(config=salicon_config(args), address=_address(args), actors=args.actors,
                             batch_size=args.batch_size, progress=not args.quiet)
        video = VideoSettings(outputs=video_outputs(args), fps=args.fps, every=args.every,
                              interpolate=args.interpolate, smoothing=args.temporal_smoothing)
        report = predict_on_ray(items, args.out, options, spec=spec, on_failure=error, video=video)
    except (SaliconError, ValueError) as exc:
        remove_empty_folders(created)
        return model_problem(exc, args)
    if not args.quiet:
        line = (f"{report.written} written, {report.skipped} already done, {len(report.failed)} failed "
                f"of {plural(report.total, 'input')} in {report.seconds:.1f} s")
        if report.actors:
            line += f" ({report.actors} {report.device} actor(s))"
        print(f"{line}; manifest: {args.out.rstrip('/')}/manifest.csv", file=sys.stderr)
    return 1 if report.failed or not_found else 0


def join_ray_address(argv: list[str], arg: str) -> bool:
    """'--ray photos/' -> '--ray=local photos/': only a cluster address is --ray's value.
    Rewrites the end of ``argv`` and says whether it did."""
    if argv and argv[-1] == "--ray" and not arg.startswith("-") and not RAY_ADDRESS.match(arg):
        argv[-1] = "--ray=local"
        argv.append(arg)
        return True
    return False
