"""``salicon serve``: the service behind the web page and the HTTP API.

    salicon serve --port 7860            # then open http://127.0.0.1:7860

This module holds what the routes call (:class:`SaliencyService`); the
routes themselves are in :mod:`salicon.webapp`. One
:class:`~salicon.model.Salicon` lives in the process. Uploads are decoded
and resized on a few threads; one :class:`InferenceWorker` thread owns the
net, so at most one forward pass runs at a time and, on a GPU, the requests
waiting together run as one batch. Every queue and cache is bounded, so
memory stays flat however many clients there are; a full queue answers 503.

Routes (docs/guides/web.md has curl lines):

- ``GET /``: the page (``salicon/web/``).
- ``POST /api/saliency``: multipart ``file``; query ``format=png|npy|json``,
  ``overlay``, ``alpha``, ``threshold``, ``keep``.
- ``GET /api/results/{id}/map.png|map.npy|overlay.png``: a kept result.
- ``GET /api/health``: model, device, version, limits, queue.
- ``POST /api/video``: multipart ``file`` (a short clip); answers 202 with a job
  (:mod:`salicon.serve_video`); ``GET /api/jobs/{id}`` its progress,
  ``GET /api/jobs/{id}/map.mp4|overlay.mp4`` its result, ``DELETE`` cancels.
- ``GET /api/examples``, ``GET /examples/{name}``: the shipped example images.
"""
from __future__ import annotations

import queue
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._version import __version__
from .errors import ImageError, ImageTooLargeError, SaliconError
from .image import IMAGE_FORMATS, load_image
from .inputs import image_files
from .model import Salicon
from .postprocess import PostProcessError
from .pretrained import shipped_file

#: Default limits of a server: images up to 50 megapixels, uploads up to 50 MB. The pixel limit is
#: the server's own, lower than the decoding default (image.DEFAULT_MAX_PIXELS): a server refuses
#: what a user may accept on their own machine.
UPLOAD_MAX_PIXELS = 50_000_000
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
WEB_EXTRA_HINT = "pip install -e \".[web]\" (or pip install \"salicon[web]\")"


class RequestError(SaliconError):
    """A request the server refuses, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


# ------------------------------------------------------------------ net


@dataclass
class _Job:
    inputs: dict[str, torch.Tensor]
    future: Future = field(default_factory=Future)


class InferenceWorker:
    """The one thread that runs the net: jobs wait in a bounded queue and
    those waiting together (up to ``batch_size``) run as one batch."""

    def __init__(self, model: Salicon, batch_size: int = 1, max_queue: int = 16):
        self.model = model
        self.batch_size = max(1, batch_size)
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, max_queue))
        self._lock = threading.Lock()
        self.images = 0          # images run through the net
        self.forwards = 0        # forward passes (batches)
        self.seconds_per_image: float | None = None  # running mean of the last passes
        self.batch_sizes: Counter[int] = Counter()  # how many forward passes ran with each batch size
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="salicon-net", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def submit(self, inputs: dict[str, torch.Tensor], wait: bool = False) -> Future:
        """Queue one image's net inputs (name -> 3xHxW); the future gives its raw map.
        A full queue answers 503, or with ``wait`` (video frames) is waited on."""
        job = _Job(inputs)
        try:
            if wait:
                self._jobs.put(job)
            else:
                self._jobs.put_nowait(job)
        except queue.Full:
            raise RequestError(503, f"the server is busy ({self._jobs.maxsize} images waiting); "
                                    f"try again in a moment") from None
        return job.future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < self.batch_size:
                try:
                    extra = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    self._jobs.put(None)
                    break
                batch.append(extra)
            self._forward(batch)

    def _forward(self, batch: list[_Job]) -> None:
        self.busy = True
        start = time.perf_counter()
        try:
            names = batch[0].inputs.keys()
            raw = self.model.forward({n: torch.stack([j.inputs[n] for j in batch]) for n in names})
            for job, sal in zip(batch, raw):
                job.future.set_result(sal.cpu())
        except Exception as exc:  # the net failed (out of memory, ...): every waiting request hears why
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        finally:
            self.busy = False
        per_image = (time.perf_counter() - start) / len(batch)
        with self._lock:
            self.images += len(batch)
            self.forwards += 1
            self.batch_sizes[len(batch)] += 1
            old = self.seconds_per_image
            self.seconds_per_image = per_image if old is None else 0.7 * old + 0.3 * per_image


# --------------------------------------------------------------- results


@dataclass
class Result:
    """One computed map, kept for the page's downloads."""
    name: str
    data: bytes                  # the uploaded file, to draw full-size overlays later
    saliency_map: np.ndarray     # float32, the image's size, in [0, 1]

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.saliency_map.nbytes


