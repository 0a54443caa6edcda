"""``salicon serve``: a web page and an HTTP API on one model instance.

    salicon serve --port 7860            # then open http://127.0.0.1:7860

One :class:`~salicon.model.Salicon` lives in the process. Uploads are decoded
and resized on a few threads; one :class:`InferenceWorker` thread owns the
net, so at most one forward pass runs at a time and, on a GPU, the requests
waiting together run as one batch. Every queue and cache is bounded, so
memory stays flat however many clients there are; a full queue answers 503.

Routes (see the README for curl lines):

- ``GET /``: the page (``salicon/web/``).
- ``POST /api/saliency``: multipart ``file``; query ``format=png|npy|json``,
  ``overlay``, ``alpha``, ``threshold``, ``keep``.
- ``GET /api/results/{id}/map.png|map.npy|overlay.png``: a kept result.
- ``GET /api/health``: model, device, version, limits, queue.
- ``GET /api/examples``, ``GET /examples/{name}``: the shipped example images.
"""
from __future__ import annotations

import asyncio
import base64
import queue
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

try:  # the optional web extra; FastAPI resolves the route annotations against this module
    from fastapi import UploadFile
except ImportError:  # salicon serve explains what to install (web_dependencies_missing)
    UploadFile = None

from .errors import ImageError, ImageTooLargeError, SaliconError
from .formats import npy_bytes, png_bytes
from .image import IMAGE_SUFFIXES, load_image
from .model import Salicon, _shipped_file
from .postprocess import PostProcessError
from .visualize import overlay as overlay_image
from .visualize import salient_points, threshold_map, to_uint8

