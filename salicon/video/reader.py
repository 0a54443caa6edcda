"""Reading a video: its first video stream as upright 8-bit RGB frames with their times.

Decoding (any container and codec FFmpeg reads, through PyAV) runs ahead of the
net in a thread of its own with a bounded queue, so memory holds a few frames
whatever the clip's length. Frames come out as the viewer sees them: the
display matrix's rotation applied (phone videos upright); 10-bit and other
pixel formats are converted to 8-bit RGB by FFmpeg's scaler. Non-square pixels
are kept: the maps have the coded size and the outputs the same sample aspect
ratio, so they lie over the frames as they play.
"""
from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import SaliconError, describe_pixels
from ..image import VIDEO_SUFFIXES, is_video_name
from ..types import PathLike

#: FFmpeg demuxers of still images: such a file is an image, whatever its name says.
_IMAGE_DEMUXERS = ("_pipe", "image2", "gif")


class VideoError(SaliconError):
    """A video that cannot be read, or that a limit refuses; the message names the file."""


class VideoLimitError(VideoError):
    """A video over a limit (pixels per frame, duration): HTTP 413 on the server."""


def video_problem() -> str | None:
    """Why videos cannot be read here (PyAV missing), or None."""
    try:
        import av  # noqa: F401
    except ImportError:
        return 'reading videos needs PyAV: pip install -e ".[video]" (or pip install av)'
    return None


@dataclass(frozen=True)
class FrameInfo:
    """One decoded frame's place in the clip."""
    index: int          # 0, 1, ... in presentation order
    pts: int            # presentation time stamp, in ``time_base`` units
    time: float         # seconds from the stream's start
    duration: int       # display duration in ``time_base`` units (0: unknown)


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says about its first video stream."""
    path: str
    container: str               # FFmpeg's demuxer name
    codec: str
    width: int                   # upright (rotation applied)
    height: int
    coded_width: int
    coded_height: int
    rotation: int                # counter-clockwise degrees applied to make frames upright (0, 90, 180, 270)
    time_base: Fraction
    rate: Fraction | None        # average frame rate, if known
    frames: int                  # the header's frame count (0: not given)
    duration: float | None       # seconds, if known
    sample_aspect_ratio: Fraction | None
    pix_fmt: str | None
    has_audio: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def expected_frames(self) -> int:
        """The header's frame count, else duration x rate, else 0."""
        if self.frames:
            return self.frames
        if self.duration and self.rate:
            return int(round(self.duration * float(self.rate)))
        return 0


def _first_frame_rotation(container, stream, path: str) -> int:
    """The display rotation (counter-clockwise degrees, a multiple of 90) of the
    first frame, which PyAV reads from the display matrix; decoding it also
    finds a stream without frames before any work."""
    import av

    try:
        frame = next(iter(container.decode(stream)), None)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: corrupt: its first frame does not decode ({_ffmpeg_reason(exc)})") from None
    if frame is None:
        raise VideoError(f"{path}: has no video frames (empty, or cut off before its first frame)")
    return int(round(float(frame.rotation or 0) / 90.0)) % 4 * 90


def _open(path: str):
    import av

    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes), not a video")
    try:
        return av.open(path, metadata_errors="replace")
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file") from None
    except EOFError:
        raise VideoError(f"{path}: has no video frames (empty, or cut off before its first frame)") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"{path}: not a video FFmpeg can read ({_ffmpeg_reason(exc)})") from None


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '", 1)[0].strip() or type(exc).__name__


def probe(source: PathLike, max_pixels: int | None = None, max_seconds: float | None = None) -> VideoInfo:
    """Read ``source``'s header: the first video stream's size, timing and codec.

    Raises :class:`VideoError` for a file that is not a video (an image under a
    video name, audio only, an unknown codec) and :class:`VideoLimitError` for
    one over ``max_pixels`` per frame or ``max_seconds`` long."""
    path = str(source)
    container = _open(path)
    try:
        return _describe(container, path, max_pixels, max_seconds)
    finally:
        container.close()


