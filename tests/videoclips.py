"""Small video clips generated for the tests (PyAV): a bright disc moving left
to right over a fixed random texture, optionally with a tone as audio."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def disc_centres(n: int, size: tuple[int, int]) -> list[tuple[int, int]]:
    """(row, column) of the disc in each of ``n`` frames."""
    h, w = size
    return [(h // 2, int(w * (0.15 + 0.7 * i / max(1, n - 1)))) for i in range(n)]


def frame_pixels(i: int, n: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    texture = (np.random.default_rng(0).random((h, w, 3)) * 80 + 40).astype(np.uint8)
    cy, cx = disc_centres(n, size)[i]
    yy, xx = np.ogrid[:h, :w]
    texture[(yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) // 10) ** 2] = 255
    return texture


def make_clip(path: Path, n: int = 30, size: tuple[int, int] = (240, 320), rate: int = 30, audio: bool = False,
              rotation: int = 0, codec: str = "libx264", pix_fmt: str = "yuv420p", fmt: str | None = None,
              times: list[float] | None = None, sar: Fraction | None = None,
              pixels=None) -> Path:
    """Write a clip; ``times`` (seconds) gives a variable frame rate; ``pixels(i)``
    replaces the moving disc."""
    import av

    h, w = size
    tb = Fraction(1, 1000) if times else Fraction(1, rate)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.time_base = stream.codec_context.time_base = tb
        if sar:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=44100) if audio else None
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pixels(i) if pixels else frame_pixels(i, n, size), format="rgb24")
            frame.pts = int(round(times[i] * 1000)) if times else i
            frame.time_base = tb
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            count = int(44100 * n / rate)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(count) / 44100)).astype(np.float32)[None]
            for start in range(0, count, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp",
                                                   layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def decoded(path: Path) -> dict:
    """What a player sees: frames (grey or RGB arrays), times, size, audio streams."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames, times, durations = [], [], []
        for f in c.decode(v):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
            durations.append(float((f.duration or 0) * f.time_base))
        return {"frames": frames, "times": times, "end": times[-1] + durations[-1] if times else 0.0,
                "width": v.codec_context.width, "height": v.codec_context.height,
                "rate": v.average_rate, "audio": len(c.streams.audio), "pix_fmt": v.codec_context.pix_fmt,
                "sar": v.sample_aspect_ratio, "rotation": 0}


def cut_clip(folder: Path, name: str = "cut.mp4") -> Path:
    """A 60-frame clip (index first, so a cut file still plays) cut in half: the
    frames before the cut decode, then FFmpeg finds the file truncated."""
    import av

    whole = folder / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(
                np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    cut = folder / name
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return cut


def audio_only(path: Path) -> Path:
    """An .mp4 holding one AAC frame of silence and no video stream."""
    import av

    with av.open(str(path), "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=44100)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 44100, 0
        for packet in list(sound.encode(chunk)) + list(sound.encode()):
            out.mux(packet)
    return path
