"""salicon.serve: the HTTP API (in process, through an HTTP client), its
limits and error messages, the one-net worker and the result cache, and the
`salicon serve` command (a real server process on a loopback port)."""
from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from salicon.model import Salicon
from salicon.serve import InferenceWorker, RequestError, Result, ResultCache, SaliencyService
from salicon.visualize import overlay, salient_points, threshold_map, to_uint8

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("multipart", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="httpx (test extra) is needed for FastAPI's test client")
from fastapi.testclient import TestClient  # noqa: E402

from salicon.webapp import create_app  # noqa: E402


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(small_model, small_prototxt) -> Salicon:
    return Salicon(small_model, small_prototxt, device="cpu")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    img[20:50, 60:100] = 255  # a bright patch, for a map with structure
    return img


@pytest.fixture
def client(model):
    service = SaliencyService(model, max_pixels=1_000_000, max_upload_bytes=2_000_000, max_queue=8)
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def _post(client, data: bytes, name: str = "photo.png", **params):
    return client.post("/api/saliency", params=params, files={"file": (name, data, "application/octet-stream")})


# ----------------------------------------------------------------- API


def test_health_names_model_device_version_and_limits(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    h = r.json()
    from salicon import __version__
    assert h["version"] == __version__
    assert h["model"] == "small.caffemodel" and h["device"] == "cpu"
    assert h["limits"] == {"max_upload_bytes": 2_000_000, "max_pixels": 1_000_000}
    assert h["input_sizes"] == {"fine_scale": [120, 160], "coarse_scale": [60, 80]}
    assert h["batch_size"] == 1  # CPU: one image per forward pass


@pytest.mark.parametrize("fmt", ["png", "npy", "json"])
def test_map_equals_compute_saliency(client, model, photo, tmp_path, fmt):
    path = tmp_path / "photo.png"
    path.write_bytes(_png(photo))
    expected = model.compute_saliency(path)
    r = _post(client, path.read_bytes(), format=fmt)
    assert r.status_code == 200, r.text
    assert r.headers["x-image-size"] == "130x90"
    if fmt == "npy":
        got = np.load(io.BytesIO(r.content))
        assert got.dtype == np.float32 and got.shape == (90, 130)
        assert np.abs(got - expected).max() <= 1e-6
    elif fmt == "png":
        got = np.asarray(Image.open(io.BytesIO(r.content)))
        np.testing.assert_array_equal(got, to_uint8(expected))
    else:
        body = r.json()
        assert (body["width"], body["height"], body["name"]) == (130, 90, "photo.png")
        import base64
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["map_png"]))))
        np.testing.assert_array_equal(got, to_uint8(expected))
        assert body["peaks"] == [{"x": x, "y": y, "value": round(v, 4)} for x, y, v in salient_points(expected)]


def test_overlay_and_threshold_options(client, model, photo):
    expected = model.compute_saliency(photo)
    r = _post(client, _png(photo), format="png", overlay="true", alpha=0.7, threshold=0.3)
    assert r.status_code == 200
    got = np.asarray(Image.open(io.BytesIO(r.content)))
    np.testing.assert_array_equal(got, overlay(photo, threshold_map(expected, 0.3), 0.7))


def test_kept_result_downloads(client, model, photo):
    expected = model.compute_saliency(photo)
    body = _post(client, _png(photo), format="json", keep="true").json()
    downloads = body["downloads"]
    npy = np.load(io.BytesIO(client.get(downloads["map_npy"]).content))
    assert np.abs(npy - expected).max() <= 1e-6
    thresholded = np.load(io.BytesIO(client.get(downloads["map_npy"], params={"threshold": 0.5}).content))
    np.testing.assert_array_equal(thresholded, threshold_map(expected, 0.5))
    r = client.get(downloads["overlay_png"], params={"alpha": 0.25})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))), overlay(photo, expected, 0.25))
    assert client.get(body["downloads"]["map_png"].replace("map.png", "map.gif")).status_code == 404


def test_postprocess_option(client, model, photo):
    plain = Salicon(model.model_path, model.prototxt_path, device="cpu", postprocess="none").compute_saliency(photo)
    got = np.load(io.BytesIO(_post(client, _png(photo), format="npy", postprocess="none").content))
    assert np.abs(got - plain).max() <= 1e-6
    r = _post(client, _png(photo), postprocess="blur=-1")
    assert r.status_code == 400 and r.json()["error"].startswith("postprocess:")


# ------------------------------------------------------- bad requests


def _assert_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]
    for w in words:
        assert w in message, message


