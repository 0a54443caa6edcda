"""The access token of ``salicon serve --token``: 401 without it on every route,
200 with it; the page's sign-in sets a cookie that the page's requests then carry."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="httpx (test extra) is needed for FastAPI's test client")
from fastapi.testclient import TestClient  # noqa: E402

from salicon.model import Salicon  # noqa: E402
from salicon.serve import SaliencyService  # noqa: E402
from salicon.webapp import create_app  # noqa: E402
from salicon.webauth import COOKIE, TokenAuth  # noqa: E402

TOKEN = "s3cret-token-for-tests"
ROUTES = ["/", "/static/app.js", "/api/health", "/api/examples", "/docs", "/openapi.json", "/api/jobs/" + "0" * 32]


@pytest.fixture(scope="module")
def model(small_model, small_prototxt):
    return Salicon(small_model, small_prototxt, device="cpu")


@pytest.fixture
def client(model):
    service = SaliencyService(model, videos={})  # the app's lifespan closes it when the client closes
    with TestClient(create_app(service, token=TOKEN), follow_redirects=False) as c:
        yield c


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_needs_the_token(client, route):
    r = client.get(route, headers={"Accept": "application/json"})
    assert r.status_code == 401
    assert "Authorization: Bearer TOKEN" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    assert client.get(route, headers={"Authorization": "Bearer wrong"}).status_code == 401
    good = client.get(route, headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status_code in (200, 404)  # 404: the made-up job id, past the token check
    if route.startswith("/api/jobs/"):
        assert "no video job" in good.json()["error"]


def test_posts_need_it_too(client):
    r = client.post("/api/saliency", files={"file": ("a.png", b"x", "image/png")})
    assert r.status_code == 401
    assert client.post("/api/video", files={"file": ("a.mp4", b"x", "video/mp4")}).status_code == 401


def test_a_browser_gets_a_sign_in_page_and_then_a_cookie(client):
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'action="/login"' in page.text and "token" in page.text
    wrong = client.post("/login", data={"token": "nope", "next": "/"})
    assert wrong.status_code == 401 and "not this server's token" in wrong.text
    signed = client.post("/login", data={"token": TOKEN, "next": "/"})
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie  # a hash of it, not the token
    value = cookie.split(";")[0].split("=", 1)[1]
    ok = client.get("/api/health", headers={"Cookie": f"{COOKIE}={value}"})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    assert client.get("/api/health", headers={"Cookie": f"{COOKIE}=forged"}).status_code == 401


def test_sign_in_only_sends_back_to_this_server(client):
    r = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
    assert r.headers["location"] == "/"


def test_an_empty_token_is_refused():
    with pytest.raises(ValueError):
        TokenAuth(lambda *a: None, "")


def test_without_a_token_the_server_is_open(small_model, small_prototxt):
    service = SaliencyService(Salicon(small_model, small_prototxt, device="cpu"))
    with TestClient(create_app(service)) as c:
        assert c.get("/api/health").status_code == 200
        r = c.post("/api/video", files={"file": ("a.mp4", b"x", "video/mp4")})
        assert r.status_code == 501 and "without --ray" in r.json()["error"]


def test_serve_refuses_an_empty_token(capsys, monkeypatch):
    from salicon.cli import main

    assert main(["serve", "--token", " "]) == 2
    assert "--token is empty" in capsys.readouterr().err
    monkeypatch.setenv("SALICON_TOKEN", "")  # empty from the environment too, on Ray Serve as well
    assert main(["serve", "--ray", "--replicas", "1"]) == 2
    assert "--token is empty" in capsys.readouterr().err
