"""``salicon serve``: the web page and the HTTP API, in one process or on Ray Serve.

Serve a page (drop images, see the map and the heatmap, download them) and
an HTTP API (POST /api/saliency, GET /api/health; documentation at /docs,
served offline) on one model instance. Requests queue for the net: one
forward pass at a time, batched on a GPU. With --ray the same app runs as a
Ray Serve deployment: one model per replica, on this machine or a cluster.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import SaliconError
from ..jobs import DEFAULT_JOBS_PER_CLIENT, DEFAULT_RETENTION_S
from ..serve import UPLOAD_MAX_PIXELS
from ..serve_video import DEFAULT_MAX_SECONDS, DEFAULT_MAX_VIDEO_PIXELS
from ..webauth import TOKEN_ENV
from .options import (
    add_engine,
    add_max_pixels,
    add_model,
    add_postprocess,
    build_salicon,
    error,
    max_pixels,
    model_problem,
    non_negative_int,
    phrase,
    positive_float,
    positive_int,
    ray_problem,
    salicon_config,
    subcommand,
    usage_error,
    whole_number,
    with_model,
)


def add_parser(sub) -> None:
    p = subcommand(sub, "serve", "web page and HTTP API for saliency maps (pip install -e \".[web]\")", __doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=whole_number(1, 65535), default=7860, help="TCP port (1-65535)")
    add_model(p, many=True)
    add_engine(p, "pytorch (auto) or real Caffe through pycaffe (CPU)")
    add_postprocess(p, extra="; used unless a request names one")
    add_max_pixels(p, UPLOAD_MAX_PIXELS, "the server's limit")
    p.add_argument("--max-upload-mb", type=positive_float, default=50.0, help="refuse larger uploads (MB)")
    p.add_argument("--batch-size", type=positive_int,
                   help="most images per forward pass (default: 8 on a GPU, 1 on the CPU)")
    p.add_argument("--queue", type=positive_int, default=16,
                   help="most images waiting for the net; beyond it requests get 503 (busy)")
    p.add_argument("--token", metavar="TOKEN",
                   help=f"require this bearer token on every route, page and API alike (the page asks for it "
                        f"once); default ${TOKEN_ENV}, which keeps it out of the process list. Use one for any "
                        f"server reachable beyond this machine")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    video = p.add_argument_group("video jobs (POST /api/video; needs PyAV, pip install -e \".[video]\")")
    video.add_argument("--max-video-seconds", type=positive_float, default=DEFAULT_MAX_SECONDS, metavar="S",
                       help="longest clip taken (413 beyond)")
    video.add_argument("--max-video-pixels", type=max_pixels, default=DEFAULT_MAX_VIDEO_PIXELS, metavar="N",
                       help="most pixels per frame of a clip (default 3840x2160; '8M'-style or 'none')")
    video.add_argument("--job-retention", type=positive_float, default=DEFAULT_RETENTION_S, metavar="S",
                       help="a finished job's files are deleted S seconds after it ends (or once downloaded)")
    video.add_argument("--jobs-per-client", type=positive_int, default=DEFAULT_JOBS_PER_CLIENT, metavar="N",
                       help="video jobs a client (IP address) may have waiting or running (429 beyond)")
    _add_ray_options(p)
    p.set_defaults(func=cmd_serve)


#: Options of --ray only, with their defaults.
_RAY_ONLY = {"replicas": None, "min_replicas": None, "max_replicas": None, "replica_cpus": None,
             "request_timeout": 300.0}


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("on Ray Serve (pip install -e \".[serve]\"; see docs/guides/ray.md)")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="run the same app as a Ray Serve deployment, one model per replica (a GPU each on GPU "
                          "nodes). Without ADDRESS a local Ray instance; 'auto' or ray://HOST:10001 joins a cluster")
    ray.add_argument("--replicas", type=positive_int, help="model replicas (default 1)")
    ray.add_argument("--min-replicas", type=non_negative_int, metavar="N",
                     help="autoscaling: fewest replicas (with --max-replicas)")
    ray.add_argument("--max-replicas", type=positive_int, metavar="N", help="autoscaling: most replicas")
    ray.add_argument("--replica-cpus", type=positive_float, metavar="N",
                     help="CPUs per replica (default: the cluster's CPUs shared by the replicas; 1 on GPU nodes)")
    ray.add_argument("--request-timeout", type=positive_float, default=300.0, metavar="S",
                     help="seconds before the proxy gives up on a request")


def cmd_serve(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return _serve_on_ray(args)
    for name, default in _RAY_ONLY.items():
        if getattr(args, name) != default:
            return usage_error(args, f"--{name.replace('_', '-')} applies to salicon serve --ray only")
    from ..serve import SaliencyService, model_name, web_dependencies_missing
    from ..webapp import run_server

    missing = web_dependencies_missing()
    if missing:
        error(missing)
        return 1
    token = access_token(args)
    if token == "":
        return usage_error(args, "--token is empty; give a token (or leave it out for a server without one)")
    problem = listen_problem(args.host, args.port)
    if problem:  # before the model loads
        error(f"cannot serve on {args.host}:{args.port}: {problem}")
        return 1
    names = args.model or [None]
    if len(names) > 1 and args.prototxt is not None:
        return usage_error(args, "--prototxt and --fast apply to one --model; several models each run their own net")
    models = {}
    for name in names:
        try:
            model = build_salicon(with_model(args, name))
        except (SaliconError, ValueError) as exc:
            return model_problem(exc, args)
        if model_name(model) in models:
            return usage_error(args, f"--model {name}: {model_name(model)} is given twice")
        models[model_name(model)] = model
    from ..video import video_problem

    videos = None if video_problem() else {"max_seconds": args.max_video_seconds, "max_pixels": args.max_video_pixels,
                                           "retention_s": args.job_retention, "max_per_client": args.jobs_per_client}
    service = SaliencyService(models, max_pixels=args.max_pixels, max_upload_bytes=int(args.max_upload_mb * 1e6),
                              batch_size=args.batch_size, max_queue=args.queue, videos=videos)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    served = "; ".join(f"{name}: {m.model_path.name} ({m.precision}, {m.runtime}) on {m.device}"
                       for name, m in models.items())
    locked = "; every route needs the token" if token else ""
    print(f"salicon serve: {served}; open {url} (API: {url}/docs){locked}; Ctrl-C stops", file=sys.stderr)
    run_server(service, args.host, args.port, log_level="info" if args.verbose else "warning", token=token)
    return 0


def access_token(args: argparse.Namespace) -> str | None:
    """--token, else $SALICON_TOKEN, else None (no token: for servers on this machine)."""
    import os

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    return token.strip() if token is not None else None


def listen_problem(host: str, port: int) -> str | None:
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


def _serve_on_ray(args: argparse.Namespace) -> int:
    from ..serve_ray import ServeError, ServeOptions, run_on_ray, serve_dependencies_missing

    address = None if args.ray == "local" else args.ray
    # Usage errors first: they need neither Ray nor the model.
    if args.model and len(args.model) > 1:
        return usage_error(args, "serve --ray serves one --model (one deployment per model: run it once for each)")
    args = with_model(args, args.model[0] if args.model else None)
    if args.replicas is not None and args.max_replicas is not None:
        return usage_error(args, "give --replicas (a fixed number) or --min-replicas/--max-replicas "
                                 "(autoscaling), not both")
    try:
        ServeOptions(replicas=args.replicas or 1, min_replicas=args.min_replicas, max_replicas=args.max_replicas)
    except ServeError as exc:
        return usage_error(args, str(exc))
    token = access_token(args)
    if token == "":
        return usage_error(args, "--token is empty; give a token (or leave it out for a server without one)")
    problem = ray_problem(args, address, serve_dependencies_missing, "the single-process server")
    if problem is not None:
        return problem
    taken = listen_problem(args.host, args.port) if address is None else None
    if taken:
        error(f"cannot serve on {args.host}:{args.port}: {taken}")
        return 1
    try:
        options = ServeOptions(
            config=_checked_config(args), max_pixels=args.max_pixels,
            max_upload_bytes=int(args.max_upload_mb * 1e6), batch_size=args.batch_size, max_queue=args.queue,
            replicas=args.replicas or 1, min_replicas=args.min_replicas, max_replicas=args.max_replicas,
            replica_cpus=args.replica_cpus, host=args.host, port=args.port,
            request_timeout_s=args.request_timeout, address=address, token=token)
    except ServeError as exc:
        return usage_error(args, str(exc))
    except (SaliconError, ValueError) as exc:
        return model_problem(exc, args)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"

    def ready(resources: dict) -> None:
        replicas = (f"{options.replicas} replica(s)" if options.min_replicas is None
                    else f"{options.min_replicas}-{options.max_replicas} replicas (autoscaling)")
        each = ", ".join(f"{v:g} {'GPU' if k == 'num_gpus' else 'CPU'}" for k, v in sorted(resources.items(),
                                                                                       reverse=True))
        print(f"salicon serve --ray: {replicas}, each {each}; open {url} (API: {url}/docs); Ctrl-C stops",
              file=sys.stderr)

    print(f"salicon serve --ray: starting Ray Serve{' on ' + address if address else ''} ...", file=sys.stderr)
    try:
        run_on_ray(options, on_ready=ready)
    except KeyboardInterrupt:
        return 0
    except (SaliconError, ConnectionError) as exc:
        error(phrase(exc))
        return 1
    return 0


def _checked_config(args: argparse.Namespace):
    """Each replica's configuration, resolved here (absolute paths, the Python layer
    files on this machine's sys.path, shipped with the replicas) after the driver
    has built the model once on its CPU (no forward pass), so bad files are reported
    before any cluster work. Precision "auto" is decided for the cluster's hardware
    when it is known (:func:`salicon.serve_ray.run_on_ray`)."""
    from ..model import Salicon

    config = salicon_config(args)
    files = config.replace(precision="fp32", runtime="pytorch", variants="").resolved()
    Salicon(config=files.replace(device="cpu"))
    return config.replace(model=files.model, prototxt=files.prototxt, python_layers=files.python_layers,
                          layer_files=files.layer_files, name=files.name)
