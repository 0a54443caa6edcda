"""Map videos, overlay videos and the float16 archive: timing kept, audio copied,
nothing half-written."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV (the extra 'video') writes videos")

from salicon.video.reader import probe, read_frames  # noqa: E402
from salicon.video.writer import MapArchive, VideoEncoder  # noqa: E402

from .videoclips import decoded, make_clip  # noqa: E402


def _copy(clip, out, **kwargs):
    info = probe(clip)
    encoder = VideoEncoder(out, info, **kwargs)
    for frame_info, rgb in read_frames(clip, info):
        encoder.write(frame_info, rgb[..., 0])  # one channel, written as grey
    return encoder.commit()


@pytest.mark.parametrize("times", [None, [0.0, 0.05, 0.3, 0.31, 0.9, 1.4]])
def test_a_map_video_keeps_size_frame_count_rate_and_time_stamps(tmp_path, times):
    clip = make_clip(tmp_path / "in.mp4", n=6, size=(48, 64), rate=25, times=times)
    out = _copy(clip, tmp_path / "out" / "map.mp4")
    a, b = decoded(clip), decoded(out)
    assert len(a["frames"]) == len(b["frames"]) == 6
    assert (b["width"], b["height"], b["pix_fmt"]) == (64, 48, "yuv420p")
    assert b["times"] == pytest.approx(a["times"], abs=1e-3)
    assert b["end"] == pytest.approx(a["end"], abs=1e-3)
    if times is None:  # a constant rate is the header's too
        assert probe(out).rate == probe(clip).rate == 25
        assert probe(out).duration == pytest.approx(probe(clip).duration, abs=1e-3)
    assert not list(out.parent.glob(".*.tmp"))


def test_odd_sizes(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", n=3, size=(47, 63), codec="ffv1", pix_fmt="yuv444p", fmt="matroska")
    out = _copy(clip, tmp_path / "map.mp4")
    b = decoded(out)
    assert (b["width"], b["height"], len(b["frames"])) == (63, 47, 3)
    assert b["pix_fmt"] == "yuv444p"  # 4:2:0 cannot hold odd sizes


def test_non_square_pixels_are_kept(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", n=3, size=(48, 64), sar=Fraction(4, 3))
    assert decoded(_copy(clip, tmp_path / "map.mp4"))["sar"] == Fraction(4, 3)


def test_the_grey_levels_survive_encoding(tmp_path):
    levels = np.linspace(0, 255, 64)[None, :].repeat(48, 0)
    clip = make_clip(tmp_path / "in.mp4", n=2, size=(48, 64),
                     pixels=lambda i: np.stack([levels] * 3, -1).astype(np.uint8))
    out = _copy(clip, tmp_path / "map.mp4")
    grey = decoded(out)["frames"][0][..., 0].astype(float)
    assert np.abs(grey - levels).mean() < 3


def test_audio_is_copied_into_the_overlay(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", n=10, size=(48, 64), audio=True)
    out = _copy(clip, tmp_path / "overlay.mp4", audio_from=str(clip))
    assert decoded(out)["audio"] == 1 and len(decoded(out)["frames"]) == 10
    import av

    with av.open(str(clip)) as a, av.open(str(out)) as b:  # the same audio packets, not re-encoded
        pa = [bytes(p) for p in a.demux(audio=0) if p.size]
        pb = [bytes(p) for p in b.demux(audio=0) if p.size]
    assert pa == pb


def test_an_aborted_video_leaves_nothing_and_keeps_an_older_file(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", n=3, size=(48, 64))
    target = tmp_path / "map.mp4"
    target.write_bytes(b"older")
    info = probe(clip)
    encoder = VideoEncoder(target, info)
    for frame_info, rgb in read_frames(clip, info):
        encoder.write(frame_info, rgb)
    encoder.abort()
    assert target.read_bytes() == b"older"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "map.mp4"]


def test_the_archive_loads_with_numpy(tmp_path):
    from salicon.video.reader import FrameInfo

    archive = MapArchive(tmp_path / "a" / "maps.npz")
    maps = [np.random.default_rng(k).random((5, 7)).astype(np.float32) for k in range(4)]
    for k, m in enumerate(maps):
        archive.add(FrameInfo(k * 3, k * 300, k * 0.1, 100), m)
    archive.commit()
    data = np.load(tmp_path / "a" / "maps.npz")
    assert data["maps"].dtype == np.float16 and data["maps"].shape == (4, 5, 7)
    np.testing.assert_allclose(data["maps"], np.stack(maps), atol=1e-3)
    np.testing.assert_allclose(data["timestamps"], [0.0, 0.1, 0.2, 0.3])
    assert data["frames"].tolist() == [0, 3, 6, 9]
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["maps.npz"]
