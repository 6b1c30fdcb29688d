"""Issue 22, item 13: what the probe found worth settling.

Labels refuse bidi overrides and control characters; the size-limit message agrees with
the README (200 MB, not 210); ``X-Forwarded-For`` sets the audit log's address only from
proxies listed in ``--forwarded-allow-ips``. (``/readyz`` without a key, and "every key
sees every job", are in test_service_api.py's key test and the README's Security section.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from facetalk.errors import InvalidInput
from facetalk.options import GenerationOptions
from facetalk.service.api import create_app
from facetalk.service.settings import ServiceSettings
from facetalk.settings import Limits, megabytes
from helpers.service import TINY, LocalClient, Server, submit

ROOT = Path(__file__).resolve().parents[2]
#: 20 MiB: the largest limit where decimal and binary megabytes round differently (21 vs 20).
LIMIT = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    s = ServiceSettings(storage=tmp_path_factory.mktemp("info") / "data", workers=1,
                        limits=Limits(max_input_bytes=LIMIT))
    with LocalClient(create_app(s), raise_server_exceptions=False) as client:
        yield client


def _refused(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) >= {"error", "detail", "hint"} and body["detail"], body
    return dict(body)


@pytest.mark.parametrize("label", ["AI\u202egenerated", "a\u2066b\u2069", "x\u200fy", "nul\x00",
                                   "two\nlines", "esc\x1b[31m", "bell\x07"])
def test_labels_refuse_bidi_and_control_characters(api: TestClient, label: str) -> None:
    with pytest.raises(InvalidInput, match="label"):
        GenerationOptions(label=label)
    r = api.post("/v1/jobs", files={"portrait": ("a", b"x")}, data={"label": label})
    assert "label" in _refused(r, 422)["detail"]
    r = api.post("/v1/jobs", files={"portrait": ("a", b"x")},
                 data={"options": json.dumps({"label": label})})
    assert "label" in _refused(r, 422)["detail"]


def test_ordinary_labels_still_pass() -> None:
    for label in ("AI生成 / AI-generated", "مُولَّد بالذكاء الاصطناعي", "Synthétique — IA", "KI-generiert 🤖"):
        assert GenerationOptions(label=label).label == label


def test_the_size_limit_message_agrees_with_the_readme(api: TestClient) -> None:
    assert megabytes(Limits().max_input_bytes) == "200 MB"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "FACETALK_MAX_INPUT_BYTES (200 MB)" in readme
    r = api.post("/v1/jobs", files={"portrait": ("a.png", b"\x89PNG" + b"\0" * LIMIT)})
    detail = _refused(r, 413)["detail"]
    assert f"limit of {LIMIT // (1024 * 1024)} MB" in detail, detail


def _audit_clients(storage: Path) -> list[str | None]:
    lines = (storage / "audit.log").read_text().splitlines()
    return [json.loads(line).get("client") for line in lines]


@pytest.mark.parametrize("trusted", [False, True], ids=["default", "proxy-listed"])
def test_forwarded_for_counts_only_from_configured_proxies(
        tmp_path: Path, trusted: bool, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    """A local client cannot write any address it likes into the audit log; a proxy
    listed in --forwarded-allow-ips can."""
    args = ["--workers", "1"] + (["--forwarded-allow-ips", "127.0.0.1"] if trusted else [])
    with Server(tmp_path / "data", *args) as server, server.client() as http:
        http.headers["X-Forwarded-For"] = "203.0.113.9"
        r = submit(http, portrait_bytes, speech_bytes, **TINY)
        assert r.status_code == 202, r.text
        http.delete(f"/v1/jobs/{r.json()['id']}")
        clients = _audit_clients(server.storage)
    assert clients and set(clients) == ({"203.0.113.9"} if trusted else {"127.0.0.1"}), clients


def test_readyz_without_a_key_tells_only_the_status(tmp_path: Path) -> None:
    """A readiness probe cannot send the key: it gets the status, not pids or host names."""
    import socket
    import time

    key = "k-info-" + "x" * 16
    settings = ServiceSettings(storage=tmp_path / "data", workers=1, api_keys=(key,))
    with LocalClient(create_app(settings), raise_server_exceptions=False) as client:
        end = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < end:
            time.sleep(0.1)
        bare = client.get("/readyz")
        assert bare.status_code == 200 and bare.json() == {"status": "ready"}, bare.text
        assert "pid" not in bare.text and socket.gethostname() not in bare.text
        full = client.get("/readyz", headers={"X-API-Key": key}).json()
        assert full["status"] == "ready" and full["worker_pids"], full
        assert client.get("/v1/workers").status_code == 401
        workers = client.get("/v1/workers", headers={"X-API-Key": key}).json()["workers"]
        assert workers and all(w["pid"] for w in workers)
