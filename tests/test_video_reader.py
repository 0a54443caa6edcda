"""Reading clips: header facts, upright frames, time stamps, and every kind of bad file."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV (the extra 'video') reads videos")

from salicon.video.reader import VideoError, VideoLimitError, probe, read_ahead, read_frames  # noqa: E402

from .videoclips import audio_only, cut_clip, make_clip  # noqa: E402


def smooth_picture(h: int, w: int) -> np.ndarray:
    """Gradients (no fine detail for 4:2:0 chroma to lose), different along each axis."""
    y, x = np.mgrid[:h, :w]
    return np.stack([255 * x / w, 255 * y / h, 128 + 0 * x], axis=-1).astype(np.uint8)


def _bytes(data: bytes):
    def write(path):
        path.write_bytes(data)
        return path
    return write


def test_probe_reads_size_rate_frames_duration_and_audio(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", n=12, size=(48, 64), rate=24, audio=True)
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert info.rate == 24 and info.frames == 12 and info.has_audio
    assert info.duration == pytest.approx(0.5, abs=0.05)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"


def test_frames_come_upright_from_a_rotated_clip(tmp_path):
    coded = smooth_picture(48, 64)
    clip = make_clip(tmp_path / "phone.mp4", n=2, size=(48, 64), rotation=90, pixels=lambda i: coded)
    info = probe(clip)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    (_, first), _ = list(read_frames(clip))
    assert first.shape == (64, 48, 3)
    # the display matrix turns the coded picture a quarter counter-clockwise
    expected = np.rot90(coded, 1).astype(float)
    assert np.abs(first.astype(float) - expected).mean() < 6


def test_ten_bit_frames_are_read_as_8_bit_rgb(tmp_path):
    coded = smooth_picture(48, 64)
    clip = make_clip(tmp_path / "ten.mkv", n=3, size=(48, 64), codec="ffv1", pix_fmt="yuv420p10le", fmt="matroska",
                     pixels=lambda i: coded)
    assert probe(clip).pix_fmt == "yuv420p10le"
    frames = [rgb for _, rgb in read_frames(clip)]
    assert len(frames) == 3 and frames[0].dtype == np.uint8
    assert np.abs(frames[0].astype(float) - coded).mean() < 6


def test_variable_frame_rate_time_stamps_are_kept(tmp_path):
    times = [0.0, 0.04, 0.3, 0.31, 1.2]
    clip = make_clip(tmp_path / "vfr.mp4", n=5, size=(48, 64), times=times)
    got = [info for info, _ in read_frames(clip)]
    assert [i.index for i in got] == [0, 1, 2, 3, 4]
    assert [i.time for i in got] == pytest.approx(times, abs=1e-3)


def test_non_square_pixels_are_reported(tmp_path):
    clip = make_clip(tmp_path / "sar.mp4", n=2, size=(48, 64), sar=Fraction(4, 3))
    assert probe(clip).sample_aspect_ratio == Fraction(4, 3)


# ---------------------------------------------------------------- bad files


def _zero_frames(path):
    import av

    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()  # the header, without a frame
    return path


def _image(path):
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 10, 10)).save(path, format="PNG")
    return path


def _unknown_codec(path):
    import av

    with av.open(str(path.with_suffix(".tmp.avi")), "w") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    data = path.with_suffix(".tmp.avi").read_bytes()
    assert b"FMP4" in data
    path.write_bytes(data.replace(b"FMP4", b"QQQQ"))  # a FourCC no decoder claims
    return path


@pytest.mark.parametrize("make, name, message", [
    (_zero_frames, "empty.mkv", "has no video frames"),
    (audio_only, "sound.mp4", "has no video stream (audio only)"),
    (_image, "photo.mp4", "is a PNG image, not a video"),
    (_unknown_codec, "odd.avi", "unsupported video codec"),
    (_bytes(b""), "nothing.mp4", "the file is empty (0 bytes)"),
    (_bytes(b"\x00garbage" * 100), "junk.mp4", "not a video FFmpeg can read"),
])
def test_files_that_are_not_videos_are_named_and_explained(tmp_path, make, name, message):
    path = make(tmp_path / name)
    with pytest.raises(VideoError) as err:
        probe(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_limits_on_pixels_per_frame_and_duration(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", n=3, size=(48, 64), times=[0.0, 1.0, 36000.0])  # a header of ten hours
    with pytest.raises(VideoLimitError, match=r"over the limit of 600 s"):
        probe(clip, max_seconds=600)
    with pytest.raises(VideoLimitError, match=r"64x48 .* per frame"):
        probe(clip, max_pixels=1000)
    assert probe(clip, max_pixels=64 * 48, max_seconds=40000).duration == pytest.approx(36000, rel=1e-3)


def test_a_truncated_clip_gives_its_frames_then_the_error(tmp_path):
    cut = cut_clip(tmp_path)
    seen = []
    with pytest.raises(VideoError, match=r"cut.mp4: (truncated|corrupt)"):
        for info, _ in read_frames(cut):
            seen.append(info.index)
    assert 10 < len(seen) < 60 and seen == list(range(len(seen)))


def test_read_ahead_keeps_order_and_raises_after_the_items_before_the_error():
    def items():
        yield from range(5)
        raise VideoError("boom")
    got = []
    with pytest.raises(VideoError, match="boom"):
        for x in read_ahead(items(), depth=2):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]
    assert list(read_ahead(iter(range(100)), depth=3)) == list(range(100))
