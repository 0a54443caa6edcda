"""The web application of ``salicon serve``: the page, the HTTP API and its
documentation (Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served from
files shipped in the ``fastapi-offline`` package, so they work without
internet), on one :class:`~salicon.serve.SaliencyService`.

    from salicon.webapp import create_app
    app = create_app(service)     # an ASGI application; run_server() serves it with uvicorn
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import numpy as np

try:  # the optional web extra; FastAPI resolves the route annotations against this module
    from fastapi import Request, UploadFile
except ImportError:  # salicon serve explains what to install (web_dependencies_missing)
    Request = UploadFile = None  # type: ignore[misc,assignment]

from ._version import __version__
from .image import load_image
from .jobs import JOB_FILES, JobError
from .outputs import npy_bytes, png_bytes
from .serve import RequestError, Result, SaliencyService, shipped_examples
from .visualize import overlay as overlay_image
from .visualize import salient_points, threshold_map, to_uint8

FORMATS = ("png", "npy", "json")
WEB_ROOT = Path(__file__).resolve().parent / "web"
#: PNG compression of responses: quicker than the default, a little larger.
PNG_LEVEL = 3


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
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def create_app(service: SaliencyService, token: str | None = None):
    """The FastAPI application serving ``service``: the page, the API and its
    documentation; with ``token``, every route needs it (:mod:`salicon.webauth`)."""
    app = _routes(service)
    # Room for the multipart framing around a file of the limit's size.
    limited = BodyLimit(app, service.max_upload_bytes + 64 * 1024, service.max_upload_bytes)
    if token:
        from .webauth import TokenAuth

        return TokenAuth(limited, token)
    return limited


def _routes(service: SaliencyService | None):
    """The FastAPI application with every route (``service`` is what they call;
    None builds the routes only, for their OpenAPI schema)."""
    from fastapi_offline import FastAPIOffline

    @asynccontextmanager
    async def lifespan(_):
        yield
        if service is not None:
            await asyncio.get_running_loop().run_in_executor(None, service.close)

    # FastAPIOffline: FastAPI with /docs and /redoc drawing on shipped files, not a CDN.
    app = FastAPIOffline(title="SALICON saliency", version=__version__, lifespan=lifespan,
                         description="Saliency maps (where people look in an image) from the SALICON model.")
    _add_error_handlers(app, service)  # type: ignore[arg-type]
    _add_page_routes(app)
    _add_api_routes(app, service)  # type: ignore[arg-type]
    _add_video_routes(app, service)  # type: ignore[arg-type]
    return app


def openapi_schema() -> dict:
    """The HTTP API's OpenAPI schema (what ``/openapi.json`` serves), without a model."""
    return _routes(None).openapi()