def _describe(container, path: str, max_pixels: int | None, max_seconds: float | None) -> VideoInfo:
    fmt = container.format.name
    if any(fmt.endswith(k) or fmt == k for k in _IMAGE_DEMUXERS):
        kind = fmt.replace("_pipe", "").upper()
        raise VideoError(f"{path}: is a {kind} image, not a video; give it an image suffix to get its map")
    if not container.streams.video:
        what = "audio only" if container.streams.audio else "no video stream"
        raise VideoError(f"{path}: has no video stream ({what})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    codec = getattr(ctx, "name", None) or "unknown"
    if not _has_decoder(stream):
        tag = getattr(ctx, "codec_tag", "") or ""
        raise VideoError(f"{path}: unsupported video codec ({codec}{f', tag {tag!r}' if tag else ''}); "
                         f"FFmpeg here has no decoder for it")
    coded_w, coded_h = int(ctx.width or 0), int(ctx.height or 0)
    if coded_w <= 0 or coded_h <= 0:
        raise VideoError(f"{path}: the video stream gives no frame size (corrupt header?)")
    if max_pixels is not None and coded_w * coded_h > max_pixels:
        raise VideoLimitError(f"{path}: frames of {coded_w}x{coded_h} ({describe_pixels(coded_w * coded_h)}) are "
                              f"over the limit of {describe_pixels(max_pixels)} per frame")
    duration = _duration(container, stream)
    if max_seconds is not None and duration is not None and duration > max_seconds:
        raise VideoLimitError(f"{path}: {duration:.1f} s long, over the limit of {max_seconds:g} s")
    rate = stream.average_rate or stream.guessed_rate
    sar = stream.sample_aspect_ratio
    time_base = stream.time_base or Fraction(1, 90000)
    rotation = _first_frame_rotation(container, stream, path)
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    return VideoInfo(path=path, container=fmt, codec=codec, width=width, height=height, coded_width=coded_w,
                     coded_height=coded_h, rotation=rotation, time_base=time_base,
                     rate=Fraction(rate) if rate else None, frames=int(stream.frames or 0), duration=duration,
                     sample_aspect_ratio=Fraction(sar) if sar and sar > 0 else None,
                     pix_fmt=getattr(ctx, "pix_fmt", None), has_audio=bool(container.streams.audio))


def _has_decoder(stream) -> bool:
    import av

    try:
        return av.codec.Codec(stream.codec_context.name, "r") is not None
    except Exception:
        return False


def _duration(container, stream) -> float | None:
    """Seconds, from the stream's header, else the container's; None if neither says."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """A coded frame turned as its display matrix says (counter-clockwise degrees)."""
    return np.ascontiguousarray(np.rot90(rgb, k=rotation // 90)) if rotation else rgb


def read_frames(source: PathLike, info: VideoInfo | None = None, max_pixels: int | None = None
                ) -> Iterator[tuple[FrameInfo, np.ndarray]]:
    """``(frame info, upright HxWx3 uint8 RGB)`` for every frame of the first video
    stream, in presentation order. A decoding error mid-stream raises
    :class:`VideoError` after the frames that decoded."""
    import av

    path = str(source)
    info = info or probe(path, max_pixels)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's frame/slice threads
        tb = stream.time_base or info.time_base
        index, last_pts, corrupt = 0, None, []
        end = 0.0
        step = _frame_step(info)
        try:
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else (0 if last_pts is None else last_pts + step)
                if last_pts is not None and pts <= last_pts:  # a broken or missing stamp: keep time moving
                    pts = last_pts + max(1, step)
                if frame.width * frame.height > (max_pixels or math.inf):
                    raise VideoLimitError(f"{path}: frame {index} is {frame.width}x{frame.height}, over the "
                                          f"limit of {describe_pixels(max_pixels or 0)} per frame")
                if frame.is_corrupt:
                    corrupt.append(index)
                rgb = upright(frame.to_ndarray(format="rgb24"), info.rotation)
                start = stream.start_time or 0
                frame_info = FrameInfo(index, pts, float((pts - start) * tb), int(frame.duration or 0))
                yield frame_info, rgb
                index, last_pts = index + 1, pts
                end = frame_info.time + float((frame_info.duration or step) * tb)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path}: corrupt or truncated after {index} frame(s): {_ffmpeg_reason(exc)}") from None
        if index == 0:
            raise VideoError(f"{path}: no video frames could be decoded")
        if info.frames and index < info.frames - 1:
            raise VideoError(f"{path}: truncated: {index} of the {info.frames} frames its header lists decoded")
        if not info.frames and info.duration and end < 0.9 * info.duration - 0.1:
            raise VideoError(f"{path}: truncated: frames up to {end:.2f} s of the {info.duration:.2f} s its "
                             f"header gives decoded")
        if corrupt:
            raise VideoError(f"{path}: corrupt: {len(corrupt)} frame(s) decoded with errors (the first: frame "
                             f"{corrupt[0]})")
    finally:
        container.close()


def scan_timestamps(source: PathLike) -> list[int]:
    """The presentation time stamps of every frame of the first video stream, in
    order, read from the packets without decoding (seconds for a long clip)."""
    path = str(source)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stamps = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
    finally:
        container.close()
    return stamps


def read_segment(source: PathLike, info: VideoInfo, start_pts: int, end_pts: int | None
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """``(pts, upright RGB)`` of the frames with ``start_pts <= pts < end_pts``
    (None: to the end), decoded from the key frame before ``start_pts``: one
    segment of a clip, for workers that share a long clip between them."""
    import av

    path = str(source)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.pts < start_pts:
                    continue
                if end_pts is not None and frame.pts >= end_pts:
                    break
                yield frame.pts, upright(frame.to_ndarray(format="rgb24"), info.rotation)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path}: corrupt or truncated after pts {start_pts}: {_ffmpeg_reason(exc)}") from None
    finally:
        container.close()


def _frame_step(info: VideoInfo) -> int:
    """One frame's duration in time-base units (for frames without a stamp)."""
    if info.rate:
        return max(1, int(round(1 / (float(info.rate) * info.time_base))))
    return 1


_END = object()


def read_ahead(frames: Iterator, depth: int = 8) -> Iterator:
    """``frames`` decoded in a thread at most ``depth`` items ahead; its error is
    raised here, after the items before it."""
    slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_END)
        except BaseException as exc:  # handed to the consumer
            slots.put(exc)

    thread = threading.Thread(target=produce, name="salicon-video-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let the producer see the stop and close its file
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


__all__ = ["VIDEO_SUFFIXES", "VideoError", "VideoLimitError", "FrameInfo", "VideoInfo", "is_video_name",
           "video_problem", "probe", "read_frames", "read_ahead", "upright", "scan_timestamps", "read_segment"]
