"""Connections and requests an anonymous client can hold: a deadline on the request head,
a bound on its size, and a limit on requests in progress that idle sockets do not use up.

Why not Uvicorn's settings alone: ``timeout_keep_alive`` only runs between two requests
and is cancelled by the first byte of the next one, so a socket that sends nothing after
connecting, or one header byte every few seconds, is never closed (Uvicorn has no
header-read timeout; the httptools parser, the one used when installed, has no head size
limit either: ``h11_max_incomplete_event_size`` only applies to h11). And
``limit_concurrency`` counts open connections, idle ones included, then answers 503 to
everyone, ``/healthz`` too: a few hundred silent sockets took the service down.

So ``facetalk serve`` runs Uvicorn's own HTTP protocol with :class:`HeadDeadline` mixed in
(a timer from the moment a connection opens or a response ends until the next request's
head is complete; on expiry a 408 and the connection is closed), and counts *requests in
progress* instead (:class:`RequestLimitMiddleware`), never ``/healthz``. A reverse proxy in
front completes it (see the README's "Behind a reverse proxy").
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

#: Largest request head (request line plus headers) accepted; browsers send ~1-4 KB.
MAX_HEAD_BYTES = 64 * 1024
#: Paths always answered, whatever the load (liveness must not fail under a flood).
EXEMPT_PATHS = frozenset({"/healthz"})


def _response(status: int, reason: str, code: str, detail: str) -> bytes:
    body = json.dumps({"error": code, "detail": detail, "hint": None}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class HeadDeadline:
    """Mixin for a Uvicorn HTTP protocol class (h11 or httptools): the client has
    ``head_timeout`` seconds to send a whole request head, counted from the connection's
    start or from the end of its previous response, and at most :data:`MAX_HEAD_BYTES`.

    It relies on what both Uvicorn protocols share: ``cycle`` (a new one is made when a
    request's head is complete), ``transport``, ``loop`` and ``handle_websocket_upgrade``.
    """

    head_timeout: float = 10.0
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:
        """Start the clock: a silent connection is closed after ``head_timeout``."""
        super().connection_made(transport)  # type: ignore[misc]
        self._head_timer: asyncio.TimerHandle | None = None
        self._armed_cycle: Any = None
        self._head_bytes = 0
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Arm the clock when a new request starts arriving; stop it once its head is in."""
        if self._head_timer is None and self._between_requests():
            self._arm()  # the next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        if self._head_timer is None:
            return
        if self.cycle is not self._armed_cycle:
            self._disarm()  # the head is complete: the request is the app's now
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, "Request Header Fields Too Large", "header_too_large",
                         f"the request head is larger than {MAX_HEAD_BYTES // 1024} KB")

    def handle_websocket_upgrade(self, *args: Any) -> None:
        """The WebSocket protocol takes the transport over; this clock must not close it."""
        self._disarm()
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _between_requests(self) -> bool:
        """The previous request was read whole and answered: new bytes start a new head
        (not the rest of a body the app answered before reading it all)."""
        cycle = self.cycle
        return cycle is None or (cycle.response_complete and not cycle.more_body)

    def _arm(self) -> None:
        self._armed_cycle, self._head_bytes = self.cycle, 0
        self._head_timer = self.loop.call_later(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if self.cycle is self._armed_cycle:
            self._refuse(408, "Request Timeout", "request_timeout",
                         f"no complete request head within {self.head_timeout:g} s")

    def _refuse(self, status: int, reason: str, code: str, detail: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_response(status, reason, code, detail))
            self.transport.close()


def guarded_http_protocol(head_timeout: float) -> type[asyncio.Protocol]:
    """Uvicorn's HTTP protocol (httptools when installed, h11 otherwise) with
    :class:`HeadDeadline`; pass it as ``uvicorn.run(..., http=...)``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return type("GuardedHTTPProtocol", (HeadDeadline, AutoHTTPProtocol), {"head_timeout": head_timeout})


class RequestLimitMiddleware:
    """At most ``limit`` HTTP requests and WebSockets in progress; the next get 503 (close
    code 1013 for a WebSocket) at once. ``/healthz`` is neither counted nor refused, so it
    answers however busy the service is. Idle connections cost nothing here: they are
    bounded by the head deadline, not by this limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await self._refuse(scope, send)
            return
        self.active += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013, "reason": "server busy"})
            return
        body = json.dumps({"error": "unavailable",
                           "detail": f"the server is busy ({self.limit} requests in progress)",
                           "hint": "Retry in a moment."}).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": body})