def _add_error_handlers(app, service: SaliencyService) -> None:
    """Every error answers JSON ``{"error": message}`` with its status."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def error(status: int, message: str) -> JSONResponse:
        if status >= 500 and status != 503:
            service.failed_requests += 1
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestError)
    async def _request_error(_, exc: RequestError):
        return error(exc.status, str(exc))

    @app.exception_handler(JobError)
    async def _job_error(_, exc: JobError):
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


def _add_page_routes(app) -> None:
    """The page, its static files and the shipped example images."""
    from fastapi.responses import FileResponse, HTMLResponse

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse((WEB_ROOT / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        path = WEB_ROOT / name
        if "/" in name or not path.is_file():
            raise RequestError(404, f"no such file: {name}")
        return FileResponse(path)

    @app.get("/api/examples", summary="the shipped example images")
    async def examples():
        return [{"name": n, "url": f"/examples/{n}"} for n in shipped_examples()]

    @app.get("/examples/{name}", include_in_schema=False)
    async def example(name: str):
        path = shipped_examples().get(name)
        if path is None:
            raise RequestError(404, f"no such example: {name}")
        return FileResponse(path)


def _add_api_routes(app, service: SaliencyService) -> None:
    """/api/health, /api/saliency and /api/results/{id}/{file}."""
    from fastapi import File, Query
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    @app.get("/api/health", summary="model, device, version, limits and queue")
    async def health():
        return service.health()

    @app.post("/api/saliency", summary="the saliency map of an uploaded image")
    async def saliency(file: UploadFile | None = File(None, description="the image file"),
                       format: str = Query("png", description="png (8-bit map), npy (float32 map) or json"),
                       overlay: bool = Query(False, description="png: the heatmap over the image instead of "
                                                                "the map; json: add the overlay"),
                       alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity"),
                       threshold: float = Query(0.0, ge=0.0, le=1.0, description="zero map values below this"),
                       postprocess: str = Query("default", description="as salicon predict --postprocess"),
                       model: str = Query("", description="which served model (GET /api/health lists them; "
                                                          "default: the first)"),
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
        chosen = service.pick(model)
        rgb, sal = await run_in_threadpool(service.saliency, name, data, postprocess, chosen)
        seconds = time.perf_counter() - start
        sal = threshold_map(sal, threshold) if threshold > 0 else sal
        headers = {"X-Image-Size": f"{sal.shape[1]}x{sal.shape[0]}", "X-Seconds": f"{seconds:.3f}"}
        if format == "json":
            body = await run_in_threadpool(_describe, service, name, data, rgb, sal, seconds, postprocess,
                                           overlay, alpha, keep, chosen)
            return JSONResponse(body, headers=headers)
        encoded, media, filename = await run_in_threadpool(_encode, format, rgb, sal, overlay, alpha, name)
        disposition = "attachment" if format == "npy" else "inline"
        return Response(encoded, media_type=media,
                        headers={**headers, "Content-Disposition": content_disposition(disposition, filename)})

    @app.get("/api/results/{key}/{what}", summary="a kept result: map.png, map.npy or overlay.png")
    async def result(key: str, what: str,
                     alpha: float = Query(0.5, ge=0.0, le=1.0), threshold: float = Query(0.0, ge=0.0, le=1.0)):
        kept = await run_in_threadpool(service.cache.get, key)  # the cache may be remote (Ray Serve)
        body, media, filename = await run_in_threadpool(_render_kept, service, kept, what, alpha, threshold)
        return Response(body, media_type=media,
                        headers={"Content-Disposition": content_disposition("attachment", filename)})


def _add_video_routes(app, service: SaliencyService) -> None:
    """POST /api/video, GET and DELETE /api/jobs/{id}, GET /api/jobs/{id}/{file}."""
    from fastapi import File, Query
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool

    def videos():
        if service.videos is None:
            from .video import video_problem

            raise RequestError(501, video_problem() or "this server does not take videos (video jobs run on salicon "
                                                       "serve without --ray: a job's files live on one machine)")
        return service.videos

    @app.post("/api/video", status_code=202, summary="start a video job: a map video of an uploaded clip")
    async def video(request: Request, file: UploadFile | None = File(None, description="the clip"),
                    fps: float | None = Query(None, gt=0, description="maps a second (default: 5 on a CPU, every "
                                                                      "frame on a GPU)"),
                    every: int | None = Query(None, ge=1, description="or: every N-th frame"),
                    interpolate: bool = Query(False, description="blend the maps between computed frames"),
                    smoothing: float | None = Query(None, ge=0, description="temporal smoothing, seconds"),
                    overlay: bool = Query(True, description="also make overlay.mp4 (heatmap over the clip)"),
                    model: str = Query("", description="which served model")):
        jobs = videos()
        if file is None or not hasattr(file, "read"):
            raise RequestError(400, "no clip: send it as the multipart form field 'file' (curl -F file=@clip.mp4 ...)")
        name = Path(file.filename or "upload.mp4").name or "upload.mp4"
        data = await file.read()
        await file.close()
        client = request.client.host if request.client else "unknown"
        options = {"fps": fps, "every": every, "interpolate": interpolate, "smoothing": smoothing, "overlay": overlay}
        job = await run_in_threadpool(jobs.submit, name, data, client, options, model)
        return JSONResponse(job.describe(jobs.jobs.retention_s), status_code=202,
                            headers={"Location": f"/api/jobs/{job.id}"})

    @app.get("/api/jobs/{key}", summary="a video job's progress and, when done, its files")
    async def job(key: str):
        jobs = videos()
        return jobs.jobs.get(key).describe(jobs.jobs.retention_s)

    @app.delete("/api/jobs/{key}", summary="cancel a video job and delete its files")
    async def cancel(key: str):
        jobs = videos()
        return jobs.jobs.cancel(key).describe(jobs.jobs.retention_s)

    @app.get("/api/jobs/{key}/{what}", summary="a finished job's map.mp4 or overlay.mp4 (deleted once downloaded)")
    async def job_file(key: str, what: str, request: Request):
        jobs = videos().jobs
        path = jobs.file(key, what)
        whole = "range" not in request.headers  # a part (a player seeking) leaves the file for the rest
        task = BackgroundTask(jobs.downloaded, key, what) if whole else None
        name = f"{Path(jobs.get(key).name).stem}_{what}"
        return FileResponse(path, media_type=JOB_FILES[what], background=task,
                            headers={"Content-Disposition": content_disposition("attachment", name),
                                     "Cache-Control": "no-store"})


def content_disposition(kind: str, filename: str) -> str:
    """A ``Content-Disposition`` header value for any file name (RFC 6266):
    an ASCII ``filename`` fallback (other characters, quotes and backslashes
    as ``_``) and the exact name as ``filename*=UTF-8''...`` (RFC 5987), since
    HTTP headers are Latin-1 and a user's file name may be Chinese or an emoji."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "download"
    header = f'{kind}; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


