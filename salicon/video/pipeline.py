"""A clip's saliency: frames decoded ahead, the chosen ones through the net in
batches, every frame given a map (computed, held or blended), and the outputs
encoded behind, in bounded memory whatever the clip's length.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SaliconError
from ..types import PathLike
from ..visualize import overlay, threshold_map, to_uint8
from .reader import FrameInfo, VideoError, VideoInfo, probe, read_ahead, read_frames
from .temporal import FrameSampler, TemporalSmoother, between
from .writer import MapArchive, VideoEncoder


@dataclass
class FrameMap:
    """One frame of the clip and its map."""
    info: FrameInfo
    saliency_map: np.ndarray        # float32 HxW in [0, 1], the frame's size
    computed: bool                  # False: held or blended from computed maps
    rgb: np.ndarray | None = None   # the upright frame, when asked for


def frame_maps(model, source: PathLike, sampler: FrameSampler | None = None, *, smoothing: float | None = None,
               interpolate: bool = False, keep_frames: bool = False, info: VideoInfo | None = None,
               batch_size: int = 1, workers: int | None = None) -> Iterator[FrameMap]:
    """A :class:`FrameMap` for every frame of ``source``, in order.

    Frames the ``sampler`` picks go through ``model`` (a :class:`~salicon.Salicon`);
    the others show the latest map, or with ``interpolate`` the blend of the maps
    around them. A decoding error mid-clip is raised after the frames before it."""
    source = str(source)
    info = info or probe(source, model.max_pixels)
    sampler = sampler or FrameSampler()
    smoother = TemporalSmoother(smoothing)
    timeline: deque = deque()  # (frame info, pixels or None, computed?) not yet given a map
    failure: list[BaseException] = []

    def to_net():
        try:
            for frame_info, rgb in read_ahead(read_frames(source, info, model.max_pixels)):
                take = sampler.take(frame_info.index, frame_info.time)
                timeline.append((frame_info, rgb if keep_frames else None, take))
                if take:
                    yield rgb
        except VideoError as exc:  # the frames before it still get their maps
            failure.append(exc)

    previous: tuple[float, np.ndarray] | None = None
    workers = workers or min(2, os.cpu_count() or 1)
    for _, result in model.iter_saliency(to_net(), batch_size=batch_size, workers=workers):
        if isinstance(result, Exception):
            raise VideoError(f"{source}: {result}")
        waiting = []
        frame_info, rgb, take = timeline.popleft()
        while not take:
            waiting.append((frame_info, rgb))
            frame_info, rgb, take = timeline.popleft()
        current = (frame_info.time, smoother(frame_info.time, result))
        for wait_info, wait_rgb in waiting:
            yield FrameMap(wait_info, between(previous or current, current, wait_info.time, interpolate),
                           False, wait_rgb)
        yield FrameMap(frame_info, current[1], True, rgb)
        previous = current
    while timeline and previous is not None:
        frame_info, rgb, _ = timeline.popleft()
        yield FrameMap(frame_info, previous[1], False, rgb)
    if failure:
        raise failure[0]


@dataclass(frozen=True)
class VideoOutputs:
    """What to write for a clip: the map video always; the overlay (with the
    input's audio) and the float16 archive of computed maps on request."""
    overlay: bool = False
    npz: bool = False
    threshold: float | None = None

    def files(self, stem: str) -> list[str]:
        return [stem + ".mp4"] + ([stem + "_overlay.mp4"] if self.overlay else []) + (
            [stem + ".npz"] if self.npz else [])


@dataclass
class VideoResult:
    """How a clip went: frames seen and computed, files written, the error if any."""
    source: str
    frames: int = 0
    computed: int = 0
    seconds: float = 0.0
    written: list[str] = field(default_factory=list)
    error: str | None = None


def write_video(model, source: str, out: PathLike, stem: str, outputs: VideoOutputs,
                sampler: FrameSampler | None = None, smoothing: float | None = None, interpolate: bool = False,
                info: VideoInfo | None = None, batch_size: int = 1, workers: int | None = None,
                progress: Callable[[FrameMap], None] | None = None,
                cancel: threading.Event | None = None) -> VideoResult:
    """Write ``out/stem.mp4`` (+ ``_overlay.mp4``, ``.npz``) for ``source``.

    A clip that fails mid-way keeps the maps of the frames that decoded (the
    files are complete and playable) and reports the error in the result; a
    failure before any frame, an exception from ``progress`` or a set ``cancel``
    leaves nothing behind."""
    result = VideoResult(source)
    info = info or probe(source, model.max_pixels)
    base = Path(out) / stem
    writers: list = []
    started = time.perf_counter()
    try:
        map_video = VideoEncoder(base.with_name(base.name + ".mp4"), info)
        writers.append(map_video)
        over = VideoEncoder(base.with_name(base.name + "_overlay.mp4"), info, audio_from=source) \
            if outputs.overlay else None
        archive = MapArchive(base.with_name(base.name + ".npz")) if outputs.npz else None
        writers += [w for w in (over, archive) if w is not None]
        try:
            for item in frame_maps(model, source, sampler, smoothing=smoothing, interpolate=interpolate,
                                   keep_frames=outputs.overlay, info=info, batch_size=batch_size, workers=workers):
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt("cancelled")
                shown = item.saliency_map if outputs.threshold is None else threshold_map(item.saliency_map,
                                                                                          outputs.threshold)
                map_video.write(item.info, to_uint8(shown))
                if over is not None:
                    assert item.rgb is not None  # kept for the overlay
                    over.write(item.info, overlay(item.rgb, shown))
                if archive is not None and item.computed:
                    archive.add(item.info, shown)
                result.frames += 1
                result.computed += int(item.computed)
                if progress is not None:
                    progress(item)
        except (VideoError, SaliconError) as exc:
            result.error = str(exc)
            if result.frames == 0:
                raise
        for writer in writers:
            result.written.append(str(writer.commit()))
        writers = []
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    result.seconds = time.perf_counter() - started
    return result


def video_saliency(model, source: PathLike, fps: float | None = None, every: int | None = None,
                   smoothing: float | None = None, batch_size: int = 1) -> Iterator[tuple[float, np.ndarray]]:
    """``(timestamp in seconds, saliency map)`` for each frame the net runs on
    (every frame by default; ``fps`` or ``every`` to sample), smoothed over time
    by ``smoothing`` seconds if given."""
    sampler = FrameSampler(fps=fps, every=every)
    for item in frame_maps(model, source, sampler, smoothing=smoothing, batch_size=batch_size):
        if item.computed:
            yield item.info.time, item.saliency_map


__all__ = ["FrameMap", "VideoOutputs", "VideoResult", "frame_maps", "write_video", "video_saliency"]
