"""API keys: optional, several allowed, compared in constant time.

A pure ASGI middleware rather than a FastAPI dependency, so it also guards /docs,
/openapi.json, /metrics and any route added later: every route but /healthz (which a
load balancer must reach without a secret) and the /live page (a browser cannot send a
header when it navigates; the page holds no data and asks for the key itself) needs a
key once one is configured. ``/readyz`` answers without a key too (a readiness probe cannot
send one), but then only ``{"status"}``. The WebSocket ``/v1/stream`` checks the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import Unauthorized

OPEN_PATHS = frozenset({"/healthz", "/live"})
#: Answer without a key, but say more with one: a readiness probe cannot send a secret,
#: and the details (worker pids, host names, disk) are for the operator.
PROBE_PATHS = frozenset({"/readyz"})


def _digest(key: str) -> bytes:
    # Hash first: compare_digest is constant-time only for equal lengths, and a
    # SHA-256 digest hides the length of the configured keys.
    return hashlib.sha256(key.encode("utf-8")).digest()


def _matches(digests: list[bytes], key: str) -> bool:
    """Constant-time check against every configured key digest (no early exit)."""
    got = _digest(key)
    ok = False
    for ref in digests:
        ok |= hmac.compare_digest(got, ref)
    return ok


def key_ok(keys: tuple[str, ...], key: str | None) -> bool:
    """The key check for places the middleware does not cover (the live WebSocket):
    true when no key is configured, else when ``key`` is one of ``keys``."""
    if not keys:
        return True
    return bool(key) and _matches([_digest(k) for k in keys], key or "")


class ApiKeyMiddleware:
    """Refuse requests without a valid ``Authorization: Bearer`` or ``X-API-Key``."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self._digests = [_digest(k) for k in keys]

    def valid(self, key: str) -> bool:
        """Constant-time check against every configured key (no early exit)."""
        return _matches(self._digests, key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._digests or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = _key(scope)
        if scope["path"] in PROBE_PATHS:
            # Request.state reads scope["state"]: the route shows details only with a key.
            scope.setdefault("state", {})["api_key_ok"] = bool(key) and self.valid(key or "")
            await self.app(scope, receive, send)
            return
        if key is None or key == "":
            await _refuse(send, Unauthorized("this server requires an API key"))
        elif not self.valid(key):
            await _refuse(send, Unauthorized("the API key is not valid"))
        else:
            await self.app(scope, receive, send)


def _key(scope: Scope) -> str | None:
    """The key a request carries (``X-API-Key`` or ``Authorization: Bearer``), if any."""
    key = None
    for name, value in scope.get("headers", []):
        if name == b"x-api-key":
            key = value.decode("latin-1").strip()
        elif name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                key = token.strip()
    return key


async def _refuse(send: Send, err: Unauthorized) -> None:
    body = json.dumps(err.to_dict()).encode()
    await send({"type": "http.response.start", "status": err.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="facetalk"'), (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})