class ResultCache:
    """Recent results by id, oldest dropped first beyond ``max_items`` or ``max_bytes``."""

    def __init__(self, max_items: int = 32, max_bytes: int = 512 * 1024 * 1024):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, result: Result) -> str | None:
        """Keep ``result``; its id, or None if it alone exceeds the byte budget."""
        if result.nbytes > self.max_bytes or self.max_items < 1:
            return None
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._items[key] = result
            self._bytes += result.nbytes
            while len(self._items) > self.max_items or self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
        return key

    def get(self, key: str) -> Result:
        with self._lock:
            result = self._items.get(key)
            if result is not None:
                self._items.move_to_end(key)
        if result is None:
            raise RequestError(404, f"result '{key}' is not kept any more (the server keeps the "
                                    f"{self.max_items} most recent); upload the image again")
        return result

    def __len__(self) -> int:
        return len(self._items)


# -------------------------------------------------------------- service


def shipped_examples() -> dict[str, Path]:
    """The example images shipped with the package (examples/), by file name."""
    folder = shipped_file("examples", "README.md").parent
    return {p.name: p for p in image_files(folder)} if folder.is_dir() else {}


class SaliencyService:
    """What the routes call: decode, queue for the net, post-process, encode.

    Blocking work runs on the caller's thread (the server's thread pool);
    ``prepare_slots`` bounds how many images are decoded at once, which
    bounds memory whatever the number of clients.
    """

    def __init__(self, model: Salicon | Mapping[str, Salicon], *, max_pixels: int | None = UPLOAD_MAX_PIXELS,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, batch_size: int | None = None,
                 max_queue: int = 16, prepare_slots: int = 2, cache: ResultCache | None = None,
                 videos: Mapping[str, Any] | None = None):
        #: The models served, by name (the first is the default); each has its own queue for the net.
        self.models: dict[str, Salicon] = dict(model) if isinstance(model, Mapping) else {model_name(model): model}
        if not self.models:
            raise ValueError("a SaliencyService needs at least one model")
        self.default = next(iter(self.models))
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        self.workers = {}
        for name, each in self.models.items():
            size = batch_size if batch_size is not None else (8 if each.device.type == "cuda" else 1)
            self.workers[name] = InferenceWorker(each, size, max_queue)  # batches pay off on a GPU only
        self.cache = cache if cache is not None else ResultCache()
        self._prepare = threading.BoundedSemaphore(max(1, prepare_slots))
        self.started = time.time()
        self.failed_requests = 0
        #: Extra fields of /api/health (which server and replica answered, on Ray Serve).
        self.labels: dict[str, Any] = {}
        #: Video jobs (POST /api/video), with ``videos`` as their options; None: not served here.
        self.videos = None
        if videos is not None:
            from .serve_video import VideoService

            self.videos = VideoService(self, **videos)

    @property
    def model(self) -> Salicon:
        """The default model."""
        return self.models[self.default]

    @property
    def worker(self) -> InferenceWorker:
        """The default model's queue."""
        return self.workers[self.default]

    def pick(self, name: str | None) -> str:
        """The served model called ``name`` (None or "": the default), or a 400 naming those served."""
        if not name:
            return self.default
        if name not in self.models:
            raise RequestError(400, f"model: {name!r} is not served here (this server serves "
                                    f"{', '.join(self.models)}; salicon serve --model NAME adds one)")
        return name

    def close(self) -> None:
        if self.videos is not None:
            self.videos.close()
        for worker in self.workers.values():
            worker.close()

    @staticmethod
    def _describe_model(name: str, model: Salicon) -> dict[str, Any]:
        return {"name": name, "model": model.model_path.name, "prototxt": model.prototxt_path.name,
                "device": str(model.device), "engine": model.engine, "precision": model.precision,
                "runtime": model.runtime, "postprocess": model.post.name,
                "input_sizes": {k: list(v[2:]) for k, v in model.net.input_shapes.items()}}

    def health(self) -> dict[str, Any]:
        worker = self.worker
        return {
            "status": "ok",
            "version": __version__,
            **{k: v for k, v in self._describe_model(self.default, self.model).items() if k != "name"},
            "default_model": self.default,
            "models": [{**self._describe_model(name, model), "seconds_per_image": self.workers[name].seconds_per_image}
                       for name, model in self.models.items()],
            "batch_size": worker.batch_size,
            "limits": {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                       **(self.videos.limits() if self.videos is not None else {})},
            "video": self.videos is not None,
            "jobs": self.videos.jobs.counts() if self.videos is not None else {},
            "formats": list(IMAGE_FORMATS),
            "queue": {"waiting": sum(w.waiting for w in self.workers.values()),
                      "running": sum(w.busy for w in self.workers.values())},
            "images": sum(w.images for w in self.workers.values()),
            "batches": {str(k): v for k, v in sorted(worker.batch_sizes.items())},
            "seconds_per_image": worker.seconds_per_image,
            "uptime_s": round(time.time() - self.started, 1),
            **self.labels,
        }

    def check_upload(self, name: str, data: bytes) -> None:
        if not data:
            raise RequestError(400, f"{name}: the upload is empty (0 bytes); choose an image file")
        if len(data) > self.max_upload_bytes:
            raise RequestError(413, f"{name}: {len(data) / 1e6:.1f} MB exceeds the upload limit of "
                                    f"{self.max_upload_bytes / 1e6:.1f} MB")

    def decode(self, name: str, data: bytes) -> np.ndarray:
        """The upload as HxWx3 uint8, or a RequestError that says what is wrong with it."""
        self.check_upload(name, data)
        try:
            return load_image(data, as_float=False, max_pixels=self.max_pixels, name=name)
        except ImageTooLargeError as exc:
            raise RequestError(413, exc.describe("salicon serve --max-pixels", who="the server's operator")) from None
        except ImageError as exc:
            raise RequestError(415, f"{exc}. Supported: {', '.join(IMAGE_FORMATS)}") from None

    def saliency(self, name: str, data: bytes, postprocess: str = "default", model: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(image HxWx3 uint8, saliency map HxW float32 in [0, 1]) of an upload,
        by the served model called ``model`` (default: the first).

        Blocks until the net has run; call it from a worker thread.
        """
        chosen = self.pick(model)
        net = self.models[chosen]
        try:
            post = net.resolve_postprocess(postprocess)
        except PostProcessError as exc:
            raise RequestError(400, f"postprocess: {exc}") from None
        with self._prepare:
            rgb = self.decode(name, data)
            inputs, size = net.preprocess(rgb)
            future = self.workers[chosen].submit(inputs)
        raw = future.result()
        return rgb, net.postprocess(raw, size, post)


def model_name(model: Salicon) -> str:
    """What a served model is called: its registered name, else its weights file's stem."""
    return model.name or model.model_path.stem


def web_dependencies_missing() -> str | None:
    """The message to show when the optional web dependencies are absent, else None."""
    missing = []
    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("multipart", "python-multipart"),
                            ("fastapi_offline", "fastapi-offline")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if not missing:
        return None
    return f"salicon serve needs {', '.join(missing)}: install the web extra with {WEB_EXTRA_HINT}"


__all__ = ["SaliencyService", "model_name", "InferenceWorker", "ResultCache", "RequestError", "shipped_examples",
           "web_dependencies_missing", "UPLOAD_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES"]
