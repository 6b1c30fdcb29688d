"""Cross-site requests (issue 22, item 8): Host and Origin checks on HTTP and WebSocket.

In-process (TestClient) for the rules, and one real uvicorn server for what a browser
sees on the wire when a WebSocket handshake comes from another site.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from facetalk.service.api import create_app
from facetalk.service.settings import ServiceSettings
from helpers.live import LiveServer
from helpers.service import LOCAL, LocalClient

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """No API keys, bound to loopback: the mode the checks protect."""
    app = create_app(ServiceSettings(storage=tmp_path_factory.mktemp("origin"), workers=1))
    with LocalClient(app, raise_server_exceptions=False) as client:
        yield client


def _client(tmp: Path, **settings: Any) -> TestClient:
    return LocalClient(create_app(ServiceSettings(storage=tmp, workers=1, **settings)),
                       raise_server_exceptions=False)


def _error(r: Any) -> str:
    body = r.json()
    assert set(body) >= {"error", "detail", "hint"} and body["detail"], body
    return str(body["error"])


def test_a_rebound_host_name_is_refused(api: TestClient) -> None:
    """DNS rebinding: a page at attacker.example re-pointed at 127.0.0.1 reads nothing."""
    for path in ("/v1/jobs", "/", "/live", "/openapi.json", "/v1/workers", "/readyz"):
        r = api.get(path, headers={"Host": "attacker.example:8000"})
        assert r.status_code == 400 and _error(r) == "host_not_allowed", (path, r.text)
    for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"):
        assert api.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
    # A load balancer's liveness probe answers whatever name it uses.
    assert api.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_a_write_from_another_site_is_refused(api: TestClient) -> None:
    files = {"portrait": ("a.png", b"x")}
    for origin in (EVIL, "null", "http://127.0.0.1:9999", "https://localhost.evil.example"):
        r = api.post("/v1/jobs", files=files, headers={"Origin": origin})
        assert r.status_code == 403 and _error(r) == "cross_origin", (origin, r.text)
    r = api.delete("/v1/jobs/0123456789abcdef0123456789abcdef", headers={"Origin": EVIL})
    assert r.status_code == 403
    r = api.post("/v1/say", json={"text": "hi"}, headers={"Origin": EVIL})
    assert r.status_code == 403
    # The service's own page (same origin), and clients that send no Origin, go through
    # to the route (which refuses the half-empty form on its own terms).
    for headers in ({"Origin": LOCAL}, {}):
        r = api.post("/v1/jobs", files=files, headers=headers)
        assert r.status_code == 422 and _error(r) == "invalid_input", r.text
    # Reading is not a write: GET with a foreign Origin is left to the browser's CORS rules.
    assert api.get("/v1/jobs", headers={"Origin": EVIL}).status_code == 200


def test_a_websocket_from_another_site_is_refused_in_process(api: TestClient) -> None:
    with pytest.raises(WebSocketDenialResponse) as denied:
        with api.websocket_connect("/v1/stream?avatar=x", headers={"Origin": EVIL}):
            pass
    assert denied.value.status_code == 403 and denied.value.json()["error"] == "cross_origin"
    with pytest.raises(WebSocketDenialResponse) as denied:
        with api.websocket_connect("/v1/stream?avatar=x", headers={"Host": "rebound.example"}):
            pass
    assert denied.value.status_code == 400


def test_a_websocket_from_another_site_is_refused_on_the_wire(tmp_path: Path) -> None:
    """Through uvicorn: the handshake is answered 403 with the JSON error; the same
    request from the service's own page reaches the route (which closes with 4404)."""
    with LiveServer(tmp_path / "data") as server:
        url = f"ws://127.0.0.1:{server.port}/v1/stream?avatar=nope"
        with pytest.raises(InvalidStatus) as refused:
            with connect(url, origin=EVIL, open_timeout=30):  # type: ignore[arg-type]
                pass
        response = refused.value.response
        assert response.status_code == 403
        assert json.loads(response.body or b"{}")["error"] == "cross_origin"
        with connect(url, origin=server.base, open_timeout=30) as ws:  # type: ignore[arg-type]
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_allowed_hosts_for_a_proxy(tmp_path: Path) -> None:
    """FACETALK_ALLOWED_HOSTS: the proxy's public name as Host and as the page's Origin."""
    with _client(tmp_path, allowed_hosts=("facetalk.example.com", "*.lab.example")) as api:
        for host in ("facetalk.example.com", "box.lab.example:8443", "127.0.0.1:8000"):
            assert api.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
        assert api.get("/v1/jobs", headers={"Host": "other.example"}).status_code == 400
        # The proxy forwards Host 127.0.0.1:8000; the page was https://facetalk.example.com.
        r = api.post("/v1/jobs", files={"portrait": ("a", b"x")},
                     headers={"Host": "127.0.0.1:8000", "Origin": "https://facetalk.example.com"})
        assert r.status_code == 422, r.text
        r = api.post("/v1/jobs", files={"portrait": ("a", b"x")},
                     headers={"Host": "facetalk.example.com", "Origin": "https://facetalk.example.com"})
        assert r.status_code == 422, r.text


def test_with_keys_the_host_is_free_unless_listed_and_origin_still_checked(tmp_path: Path) -> None:
    key = "k-origin-" + "x" * 16
    with _client(tmp_path, api_keys=(key,)) as api:
        # A deployment with keys may be reached under any name (a Service, an ingress).
        r = api.get("/v1/jobs", headers={"Host": "facetalk-api:8000", "X-API-Key": key})
        assert r.status_code == 200
        r = api.post("/v1/jobs", files={"portrait": ("a", b"x")},
                     headers={"Origin": EVIL, "X-API-Key": key})
        assert r.status_code == 403


def test_wildcard_bind_accepts_addresses_but_not_names(tmp_path: Path) -> None:
    with _client(tmp_path, host="0.0.0.0") as api:
        for host in ("192.168.1.20:8000", "[fe80::1]:8000", "localhost"):
            assert api.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
        assert api.get("/v1/jobs", headers={"Host": "rebound.example:8000"}).status_code == 400


def test_settings_read_allowed_hosts_and_forwarded_ips() -> None:
    s = ServiceSettings.load({}, {"FACETALK_ALLOWED_HOSTS": "A.example, b.example",
                                  "FACETALK_FORWARDED_ALLOW_IPS": "10.0.0.5,10.1.0.0/16"})
    assert s.allowed_hosts == ("a.example", "b.example")
    assert s.forwarded_allow_ips == ("10.0.0.5", "10.1.0.0/16")
    assert ServiceSettings.load({}, {}).forwarded_allow_ips == ()
    assert ServiceSettings.load({}, {"FACETALK_FORWARDED_ALLOW_IPS": "none"}).forwarded_allow_ips == ()
    with pytest.raises(Exception, match="not an IP"):
        ServiceSettings.load({}, {"FACETALK_FORWARDED_ALLOW_IPS": "proxy.example"})