def test_bad_uploads_get_clear_messages_and_the_server_keeps_serving(client, photo):
    rng = np.random.default_rng(0)
    good = _jpeg(photo)
    cases = [
        (b"", "empty.jpg", 400, ("empty.jpg", "empty")),
        (b"these are my notes, not a picture\n", "notes.jpg", 415, ("notes.jpg", "not an image")),
        (good[: len(good) // 3], "cut.jpg", 415, ("cut.jpg", "cannot decode")),
        (rng.bytes(3000), "noise.png", 415, ("noise.png",)),
        (_png(np.zeros((1100, 1000), np.uint8)), "huge.png", 413, ("huge.png", "1.1 megapixels", "limit of 1.0")),
    ]
    for data, name, status, words in cases:
        _assert_error(_post(client, data, name), status, *words)
        assert _post(client, good, "good.jpg").status_code == 200  # still serving, after each
    assert client.service.failed_requests == 0


def test_request_errors(client, photo):
    _assert_error(client.post("/api/saliency"), 400, "form field 'file'")
    _assert_error(_post(client, _png(photo), format="tiff"), 400, "format", "png, npy, json")
    _assert_error(_post(client, _png(photo), alpha=2), 400, "alpha")
    _assert_error(_post(client, _png(photo), threshold=-0.1), 400, "threshold")
    _assert_error(client.get("/api/results/nope/map.npy"), 404, "not kept")
    _assert_error(client.get("/examples/nope.jpg"), 404, "nope.jpg")


def test_upload_limit_refuses_large_bodies(client):
    big = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    data = _png(big)  # ~3 MB of noise: over the 2 MB limit
    assert len(data) > 2_100_000
    _assert_error(_post(client, data, "big.png"), 413, "upload exceeds the limit of 2.0 MB")

    def stream():  # no Content-Length: the body is counted as it arrives
        boundary = b"--xyz"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]
        yield b"\r\n" + boundary + b"--\r\n"

    r = client.post("/api/saliency", content=stream(),
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    _assert_error(r, 413, "upload exceeds the limit")


def test_examples_are_listed_and_served(client):
    examples = client.get("/api/examples").json()
    names = {e["name"] for e in examples}
    assert {"astronaut.jpg", "coffee.jpg", "chelsea.jpg"} <= names
    r = client.get(examples[0]["url"])
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] > 0


def test_page_and_its_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/..%2Fserve.py").status_code == 404


def test_api_documentation_is_served_from_local_files(client):
    """/docs and /redoc draw on files the package serves itself: they work without internet."""
    from salicon.image import IMAGE_FORMATS

    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page)
        assert html.status_code == 200 and asset in html.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html.text)
        assert urls and all(u.startswith("/") for pair in urls for u in pair if u), urls  # nothing from a CDN
        script = next(u for pair in urls for u in pair if u.endswith(asset))
        assert client.get(script).status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/api/saliency"]["post"]
    assert client.get("/api/health").json()["formats"] == list(IMAGE_FORMATS)


# ------------------------------------------------- worker and cache


class _SlowNet:
    """Stands in for Salicon.forward: records batch sizes and overlapping calls."""

    def __init__(self, seconds: float = 0.05):
        self.seconds = seconds
        self.batches: list[int] = []
        self.active = 0
        self.most_active = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def forward(self, inputs):
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.gate.wait(10)
        time.sleep(self.seconds)
        n = next(iter(inputs.values())).shape[0]
        self.batches.append(n)
        with self._lock:
            self.active -= 1
        return next(iter(inputs.values()))[:, 0] * 2


def test_worker_runs_one_forward_at_a_time_and_keeps_order():
    net = _SlowNet()
    worker = InferenceWorker(net, batch_size=1, max_queue=64)
    inputs = [{"x": torch.full((1, 2, 2), float(i))} for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: worker.submit(x).result(timeout=30), inputs))
    worker.close()
    assert net.most_active == 1 and net.batches == [1] * 12
    for i, r in enumerate(results):
        assert torch.equal(r, torch.full((2, 2), 2.0 * i))


def test_worker_batches_what_waits_together():
    net = _SlowNet(0.0)
    net.gate.clear()  # hold the first pass so the others queue up
    worker = InferenceWorker(net, batch_size=4, max_queue=64)
    futures = [worker.submit({"x": torch.full((1, 1, 1), 0.0)})]
    time.sleep(0.2)  # the first pass is running, held at the gate
    futures += [worker.submit({"x": torch.full((1, 1, 1), float(i))}) for i in range(1, 6)]
    net.gate.set()
    values = [f.result(timeout=10).item() for f in futures]
    worker.close()
    assert values == [2.0 * i for i in range(6)]
    assert net.batches[0] == 1 and sorted(net.batches[1:], reverse=True) == [4, 1]
    assert worker.batch_sizes == {1: 2, 4: 1}  # what health reports as "batches"


