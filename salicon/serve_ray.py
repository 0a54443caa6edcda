"""``salicon serve --ray``: the same web page and HTTP API as a Ray Serve
application, one model per replica, on one machine or a whole Ray cluster
(``pip install "salicon[serve]"``).

Each replica is the single-process server's whole stack (a
:class:`~salicon.model.Salicon`, its :class:`~salicon.serve.SaliencyService`
with the bounded queue, and the FastAPI app of :mod:`salicon.webapp`), so
pages, endpoints, limits and error codes are the same. Ray Serve's proxy
spreads requests over the replicas (each on one GPU where the cluster has
GPUs), restarts a replica that dies and, with ``min_replicas`` <
``max_replicas``, adds and removes replicas with the load. Results kept for
the page's downloads live in one small store deployment shared by the
replicas, so a download may be served by any of them.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import runtimes
from .config import SaliconConfig
from .errors import SaliconError
from .serve import DEFAULT_MAX_UPLOAD_BYTES, UPLOAD_MAX_PIXELS, RequestError, Result, ResultCache

SERVE_EXTRA_HINT = "pip install -e \".[serve]\" (or pip install \"salicon[serve]\")"
APP_NAME = "salicon"


class ServeError(SaliconError):
    """A Ray Serve deployment that cannot start: options, cluster or model."""


@dataclass(frozen=True)
class ServeOptions:
    """How the API runs on Ray Serve: each replica's model and service, and the
    replicas (``replicas`` fixed, or autoscaled between ``min_replicas`` and
    ``max_replicas``)."""
    config: SaliconConfig = field(default_factory=SaliconConfig)   # each replica's model, given whole
    max_pixels: int | None = UPLOAD_MAX_PIXELS
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    batch_size: int | None = None
    max_queue: int = 16
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_requests: float = 2.0        # autoscaling: ongoing requests per replica it aims at
    replica_cpus: float | None = None   # default: the cluster's CPUs shared by the replicas (GPU: 1)
    host: str = "127.0.0.1"
    port: int = 7860
    request_timeout_s: float = 300.0
    address: str | None = None
    token: str | None = None            # required on every route when given (salicon.webauth)

    def __post_init__(self):
        lo, hi = self.min_replicas, self.max_replicas
        if self.replicas < 1:
            raise ServeError(f"replicas must be at least 1, not {self.replicas}")
        if (lo is None) != (hi is None):
            raise ServeError("autoscaling needs both --min-replicas and --max-replicas")
        if lo is not None and not 0 <= lo <= hi or hi is not None and hi < 1:
            raise ServeError(f"autoscaling bounds must satisfy 0 <= min <= max, max >= 1 (got {lo}, {hi})")

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else self.replicas


def serve_dependencies_missing() -> str | None:
    """The message to show when Ray Serve or the web dependencies are absent, else None."""
    from .serve import web_dependencies_missing

    missing = web_dependencies_missing()
    if missing:
        return missing.replace("salicon serve", "salicon serve --ray")
    try:
        import ray.serve  # noqa: F401
    except ImportError as exc:
        return f"salicon serve --ray needs Ray Serve ({exc}): install it with {SERVE_EXTRA_HINT}"
    return None


def replica_resources(options: ServeOptions, cluster: dict[str, float]) -> dict[str, float]:
    """Ray resources of one replica: a GPU each where the model runs on GPUs,
    else an equal share of the cluster's CPUs (or ``replica_cpus``)."""
    config = options.config
    on_gpu = runtimes.worker_device(config.runtime, config.precision, config.device, cluster.get("GPU", 0)) == "cuda"
    if on_gpu:
        return {"num_gpus": 1, "num_cpus": options.replica_cpus or 1}
    share = options.replica_cpus or max(1.0, math.floor(cluster.get("CPU", 1) / options.most_replicas))
    return {"num_cpus": share}


# ------------------------------------------------------------ deployments


class ResultStore:
    """The results kept for downloads, shared by every replica (one small
    deployment; lost, like a single server's, when it restarts)."""

    def __init__(self, max_items: int = 32, max_bytes: int = 512 * 1024 * 1024):
        self.cache = ResultCache(max_items, max_bytes)

    def put(self, result: Result) -> str | None:
        return self.cache.put(result)

    def get(self, key: str) -> Result | None:
        try:
            return self.cache.get(key)
        except RequestError:
            return None


