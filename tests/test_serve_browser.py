"""The `salicon serve` page used as a person would, in headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium), on the shipped
model: upload, wait for the overlay, download the map, move the sliders,
upload a text file named .jpg. A screenshot is saved as a test artefact
($SALICON_TEST_ARTIFACTS, default test-artifacts/).

Skips without a browser unless SALICON_REQUIRE_BROWSER=1 (CI sets it)."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_serve import _free_port, _wait_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "astronaut.jpg"
ARTIFACTS = Path(os.environ.get("SALICON_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def _browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("SALICON_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SALICON_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    _require(_browser_paths() is not None,
             "Chromium and ChromeDriver are not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _require(False, "selenium is not installed (pip install -e '.[test]')")
    for module in ("fastapi", "uvicorn", "multipart", "fastapi_offline"):
        try:
            __import__(module)
        except ImportError:
            _require(False, "the web extra is not installed (pip install -e '.[web]')")
    chromium, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=options)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


@pytest.fixture(scope="module")
def server_url():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "salicon", "serve", "--port", str(port)],
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/api/health", proc, 120)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _canvas(d, element_id: str) -> str:
    return d.execute_script(f"return document.getElementById('{element_id}').toDataURL('image/png');")


@pytest.mark.slow
def test_page_in_a_real_browser(browser, server_url, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from salicon import Salicon
    from salicon.metrics import cc

    d = browser
    d.get(server_url)
    wait = WebDriverWait(d, 180)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "button.example")) >= 3)
    assert "salicon_osie.safetensors" in d.find_element(By.ID, "model-info").text

    # Upload an example image through the file picker, wait for the drawing.
    d.find_element(By.ID, "file-input").send_keys(str(EXAMPLE))
    wait.until(lambda d: d.find_element(By.ID, "progress").is_displayed())
    wait.until(lambda d: d.find_element(By.ID, "result").get_attribute("data-state") == "ready")
    assert d.find_element(By.ID, "result-name").text == "astronaut.jpg"
    assert d.find_element(By.ID, "overlay-canvas").get_attribute("width") == "512"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.execute_script("window.scrollTo(0, 0);")
    d.save_screenshot(str(ARTIFACTS / "serve_page.png"))

    # The float map the page offers for download equals compute_saliency of the file.
    href = d.find_element(By.ID, "download-map-npy").get_attribute("href")
    offered = np.load(io.BytesIO(httpx.get(href, timeout=60).content))
    expected = Salicon().compute_saliency(EXAMPLE)
    assert offered.shape == expected.shape == (512, 512)
    assert cc(offered, expected) >= 0.999
    png = httpx.get(d.find_element(By.ID, "download-map-png").get_attribute("href"), timeout=60)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"

    # Moving the threshold slider redraws both pictures (no new request) and the downloads follow.
    before_overlay, before_map = _canvas(d, "overlay-canvas"), _canvas(d, "map-canvas")
    slider = d.find_element(By.ID, "threshold")
    slider.click()  # a click in the middle of the track: about 0.5
    slider.send_keys(Keys.HOME)
    for _ in range(40):
        slider.send_keys(Keys.ARROW_RIGHT)
    assert d.find_element(By.ID, "threshold-value").text == "0.40"
    after_overlay, after_map = _canvas(d, "overlay-canvas"), _canvas(d, "map-canvas")
    assert after_overlay != before_overlay and after_map != before_map
    assert "threshold=0.40" in d.find_element(By.ID, "download-map-npy").get_attribute("href")
    thresholded = np.load(io.BytesIO(httpx.get(d.find_element(By.ID, "download-map-npy").get_attribute("href"),
                                               timeout=60).content))
    assert thresholded[offered < 0.4].max(initial=0) == 0 and np.array_equal(thresholded[offered >= 0.4],
                                                                               offered[offered >= 0.4])
    opacity = d.find_element(By.ID, "opacity")
    opacity.send_keys(Keys.END)
    assert d.find_element(By.ID, "opacity-value").text == "1.00"
    assert _canvas(d, "overlay-canvas") != after_overlay
    assert "alpha=1.00" in d.find_element(By.ID, "download-overlay").get_attribute("href")

    d.save_screenshot(str(ARTIFACTS / "serve_page_sliders.png"))

    # A text file named .jpg: a clear message on the page, and the page keeps working.
    notes = tmp_path / "notes.jpg"
    notes.write_text("meeting notes, not a photo\n")
    d.find_element(By.ID, "file-input").send_keys(str(notes))
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    wait.until(lambda d: not d.find_element(By.ID, "progress").is_displayed())
    message = d.find_element(By.ID, "error").text
    assert "notes.jpg" in message and "not an image file" in message
    assert d.find_element(By.ID, "result").get_attribute("data-name") == "astronaut.jpg"
    d.save_screenshot(str(ARTIFACTS / "serve_page_error.png"))
    assert httpx.get(f"{server_url}/api/health", timeout=10).json()["status"] == "ok"

    # A photo whose name is outside Latin-1 (Chinese, an accented letter, an emoji): drawn and offered for
    # download under its own name (RFC 6266 filename*), with an ASCII fallback for old clients.
    unicode_photo = tmp_path / "漢字ü 😀.jpg"
    unicode_photo.write_bytes(EXAMPLE.read_bytes())
    d.find_element(By.ID, "file-input").send_keys(str(unicode_photo))
    wait.until(lambda d: d.find_element(By.ID, "result").get_attribute("data-name") == unicode_photo.name
               and d.find_element(By.ID, "result").get_attribute("data-state") == "ready")
    assert d.find_element(By.ID, "result-name").text == unicode_photo.name
    assert not d.find_element(By.ID, "error").is_displayed()
    download = httpx.get(d.find_element(By.ID, "download-map-png").get_attribute("href"), timeout=60)
    assert download.status_code == 200 and download.content[:8] == b"\x89PNG\r\n\x1a\n"
    disposition = download.headers["content-disposition"]
    assert "filename*=UTF-8''" in disposition and disposition.isascii()
    d.save_screenshot(str(ARTIFACTS / "serve_page_unicode_name.png"))

    # The page names the formats the server decodes (its own list, from /api/health).
    from salicon.image import IMAGE_FORMATS
    limits = d.find_element(By.ID, "limits").text
    assert all(f in limits for f in IMAGE_FORMATS), limits


@pytest.mark.slow
def test_api_documentation_works_offline(browser, server_url):
    """The page's "API documentation" link: Swagger UI drawn from the server's own files."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = browser
    d.get(server_url)
    d.find_element(By.LINK_TEXT, "API documentation").click()
    wait = WebDriverWait(d, 60)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "SALICON saliency" in d.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/api/saliency" in paths and "/api/health" in paths
    loaded = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert loaded and all(url.startswith(server_url) for url in loaded), loaded  # nothing from the internet
    d.save_screenshot(str(ARTIFACTS / "serve_docs.png"))
    time.sleep(0.1)
