"""A clip's maps: which frames get computed, held or blended maps for the others,
smoothing, the written files, failures mid-clip, and the real model following
a moving object."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV (the extra 'video') reads videos")

from salicon.errors import ImageError  # noqa: E402
from salicon.video import FrameSampler, VideoError, VideoOutputs, frame_maps, write_video  # noqa: E402

from .videoclips import cut_clip, decoded, disc_centres, make_clip  # noqa: E402


class CountingModel:
    """Stands in for Salicon: the k-th map it computes is k / 10 everywhere."""
    max_pixels = None

    def __init__(self):
        self.seen = []

    def iter_saliency(self, images, batch_size=1, workers=None):
        for index, rgb in enumerate(images):
            self.seen.append(rgb.shape)
            yield index, np.full(rgb.shape[:2], (index + 1) / 10, np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", n=10, size=(24, 32), rate=10)


def _levels(items):
    return [round(float(item.saliency_map.mean()), 4) for item in items]


def test_every_frame_is_computed_by_default(clip):
    items = list(frame_maps(CountingModel(), clip))
    assert [i.computed for i in items] == [True] * 10
    assert _levels(items) == [round((k + 1) / 10, 4) for k in range(10)]


def test_frames_between_computed_ones_hold_the_latest_map(clip):
    model = CountingModel()
    items = list(frame_maps(model, clip, FrameSampler(every=4)))
    assert len(model.seen) == 3 and [i.info.index for i in items] == list(range(10))
    assert [i.computed for i in items] == [k % 4 == 0 for k in range(10)]
    assert _levels(items) == [0.1] * 4 + [0.2] * 4 + [0.3] * 2


def test_interpolation_blends_linearly_by_time(clip):
    items = list(frame_maps(CountingModel(), clip, FrameSampler(every=4), interpolate=True))
    assert _levels(items) == [0.1, 0.125, 0.15, 0.175, 0.2, 0.225, 0.25, 0.275, 0.3, 0.3]


def test_fps_samples_on_the_clip_clock(clip):
    items = list(frame_maps(CountingModel(), clip, FrameSampler(fps=2.5)))  # 10 fps clip: every 4th frame
    assert [i.info.index for i in items if i.computed] == [0, 4, 8]


def test_smoothing_a_still_clip_changes_nothing(tmp_path):
    still = make_clip(tmp_path / "still.mp4", n=8, size=(24, 32), rate=10, pixels=lambda i: np.full((24, 32, 3), 90,
                                                                                                      np.uint8))

    class Constant(CountingModel):
        def iter_saliency(self, images, batch_size=1, workers=None):
            for index, rgb in enumerate(images):
                yield index, np.full(rgb.shape[:2], 0.7, np.float32)
    assert _levels(frame_maps(Constant(), still, smoothing=0.5)) == [0.7] * 8


def test_smoothing_a_jump_decays_with_the_time_constant(tmp_path):
    frames = [np.full((24, 32, 3), 0 if i < 4 else 255, np.uint8) for i in range(10)]
    jump = make_clip(tmp_path / "jump.mp4", n=10, size=(24, 32), rate=10, pixels=lambda i: frames[i])

    class Brightness(CountingModel):
        def iter_saliency(self, images, batch_size=1, workers=None):
            for index, rgb in enumerate(images):
                yield index, np.full(rgb.shape[:2], float(rgb.mean() > 128), np.float32)
    tau = 0.2
    got = _levels(frame_maps(Brightness(), jump, smoothing=tau))
    last_dark = 0.3  # frames are 0.1 s apart; the jump comes at 0.4 s
    expected = [0.0] * 4 + [round(1 - np.exp(-(t - last_dark) / tau), 4) for t in np.arange(0.4, 1.0, 0.1)]
    assert got == pytest.approx(expected, abs=2e-4)


def test_write_video_writes_map_overlay_and_archive(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", n=12, size=(48, 64), rate=24, audio=True)
    result = write_video(CountingModel(), str(clip), tmp_path / "out", "sub/clip",
                         VideoOutputs(overlay=True, npz=True), FrameSampler(every=3))
    assert result.error is None and (result.frames, result.computed) == (12, 4)
    out = tmp_path / "out" / "sub"
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "clip.npz", "clip_overlay.mp4"]
    src, maps, over = decoded(clip), decoded(out / "clip.mp4"), decoded(out / "clip_overlay.mp4")
    for video in (maps, over):
        assert len(video["frames"]) == 12 and (video["width"], video["height"]) == (64, 48)
        assert video["times"] == pytest.approx(src["times"], abs=1e-3)
        assert video["end"] == pytest.approx(src["end"], abs=1e-3)
    assert (maps["audio"], over["audio"]) == (0, 1)
    held = [round(f[..., 0].mean() / 255, 1) for f in maps["frames"]]
    assert held == [0.1] * 3 + [0.2] * 3 + [0.3] * 3 + [0.4] * 3
    archive = np.load(out / "clip.npz")
    assert archive["maps"].shape == (4, 48, 64) and archive["frames"].tolist() == [0, 3, 6, 9]
    np.testing.assert_allclose(archive["timestamps"], [0, 0.125, 0.25, 0.375], atol=1e-6)


def test_an_interruption_leaves_no_file_behind(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", n=12, size=(48, 64))

    def stop(item):
        if item.info.index == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_video(CountingModel(), str(clip), tmp_path / "out", "clip", VideoOutputs(overlay=True, npz=True),
                    progress=stop)
    assert not [p for p in (tmp_path / "out").rglob("*")]


def test_a_clip_that_breaks_keeps_the_maps_of_the_frames_before(tmp_path):
    cut = cut_clip(tmp_path)
    result = write_video(CountingModel(), str(cut), tmp_path / "out", "cut", VideoOutputs())
    assert result.error and "cut.mp4" in result.error
    assert 10 < result.frames < 60
    assert len(decoded(tmp_path / "out" / "cut.mp4")["frames"]) == result.frames  # complete and playable


# ------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def fast_model():
    from salicon import Salicon

    try:
        return Salicon("salicon_osie_fast")
    except Exception as exc:  # the model distribution is installed by the set-up line
        pytest.skip(f"salicon_osie_fast is not available: {exc}")


def _peak_near(saliency_map, centre, tolerance):
    y, x = np.unravel_index(np.argmax(saliency_map), saliency_map.shape)
    return abs(y - centre[0]) <= tolerance and abs(x - centre[1]) <= tolerance


def test_the_map_follows_a_moving_object(tmp_path, fast_model):
    n, size = 16, (240, 320)
    clip = make_clip(tmp_path / "moving.mp4", n=n, size=size)
    maps = list(fast_model.video_saliency(clip))
    assert len(maps) == n and [t for t, _ in maps] == pytest.approx([k / 30 for k in range(n)], abs=1e-3)
    near = [_peak_near(m, c, 40) for (_, m), c in zip(maps, disc_centres(n, size))]
    assert sum(near) >= n - 1, near


def test_a_rotated_clip_comes_out_upright(tmp_path, fast_model):
    n, coded = 4, (240, 320)
    clip = make_clip(tmp_path / "phone.mp4", n=n, size=coded, rotation=90)
    maps = list(fast_model.video_saliency(clip, every=1))
    assert maps[0][1].shape == (320, 240)
    for (_, m), (cy, cx) in zip(maps, disc_centres(n, coded)):
        # a quarter turn counter-clockwise: coded (row, column) -> upright (W - 1 - column, row)
        assert _peak_near(m, (coded[1] - 1 - cx, cy), 40)


def test_compute_saliency_on_a_video_says_what_to_use(tmp_path, fast_model):
    clip = make_clip(tmp_path / "c.mp4", n=2, size=(48, 64))
    with pytest.raises(ImageError, match=r"c.mp4: is a video.*video_saliency"):
        fast_model.compute_saliency(clip)


def test_video_saliency_raises_for_a_file_that_is_not_a_video(tmp_path, fast_model):
    (tmp_path / "x.mp4").write_bytes(b"\x00" * 500)
    with pytest.raises(VideoError, match="x.mp4"):
        next(fast_model.video_saliency(tmp_path / "x.mp4"))