class SharedResultCache:
    """:class:`~salicon.serve.ResultCache`'s interface on the store deployment."""

    def __init__(self, handle, max_items: int = 32):
        self.handle, self.max_items = handle, max_items

    def put(self, result: Result) -> str | None:
        return self.handle.put.remote(result).result()

    def get(self, key: str) -> Result:
        result = self.handle.get.remote(key).result()
        if result is None:
            raise RequestError(404, f"result '{key}' is not kept any more (the server keeps the "
                                    f"{self.max_items} most recent); upload the image again")
        return result


class SaliconReplica:
    """One replica: the model, its service and the web app around them."""

    def __init__(self, options: ServeOptions, store, threads: int | None):
        import torch
        from ray import serve

        from .model import Salicon
        from .serve import SaliencyService

        if threads:
            torch.set_num_threads(threads)
        model = Salicon(config=options.config)
        context = serve.get_replica_context()
        self.service = SaliencyService(model, max_pixels=options.max_pixels,
                                       max_upload_bytes=options.max_upload_bytes, batch_size=options.batch_size,
                                       max_queue=options.max_queue, cache=SharedResultCache(store))  # type: ignore[arg-type]
        self.token = options.token
        self.service.labels = {"server": "ray serve", "replica": str(context.replica_id.unique_id),
                               "pid": os.getpid()}

    def __serve_build_asgi_app__(self):
        from .webapp import create_app

        return create_app(self.service, self.token)


def build_application(options: ServeOptions, resources: dict[str, float]):
    """The Ray Serve application: the store and the replicas (each with
    ``resources``, see :func:`replica_resources`) bound together."""
    from ray import serve

    scaling: dict[str, Any] = {"num_replicas": options.replicas}
    if options.min_replicas is not None:
        scaling = {"autoscaling_config": {"min_replicas": options.min_replicas,
                                          "max_replicas": options.max_replicas,
                                          "target_ongoing_requests": options.target_requests}}
    # Each replica takes what its service's queue holds; beyond that the proxy queues, then answers 503.
    replica = serve.deployment(serve.ingress()(SaliconReplica), name="SaliconReplica",
                               ray_actor_options=resources,
                               max_ongoing_requests=options.max_queue + (options.batch_size or 1),
                               max_queued_requests=options.max_queue * options.most_replicas,
                               health_check_period_s=5, health_check_timeout_s=30,
                               graceful_shutdown_timeout_s=10, **scaling)
    store = serve.deployment(ResultStore, name="ResultStore", num_replicas=1,
                             ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100)
    threads = max(1, int(resources["num_cpus"])) if "num_gpus" not in resources else None
    return replica.bind(options, store.bind(), threads)  # type: ignore[attr-defined]


def run_on_ray(options: ServeOptions, on_ready=None) -> None:
    """Deploy the API on Ray Serve and block until Ctrl-C (or SIGTERM), then
    take the application down. ``on_ready(url, resources)`` is called once every
    replica answers."""
    import ray
    from ray import serve

    from .batch import connect_ray, use_token_auth

    use_token_auth(options.address)
    connect_ray(options.address, None, log_to_driver=False)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # start-up notices; errors still show
    # Ctrl-C and SIGTERM take the application down; SIGINT is set explicitly because a
    # process started in the background by a shell inherits it ignored.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _interrupt)
    try:
        cluster = ray.cluster_resources()
        # Decided once, here, for every replica: auto precision and runtime for the cluster's hardware.
        options = dataclasses.replace(options, config=options.config.resolved(gpus=cluster.get("GPU", 0)))
        resources = replica_resources(options, cluster)
        app = build_application(options, resources)
        serve.start(http_options={"host": options.host, "port": options.port,
                                  "request_timeout_s": options.request_timeout_s})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # a replica's constructor failed (bad model, ...): say why, briefly
            raise ServeError(f"the deployment failed to start: {_last_line(str(exc))}") from None
        if on_ready is not None:
            on_ready(resources)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("salicon serve --ray: stopping (taking the application down)", file=sys.stderr, flush=True)
        raise
    finally:
        try:
            serve.delete(APP_NAME)
            serve.shutdown()
        finally:
            ray.shutdown()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line]
    return (errors or lines or ["unknown error"])[-1]


__all__ = ["ServeOptions", "ServeError", "run_on_ray", "build_application", "replica_resources",
           "serve_dependencies_missing", "ResultStore", "SharedResultCache", "SaliconReplica", "APP_NAME"]
