"""``salicon serve``: the web page and the HTTP API on one model instance.

Serve a page (drop images, see the map and the heatmap, download them) and
an HTTP API (POST /api/saliency, GET /api/health; documentation at /docs,
served offline) on one model instance. Requests queue for the net: one
forward pass at a time, batched on a GPU.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import SaliconError
from ..serve import DEFAULT_MAX_PIXELS
from .options import (add_engine, add_max_pixels, add_model, add_postprocess, build_salicon, error, model_problem,
                      positive_float, positive_int, subcommand, whole_number)


def add_parser(sub) -> None:
    p = subcommand(sub, "serve", "web page and HTTP API for saliency maps (pip install -e \".[web]\")", __doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=whole_number(1, 65535), default=7860, help="TCP port (1-65535)")
    add_model(p)
    add_engine(p, "pytorch (auto) or real Caffe through pycaffe (CPU)")
    add_postprocess(p, extra="; used unless a request names one")
    add_max_pixels(p, DEFAULT_MAX_PIXELS, "the server's limit")
    p.add_argument("--max-upload-mb", type=positive_float, default=50.0, help="refuse larger uploads (MB)")
    p.add_argument("--batch-size", type=positive_int,
                   help="most images per forward pass (default: 8 on a GPU, 1 on the CPU)")
    p.add_argument("--queue", type=positive_int, default=16,
                   help="most images waiting for the net; beyond it requests get 503 (busy)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve import SaliencyService, web_dependencies_missing
    from ..webapp import run_server

    missing = web_dependencies_missing()
    if missing:
        error(missing)
        return 1
    problem = listen_problem(args.host, args.port)
    if problem:  # before the model loads
        error(f"cannot serve on {args.host}:{args.port}: {problem}")
        return 1
    try:
        model = build_salicon(args)
    except (SaliconError, ValueError) as exc:
        return model_problem(exc)
    service = SaliencyService(model, max_pixels=args.max_pixels, max_upload_bytes=int(args.max_upload_mb * 1e6),
                              batch_size=args.batch_size, max_queue=args.queue)
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    print(f"salicon serve: {model.model_path.name} ({model.precision}, {model.runtime}) on {model.device}; open {url} "
          f"(API: {url}/docs); "
          f"Ctrl-C stops", file=sys.stderr)
    run_server(service, args.host, args.port, log_level="info" if args.verbose else "warning")
    return 0


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
