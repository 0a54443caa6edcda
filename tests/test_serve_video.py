"""Video jobs on the server: POST /api/video, progress, the result played and
downloaded once, limits in 413 messages, bad clips, the per-client limit,
cancellation and retention."""
from __future__ import annotations

import time

import pytest

from salicon.model import Salicon
from salicon.serve import SaliencyService

pytest.importorskip("av", reason="PyAV (the extra 'video') reads videos")
pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="httpx (test extra) is needed for FastAPI's test client")
from fastapi.testclient import TestClient  # noqa: E402

from salicon.jobs import JobManager, VideoJob  # noqa: E402
from salicon.webapp import create_app  # noqa: E402

from .videoclips import cut_clip, decoded, make_clip  # noqa: E402


@pytest.fixture(scope="module")
def model(small_model, small_prototxt) -> Salicon:
    return Salicon(small_model, small_prototxt, device="cpu")


def _service(model, tmp_path, **videos):
    options = {"max_seconds": 20.0, "max_pixels": 400_000, "retention_s": 60.0, "max_per_client": 2,
               "root": tmp_path, **videos}
    return SaliencyService(model, max_pixels=1_000_000, max_upload_bytes=3_000_000, videos=options)


@pytest.fixture
def client(model, tmp_path):
    service = _service(model, tmp_path)
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "walk.mp4", n=12, size=(48, 64), rate=12, audio=True)


def _upload(client, path, **query):
    with open(path, "rb") as fh:
        return client.post("/api/video", params=query, files={"file": (path.name, fh, "video/mp4")})


def _wait(client, key, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"/api/jobs/{key}").json()
        if body["status"] not in ("queued", "running"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {key} did not finish: {body}")


def test_a_clip_becomes_a_map_video_and_an_overlay(client, clip, tmp_path):
    r = _upload(client, clip, every=2)
    assert r.status_code == 202, r.text
    job = r.json()
    assert len(job["id"]) == 32 and int(job["id"], 16) >= 0  # 128 random bits
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    assert job["options"]["sampling"] == "one frame in 2"
    done = _wait(client, job["id"])
    assert done["status"] == "done" and done["error"] is None
    assert done["progress"]["frames"] == 12 and done["progress"]["computed"] == 6
    assert set(done["files"]) == {"map.mp4", "overlay.mp4"}
    for what in ("map.mp4", "overlay.mp4"):
        got = client.get(done["files"][what])
        assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
        assert f'walk_{what}' in got.headers["content-disposition"]
        (tmp_path / what).write_bytes(got.content)
        video = decoded(tmp_path / what)
        assert len(video["frames"]) == 12 and (video["width"], video["height"]) == (64, 48)
        # deleted once downloaded: a second download is told so
        again = client.get(done["files"][what])
        assert again.status_code == 410 and "downloaded and deleted" in again.json()["error"]
    assert decoded(tmp_path / "overlay.mp4")["audio"] == 1
    after = client.get(f"/api/jobs/{job['id']}").json()
    assert after["files"] == {} and after["downloaded"] == ["map.mp4", "overlay.mp4"]
    assert not list(client.service.videos.jobs.root.rglob("*.mp4"))  # nothing of the clip stays on the server


def test_a_player_seeking_does_not_delete_the_file(client, clip):
    job = _wait(client, _upload(client, clip, overlay=False).json()["id"])
    url = job["files"]["map.mp4"]
    part = client.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    assert client.get(url).status_code == 200
    assert client.get(url).status_code == 410


@pytest.mark.parametrize("make, status, message", [
    (lambda p: make_clip(p, n=2, size=(480, 1280)), 413, "per frame (salicon serve --max-video-seconds"),
    (lambda p: make_clip(p, n=3, size=(48, 64), times=[0.0, 1.0, 36000.0]), 413,
     "36000.0 s long, over the limit of 20 s"),
    (lambda p: p.write_bytes(b"\x00not a video" * 50) or p, 415, "not a video FFmpeg can read"),
])
def test_limits_and_bad_clips_are_refused_at_once(client, tmp_path, make, status, message):
    path = tmp_path / "upload.mp4"
    result = make(path)
    path = result if hasattr(result, "name") else path
    r = _upload(client, path)
    assert r.status_code == status and message in r.json()["error"], r.text
    assert r.json()["error"].startswith("upload.mp4: ")
    assert not [p for p in client.service.videos.jobs.root.iterdir()]  # nothing kept


def test_an_image_renamed_mp4_and_an_empty_upload(client, tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20)).save(tmp_path / "photo.mp4", format="PNG")
    r = _upload(client, tmp_path / "photo.mp4")
    assert r.status_code == 415 and "is a PNG image, not a video" in r.json()["error"]
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert _upload(client, tmp_path / "empty.mp4").status_code == 400


