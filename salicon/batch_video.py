"""Videos in ``salicon predict --ray`` jobs: a long clip shared by several actors.

The driver reads the clip's frame time stamps from its packets (no decoding),
chooses the frames the net runs on exactly as one process would, and cuts the
chosen frames into segments of ``segment_maps`` maps. Each segment goes to a
net actor, which decodes from the key frame before the segment and returns
its maps (float16, the frame's size). The driver takes the segments back in
order, as they are needed, and writes the videos through the same
:func:`~salicon.video.write_video` as a single process (decoding the clip
once more for the overlay and the time stamps; smoothing and blending run
over segment boundaries as if there were none). A video whose files all
exist is skipped on a rerun; each video gets one manifest row.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .inputs import Item, is_uri
from .video import FrameSampler, VideoError, VideoOutputs, probe, write_video
from .video.reader import read_segment, scan_timestamps
from .video.temporal import ChosenFrames, default_sampler


@dataclass(frozen=True)
class VideoSettings:
    """What a --ray job does with the videos among its inputs."""
    outputs: VideoOutputs = VideoOutputs()
    fps: float | None = None
    every: int | None = None
    interpolate: bool = False
    smoothing: float | None = None
    segment_maps: int = 32          # maps per segment handed to an actor

    def sampler(self, on_gpu: bool) -> FrameSampler:
        return default_sampler(self.fps, self.every, on_cpu=not on_gpu)


def choose_frames(stamps: Sequence[int], time_base, start: int, sampler: FrameSampler) -> list[int]:
    """Indices of the frames ``sampler`` takes, given every frame's time stamp."""
    return [i for i, pts in enumerate(stamps) if sampler.take(i, float((pts - start) * time_base))]


def segments(stamps: Sequence[int], chosen: Sequence[int], size: int) -> list[tuple[list[int], int, int | None]]:
    """``(frame indices, first pts, end pts or None)`` for each run of ``size`` chosen frames."""
    out = []
    for k in range(0, len(chosen), size):
        part = list(chosen[k:k + size])
        after = chosen[k + size] if k + size < len(chosen) else None
        out.append((part, stamps[part[0]], stamps[after] if after is not None else None))
    return out


class SegmentActor:
    """A net actor's video work: the maps of one segment of a clip."""

    def __init__(self, config, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from .model import Salicon

        self.model = Salicon(config=config)

    def maps(self, source: str, stamps: dict[int, int], start_pts: int, end_pts: int | None
             ) -> list[tuple[int, np.ndarray]]:
        """(frame index, float16 map) of the frames whose pts are in ``stamps`` (pts -> index)."""
        info = probe(source, self.model.max_pixels)
        wanted = [(stamps[pts], rgb) for pts, rgb in read_segment(source, info, start_pts, end_pts) if pts in stamps]
        maps = []
        for (index, _), (_, result) in zip(wanted, self.model.iter_saliency([rgb for _, rgb in wanted], workers=1)):
            if isinstance(result, Exception):
                raise result
            maps.append((index, result.astype(np.float16)))
        return maps


class SegmentMaps:
    """What :func:`write_video` sees as the model: maps that come from the actors,
    in order, instead of a net run here."""

    def __init__(self, maps: Iterator[np.ndarray], max_pixels: int | None):
        self._maps, self.max_pixels = maps, max_pixels

    def iter_saliency(self, images: Iterable, batch_size: int = 1, workers: int | None = None):
        for index, _ in enumerate(images):
            yield index, next(self._maps).astype(np.float32)


def videos_on_ray(videos: Sequence[Item], out: str, settings: VideoSettings, pool, max_pixels: int | None,
                  on_gpu: bool, statuses: dict[str, tuple[str, str]],
                  on_failure: Callable[[str], None] | None = None, progress: Callable[[int], None] | None = None
                  ) -> None:
    """Write every video's outputs below ``out`` with the actors of ``pool``
    (a ``ray.util.ActorPool`` of :class:`SegmentActor`); record each video's status."""
    from pathlib import Path

    for item in videos:
        files = settings.outputs.files(item.stem)
        if all((Path(out) / f).exists() for f in files):
            statuses[item.stem] = ("done before", "")
            continue
        try:
            if is_uri(item.source) or is_uri(out):
                raise VideoError(f"{item.source}: videos are read and written on local paths; download the "
                                 f"clip and write to a local -o")
            _one_video(item, out, settings, pool, max_pixels, on_gpu, progress)
            statuses[item.stem] = ("written", "")
        except Exception as exc:  # one clip's failure, reported; the others go on
            message = str(exc) if item.source in str(exc) else f"{item.source}: {exc}"
            statuses[item.stem] = ("failed", message)
            if on_failure is not None:
                on_failure(message)


def _one_video(item: Item, out: str, settings: VideoSettings, pool, max_pixels: int | None, on_gpu: bool,
               progress: Callable[[int], None] | None) -> None:
    info = probe(item.source, max_pixels)
    stamps = scan_timestamps(item.source)
    sampler = settings.sampler(on_gpu)
    chosen = choose_frames(stamps, info.time_base, stamps[0] if stamps else 0, sampler)
    parts = segments(stamps, chosen, max(1, settings.segment_maps))
    index_of = {pts: i for i, pts in enumerate(stamps)}

    def submit(actor, part):
        indices, start, end = part
        return actor.maps.remote(item.source, {stamps[i]: index_of[stamps[i]] for i in indices}, start, end)

    def maps() -> Iterator[np.ndarray]:
        for (indices, _, _), got in zip(parts, pool.map(submit, parts)):  # in order, several at a time
            if [i for i, _ in got] != indices:
                raise VideoError(f"{item.source}: a segment came back with frames {[i for i, _ in got][:5]}... "
                                 f"instead of {indices[:5]}... (time stamps that do not decode as they read)")
            yield from (m for _, m in got)

    result = write_video(SegmentMaps(maps(), max_pixels), item.source, out, item.stem, settings.outputs,
                         ChosenFrames(chosen, sampler.describe()), smoothing=settings.smoothing,
                         interpolate=settings.interpolate, info=info,
                         progress=(lambda _: progress(1)) if progress else None)
    if result.error:
        raise VideoError(result.error)


__all__ = ["VideoSettings", "SegmentActor", "SegmentMaps", "videos_on_ray", "choose_frames", "segments"]
