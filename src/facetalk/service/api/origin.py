"""Host and Origin checks: a web page on another site must not drive the service.

Without API keys anyone who can reach the port may use the service, which on loopback
means the local user. But the local user's browser also runs other sites' scripts, and
those can reach 127.0.0.1 too: a cross-site form POST submits a job, and a page whose
name is re-pointed at 127.0.0.1 (DNS rebinding) reads the job list and the videos as
"same origin". Two checks close that, for HTTP and for WebSocket handshakes alike:

- **Host**: the request must name the service (localhost names, the bound address,
  ``FACETALK_ALLOWED_HOSTS``); a rebound name is refused. Enforced without keys, or
  whenever a list is configured (a key already stops a foreign page, and deployments
  with keys may be reached under names the service cannot guess).
- **Origin**: a browser's state-changing request (POST/PUT/PATCH/DELETE) and every
  WebSocket handshake must come from the service's own pages (Origin equal to Host) or
  from a configured name. Clients that send no Origin (curl, SDKs) are not browsers
  driven by a third party and pass.

Pure ASGI (not Starlette's TrustedHostMiddleware, which covers only Host and answers
in plain text) so both scope types get the same rule and the usual JSON error body.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import CrossOrigin, HostNotAllowed, ServiceError
from ..settings import ServiceSettings

#: Names that always mean this machine.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
#: Methods that change state; a browser sends Origin with each of them.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Answers whatever the Host: a load balancer's probe must not need the right name.
HOST_EXEMPT = frozenset({"/healthz"})
_WILDCARD_BINDS = ("0.0.0.0", "::", "")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def split_host(value: str) -> tuple[str, str]:
    """``host[:port]`` (IPv6 in brackets) -> (lower-case name without a trailing dot, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if value.count(":") == 1:
        name, port = value.split(":")
        return name.rstrip("."), port
    return value.rstrip("."), ""


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which Host names and browser Origins the service accepts (see the module docstring)."""

    def __init__(self, settings: ServiceSettings) -> None:
        bound = settings.host.strip().lower().strip("[]")
        self.any_ip = bound in _WILDCARD_BINDS
        self.configured = tuple(h.strip().lower().rstrip(".") for h in settings.allowed_hosts)
        self.names = frozenset({*LOCAL_NAMES, *([] if self.any_ip else [bound])})
        self.enforce_host = bool(self.configured) or not settings.api_keys

    @staticmethod
    def _listed(name: str, patterns: tuple[str, ...]) -> bool:
        for p in patterns:
            if p == "*" or p == name or (p.startswith("*.") and name.endswith(p[1:])):
                return True
        return False

    def host_ok(self, name: str) -> bool:
        """Whether a request naming ``name`` (no port) is for this service."""
        if not name:
            return False
        return (name in self.names or (self.any_ip and _is_ip(name))
                or self._listed(name, self.configured))

    def origin_ok(self, origin: str, host: str) -> bool:
        """Whether a browser page at ``origin`` may change state on the service at ``host``."""
        try:
            parts = urlsplit(origin.strip())
            port = str(parts.port or "")
        except ValueError:
            return False
        name = (parts.hostname or "").rstrip(".")
        if parts.scheme not in _DEFAULT_PORTS or not name:
            return False  # "null" (sandboxed frames, file: pages) and anything odd
        host_name, host_port = split_host(host)
        default = _DEFAULT_PORTS[parts.scheme]
        same = name == host_name and (port or default) == (host_port or default)
        # Behind a TLS proxy the Host may keep :80 while the page is https:443.
        same = same or (name == host_name and {port or default, host_port or "80"} <= {"80", "443"})
        return same or self._listed(name, self.configured)


class HostOriginMiddleware:
    """Refuse requests for another Host, and browser writes/WebSockets from other sites."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.policy = HostPolicy(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope.get("headers", []) if k in (b"host", b"origin")}
        host = headers.get(b"host", b"").decode("latin-1")
        refusal: ServiceError | None = None
        if (self.policy.enforce_host and scope.get("path") not in HOST_EXEMPT
                and not self.policy.host_ok(split_host(host)[0])):
            refusal = HostNotAllowed(f"this service does not answer to the host {host[:80]!r}")
        elif kind == "websocket" or scope.get("method") in UNSAFE_METHODS:
            origin = headers.get(b"origin")
            if origin is not None and not self.policy.origin_ok(origin.decode("latin-1"), host):
                refusal = CrossOrigin(f"requests from {origin.decode('latin-1')[:80]!r} are not "
                                      "accepted (another site's page)")
        if refusal is None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await _refuse_http(send, refusal)
        else:
            await _refuse_websocket(scope, send, refusal)


def _response(err: ServiceError) -> tuple[dict[str, object], dict[str, object]]:
    body = json.dumps(err.to_dict()).encode()
    start = {"status": err.status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]}
    return start, {"body": body}


async def _refuse_http(send: Send, err: ServiceError) -> None:
    start, body = _response(err)
    await send({"type": "http.response.start", **start})
    await send({"type": "http.response.body", **body})


async def _refuse_websocket(scope: Scope, send: Send, err: ServiceError) -> None:
    """The handshake is answered with the JSON error when the server can (the ASGI
    ``websocket.http.response`` extension, which Uvicorn has), else closed (a 403)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        start, body = _response(err)
        await send({"type": "websocket.http.response.start", **start})
        await send({"type": "websocket.http.response.body", **body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": err.code})
