"""The page's video upload and webcam mode in headless Chromium, on a server that
needs a token: sign in once, upload a generated clip (a job with progress, the
result played in the page), then the webcam fed from a generated clip through
Chromium's fake capture device (one picture in flight, latency shown).
Screenshots are kept ($SALICON_TEST_ARTIFACTS, default test-artifacts/).

Skips without a browser unless SALICON_REQUIRE_BROWSER=1 (CI sets it)."""
from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from tests.test_serve import _free_port, _wait_for
from tests.test_serve_browser import ARTIFACTS, _browser_paths, _require

from .videoclips import make_clip

pytest.importorskip("av", reason="PyAV (the extra 'video') reads videos")
TOKEN = "browser-test-token"


def _y4m(path, n=60, size=(240, 320)):
    """A raw clip Chromium's fake camera plays in a loop: a bright disc moving over texture."""
    import av

    h, w = size
    texture = (np.random.default_rng(0).random((h, w, 3)) * 80 + 40).astype(np.uint8)
    yy, xx = np.ogrid[:h, :w]
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=15)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, 15)
        for i in range(n):
            img = texture.copy()
            cx = int(w * (0.2 + 0.6 * i / n))
            img[(yy - h // 2) ** 2 + (xx - cx) ** 2 < 24 ** 2] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory):
    _require(_browser_paths() is not None,
             "Chromium and ChromeDriver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _require(False, "selenium is not installed (pip install -e '.[test]')")
    camera = _y4m(tmp_path_factory.mktemp("camera") / "camera.y4m")
    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=options)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def locked_server():
    for module in ("fastapi", "uvicorn", "multipart", "fastapi_offline"):
        try:
            __import__(module)
        except ImportError:
            _require(False, "the web extra is not installed (pip install -e '.[web]')")
    port = _free_port()
    env = {**os.environ, "SALICON_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "salicon", "serve", "--fast", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/api/health", proc, 120, headers={"Authorization": f"Bearer {TOKEN}"})
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_sign_in_video_upload_and_webcam(camera_browser, locked_server, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert httpx.get(f"{locked_server}/api/health").status_code == 401
    d = camera_browser
    wait = WebDriverWait(d, 180)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # The page asks for the token once; after it, everything loads.
    d.get(locked_server)
    box = wait.until(lambda d: d.find_element(By.ID, "token"))
    box.send_keys(TOKEN)
    box.submit()
    wait.until(lambda d: "salicon_osie_fast" in d.find_element(By.ID, "model-info").text)
    assert "Videos: up to 60" in d.find_element(By.ID, "limits").text

    # A clip: a job with progress, then the overlay video plays in the page.
    clip = make_clip(tmp_path / "walk.mp4", n=24, size=(240, 320), rate=12, audio=True)
    d.find_element(By.ID, "file-input").send_keys(str(clip))
    wait.until(lambda d: d.find_element(By.ID, "video-result").get_attribute("data-state") == "ready")
    assert d.find_element(By.ID, "video-name").text == "walk.mp4"
    wait.until(lambda d: d.execute_script("return document.getElementById('video-player').readyState") >= 1)
    played = d.execute_script("const v = document.getElementById('video-player');"
                              "return [v.duration, v.videoWidth, v.videoHeight];")
    assert played[0] == pytest.approx(2.0, abs=0.1) and played[1:] == [320, 240]
    assert "24 frames" in d.find_element(By.ID, "video-details").text
    assert d.find_element(By.ID, "error").get_attribute("hidden")  # no error shown
    d.execute_script("const v = document.getElementById('video-player'); v.currentTime = 1.0;")
    d.save_screenshot(str(ARTIFACTS / "serve_page_video.png"))

    # The webcam: live maps, one picture in flight, the latency shown.
    d.find_element(By.ID, "webcam-start").click()
    wait.until(lambda d: int(d.find_element(By.ID, "webcam").get_attribute("data-frames") or 0) >= 4)
    stats = d.find_element(By.ID, "webcam-stats").text
    assert "Latency" in stats and "maps a second" in stats and "320x240 pictures" in stats
    pixels = d.execute_script(
        "const c = document.getElementById('webcam-canvas');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
        ".filter((_, i) => i % 4 == 0));")
    red = np.asarray(pixels, dtype=float)
    assert red.size == 320 * 240 and red.std() > 10  # a picture with a heatmap drawn, not a blank canvas
    d.save_screenshot(str(ARTIFACTS / "serve_page_webcam.png"))
    d.find_element(By.ID, "webcam-stop").click()
    assert d.find_element(By.ID, "webcam").get_attribute("data-state") == "off"