#: Default limits of a server: images up to 50 megapixels, uploads up to 50 MB.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
WEB_EXTRA_HINT = "pip install -e \".[web]\" (or pip install \"salicon[web]\")"
FORMATS = ("png", "npy", "json")
WEB_ROOT = Path(__file__).resolve().parent / "web"
#: PNG compression of responses: quicker than the default, a little larger.
_PNG_LEVEL = 3


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
        self.busy = False
        self._thread = threading.Thread(target=self._run, name="salicon-net", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._jobs.qsize()

    def submit(self, inputs: dict[str, torch.Tensor]) -> Future:
        """Queue one image's net inputs (name -> 3xHxW); the future gives its raw map."""
        job = _Job(inputs)
        try:
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
    local, installed = _shipped_file("examples", "README.md")
    folder = (local if local.exists() else installed).parent
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


class SaliencyService:
    """What the routes call: decode, queue for the net, post-process, encode.

    Blocking work runs on the caller's thread (the server's thread pool);
    ``prepare_slots`` bounds how many images are decoded at once, which
    bounds memory whatever the number of clients.
    """

    def __init__(self, model: Salicon, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, batch_size: int | None = None,
                 max_queue: int = 16, prepare_slots: int = 2, cache: ResultCache | None = None):
        self.model = model
        self.max_pixels = max_pixels
        self.max_upload_bytes = max_upload_bytes
        if batch_size is None:  # batches pay off on a GPU; on a CPU one image fills the cores
            batch_size = 8 if model.device.type == "cuda" else 1
        self.worker = InferenceWorker(model, batch_size, max_queue)
        self.cache = cache if cache is not None else ResultCache()
        self._prepare = threading.BoundedSemaphore(max(1, prepare_slots))
        self.started = time.time()
        self.failed_requests = 0

    def health(self) -> dict[str, Any]:
        from . import __version__

        model = self.model
        return {
            "status": "ok",
            "version": __version__,
            "model": model.model_path.name,
            "prototxt": model.prototxt_path.name,
            "device": str(model.device),
            "engine": model.engine,
            "precision": model.precision,
            "postprocess": model.post.name,
            "input_sizes": {k: list(v[2:]) for k, v in model.net.input_shapes.items()},
            "batch_size": self.worker.batch_size,
            "limits": {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels},
            "queue": {"waiting": self.worker.waiting, "running": self.worker.busy},
            "images": self.worker.images,
            "seconds_per_image": self.worker.seconds_per_image,
            "uptime_s": round(time.time() - self.started, 1),
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
            raise RequestError(413, str(exc).replace("--max-pixels (max_pixels=)", "salicon serve --max-pixels")
                                           .replace("raise it with", "the server's operator can raise it with")
                               ) from None
        except ImageError as exc:
            raise RequestError(415, f"{exc}. Supported: JPEG, PNG, BMP, GIF, TIFF, WebP, PNM") from None

    def saliency(self, name: str, data: bytes, postprocess: str = "default") -> tuple[np.ndarray, np.ndarray]:
        """(image HxWx3 uint8, saliency map HxW float32 in [0, 1]) of an upload.

        Blocks until the net has run; call it from a worker thread.
        """
        try:
            post = self.model.resolve_postprocess(postprocess)
        except PostProcessError as exc:
            raise RequestError(400, f"postprocess: {exc}") from None
        with self._prepare:
            rgb = self.decode(name, data)
            inputs, size = self.model.preprocess(rgb)
            future = self.worker.submit(inputs)
        raw = future.result()
        return rgb, self.model.postprocess(raw, size, post)


# ------------------------------------------------------------------- app


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is cut off with a
    413 before it is stored anywhere (by Content-Length, or counted as it
    arrives when the client streams it)."""

    def __init__(self, app: Callable, limit: int, shown_limit: int | None = None):
        self.app, self.limit = app, limit
        self.message = (f"the upload exceeds the limit of {(shown_limit or limit) / 1e6:.1f} MB "
                        f"(salicon serve --max-upload-mb raises it)")

    async def __call__(self, scope, receive, send):
        from starlette.exceptions import HTTPException

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_json(send, 413, {"error": self.message})
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:  # an HTTPException passes through the form parser as itself
                    raise HTTPException(413, self.message)
            return msg

        async def tracked_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await _send_json(send, 413, {"error": self.message})


async def _send_json(send, status: int, body: dict) -> None:
    import json

    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def create_app(service: SaliencyService):
    """The FastAPI application serving ``service``: the page and the API."""
    from fastapi import FastAPI, File, Query
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from . import __version__

    @asynccontextmanager
    async def lifespan(_):
        yield
        await asyncio.get_running_loop().run_in_executor(None, service.worker.close)

    app = FastAPI(title="SALICON saliency", version=__version__, lifespan=lifespan,
                  description="Saliency maps (where people look in an image) from the SALICON model.")

    def error(status: int, message: str) -> JSONResponse:
        if status >= 500 and status != 503:
            service.failed_requests += 1
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestError)
    async def _request_error(_, exc: RequestError):
        return error(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(400, "; ".join(parts))

    @app.exception_handler(Exception)
    async def _unexpected(_, exc: Exception):
        # The net or an encoder failed (out of memory, say): this request hears why,
        # the server and everyone else's requests carry on.
        return error(500, f"the server could not compute this map ({type(exc).__name__}: {exc})")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((WEB_ROOT / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        path = WEB_ROOT / name
        if "/" in name or not path.is_file():
            raise RequestError(404, f"no such file: {name}")
        return FileResponse(path)

    @app.get("/api/health", summary="model, device, version, limits and queue")
    async def health():
        return service.health()

    @app.get("/api/examples", summary="the shipped example images")
    async def examples():
        return [{"name": n, "url": f"/examples/{n}"} for n in shipped_examples()]

    @app.get("/examples/{name}", include_in_schema=False)
    async def example(name: str):
        path = shipped_examples().get(name)
        if path is None:
            raise RequestError(404, f"no such example: {name}")
        return FileResponse(path)

    @app.post("/api/saliency", summary="the saliency map of an uploaded image")
    async def saliency(file: UploadFile | None = File(None, description="the image file"),
                       format: str = Query("png", description="png (8-bit map), npy (float32 map) or json"),
                       overlay: bool = Query(False, description="png: the heatmap over the image instead of "
                                                                "the map; json: add the overlay"),
                       alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity"),
                       threshold: float = Query(0.0, ge=0.0, le=1.0, description="zero map values below this"),
                       postprocess: str = Query("default", description="as salicon predict --postprocess"),
                       keep: bool = Query(False, description="json: keep the result for downloads "
                                                             "(/api/results/ID/...)")):
        if format not in FORMATS:
            raise RequestError(400, f"format: must be one of {', '.join(FORMATS)}, not {format!r}")
        if file is None or not hasattr(file, "read"):
            raise RequestError(400, "no image: send it as the multipart form field 'file' "
                                    "(curl -F file=@photo.jpg ...)")
        name = Path(file.filename or "upload").name or "upload"
        data = await file.read()
        await file.close()
        start = time.perf_counter()
        rgb, sal = await run_in_threadpool(service.saliency, name, data, postprocess)
        seconds = time.perf_counter() - start
        if threshold > 0:
            sal = threshold_map(sal, threshold)
        headers = {"X-Image-Size": f"{sal.shape[1]}x{sal.shape[0]}", "X-Seconds": f"{seconds:.3f}"}
        if format == "npy":
            body = await run_in_threadpool(npy_bytes, sal)
            return Response(body, media_type="application/octet-stream", headers={
                **headers, "Content-Disposition": f'attachment; filename="{Path(name).stem}_saliency.npy"'})
        if format == "png":
            picture = (lambda: overlay_image(rgb, sal, alpha)) if overlay else (lambda: to_uint8(sal))
            body = await run_in_threadpool(lambda: png_bytes(picture(), _PNG_LEVEL))
            suffix = "_overlay.png" if overlay else "_saliency.png"
            return Response(body, media_type="image/png", headers={
                **headers, "Content-Disposition": f'inline; filename="{Path(name).stem}{suffix}"'})

        def describe() -> dict[str, Any]:
            out: dict[str, Any] = {
                "name": name, "width": int(sal.shape[1]), "height": int(sal.shape[0]),
                "seconds": round(seconds, 3), "model": service.model.model_path.name,
                "postprocess": postprocess,
                "peaks": [{"x": x, "y": y, "value": round(v, 4)} for x, y, v in salient_points(sal)],
                "map_png": base64.b64encode(png_bytes(to_uint8(sal), _PNG_LEVEL)).decode("ascii"),
            }
            if overlay:
                out["overlay_png"] = base64.b64encode(png_bytes(overlay_image(rgb, sal, alpha), _PNG_LEVEL)).decode("ascii")
            if keep:
                key = service.cache.put(Result(name, data, sal))
                out["result"] = key
                if key is not None:
                    base = f"/api/results/{key}"
                    out["downloads"] = {"map_png": f"{base}/map.png", "map_npy": f"{base}/map.npy",
                                        "overlay_png": f"{base}/overlay.png"}
            return out

        return JSONResponse(await run_in_threadpool(describe), headers=headers)

    @app.get("/api/results/{key}/{what}", summary="a kept result: map.png, map.npy or overlay.png")
    async def result(key: str, what: str,
                     alpha: float = Query(0.5, ge=0.0, le=1.0), threshold: float = Query(0.0, ge=0.0, le=1.0)):
        kept = service.cache.get(key)
        stem = Path(kept.name).stem

        def render() -> tuple[bytes, str, str]:
            sal = threshold_map(kept.saliency_map, threshold) if threshold > 0 else kept.saliency_map
            if what == "map.png":
                return png_bytes(to_uint8(sal), _PNG_LEVEL), "image/png", f"{stem}_saliency.png"
            if what == "map.npy":
                return npy_bytes(sal), "application/octet-stream", f"{stem}_saliency.npy"
            if what == "overlay.png":
                rgb = load_image(kept.data, as_float=False, max_pixels=service.max_pixels, name=kept.name)
                return png_bytes(overlay_image(rgb, sal, alpha), _PNG_LEVEL), "image/png", f"{stem}_overlay.png"
            raise RequestError(404, f"no such download: {what} (map.png, map.npy or overlay.png)")

        body, media, filename = await run_in_threadpool(render)
        return Response(body, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    # Room for the multipart framing around a file of the limit's size.
    return BodyLimit(app, service.max_upload_bytes + 64 * 1024, service.max_upload_bytes)


def web_dependencies_missing() -> str | None:
    """The message to show when the optional web dependencies are absent, else None."""
    missing = []
    for module in ("fastapi", "uvicorn", "multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append("python-multipart" if module == "multipart" else module)
    if not missing:
        return None
    return f"salicon serve needs {', '.join(missing)}: install the web extra with {WEB_EXTRA_HINT}"


def run_server(service: SaliencyService, host: str = "127.0.0.1", port: int = 7860,
               log_level: str = "warning") -> None:
    """Serve ``service`` until interrupted (uvicorn, one process, one model)."""
    import uvicorn

    uvicorn.run(create_app(service), host=host, port=port, log_level=log_level, access_log=False)


__all__ = ["SaliencyService", "InferenceWorker", "ResultCache", "RequestError", "create_app", "run_server",
           "shipped_examples", "web_dependencies_missing", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_UPLOAD_BYTES"]