def test_a_truncated_clip_gives_the_frames_before_the_break(client, tmp_path):
    cut = cut_clip(tmp_path)
    done = _wait(client, _upload(client, cut, overlay=False).json()["id"])
    assert done["status"] == "done" and done["error"].startswith("cut.mp4: ")
    assert "the result has the maps of the" in done["error"]
    frames = done["progress"]["frames"]
    (tmp_path / "got.mp4").write_bytes(client.get(done["files"]["map.mp4"]).content)
    assert 10 < frames < 60 and len(decoded(tmp_path / "got.mp4")["frames"]) == frames


def test_unknown_jobs_and_files(client, clip):
    assert client.get("/api/jobs/" + "0" * 32).status_code == 404
    job = _wait(client, _upload(client, clip, overlay=False).json()["id"])
    assert client.get(f"/api/jobs/{job['id']}/overlay.mp4").status_code == 404
    assert client.get(f"/api/jobs/{job['id']}/secrets.txt").status_code == 404


def test_health_lists_the_video_limits(client):
    body = client.get("/api/health").json()
    assert body["video"] is True
    assert body["limits"]["max_video_seconds"] == 20.0 and body["limits"]["max_video_pixels"] == 400_000


# ------------------------------------------------------------- the job manager


def _slow_manager(tmp_path, seconds=0.3, **kwargs):
    def run(job, progress):
        for k in range(5):
            if job.cancel.is_set():
                raise KeyboardInterrupt
            time.sleep(seconds / 5)
            progress(k + 1, True)
        out = job.folder / "map.mp4"
        out.write_bytes(b"result")
        return {"map.mp4": out}
    return JobManager(run, root=tmp_path, **kwargs)


def _job(manager, client="a"):
    key, folder = manager.new_folder()
    source = folder / "upload.mp4"
    source.write_bytes(b"clip")
    return VideoJob(key, client, "clip.mp4", folder, source, {}, total=5)


def test_a_client_may_have_two_jobs_waiting_or_running(tmp_path):
    from salicon.jobs import JobError

    manager = _slow_manager(tmp_path, seconds=1.0)
    try:
        manager.submit(_job(manager))
        manager.submit(_job(manager))
        with pytest.raises(JobError) as refused:
            manager.submit(_job(manager))
        assert refused.value.status == 429 and "at most 2 per client" in str(refused.value)
        manager.submit(_job(manager, client="b"))  # another client is not held up by the limit
    finally:
        manager.close()
    assert not manager.root.exists()


def test_finished_jobs_are_deleted_after_the_retention_time(tmp_path):
    from salicon.jobs import JobError

    manager = _slow_manager(tmp_path, seconds=0.05, retention_s=0.3)
    try:
        job = manager.submit(_job(manager))
        while job.active:
            time.sleep(0.02)
        assert job.status == "done" and (job.folder / "map.mp4").exists() and not job.source.exists()
        time.sleep(0.5)
        with pytest.raises(JobError) as gone:
            manager.get(job.id)
        assert gone.value.status == 404 and not job.folder.exists()
    finally:
        manager.close()


def test_cancelling_a_running_job_stops_it_and_deletes_its_files(tmp_path):
    manager = _slow_manager(tmp_path, seconds=2.0)
    try:
        job = manager.submit(_job(manager))
        while job.status == "queued":
            time.sleep(0.01)
        manager.cancel(job.id)
        deadline = time.time() + 5
        while job.active and time.time() < deadline:
            time.sleep(0.02)
        assert job.status == "cancelled" and not job.folder.exists()
    finally:
        manager.close()
