"""Video uploads of ``salicon serve``: limits checked at once, then a background
job (:mod:`salicon.jobs`) whose frames queue for the net with the images.

Limits (413 when over, with the limit in the message): the upload's bytes (the
server's upload limit), the clip's duration (``max_seconds``) and the pixels
of each frame (``max_pixels``, 4K UHD by default: decoding and encoding a
larger clip on a shared server is not what a short-clip endpoint is for).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .jobs import DEFAULT_JOBS_PER_CLIENT, DEFAULT_RETENTION_S, JobError, JobManager, VideoJob
from .video import FrameSampler, VideoError, VideoLimitError, VideoOutputs, probe, write_video
from .video.temporal import default_sampler

#: Longest clip the server takes (seconds; ``salicon serve --max-video-seconds``).
DEFAULT_MAX_SECONDS = 60.0
#: Most pixels per frame of an uploaded clip (3840 x 2160).
DEFAULT_MAX_VIDEO_PIXELS = 3840 * 2160


class QueuedNet:
    """A served model whose forward passes go through the server's net queue, so a
    video job shares the net with image requests instead of racing them for it."""

    def __init__(self, model, worker, max_pixels: int | None, ahead: int = 2):
        self.model, self.worker, self.ahead = model, worker, max(1, ahead)
        self.max_pixels = max_pixels
        self.device = model.device

    def iter_saliency(self, images: Iterable[np.ndarray], batch_size: int = 1, workers: int | None = None
                      ) -> Iterator[tuple[int, np.ndarray]]:
        waiting: deque = deque()
        for index, rgb in enumerate(images):
            inputs, size = self.model.preprocess(rgb)
            waiting.append((index, self.worker.submit(inputs, wait=True), size))
            if len(waiting) > self.ahead:
                yield self._finish(*waiting.popleft())
        while waiting:
            yield self._finish(*waiting.popleft())

    def _finish(self, index: int, future, size) -> tuple[int, np.ndarray]:
        return index, self.model.postprocess(future.result(), size)


class VideoService:
    """``POST /api/video`` and ``/api/jobs/...`` for a :class:`~salicon.serve.SaliencyService`."""

    def __init__(self, service, *, max_seconds: float = DEFAULT_MAX_SECONDS,
                 max_pixels: int | None = DEFAULT_MAX_VIDEO_PIXELS, retention_s: float = DEFAULT_RETENTION_S,
                 max_per_client: int = DEFAULT_JOBS_PER_CLIENT, root: Path | None = None):
        self.service = service
        self.max_seconds, self.max_pixels = max_seconds, max_pixels
        self.jobs = JobManager(self._run, retention_s=retention_s, max_per_client=max_per_client, root=root)

    def limits(self) -> dict[str, Any]:
        return {"max_video_seconds": self.max_seconds, "max_video_pixels": self.max_pixels,
                "job_retention_s": self.jobs.retention_s, "jobs_per_client": self.jobs.max_per_client}

    def submit(self, name: str, data: bytes, client: str, options: dict[str, Any], model: str | None = None
               ) -> VideoJob:
        """Check the upload against the limits and queue its job (a JobError says why not)."""
        chosen = self.service.pick(model)
        self.service.check_upload(name, data)
        self.jobs.check_client(client)
        sampler = self._sampler(options)
        key, folder = self.jobs.new_folder()
        source = folder / ("upload" + (Path(name).suffix.lower() or ".mp4"))
        source.write_bytes(data)
        try:
            info = probe(source, self.max_pixels, self.max_seconds)
        except VideoLimitError as exc:
            self._drop(folder)
            raise JobError(413, _named(exc, source, name) + " (salicon serve --max-video-seconds / "
                                                            "--max-video-pixels raise the limits)") from None
        except VideoError as exc:
            self._drop(folder)
            raise JobError(415, _named(exc, source, name)) from None
        options = {**options, "model": chosen, "sampling": sampler.describe()}
        job = VideoJob(key, client, name, folder, source, options, total=info.expected_frames(), info=info,
                       sampler=sampler)
        try:
            return self.jobs.submit(job)
        except JobError:
            self._drop(folder)
            raise

    def _sampler(self, options: dict[str, Any]) -> FrameSampler:
        try:
            return default_sampler(options.get("fps"), options.get("every"), self.service.model.device.type == "cpu")
        except ValueError as exc:
            raise JobError(400, str(exc)) from None

    @staticmethod
    def _drop(folder: Path) -> None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)

    def _run(self, job: VideoJob, progress: Callable[[int, bool], None]) -> dict[str, Path]:
        name = job.options["model"]
        net = QueuedNet(self.service.models[name], self.service.workers[name], self.max_pixels)
        outputs = VideoOutputs(overlay=bool(job.options.get("overlay")))
        done = {"frames": 0}

        def each(item) -> None:
            done["frames"] += 1
            progress(done["frames"], item.computed)

        result = write_video(net, str(job.source), job.folder, "map", outputs, job.sampler,
                             smoothing=job.options.get("smoothing"), interpolate=bool(job.options.get("interpolate")),
                             info=job.info, progress=each, cancel=job.cancel)
        if result.error:
            job.error = _named(VideoError(result.error), job.source, job.name) + \
                f" (the result has the maps of the {result.frames} frames before it)"
        files = {"map.mp4": job.folder / "map.mp4"}
        if outputs.overlay:
            files["overlay.mp4"] = job.folder / "map_overlay.mp4"
        return files

    def close(self) -> None:
        self.jobs.close()


def _named(exc: Exception, source: Path, name: str) -> str:
    """A message about the stored upload, told with the name the client gave it."""
    return str(exc).replace(str(source), name)


__all__ = ["VideoService", "QueuedNet", "DEFAULT_MAX_SECONDS", "DEFAULT_MAX_VIDEO_PIXELS"]
