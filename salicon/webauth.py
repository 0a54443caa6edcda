"""A bearer token for every route of ``salicon serve`` (``--token`` or
``$SALICON_TOKEN``), for servers reachable beyond this machine.

API clients send ``Authorization: Bearer TOKEN``. A browser asking for a page
without it gets a small sign-in page (status 401) that asks for the token once;
``POST /login`` checks it and sets a cookie (HttpOnly, SameSite=Strict) holding
a hash of the token, so the page, its scripts, downloads and videos work from
then on. Everything else without the token answers 401 JSON. Tokens are
compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
from typing import Callable
from urllib.parse import parse_qs

#: The environment variable ``salicon serve`` reads the token from (safer than the command line, which ``ps`` shows).
TOKEN_ENV = "SALICON_TOKEN"
COOKIE = "salicon_session"
#: How long the sign-in cookie lasts (seconds).
COOKIE_MAX_AGE = 30 * 24 * 3600

_SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>SALICON: sign in</title><link rel="icon" href="data:,">
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:420px;margin:12vh auto;padding:0 20px;color:#1d2330}}
input{{font:inherit;padding:6px 8px;width:100%;box-sizing:border-box;margin:6px 0}}
button{{font:inherit;padding:6px 14px}}
.error{{color:#991b1b}}</style></head>
<body><h1>SALICON</h1><p>This server needs its access token (<code>salicon serve --token</code>).</p>
<form method="post" action="/login"><label>Token <input id="token" name="token" type="password" autofocus
autocomplete="current-password"></label><input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button></form><p class="error" id="sign-in-error">{error}</p></body></html>
"""


def _digest(token: str) -> str:
    return hashlib.sha256(("salicon:" + token).encode()).hexdigest()


class TokenAuth:
    """ASGI middleware: requests without the token are answered 401 (a sign-in page for browsers)."""

    def __init__(self, app: Callable, token: str):
        if not token:
            raise ValueError("an empty token protects nothing")
        self.app = app
        self._token = token.encode()
        self._cookie = _digest(token)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer " and hmac.compare_digest(auth[7:].strip(), self._token):
            return True
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self._cookie.encode()):
                return True
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and scope["path"] == "/login" and scope["method"] == "POST":
            return await self._sign_in(receive, send)
        if self._authorized(headers):
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        if scope["path"].startswith("/api/") or b"text/html" not in headers.get(b"accept", b""):
            body = json.dumps({"error": "this server needs its access token: send the header 'Authorization: "
                                        "Bearer TOKEN' (salicon serve --token / $SALICON_TOKEN)"}).encode()
            return await _respond(send, 401, body, b"application/json", [(b"www-authenticate", b"Bearer")])
        page = _SIGN_IN.format(next=html.escape(scope["path"]), error="")
        return await _respond(send, 401, page.encode(), b"text/html; charset=utf-8")

    async def _sign_in(self, receive, send):
        body, more = b"", True
        while more and len(body) < 16384:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        target = (form.get("next") or ["/"])[0]
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # only this server's pages
        if not hmac.compare_digest(token.encode(), self._token):
            page = _SIGN_IN.format(next=html.escape(target), error="That is not this server's token.")
            return await _respond(send, 401, page.encode(), b"text/html; charset=utf-8")
        cookie = f"{COOKIE}={self._cookie}; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=Strict"
        headers = [(b"location", target.encode()), (b"set-cookie", cookie.encode())]
        await _respond(send, 303, b"", b"text/plain", headers)


async def _respond(send, status: int, body: bytes, media: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store")] + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["TokenAuth", "TOKEN_ENV", "COOKIE"]
