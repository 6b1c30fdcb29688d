"""Issue 22, items 3 and 6, against a real ``facetalk serve``: idle and slow-header sockets
are closed and do not use up the request limit; a stalled upload is refused with 408.

The settings are given through the environment so that a server without them (main before
the fix) still starts, and the tests fail on its behaviour: there, 60 idle sockets on a
20-connection server made every request (``/healthz`` too) answer 503, silent sockets were
never closed and a stalled upload hung forever.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.service import Server

LIMIT = 20
HEAD_TIMEOUT_S = 1.5
UPLOAD_IDLE_S = 1.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    storage = tmp_path_factory.mktemp("conn") / "data"
    srv = Server(storage, "--workers", "1", env={
        "FACETALK_MAX_CONNECTIONS": str(LIMIT), "FACETALK_HEADER_TIMEOUT": str(HEAD_TIMEOUT_S),
        "FACETALK_UPLOAD_IDLE_TIMEOUT": str(UPLOAD_IDLE_S)})
    with srv:
        yield srv


def raw_get(port: int, path: str) -> tuple[int, float]:
    """Status and milliseconds of one GET on a fresh connection."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data[9:12]), (time.perf_counter() - t0) * 1000


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and when (s); (b"", inf) if it never does."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return data, float("inf")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - t0


def test_idle_sockets_do_not_use_up_the_limit_and_are_closed(server: Server) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3 * LIMIT)]
    try:
        time.sleep(0.3)
        for path in ("/healthz", "/v1/jobs", "/readyz"):
            status, _ms = raw_get(server.port, path)
            assert status == 200, (path, status)
        data, after = read_until_closed(idle[0], HEAD_TIMEOUT_S + 5)
        assert after < HEAD_TIMEOUT_S + 3, "a silent connection was never closed"
        assert data.startswith(b"HTTP/1.1 408"), data[:80]
    finally:
        for s in idle:
            s.close()


def test_a_header_trickle_is_cut_off_at_the_deadline(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        reply: bytes | None = None
        s.settimeout(0.25)
        while time.monotonic() - t0 < HEAD_TIMEOUT_S + 5:
            try:
                s.sendall(b"X-Slow: 1\r\n")  # a header line every 250 ms: never a whole head
                reply = s.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                reply = b"<reset>"
            break
        assert reply is not None, "a header trickle was never cut off"
        assert reply.startswith(b"HTTP/1.1 408") or reply in (b"", b"<reset>"), reply[:80]
        assert time.monotonic() - t0 < HEAD_TIMEOUT_S + 3


def test_a_kept_alive_connection_and_a_big_head(server: Server) -> None:
    import httpx

    with httpx.Client(base_url=server.base) as http:
        for _ in range(3):  # reused across requests, each well inside the deadline
            assert http.get("/healthz").status_code == 200
            time.sleep(HEAD_TIMEOUT_S / 2)
        assert http.get("/v1/jobs").status_code == 200
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 200_000)
        data, _ = read_until_closed(s, 10)
        assert data.startswith(b"HTTP/1.1 431"), data[:80]


def test_a_stalled_upload_is_refused_with_408_and_its_file_removed(server: Server) -> None:
    tmp = Path(server.storage) / "tmp"
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 50000000\r\n\r\n"
                  b"--B\r\nContent-Disposition: form-data; name=\"portrait\"; filename=\"a\"\r\n\r\n"
                  + bytes(500_000))
        time.sleep(0.5)
        assert sum(p.stat().st_size for p in tmp.iterdir()) > 0  # the partial file is there
        data, after = read_until_closed(s, UPLOAD_IDLE_S + 10)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"request_timeout" in data and str(tmp).encode() not in data
    assert after < UPLOAD_IDLE_S + 3
    time.sleep(0.2)
    assert list(tmp.iterdir()) == []


def test_requests_in_progress_are_limited_but_healthz_is_not(server: Server) -> None:
    """LIMIT uploads in progress (stalled mid-body) use up the limit: the next request gets
    503 at once, /healthz still answers 200; once they time out the service answers again."""
    head = (b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            b"boundary=B\r\nContent-Length: 1000000\r\n\r\n--B\r\n")
    busy = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMIT)]
    try:
        for s in busy:
            s.sendall(head)
        time.sleep(0.5)
        assert raw_get(server.port, "/v1/jobs")[0] == 503
        assert raw_get(server.port, "/healthz")[0] == 200
        replies = [read_until_closed(s, UPLOAD_IDLE_S + 10)[0][:12] for s in busy]
        assert replies == [b"HTTP/1.1 408"] * LIMIT
    finally:
        for s in busy:
            s.close()
    assert raw_get(server.port, "/v1/jobs")[0] == 200