def _encode(format: str, rgb: np.ndarray, sal: np.ndarray, overlay: bool, alpha: float,
            name: str) -> tuple[bytes, str, str]:
    """(body, media type, file name) of a png or npy answer."""
    stem = Path(name).stem
    if format == "npy":
        return npy_bytes(sal), "application/octet-stream", f"{stem}_saliency.npy"
    if overlay:
        return png_bytes(overlay_image(rgb, sal, alpha), PNG_LEVEL), "image/png", f"{stem}_overlay.png"
    return png_bytes(to_uint8(sal), PNG_LEVEL), "image/png", f"{stem}_saliency.png"


def _describe(service: SaliencyService, name: str, data: bytes, rgb: np.ndarray, sal: np.ndarray, seconds: float,
              postprocess: str, overlay: bool, alpha: float, keep: bool, model: str) -> dict[str, Any]:
    """The json answer: size, peaks, the map (and overlay) as base64 PNG, download links if kept."""
    out: dict[str, Any] = {
        "name": name, "width": int(sal.shape[1]), "height": int(sal.shape[0]),
        "seconds": round(seconds, 3), "model": service.models[model].model_path.name, "model_name": model,
        "postprocess": postprocess,
        "peaks": [{"x": x, "y": y, "value": round(v, 4)} for x, y, v in salient_points(sal)],
        "map_png": base64.b64encode(png_bytes(to_uint8(sal), PNG_LEVEL)).decode("ascii"),
    }
    if overlay:
        out["overlay_png"] = base64.b64encode(png_bytes(overlay_image(rgb, sal, alpha), PNG_LEVEL)).decode("ascii")
    if keep:
        key = service.cache.put(Result(name, data, sal))
        out["result"] = key
        if key is not None:
            base = f"/api/results/{key}"
            out["downloads"] = {"map_png": f"{base}/map.png", "map_npy": f"{base}/map.npy",
                                "overlay_png": f"{base}/overlay.png"}
    return out


def _render_kept(service: SaliencyService, kept: Result, what: str, alpha: float,
                 threshold: float) -> tuple[bytes, str, str]:
    """(body, media type, file name) of a kept result's download."""
    stem = Path(kept.name).stem
    sal = threshold_map(kept.saliency_map, threshold) if threshold > 0 else kept.saliency_map
    if what == "map.png":
        return png_bytes(to_uint8(sal), PNG_LEVEL), "image/png", f"{stem}_saliency.png"
    if what == "map.npy":
        return npy_bytes(sal), "application/octet-stream", f"{stem}_saliency.npy"
    if what == "overlay.png":
        rgb = load_image(kept.data, as_float=False, max_pixels=service.max_pixels, name=kept.name)
        return png_bytes(overlay_image(rgb, sal, alpha), PNG_LEVEL), "image/png", f"{stem}_overlay.png"
    raise RequestError(404, f"no such download: {what} (map.png, map.npy or overlay.png)")


def run_server(service: SaliencyService, host: str = "127.0.0.1", port: int = 7860,
               log_level: str = "warning", token: str | None = None) -> None:
    """Serve ``service`` until interrupted (uvicorn, one process), with ``token`` required if given."""
    import uvicorn

    uvicorn.run(create_app(service, token), host=host, port=port, log_level=log_level, access_log=False)


__all__ = ["create_app", "openapi_schema", "run_server", "content_disposition", "BodyLimit", "FORMATS"]