def test_worker_queue_full_is_503_and_errors_reach_the_caller():
    net = _SlowNet(0.0)
    net.gate.clear()
    worker = InferenceWorker(net, batch_size=1, max_queue=2)
    first = worker.submit({"x": torch.zeros(1, 1, 1)})
    time.sleep(0.1)  # the first is running; two more fill the queue
    queued = [worker.submit({"x": torch.zeros(1, 1, 1)}) for _ in range(2)]
    with pytest.raises(RequestError) as info:
        worker.submit({"x": torch.zeros(1, 1, 1)})
    assert info.value.status == 503 and "busy" in str(info.value)
    net.gate.set()
    for f in [first] + queued:
        f.result(timeout=10)

    class Broken:
        def forward(self, inputs):
            raise RuntimeError("out of memory")

    broken = InferenceWorker(Broken(), max_queue=2)
    with pytest.raises(RuntimeError, match="out of memory"):
        broken.submit({"x": torch.zeros(1, 1, 1)}).result(timeout=10)
    assert broken.submit.__self__._thread.is_alive()  # the worker survives a failed pass
    broken.close()
    worker.close()


def test_result_cache_is_bounded():
    cache = ResultCache(max_items=3, max_bytes=10_000)
    keys = [cache.put(Result(f"{i}.png", b"x" * 100, np.zeros((10, 10), np.float32))) for i in range(5)]
    assert len(cache) == 3
    with pytest.raises(RequestError) as info:
        cache.get(keys[0])
    assert info.value.status == 404
    assert cache.get(keys[4]).name == "4.png"
    assert cache.put(Result("big.png", b"x" * 20_000, np.zeros((1, 1), np.float32))) is None
    small = ResultCache(max_items=10, max_bytes=1000)
    for i in range(4):
        small.put(Result(f"{i}", b"x" * 300, np.zeros((1, 1), np.float32)))
    assert len(small) == 3  # 3 x 304 bytes fit, 4 do not


# ------------------------------------------------------- real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 60.0, headers: dict | None = None) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}): {proc.stderr.read()}")
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


@pytest.fixture
def server(small_model, small_prototxt):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "salicon", "serve", "--port", str(port), "--model",
                             str(small_model), "--prototxt", str(small_prototxt), "--max-pixels", "4M"],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/api/health", proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_command_under_concurrent_clients(server, model, photo):
    import httpx

    url, proc = server
    expected = model.compute_saliency(photo)
    data = _png(photo)

    def client_loop(seed: int) -> list[str]:
        problems = []
        with httpx.Client(base_url=url, timeout=60) as c:
            for i in range(4):
                if (seed + i) % 3 == 0:  # bad requests mixed in with good ones
                    r = c.post("/api/saliency", files={"file": ("bad.jpg", b"not an image", "image/jpeg")})
                    if r.status_code != 415:
                        problems.append(f"bad upload: {r.status_code}")
                    continue
                r = c.post("/api/saliency", params={"format": "npy"}, files={"file": ("p.png", data, "image/png")})
                if r.status_code != 200:
                    problems.append(f"{r.status_code}: {r.text}")
                elif np.abs(np.load(io.BytesIO(r.content)) - expected).max() > 1e-6:
                    problems.append("wrong map")
        return problems

    with ThreadPoolExecutor(8) as pool:
        problems = sum(pool.map(client_loop, range(8)), [])
    assert problems == []
    health = httpx.get(f"{url}/api/health").json()
    assert health["images"] >= 8 * 4 * 2 // 3 - 8 and health["queue"]["waiting"] == 0
    huge = _png(np.zeros((3000, 3000), np.uint8))  # 9 MP against --max-pixels 4M
    r = httpx.post(f"{url}/api/saliency", files={"file": ("huge.png", huge, "image/png")})
    assert r.status_code == 413 and "huge.png" in r.json()["error"]
    assert proc.poll() is None


def test_serve_reports_a_taken_port(small_model, small_prototxt):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "salicon", "serve", "--port", str(port), "--model",
                            str(small_model), "--prototxt", str(small_prototxt)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_serve_without_the_web_extra_says_what_to_install(monkeypatch, capsys):
    from salicon import cli

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert cli.main(["serve"]) == 1
    err = capsys.readouterr().err
    assert "uvicorn" in err and 'pip install -e ".[web]"' in err


