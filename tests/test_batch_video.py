"""Videos in --ray jobs: the frames chosen as one process chooses them, segments
cut and decoded from their key frames, reassembled in order into the same
videos, skipped on a rerun, one manifest row per clip."""
from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("av", reason="PyAV (the extra 'video') reads videos")

from salicon import cli  # noqa: E402
from salicon.batch_video import SegmentActor, choose_frames, segments  # noqa: E402
from salicon.config import SaliconConfig  # noqa: E402
from salicon.model import Salicon  # noqa: E402
from salicon.video import FrameSampler, frame_maps, probe  # noqa: E402
from salicon.video.reader import scan_timestamps  # noqa: E402

from .videoclips import decoded, make_clip  # noqa: E402


def test_frames_are_chosen_as_one_process_chooses_them(tmp_path):
    times = [0.0, 0.1, 0.15, 0.4, 0.5, 0.9, 1.0, 1.3]
    clip = make_clip(tmp_path / "vfr.mp4", n=8, size=(24, 32), times=times)
    stamps = scan_timestamps(clip)
    assert len(stamps) == 8
    for make in (lambda: FrameSampler(fps=2), lambda: FrameSampler(every=3), lambda: FrameSampler()):
        chosen = choose_frames(stamps, probe(clip).time_base, stamps[0], make())
        reference = make()
        assert chosen == [i for i, t in enumerate(times) if reference.take(i, t)]


def test_segments_cover_the_chosen_frames_in_order():
    stamps = list(range(0, 200, 10))
    parts = segments(stamps, [0, 2, 4, 6, 8, 10, 12], 3)
    assert parts == [([0, 2, 4], 0, 60), ([6, 8, 10], 60, 120), ([12], 120, None)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # a key frame every 8 frames, so segments start between key frames
    import av

    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    make_clip(path, n=30, size=(48, 64), rate=15)
    with av.open(str(path)) as c:
        keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert keys[0]
    return path


def test_a_segment_from_the_middle_gives_the_maps_of_one_pass(clip, small_model, small_prototxt):
    config = SaliconConfig.from_options(model=str(small_model), prototxt=str(small_prototxt), device="cpu")
    actor = SegmentActor(config)
    stamps = scan_timestamps(clip)
    indices = [11, 13, 17]
    got = actor.maps(str(clip), {stamps[i]: i for i in indices}, stamps[11], stamps[18])
    assert [i for i, _ in got] == indices
    reference = {f.info.index: f.saliency_map for f in frame_maps(Salicon(config=config), clip) if f.computed}
    for i, m in got:
        np.testing.assert_allclose(m.astype(np.float32), reference[i], atol=2e-3)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_clip_on_two_actors_equals_one_process(ray_cluster, clip, tmp_path, small_model, small_prototxt, capsys):
    from PIL import Image

    Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(tmp_path / "still.png")
    common = ["--model", str(small_model), "--prototxt", str(small_prototxt), "--device", "cpu", "--npy", "-q",
              "--every", "2", "--temporal-smoothing", "0.3", "--interpolate"]
    assert cli.main(["predict", str(clip), "-o", str(tmp_path / "one"), *common]) == 0
    from salicon.batch import RayOptions, predict_on_ray
    from salicon.batch_video import VideoSettings
    from salicon.inputs import Item
    from salicon.outputs import OutputSpec
    from salicon.video import VideoOutputs

    video = VideoSettings(outputs=VideoOutputs(npz=True), every=2, smoothing=0.3, interpolate=True,
                          segment_maps=4)  # 15 maps: four segments
    config = SaliconConfig.from_options(model=str(small_model), prototxt=str(small_prototxt), device="cpu")
    items = [Item(str(clip), "walk"), Item(str(tmp_path / "still.png"), "still")]
    report = predict_on_ray(items, str(tmp_path / "ray"), RayOptions(config=config, actors=2, progress=False),
                            spec=OutputSpec(npy=True), video=video)
    assert report.ok and report.written == 2 and report.actors == 2
    one, many = np.load(tmp_path / "one" / "walk.npz"), np.load(tmp_path / "ray" / "walk.npz")
    assert many["frames"].tolist() == one["frames"].tolist() == list(range(0, 30, 2))
    np.testing.assert_allclose(many["maps"].astype(np.float32), one["maps"].astype(np.float32), atol=2e-3)
    a, b = decoded(tmp_path / "one" / "walk.mp4"), decoded(tmp_path / "ray" / "walk.mp4")
    assert len(b["frames"]) == 30 and b["times"] == pytest.approx(a["times"])
    worst = max(np.abs(x.astype(float) - y.astype(float)).mean() for x, y in zip(a["frames"], b["frames"]))
    assert worst < 3.0  # fp16 maps, re-encoded
    with open(tmp_path / "ray" / "manifest.csv", newline="") as fh:
        rows = {r["input"]: r for r in csv.DictReader(fh)}
    assert rows[str(clip)]["status"] == "written" and rows[str(clip)]["outputs"] == "walk.mp4 walk.npz"
    assert rows[str(tmp_path / "still.png")]["status"] == "written"
    # a rerun finds the clip done
    capsys.readouterr()
    assert cli.main(["predict", str(clip), "-o", str(tmp_path / "ray"), "--ray", *common[:-3]]) == 0
    with open(tmp_path / "ray" / "manifest.csv", newline="") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["done before"]
