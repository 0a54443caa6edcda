"""The ``salicon`` command: subcommands from a name -> function table.

    salicon predict photos/ -o maps/ --overlay
    salicon init-weights --vgg16 VGG_ILSVRC_16_layers.caffemodel -o untrained.caffemodel
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import SaliconError
from .formats import atomic_write
from .image import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image

INPUT_SCALES = {"published": 1.0 / 255.0, "vgg": 1.0}
#: Marker for --fast, turned into the shipped salicon_fast.prototxt's path when used.
FAST_PROTOTXT = "salicon_fast.prototxt"
DEFAULT_METRIC_NAMES = ("AUC_Judd", "AUC_Borji", "sAUC", "NSS", "CC", "SIM", "KLDiv", "IG", "EMD")


def _error(message: str) -> None:
    print(f"salicon: error: {message}", file=sys.stderr)


# ---------------------------------------------------------------- predict


def collect_images(paths: Sequence[str], recursive: bool) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image path, output stem relative to OUTDIR) for each input, and the
    paths that do not exist. Folders contribute their image files, sorted."""
    items, missing = [], []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(path.glob(pattern)):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    items.append((f, f.relative_to(path).with_suffix("")))
        elif path.exists():
            items.append((path, Path(path.stem)))
        else:
            missing.append(arg)
    return items, missing


def unique_stems(items: list[tuple[Path, Path]]) -> list[Path]:
    """Output stems without collisions: 'a.jpg' and 'a.png' become 'a.jpg' / 'a.png'."""
    counts: dict[Path, int] = {}
    for _, stem in items:
        counts[stem] = counts.get(stem, 0) + 1
    out, taken = [], set()
    for src, stem in items:
        name = stem if counts[stem] == 1 else stem.with_name(stem.name + src.suffix)
        base, k = name, 1
        while name in taken:
            k += 1
            name = base.with_name(f"{base.name}_{k}")
        taken.add(name)
        out.append(name)
    return out


def _save_png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    atomic_write(path, write)


