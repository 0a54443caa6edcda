"""``salicon predict`` on videos: files mixed with images, the sampling it says it
chose, the options, and each bad input as one line with exit status 1."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av", reason="PyAV (the extra 'video') reads videos")

from salicon.cli import main  # noqa: E402

from .videoclips import audio_only, cut_clip, decoded, make_clip  # noqa: E402


def _predict(args, small_model, small_prototxt, quiet=True):
    return main(["predict", *map(str, args), "--model", str(small_model), "--prototxt", str(small_prototxt),
                 "--device", "cpu"] + (["-q"] if quiet else []))


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("salicon: error:")]


@pytest.fixture
def media(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray((np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)).save(folder / "a.jpg")
    make_clip(folder / "clip.mp4", n=24, size=(48, 64), rate=24, audio=True)
    Image.new("RGB", (20, 20)).save(folder / "renamed.mp4", format="PNG")
    return folder


def test_a_folder_mixes_images_and_videos(media, tmp_path, small_model, small_prototxt, capsys):
    out = tmp_path / "out"
    code = _predict([media, "-o", out, "--overlay", "--npy"], small_model, small_prototxt, quiet=False)
    err = capsys.readouterr().err
    assert code == 1  # renamed.mp4 failed, the others did not
    assert _errors(err) == [f"salicon: error: {media / 'renamed.mp4'}: is a PNG image, not a video; give it an "
                            f"image suffix to get its map"]
    assert "the net runs on 5 maps a second on the CPU" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.png", "a_overlay.png", "clip.mp4", "clip.npz",
                                                     "clip_overlay.mp4"]
    src, maps, over = decoded(media / "clip.mp4"), decoded(out / "clip.mp4"), decoded(out / "clip_overlay.mp4")
    for video in (maps, over):
        assert len(video["frames"]) == 24 and (video["width"], video["height"]) == (64, 48)
        assert video["times"] == pytest.approx(src["times"], abs=1e-3) and video["rate"] == 24
    assert over["audio"] == 1
    assert np.load(out / "clip.npz")["frames"].tolist() == [0, 5, 10, 15, 20]  # 5 maps a second of a 24 fps clip


@pytest.mark.parametrize("option, computed", [(["--every", "1"], 24), (["--every", "6"], 4), (["--fps", "12"], 12)])
def test_sampling_options(media, tmp_path, small_model, small_prototxt, option, computed):
    out = tmp_path / "out"
    assert _predict([media / "clip.mp4", "-o", out, "--npy", *option], small_model, small_prototxt) == 0
    assert len(np.load(out / "clip.npz")["frames"]) == computed
    assert len(decoded(out / "clip.mp4")["frames"]) == 24


def test_interpolate_and_smoothing_change_the_held_frames(media, tmp_path, small_model, small_prototxt):
    def frames(*extra):
        out = tmp_path / "-".join(extra or ("plain",))
        assert _predict([media / "clip.mp4", "-o", out, "--every", "8", *extra], small_model, small_prototxt) == 0
        return [f[..., 0].astype(float) for f in decoded(out / "clip.mp4")["frames"]]
    plain, blended = frames(), frames("--interpolate")

    def diff(a, b):
        return float(np.abs(a - b).mean())
    step = diff(plain[8], plain[0])  # between two computed maps
    assert step > 5 and diff(plain[4], plain[0]) < 0.3 * step  # held
    assert diff(blended[4], plain[0]) == pytest.approx(step / 2, rel=0.3)  # halfway, blended
    assert diff(blended[8], plain[8]) < 0.3 * step  # computed frames are the same
    smooth = frames("--temporal-smoothing", "5")
    assert diff(smooth[8], plain[0]) < 0.5 * step  # pulled towards the past


@pytest.mark.parametrize("extra, message", [
    (["--format", "probability"], "--format probability applies to images"),
])
def test_options_that_do_not_apply_to_videos(media, tmp_path, small_model, small_prototxt, capsys, extra, message):
    assert _predict([media / "clip.mp4", "-o", tmp_path / "o", *extra], small_model, small_prototxt) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_video_options_without_a_video(media, tmp_path, small_model, small_prototxt, capsys):
    assert _predict([media / "a.jpg", "-o", tmp_path / "o", "--fps", "2"], small_model, small_prototxt) == 2
    assert "apply to videos" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        _predict([media / "clip.mp4", "-o", tmp_path / "o", "--fps", "2", "--every", "3"], small_model,
                 small_prototxt)
    assert exit_.value.code == 2


def test_a_map_video_never_overwrites_its_input(media, small_model, small_prototxt, capsys):
    before = (media / "clip.mp4").read_bytes()
    assert _predict([media / "clip.mp4", "-o", media], small_model, small_prototxt) == 1
    assert f"output {media}/clip.mp4 would overwrite the input video {media / 'clip.mp4'}; choose another -o" \
        in capsys.readouterr().err
    assert (media / "clip.mp4").read_bytes() == before


def _eight_k(tmp_path):
    import av

    path = tmp_path / "eightk.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 7680, 4320, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((4320, 7680, 3), np.uint8), format="rgb24")
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    return path


def test_bad_videos_each_give_one_line_and_exit_1(tmp_path, small_model, small_prototxt, capsys):
    cut = cut_clip(tmp_path)
    big = _eight_k(tmp_path)
    sound = audio_only(tmp_path / "sound.mp4")
    out = tmp_path / "out"
    code = _predict([cut, big, sound, "-o", out, "--every", "1", "--max-pixels", "30M"], small_model, small_prototxt)
    errors = _errors(capsys.readouterr().err)
    assert code == 1 and len(errors) == 3, errors
    assert "cut.mp4: corrupt or truncated" in errors[0] or "cut.mp4: truncated" in errors[0]
    assert "maps written for the" in errors[0]
    assert "eightk.mp4: frames of 7680x4320 (33.2 megapixels) are over the limit of 30.0 megapixels per frame" \
        in errors[1]
    assert "sound.mp4: has no video stream (audio only)" in errors[2]
    # the cut clip's frames that decoded are a complete video; nothing else was written, nothing half-written
    assert sorted(p.name for p in out.iterdir()) == ["cut.mp4"]
    assert 10 < len(decoded(out / "cut.mp4")["frames"]) < 60
