"""Video jobs of ``salicon serve``: an uploaded clip becomes a map video (and an
overlay) on the server, in the background, with its progress polled.

Jobs wait in a bounded queue and run one at a time; their frames queue for the
net with the image requests (the net's one thread stays the only user of the
net). What a job keeps on the server is bounded in three ways: ids are 128
random bits (unguessable, so a result is reachable only by who asked for it),
each result file is deleted once downloaded in full, and a finished job is
deleted after ``retention_s`` whatever happened. A client may have at most
``max_per_client`` jobs waiting or running.
"""
from __future__ import annotations

import queue
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import SaliconError

#: A finished job's files are deleted this many seconds after it ends (``salicon serve --job-retention``).
DEFAULT_RETENTION_S = 600.0
#: Jobs a client (an IP address) may have waiting or running at once.
DEFAULT_JOBS_PER_CLIENT = 2
#: Result files a job can have, and their media type.
JOB_FILES = {"map.mp4": "video/mp4", "overlay.mp4": "video/mp4"}


class JobError(SaliconError):
    """A job request refused, with the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass
class VideoJob:
    """One clip on its way to a map video."""
    id: str
    client: str
    name: str
    folder: Path
    source: Path
    options: dict[str, Any]
    total: int = 0                     # frames the header announces (0: unknown)
    status: str = "queued"             # queued, running, done, failed, cancelled
    frames: int = 0
    computed: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    files: dict[str, Path] = field(default_factory=dict)
    downloaded: set[str] = field(default_factory=set)
    cancel: threading.Event = field(default_factory=threading.Event)
    info: Any = None                   # the clip's header (salicon.video.VideoInfo)
    sampler: Any = None                # which frames the net runs on (salicon.video.FrameSampler)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def describe(self, retention_s: float) -> dict[str, Any]:
        """The job as ``GET /api/jobs/{id}`` shows it."""
        fraction = min(1.0, self.frames / self.total) if self.total else None
        body: dict[str, Any] = {
            "id": self.id, "name": self.name, "status": self.status, "options": self.options,
            "progress": {"frames": self.frames, "total_frames": self.total or None, "computed": self.computed,
                         "fraction": 1.0 if self.status == "done" else fraction},
            "error": self.error, "created": self.created, "seconds": self._seconds()}
        if self.status == "done":
            body["files"] = {what: f"/api/jobs/{self.id}/{what}" for what in self.files if what not in self.downloaded}
            body["downloaded"] = sorted(self.downloaded)
        if self.finished is not None:
            body["expires"] = self.finished + retention_s
        return body

    def _seconds(self) -> float | None:
        if self.started is None:
            return None
        return round((self.finished or time.time()) - self.started, 3)


class JobManager:
    """Video jobs: a bounded queue, one runner thread, files under one folder.

    ``run(job, progress)`` does a job's work and returns its result files by name
    (``map.mp4``, ``overlay.mp4``); it is given the job (its source, folder,
    options and cancel event) and a callback for each frame done.
    """

    def __init__(self, run: Callable[[VideoJob, Callable[[int, bool], None]], dict[str, Path]], *,
                 retention_s: float = DEFAULT_RETENTION_S, max_per_client: int = DEFAULT_JOBS_PER_CLIENT,
                 max_waiting: int = 8, root: Path | None = None):
        self._run = run
        self.retention_s = retention_s
        self.max_per_client = max_per_client
        self.root = Path(tempfile.mkdtemp(prefix="salicon-jobs-", dir=root))
        self._jobs: dict[str, VideoJob] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[VideoJob | None] = queue.Queue(maxsize=max(1, max_waiting))
        self._thread = threading.Thread(target=self._loop, name="salicon-video-jobs", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ requests
    def new_folder(self) -> tuple[str, Path]:
        """A fresh job id (128 random bits) and its folder."""
        key = secrets.token_hex(16)
        folder = self.root / key
        folder.mkdir()
        return key, folder

    def check_client(self, client: str) -> None:
        """A 429 when ``client`` already has its share of unfinished jobs."""
        with self._lock:
            active = sum(1 for j in self._jobs.values() if j.client == client and j.active)
        if active >= self.max_per_client:
            raise JobError(429, f"you have {active} video job(s) waiting or running (at most {self.max_per_client} "
                                f"per client); wait for one to finish")

    def submit(self, job: VideoJob) -> VideoJob:
        """Queue ``job`` (its source already in its folder); 429 or 503 when it cannot wait."""
        self.sweep()
        self.check_client(job.client)
        with self._lock:
            self._jobs[job.id] = job
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._forget(job.id)
            raise JobError(503, f"the server is busy ({self._queue.maxsize} video jobs waiting); try again later") \
                from None
        return job

    def get(self, key: str) -> VideoJob:
        self.sweep()
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            raise JobError(404, f"no video job '{key}' (finished jobs are deleted {self.retention_s:g} s after "
                                f"they end, and their files once downloaded)")
        return job

    def file(self, key: str, what: str) -> Path:
        """A finished job's result file, or a 404/409 that says why not."""
        job = self.get(key)
        if what not in JOB_FILES:
            raise JobError(404, f"a job has no file '{what}' (files: {', '.join(JOB_FILES)})")
        if job.status != "done":
            raise JobError(409, f"job '{key}' is {job.status}" + (f": {job.error}" if job.error else "")
                           + ("" if job.status != "running" else f" ({job.frames} frames so far)"))
        if what in job.downloaded:
            raise JobError(410, f"{what} of job '{key}' was downloaded and deleted from the server")
        if what not in job.files:
            raise JobError(404, f"job '{key}' made no {what} (ask for it with overlay=true)")
        return job.files[what]

    def downloaded(self, key: str, what: str) -> None:
        """Delete a result file after its full download."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None or what not in job.files:
                return
            job.downloaded.add(what)
            job.files[what].unlink(missing_ok=True)

    def cancel(self, key: str) -> VideoJob:
        """Stop a job (if it runs) and delete its files now."""
        job = self.get(key)
        job.cancel.set()
        if job.status == "queued":
            job.status = "cancelled"
            job.finished = time.time()
        if not job.active:
            self._forget(key)
        return job

    def sweep(self) -> None:
        """Delete the jobs that ended more than ``retention_s`` ago."""
        now = time.time()
        with self._lock:
            old = [k for k, j in self._jobs.items() if j.finished is not None and now - j.finished > self.retention_s]
        for key in old:
            self._forget(key)

    def counts(self) -> dict[str, int]:
        with self._lock:
            states = [j.status for j in self._jobs.values()]
        return {s: states.count(s) for s in ("queued", "running", "done", "failed", "cancelled")}

    def close(self) -> None:
        """Stop the runner and delete every job's files."""
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        self._queue.put(None)
        self._thread.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------- runner
    def _forget(self, key: str) -> None:
        with self._lock:
            job = self._jobs.pop(key, None)
        if job is not None:
            shutil.rmtree(job.folder, ignore_errors=True)

    def _loop(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=30)
            except queue.Empty:
                self.sweep()
                continue
            if job is None:
                return
            if job.cancel.is_set():
                continue
            self._execute(job)

    def _execute(self, job: VideoJob) -> None:
        job.status, job.started = "running", time.time()

        def progress(frames: int, computed: bool) -> None:
            job.frames = frames
            job.computed += int(computed)

        try:
            job.files = self._run(job, progress)  # a clip that broke mid-way: files for its frames, job.error says
            job.status = "done" if job.files else "failed"
        except KeyboardInterrupt:  # the job's cancel event stopped it
            job.status = "cancelled"
        except Exception as exc:
            job.status, job.error = "failed", str(exc)
        finally:
            job.source.unlink(missing_ok=True)  # the upload is not kept
            job.finished = time.time()
            if job.status != "done":
                for path in job.files.values():
                    path.unlink(missing_ok=True)
                job.files = {}
            if job.status == "cancelled":
                self._forget(job.id)


__all__ = ["JobManager", "VideoJob", "JobError", "JOB_FILES", "DEFAULT_RETENTION_S", "DEFAULT_JOBS_PER_CLIENT"]
