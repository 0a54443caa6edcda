"""Writing a clip's maps: H.264 videos that play everywhere, and a float16 archive.

Every file is written under a temporary name beside its final one and renamed
into place only when complete, so Ctrl-C or a failure leaves no half-written
file under the final name (and keeps an older one). Memory stays flat: frames
go to the encoder as they come, the archive's maps go to a temporary file.
"""
from __future__ import annotations

import heapq
import io
import tempfile
import zipfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import publish, temporary_beside
from ..types import PathLike
from .reader import FrameInfo, VideoInfo

#: H.264 quality: constant rate factor (lower is better; 18 is visually lossless
#: for these smooth maps) and x264's speed preset (the net, not the encoder, is the cost).
CRF = "18"
PRESET = "veryfast"


def _encoder_name() -> str:
    import av

    for name in ("libx264", "h264", "libopenh264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise RuntimeError("FFmpeg here has no H.264 or MPEG-4 encoder")


def _format_of(path: Path) -> str:
    return {".mkv": "matroska", ".mov": "mov", ".webm": "webm", ".avi": "avi"}.get(path.suffix.lower(), "mp4")


class VideoEncoder:
    """One video file of the clip's size and timing: 8-bit frames in (grey or
    RGB), H.264 yuv420p out (yuv444p for odd sizes, which 4:2:0 cannot hold),
    each frame at its input time stamp so variable frame rates stay as they were.

    ``audio_from``: a file whose audio streams are copied in (no re-encoding) by :meth:`commit`.
    """

    def __init__(self, path: PathLike, info: VideoInfo, audio_from: str | None = None):
        import av

        self.path = Path(path)
        self.info = info
        self.audio_from = audio_from if info.has_audio else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_beside(self.path)
        self._container = av.open(str(self._tmp), "w", format=_format_of(self.path))
        codec = _encoder_name()
        rate = info.rate if info.rate and info.rate > 0 else Fraction(30)
        options = {"crf": CRF, "preset": PRESET} if codec == "libx264" else {}
        stream: Any = self._container.add_stream(codec, rate=rate, options=options)  # a video stream
        stream.width, stream.height = info.width, info.height
        even = info.width % 2 == 0 and info.height % 2 == 0
        stream.pix_fmt = "yuv420p" if even or codec != "libx264" else "yuv444p"
        stream.time_base = info.time_base
        stream.codec_context.time_base = info.time_base
        sar = info.sample_aspect_ratio
        if sar and sar != 1:
            stream.codec_context.sample_aspect_ratio = 1 / sar if info.rotation in (90, 270) else sar
        self._stream = stream
        self._first_pts: int | None = None
        self.frames = 0

    def write(self, frame_info: FrameInfo, pixels: np.ndarray) -> None:
        """Encode one frame (HxW uint8 grey or HxWx3 uint8 RGB) at ``frame_info``'s time."""
        import av

        if self._first_pts is None:
            self._first_pts = frame_info.pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="gray" if pixels.ndim == 2 else "rgb24")
        frame.pts = frame_info.pts - self._first_pts
        frame.time_base = self.info.time_base
        if frame_info.duration:
            frame.duration = frame_info.duration
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def commit(self) -> Path:
        """Finish the stream, copy the audio in, and rename the file into place."""
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            if self.audio_from:
                with_audio = temporary_beside(self.path)
                try:
                    _mux_audio(self._tmp, self.audio_from, with_audio, _format_of(self.path))
                except BaseException:
                    with_audio.unlink(missing_ok=True)
                    raise
                self._tmp.unlink(missing_ok=True)
                self._tmp = with_audio
            publish(self._tmp, self.path)
            return self.path
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file (an older file under the final name stays)."""
        try:
            self._container.close()
        except Exception:
            pass
        self._tmp.unlink(missing_ok=True)


def _packets(container, stream) -> Iterator:
    for packet in container.demux(stream):
        if packet.dts is not None and packet.size:
            yield packet


def _mux_audio(video: Path, source: str, out: Path, fmt: str) -> None:
    """``video``'s stream and ``source``'s audio streams, copied packet by packet
    (in time order) into ``out``."""
    import av

    with av.open(str(video)) as vin, av.open(source) as ain, av.open(str(out), "w", format=fmt) as dst:
        vstream = vin.streams.video[0]
        mapping: dict[Any, Any] = {vstream: dst.add_stream_from_template(vstream)}
        for astream in ain.streams.audio:
            try:
                mapping[astream] = dst.add_stream_from_template(astream)
            except (ValueError, av.error.FFmpegError):
                continue  # an audio codec this container cannot hold is left out
        sources = [_packets(vin, vstream)] + [_packets(ain, s) for s in mapping if s is not vstream]

        def timed(packets, order):
            for packet in packets:
                yield float(packet.dts * packet.time_base), order, packet

        for _, _, packet in heapq.merge(*(timed(p, i) for i, p in enumerate(sources))):
            packet.stream = mapping[packet.stream]
            dst.mux(packet)


class MapArchive:
    """``<name>.npz`` with ``maps`` (N x H x W float16, one per computed frame),
    ``timestamps`` (N seconds, float64) and ``frames`` (N frame indices), as
    ``numpy.load`` reads it. Maps are spooled to a temporary file as they come."""

    def __init__(self, path: PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spool = tempfile.TemporaryFile(dir=self.path.parent)
        self._times: list[float] = []
        self._frames: list[int] = []
        self._shape: tuple[int, int] | None = None

    def add(self, frame_info: FrameInfo, saliency_map: np.ndarray) -> None:
        self._shape = self._shape or tuple(saliency_map.shape)
        self._spool.write(np.ascontiguousarray(saliency_map, dtype=np.float16).tobytes())
        self._times.append(frame_info.time)
        self._frames.append(frame_info.index)

    def commit(self) -> Path:
        tmp = temporary_beside(self.path)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                shape = (len(self._times),) + (self._shape or (0, 0))
                with archive.open("maps.npy", "w", force_zip64=True) as fh:
                    _write_npy_header(fh, np.dtype(np.float16), shape)
                    self._spool.seek(0)
                    while chunk := self._spool.read(1 << 24):
                        fh.write(chunk)
                for name, values in (("timestamps", np.asarray(self._times, np.float64)),
                                     ("frames", np.asarray(self._frames, np.int64))):
                    buffer = io.BytesIO()
                    np.save(buffer, values)
                    archive.writestr(f"{name}.npy", buffer.getvalue())
            publish(tmp, self.path)
            return self.path
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            self._spool.close()

    def abort(self) -> None:
        self._spool.close()


def _write_npy_header(fh, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    from numpy.lib import format as npy

    npy.write_array_header_1_0(fh, {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})


__all__ = ["VideoEncoder", "MapArchive", "CRF", "PRESET"]