def _output_folder_problem(outdir: Path) -> str | None:
    """Why ``outdir`` cannot receive outputs (an existing file, a read-only
    parent), or None. Checked before any work is done."""
    if outdir.exists() and not outdir.is_dir():
        return f"-o {outdir}: exists and is not a folder; give a folder for the maps"
    parent = outdir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"-o {outdir}: {parent} is a file, so the folder cannot be created"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"-o {outdir}: no permission to write in {parent}"
    return None


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .model import Salicon
    from .visualize import overlay, threshold_map, to_uint8

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        _error(f"--threshold must be in [0, 1], got {args.threshold}")
        return 2
    if args.ray is not None:
        return _predict_on_ray(args)
    for name in ("actors", "store", "parquet_map"):
        if getattr(args, name) != {"actors": None, "store": "png", "parquet_map": "png"}[name]:
            _error(f"--{name.replace('_', '-')} applies to --ray jobs only")
            return 2
    items, missing = collect_images(args.inputs, args.recursive)
    for m in missing:
        _error(f"{m}: no such file or folder")
    if not items:
        _error("no images to process")
        return 1
    outdir = Path(args.output)
    problem = _output_folder_problem(outdir)
    if problem:  # before the model loads and the net runs
        _error(problem)
        return 1
    inputs_resolved = {src.resolve() for src, _ in items}
    try:
        model = Salicon(args.model, _prototxt(args), device=args.device, precision=args.precision, engine=args.engine,
                        input_scale=args.input_scale, resize=args.resize, max_pixels=args.max_pixels,
                        postprocess=args.postprocess)
    except (SaliconError, ValueError) as exc:
        _error(str(exc))
        return 1

    stems = unique_stems(items)
    failed = len(missing)
    written = 0
    bar = tqdm(total=len(items), unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)

    def report(src: Path, exc: Exception) -> None:
        nonlocal failed
        failed += 1
        message = str(exc) if str(src) in str(exc) else f"{src}: {exc}"
        bar.write(f"salicon: error: {message}", file=sys.stderr)

    def save(src: Path, stem: Path, sal: np.ndarray) -> None:
        targets = {"map": outdir / stem.with_name(stem.name + ".png")}
        if args.npy:
            targets["npy"] = outdir / stem.with_name(stem.name + ".npy")
        if args.overlay:
            targets["overlay"] = outdir / stem.with_name(stem.name + "_overlay.png")
        clash = [t for t in targets.values() if t.resolve() in inputs_resolved]
        if clash:
            raise SaliconError(f"output {clash[0]} would overwrite an input image; choose another -o")
        if args.threshold is not None:
            sal = threshold_map(sal, args.threshold)
        _save_png(targets["map"], to_uint8(sal))
        if args.npy:
            _save_npy(targets["npy"], np.asarray(sal, dtype=np.float32))
        if args.overlay:
            image = load_image(src, as_float=False, max_pixels=args.max_pixels)
            _save_png(targets["overlay"], overlay(image, sal))

    # Files are encoded and written by a writer thread while the net computes.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as writer:
        pending: deque = deque()

        def collect(block: bool) -> None:
            nonlocal written
            while pending and (block or pending[0][1].done()):
                src, future = pending.popleft()
                try:
                    future.result()
                    written += 1
                except (SaliconError, OSError, ValueError) as exc:
                    report(src, exc)

        for index, result in model.iter_saliency([src for src, _ in items], batch_size=args.batch_size):
            src, stem = items[index][0], stems[index]
            bar.update(1)
            if isinstance(result, Exception):
                report(src, result)
                continue
            pending.append((src, writer.submit(save, src, stem, result)))
            collect(block=len(pending) > 8)
        collect(block=True)
    bar.close()
    if not args.quiet:
        if written:
            print(f"wrote {written} saliency map(s) to {outdir}" + (f"; {failed} failed" if failed else ""),
                  file=sys.stderr)
        else:
            print(f"no saliency maps written: all {failed} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _predict_on_ray(args: argparse.Namespace) -> int:
    from .batch import OutputSpec, list_inputs, predict_on_ray, ray_dependencies_missing, use_token_auth

    use_token_auth(None if args.ray == "local" else args.ray)  # before Ray is imported
    missing_deps = ray_dependencies_missing()
    if missing_deps:
        _error(missing_deps)
        return 1
    if args.engine == "caffe":
        _error("--ray runs the PyTorch engine; --engine caffe is for single-process predict")
        return 2
    items, problems = list_inputs(args.inputs, args.recursive)
    for problem in problems:
        _error(problem)
    if not items:
        _error("no images to process")
        return 1
    if "://" not in args.output:
        problem = _output_folder_problem(Path(args.output))
        if problem:
            _error(problem)
            return 1
    spec = OutputSpec(store=args.store, npy=args.npy, overlay=args.overlay, threshold=args.threshold,
                      parquet_map=args.parquet_map)
    address = None if args.ray == "local" else args.ray
    try:
        report = predict_on_ray(items, args.output, model_path=args.model, prototxt=_prototxt(args),
                                address=address, actors=args.actors, batch_size=args.batch_size,
                                device=args.device, precision=args.precision, input_scale=args.input_scale,
                                resize=args.resize, postprocess=args.postprocess, max_pixels=args.max_pixels,
                                spec=spec, progress=not args.quiet)
    except (SaliconError, ValueError) as exc:
        _error(str(exc))
        return 1
    if not args.quiet:
        line = (f"{report.written} written, {report.skipped} already done, {len(report.failed)} failed "
                f"of {report.total} image(s) in {report.seconds:.1f} s")
        if report.actors:
            line += f" ({report.actors} {report.device} actor(s))"
        print(f"{line}; manifest: {args.output.rstrip('/')}/manifest.csv", file=sys.stderr)
    return 1 if report.failed or problems else 0


#: What --ray accepts as a cluster address (anything else after --ray is an input).
_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.\-]+:\d+)$")