def test_example_api_client(server, model, photo, tmp_path):
    url, _ = server
    good = tmp_path / "photo.png"
    good.write_bytes(_png(photo))
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    client = Path(__file__).resolve().parent.parent / "examples" / "api_client.py"
    r = subprocess.run([sys.executable, str(client), str(good), str(bad), "--url", url],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr  # one image refused
    assert "notes.jpg: refused (415)" in r.stderr and "not an image file" in r.stderr
    assert "photo.png: 130x90, most salient points" in r.stdout
    got = np.load(tmp_path / "photo_saliency.npy")
    assert np.abs(got - model.compute_saliency(photo)).max() <= 1e-6
    assert Image.open(tmp_path / "photo_overlay.png").size == (130, 90)


def test_default_limits_refuse_a_20000_pixel_square_from_its_header(model, photo):
    service = SaliencyService(model)  # the defaults of salicon serve: 50 megapixels, 50 MB
    assert (service.max_pixels, service.max_upload_bytes) == (50_000_000, 50 * 1024 * 1024)
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")  # 400 megapixels in a small file
    assert len(buf.getvalue()) < 2_000_000
    with TestClient(create_app(service)) as c:
        r = _post(c, buf.getvalue(), "poster.png")
        _assert_error(r, 413, "poster.png", "400.0 megapixels", "limit of 50.0 megapixels")
        assert _post(c, _png(photo)).status_code == 200


def test_a_failing_net_is_a_500_with_a_message_and_the_server_carries_on(model, photo):
    service = SaliencyService(model)
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        real_forward = model.forward
        try:
            model.forward = lambda inputs: (_ for _ in ()).throw(RuntimeError("out of memory"))
            r = _post(c, _png(photo))
            _assert_error(r, 500, "could not compute this map", "out of memory")
        finally:
            model.forward = real_forward
        assert _post(c, _png(photo)).status_code == 200
    assert service.failed_requests == 1


@pytest.mark.parametrize("name", ["漢字ü.jpg", "写真の名前.png", "Привет.jpeg", "😀 smile.png", 'quote"d.png',
                                  "back\\slash.png"])
def test_any_file_name_comes_back_in_the_download_headers(client, photo, name):
    """HTTP headers are Latin-1: the name travels as RFC 6266's filename*=UTF-8'' (with an ASCII fallback)."""
    from urllib.parse import unquote

    from salicon.webapp import content_disposition

    def download_name(header: str) -> str:
        header.encode("latin-1")  # what a header must be
        if "filename*=UTF-8''" in header:
            return unquote(header.split("filename*=UTF-8''")[1])
        return re.search(r'filename="([^"]*)"', header).group(1)

    body = _post(client, _png(photo), name=name, format="json", keep="true").json()
    received = body["name"]  # as the server got it (a client may escape quotes in multipart names)
    assert received in (name, name.replace('"', "%22"))
    stem = Path(received).stem
    for params, suffix in (({}, "_saliency.png"), ({"format": "npy"}, "_saliency.npy"),
                           ({"overlay": "true"}, "_overlay.png")):
        r = _post(client, _png(photo), name=name, **params)
        assert r.status_code == 200, r.text
        assert download_name(r.headers["content-disposition"]) == stem + suffix
    r = client.get(body["downloads"]["overlay_png"])
    assert r.status_code == 200 and download_name(r.headers["content-disposition"]) == stem + "_overlay.png"
    assert content_disposition("inline", "plain.png") == 'inline; filename="plain.png"'
    assert content_disposition("attachment", 'a"b\\c.png') == (
        "attachment; filename=\"a_b_c.png\"; filename*=UTF-8''a%22b%5Cc.png")


def test_several_models_are_served_and_chosen_by_name(model, small_model, small_prototxt, photo):
    plain = Salicon(small_model, small_prototxt, device="cpu", postprocess="none")
    service = SaliencyService({"first": model, "plain": plain}, max_queue=8)
    with TestClient(create_app(service)) as client:
        health = client.get("/api/health").json()
        assert health["default_model"] == "first" and [m["name"] for m in health["models"]] == ["first", "plain"]
        assert health["models"][1]["postprocess"] == plain.post.name
        data = _png(photo)
        for chosen, expected in (({}, model), ({"model": "first"}, model), ({"model": "plain"}, plain)):
            r = _post(client, data, format="npy", **chosen)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(np.load(io.BytesIO(r.content)), expected.compute_saliency(photo), atol=1e-6)
        assert _post(client, data, format="json", model="plain").json()["model_name"] == "plain"
        r = _post(client, data, model="nope")
        assert r.status_code == 400
        assert "'nope' is not served here (this server serves first, plain" in r.json()["error"]
        assert client.get("/api/health").json()["images"] == 4


def test_serve_takes_several_models_but_not_with_one_prototxt_or_on_ray(small_model, small_prototxt, capsys):
    from salicon.cli import main
    assert main(["serve", "--model", str(small_model), "--model", str(small_model), "--prototxt",
                 str(small_prototxt)]) == 2
    assert "--prototxt and --fast apply to one --model" in capsys.readouterr().err
    assert main(["serve", "--ray", "--model", str(small_model), "--model", "salicon_osie"]) == 2
    assert "serve --ray serves one --model" in capsys.readouterr().err