# ----------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import SaliencyService, run_server, web_dependencies_missing

    missing = web_dependencies_missing()
    if missing:
        _error(missing)
        return 1
    if args.port > 65535:
        _error(f"--port must be at most 65535, got {args.port}")
        return 2
    problem = _listen_problem(args.host, args.port)
    if problem:  # before the model loads
        _error(f"cannot serve on {args.host}:{args.port}: {problem}")
        return 1
    from .model import Salicon

    try:
        model = Salicon(args.model, _prototxt(args), device=args.device, precision=args.precision,
                        engine=args.engine, input_scale=args.input_scale, max_pixels=args.max_pixels,
                        postprocess=args.postprocess)
    except (SaliconError, ValueError) as exc:
        _error(str(exc))
        return 1
    service = SaliencyService(model, max_pixels=args.max_pixels, max_upload_bytes=int(args.max_upload_mb * 1e6),
                              batch_size=args.batch_size, max_queue=args.queue)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    print(f"salicon serve: {model.model_path.name} on {model.device}; open {url} (API: {url}/docs); "
          f"Ctrl-C stops", file=sys.stderr)
    run_server(service, args.host, args.port, log_level="info" if args.verbose else "warning")
    return 0


def _listen_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (taken, not this machine's address), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


# ----------------------------------------------------------- init-weights


def cmd_init_weights(args: argparse.Namespace) -> int:
    from .weights import init_from_vgg16

    out = Path(args.output)
    if out.resolve() == Path(args.vgg16).resolve():
        _error("-o must differ from --vgg16")
        return 2
    if out.is_dir():
        _error(f"-o {out}: is a folder; give the .caffemodel file to write")
        return 1
    if out.exists() and out.suffix.lower() != ".caffemodel" and not args.force:
        _error(f"-o {out}: exists and is not a .caffemodel; refusing to overwrite it (use --force)")
        return 1
    try:
        net, report = init_from_vgg16(args.vgg16, args.prototxt, seed=args.seed)
        net.save(out)
    except (SaliconError, OSError) as exc:
        _error(str(exc))
        return 1
    print(f"copied VGG-16 into {len(report.copied)} layers; initialised from fillers (seed {args.seed}): "
          f"{', '.join(report.initialised) or 'none'}; ignored VGG-16 layers: "
          f"{', '.join(report.ignored) or 'none'}")
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------- export


def cmd_export_caffemodel(args: argparse.Namespace) -> int:
    from .export import export_caffemodel

    try:
        paths = export_caffemodel(args.output, args.model, args.prototxt, name=args.name)
    except (SaliconError, OSError) as exc:
        _error(str(exc))
        return 1
    for path in paths.values():
        print(f"wrote {path}")
    print(f"run it in Caffe with {Path(args.output)} on PYTHONPATH (for the Python layers): "
          f"caffe.Net('{paths['prototxt']}', caffe.TEST, weights='{paths['caffemodel']}')")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and (out.is_dir() or out.suffix.lower() != ".onnx") and not args.force:
        _error(f"{out}: exists and is not an .onnx file; refusing to overwrite it (use --force)")
        return 1
    try:
        from .export import export_onnx
        export_onnx(out, args.model, args.prototxt, opset=args.opset, dynamic_batch=not args.static_batch)
    except ModuleNotFoundError as exc:
        _error(f"ONNX export needs the '{exc.name}' package: pip install -e \".[onnx]\"")
        return 1
    except (SaliconError, OSError) as exc:
        _error(str(exc))
        return 1
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------ train


def _parse_duration(text: str) -> float:
    """'9000', '90s', '45m', '2.5h' -> seconds (positive)."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 9000, 90s, 45m, 2.5h)") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {text!r}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from .data import DataError
    from .model import prototxt_path
    from .train import TrainConfig, TrainingError, train

    config = TrainConfig(
        data=args.data, out=args.out, solver=args.solver or str(prototxt_path("solver.prototxt")),
        prototxt=args.prototxt, weights=args.weights, resume=args.resume, time_limit=args.time_limit,
        max_iter=args.max_iter, device=args.device, precision=args.precision, seed=args.seed,
        test=args.test, input_scale=args.input_scale or INPUT_SCALES["published"],
        sigma=args.sigma, workers=args.workers, snapshot=args.snapshot, split=args.split, maps=args.maps,
        engine=args.engine)
    try:
        result = train(config, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    except (SaliconError, DataError, TrainingError, ValueError, OSError) as exc:
        _error(str(exc))
        return 1
    return 130 if result.stop_reason == "interrupted" else 0  # 128 + SIGINT, as shells expect


# --------------------------------------------------------------- evaluate


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data import DataError, open_dataset
    from .evaluate import DEFAULT_METRICS, evaluate, read_split, saliency_maps_from_folder

    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else list(DEFAULT_METRICS)
    unknown = [m for m in metrics if m not in DEFAULT_METRICS]
    if unknown:
        _error(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(DEFAULT_METRICS)}")
        return 2
    if args.model and args.saliency_maps:
        _error("give --model or --saliency-maps, not both")
        return 2
    try:
        dataset = open_dataset(args.dataset)
        names = read_split(args.split) if args.split else None
        if names is None and args.limit:
            names = dataset.names()[:args.limit]
        elif names is not None and args.limit:
            names = names[:args.limit]
        predict, model_names = None, ["model"]
        if args.saliency_maps:
            predict = saliency_maps_from_folder(args.saliency_maps)
            model_names = [Path(args.saliency_maps).name]
        elif args.model or not args.baselines_only:
            from .model import Salicon
            specs = args.postprocess or ["default"]
            model = Salicon(args.model, _prototxt(args), device=args.device, engine=args.engine,
                            precision=args.precision, input_scale=args.input_scale, postprocess=specs[0])
            posts = [model.resolve_postprocess(spec) for spec in specs]
            labels = ["salicon"] if len(posts) == 1 else [f"salicon[{spec}]" for spec in specs]

            def predict(sample):  # one forward pass, every configuration
                inputs, size = model.preprocess(sample.image_path)
                raw = model.forward({k: v[None] for k, v in inputs.items()})[0]
                return {label: model.postprocess(raw, size, post) for label, post in zip(labels, posts)}
            model_names = labels
        total = len(names) if names is not None else len(dataset)
        with tqdm(total=total, unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True) as bar:
            result = evaluate(dataset, predict, names, metrics, baselines=not args.no_baselines,
                              model_name=model_names, seed=args.seed, progress=bar.update,
                              on_error=lambda m: bar.write(f"salicon: error: {m}", file=sys.stderr))
    except (SaliconError, DataError, ValueError, OSError) as exc:
        _error(str(exc))
        return 1
    status = 0
    for metric, why in result.unavailable.items():
        _error(f"metric {metric} cannot be computed: {why}")
        status = 1 if args.metrics else status  # asked for by name: the run did not do what was asked
    if not result.metrics:
        _error("none of the requested metrics can be computed on this data set")
        return 1
    for name in model_names if predict is not None else ():
        failed, scored = result.failed.get(name, 0), result.scored(name)
        if not scored:
            _error(f"{name}: no image could be scored ({failed} failed); nothing to report")
            return 1
        if failed:
            _error(f"{name}: {failed} of {failed + scored} image(s) could not be scored; "
                   f"its means are over the other {scored}")
            status = 1
    out = Path(args.out)
    result.write(out)
    print(result.table())
    print(f"wrote {out / 'per_image.csv'} and {out / 'summary.json'}", file=sys.stderr)
    if args.pictures:
        from .visualize import contact_sheet, score_histograms
        score_histograms(result, out / "histograms.png")
        if predict is not None:
            contact_sheet(result, dataset, lambda s: _first_map(predict(s)), out / "contact_sheet.png",
                          metric="NSS", model=model_names[0])
        print(f"wrote pictures to {out}", file=sys.stderr)
    return status


def _prototxt(args: argparse.Namespace) -> str | None:
    if args.prototxt == FAST_PROTOTXT:
        from .model import prototxt_path
        return str(prototxt_path(FAST_PROTOTXT))
    return args.prototxt


def _first_map(prediction):
    return next(iter(prediction.values())) if isinstance(prediction, dict) else prediction


# ------------------------------------------------------------------ main


def _input_scale(text: str) -> float:
    if text in INPUT_SCALES:
        return INPUT_SCALES[text]
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid input scale {text!r}: 'published', 'vgg' or a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"input scale must be positive, not {text}")
    return value


def _whole_number(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _max_pixels(text: str) -> int | None:
    """'none', a pixel count, or megapixels with an M suffix ('250M')."""
    text = text.strip()
    if text.lower() in ("none", "0", "unlimited"):
        return None
    try:
        value = float(text[:-1]) * 1e6 if text[-1:].lower() == "m" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel count, megapixels like 250M, or 'none'; "
                                         f"got {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text}")
    return int(value)


def _add_export_source(p: argparse.ArgumentParser) -> None:
    """--model and --prototxt of the export subcommands."""
    p.add_argument("--model", help="weights, .caffemodel or .safetensors (default: the shipped pretrained model)")
    p.add_argument("--prototxt", help="test net prototxt (default: prototxt/salicon.prototxt)")


def _add_net_options(p: argparse.ArgumentParser) -> None:
    """--prototxt and its shorthand --fast, shared by predict and evaluate."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--prototxt", help="test net prototxt (default: prototxt/salicon.prototxt)")
    group.add_argument("--fast", dest="prototxt", action="store_const", const=FAST_PROTOTXT,
                       help="half the input sizes (600x800 / 300x400, prototxt/salicon_fast.prototxt): "
                            "about 4x less arithmetic but less accurate maps with the shipped model "
                            "(OSIE test NSS 2.02 against 2.71; see the README)")


def _add_engine_options(p: argparse.ArgumentParser, engine_help: str) -> None:
    """--device, --engine, --precision and --input-scale, shared by predict, train and evaluate."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--engine", default="auto", choices=["auto", "pytorch", "caffe"], help=engine_help)
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                   help="numerics: fp32 (exact), tf32 or bf16 autocast (faster on GPUs)")
    p.add_argument("--input-scale", type=_input_scale,
                   help="factor after mean subtraction: 'published' (1/255, for the published weights), "
                        "'vgg' (1) or a number (default: the model file's own convention, else 'published')")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one worth showing (not None, not a flag's False)
    and the help text does not already describe it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default:" in help_text:
            return help_text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="salicon",
        description="SALICON saliency maps (OpenSALICON) from Caffe prototxt/.caffemodel files, run on PyTorch.",
        formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="write a saliency map for each image",
                       description="Write a saliency map PNG (8-bit, the image's size) for each image. "
                                   "Folders contribute their image files. A file that fails is reported "
                                   "and skipped; the exit status is 1 if any failed.",
                       formatter_class=_HelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the maps")
    p.add_argument("--model", help="trained weights, .caffemodel or .safetensors "
                                   "(default: the shipped pretrained model, SALICON trained on OSIE)")
    _add_net_options(p)
    _add_engine_options(p, "pytorch (auto) or real Caffe through pycaffe (CPU; scripts/install_caffe.sh)")
    p.add_argument("--batch-size", type=_positive_int, default=1, help="images per forward pass")
    p.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS,
                   help="refuse images with more pixels than this: a count, megapixels like 250M, or 'none' "
                        "(default: about 179 megapixels, PIL's own limit)")
    p.add_argument("--resize", default="spline", choices=["spline", "scipy", "bilinear"],
                   help="resize method (spline = the published cubic zoom, computed fast)")
    p.add_argument("--postprocess", default="default", metavar="SPEC",
                   help="'default' (the model's recorded post-processing: the shipped model's centre prior), "
                        "'none' (the published output) or key=value pairs, e.g. "
                        "'blur=0.02,prior=learned,weight=1,normalize=probability' (see the README; default: "
                        "'default')")
    p.add_argument("--npy", action="store_true", help="also write the float32 map as .npy")
    p.add_argument("--overlay", action="store_true", help="also write a heatmap over the image (_overlay.png)")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="zero map values below T (0..1) for crisper maps")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    ray = p.add_argument_group("many images on Ray (pip install -e \".[ray]\"; see the README's 'Many images')")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run as a Ray Data job: decode on CPU workers, the net in actors, outputs written by "
                          "the workers, finished images skipped on a rerun, OUT/manifest.csv. Without ADDRESS a "
                          "local Ray instance; 'auto' or ray://HOST:10001 joins a cluster. Inputs may also be "
                          "globs, .txt/.csv/.parquet lists of paths, and URIs (s3://, gs://, file://)")
    ray.add_argument("--actors", type=_positive_int,
                     help="net actors (default: one per GPU of the cluster, else one CPU actor)")
    ray.add_argument("--store", default="png", choices=["png", "parquet", "both"],
                     help="PNG maps mirroring the input tree, Parquet shards (OUT/shards/), or both")
    ray.add_argument("--parquet-map", default="png", choices=["png", "float16"],
                     help="map column of the shards: 8-bit PNG bytes or float16 (height x width, row-major)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("train", help="fine-tune SALICON on eye-tracking data",
                       description="Fine-tune with Caffe's solver semantics: one solver step per image, a new "
                                   "random order every epoch, a seeded held-out split (OUT/split.json), "
                                   "snapshots (.caffemodel + .solverstate) at the solver's interval and at the "
                                   "end, a time limit, Ctrl-C stops cleanly with a snapshot. Writes "
                                   "OUT/log.jsonl and OUT/loss.png.",
                       formatter_class=_HelpFormatter)
    p.add_argument("--data", required=True,
                   help="an OSIE folder (stimuli/ + fixations.mat), a folder with images/ and maps/, or an "
                        "image folder with --maps")
    p.add_argument("--maps", help="fixation-map folder (same base names as the images)")
    p.add_argument("--out", required=True, help="output folder (snapshots, split, log)")
    p.add_argument("--solver", help="solver prototxt (default: prototxt/solver.prototxt)")
    p.add_argument("--prototxt", help="train net (default: the solver's `net`)")
    p.add_argument("--weights", help="start from this .caffemodel (untrained.caffemodel from init-weights, "
                                     "or a trained model to fine-tune)")
    p.add_argument("--resume", metavar="STATE", help="continue from a .solverstate")
    p.add_argument("--time-limit", type=_parse_duration, default=2.5 * 3600,
                   help="stop after this long (seconds, or with s/m/h)")
    p.add_argument("--max-iter", type=_positive_int,
                   help="stop after this many iterations (default: the solver's)")
    p.add_argument("--snapshot", type=_non_negative_int,
                   help="snapshot interval in iterations, 0 for none but the last (default: the solver's)")
    _add_engine_options(p, "pytorch (auto), or real Caffe's own solver through pycaffe (CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the image order and fillers")
    p.add_argument("--test", type=_positive_float, default=0.1,
                   help="held-out images: a count, or a fraction if < 1")
    p.add_argument("--split", help="reuse this split.json instead of drawing one")
    p.add_argument("--sigma", type=_positive_float, default=24.0, help="fixation-map blur (px) for fixation points")
    p.add_argument("--workers", type=_positive_int, help="data preparation threads (default: cores, at most 8)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score saliency maps on eye-tracking data, with baselines",
                       description="Score a model (or precomputed maps) with the standard saliency metrics "
                                   "(MIT benchmark conventions), next to a centre-bias Gaussian and the "
                                   "inter-observer bound (each subject predicted from the others) where the data "
                                   "has per-subject fixations. Writes OUT/per_image.csv and OUT/summary.json "
                                   "and prints mean ± std.",
                       formatter_class=_HelpFormatter)
    p.add_argument("--dataset", required=True,
                   help="KIND:PATH with KIND osie, folder, mit1003, cat2000 or salicon (or a bare path)")
    p.add_argument("--model", help="trained weights, .caffemodel or .safetensors "
                                   "(default: the shipped pretrained model, SALICON trained on OSIE)")
    _add_net_options(p)
    p.add_argument("--saliency-maps", metavar="DIR", help="score precomputed maps (<name>.npy or images) instead")
    p.add_argument("--postprocess", action="append", metavar="SPEC",
                   help="post-processing of the model's maps (as in predict; default: 'default'); repeat it to "
                        "score several configurations from one forward pass, e.g. --postprocess none "
                        "--postprocess default")
    p.add_argument("--baselines-only", action="store_true", help="score only the baselines")
    p.add_argument("--no-baselines", action="store_true", help="skip the centre-bias and inter-observer rows")
    p.add_argument("--split", help="split.json (its test list) or a text file of image names")
    p.add_argument("--limit", type=_positive_int, help="only the first N images (of the split)")
    p.add_argument("--metrics", help=f"comma-separated subset of: {', '.join(DEFAULT_METRIC_NAMES)}")
    p.add_argument("--out", default="evaluation", help="output folder")
    p.add_argument("--pictures", action="store_true", help="also write score histograms and a contact sheet")
    _add_engine_options(p, "pytorch (auto) or real Caffe through pycaffe (CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of AUC jitter and negative sampling")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("serve", help="web page and HTTP API for saliency maps (pip install -e \".[web]\")",
                       description="Serve a page (drop images, see the map and the heatmap, download them) and "
                                   "an HTTP API (POST /api/saliency, GET /api/health; docs at /docs) on one "
                                   "model instance. Requests queue for the net: one forward pass at a time, "
                                   "batched on a GPU.",
                       formatter_class=_HelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_whole_number(1), default=7860, help="TCP port")
    p.add_argument("--model", help="trained weights, .caffemodel or .safetensors "
                                   "(default: the shipped pretrained model, SALICON trained on OSIE)")
    _add_net_options(p)
    _add_engine_options(p, "pytorch (auto) or real Caffe through pycaffe (CPU)")
    p.add_argument("--postprocess", default="default", metavar="SPEC",
                   help="post-processing used unless a request names one (as in predict)")
    p.add_argument("--max-pixels", type=_max_pixels, default=50_000_000,
                   help="refuse images with more pixels: a count, megapixels like 80M, or 'none'")
    p.add_argument("--max-upload-mb", type=_positive_float, default=50.0, help="refuse larger uploads (MB)")
    p.add_argument("--batch-size", type=_positive_int,
                   help="most images per forward pass (default: 8 on a GPU, 1 on the CPU)")
    p.add_argument("--queue", type=_positive_int, default=16,
                   help="most images waiting for the net; beyond it requests get 503 (busy)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export-caffemodel", help="write the model as a float32 .caffemodel for real Caffe",
                       description="Write OUT/<name>.caffemodel (float32, current Caffe layout), the test "
                                   "prototxt and the Python layer modules it needs, so real Caffe runs the "
                                   "model with the same maps as this package.",
                       formatter_class=_HelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder to write")
    _add_export_source(p)
    p.add_argument("--name", help="file name stem of the .caffemodel (default: the model's)")
    p.set_defaults(func=cmd_export_caffemodel)

    p = sub.add_parser("export-onnx", help="write the model as an ONNX graph (onnxruntime, TensorRT, ...)",
                       description="Write the test net with its weights as ONNX (float32; inputs fine_scale "
                                   "and coarse_scale at the prototxt's sizes, dynamic batch; output "
                                   "saliency_map_out, the raw 38x50 map). Inputs are the preprocessed blobs: "
                                   "BGR, mean-subtracted, times the input scale (stored in the file's metadata).",
                       formatter_class=_HelpFormatter)
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="file to write")
    _add_export_source(p)
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (17 or newer)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1")
    p.add_argument("--force", action="store_true", help="overwrite OUT even if it is not an .onnx file")
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("init-weights", help="make an untrained model from VGG-16 conv weights",
                       description="Copy VGG-16's conv1_1..conv5_3 into both streams of the SALICON net "
                                   "(fc layers ignored) and initialise saliency_map from the prototxt's "
                                   "fillers, seeded. Reads the legacy Model Zoo layout and the current one.",
                       formatter_class=_HelpFormatter)
    p.add_argument("--vgg16", required=True, metavar="FILE.caffemodel", help="VGG-16 weights")
    p.add_argument("-o", "--output", required=True, metavar="OUT.caffemodel", help="file to write")
    p.add_argument("--prototxt", help="train net prototxt (default: prototxt/finetune_salicon.prototxt)")
    p.add_argument("--seed", type=int, default=0, help="seed of the saliency_map initialisation")
    p.add_argument("--force", action="store_true", help="overwrite OUT even if it is not a .caffemodel")
    p.set_defaults(func=cmd_init_weights)
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """'--time-limit -5m' -> '--time-limit=-5m': argparse would take '-5m' for an
    option and say 'expected one argument'; joined, the value's own check speaks.
    '--ray photos/' -> '--ray=local photos/': only a cluster address is --ray's value."""
    out: list[str] = []
    for arg in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1] and len(arg) > 1 and arg[0] == "-"
                and (arg[1].isdigit() or arg[1] == ".")):
            out[-1] = f"{out[-1]}={arg}"
        elif out and out[-1] == "--ray" and not arg.startswith("-") and not _RAY_ADDRESS.match(arg):
            out[-1] = "--ray=local"  # 'predict --ray photos/ -o maps': photos/ is an input, not an address
            out.append(arg)
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
