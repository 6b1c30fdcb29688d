"""Issue 22, items 9, 10 and 11: the probe's leftovers, each a request against the service.

- 9: inputs that gave a 500 (JSON nested very deep, integers over 4,300 digits, exotic
  ``charset`` values, a huge ``cursor``) get a 4xx with the usual error body;
- 10: no error message shows a server path (0-byte and broken uploads, on every route
  that takes a file);
- 11: ``/docs`` and ``/redoc`` are off by default and, when on, load nothing from a CDN;
  ``/live`` has the same Content-Security-Policy and frame protection as ``/``.
(Item 13 is in test_service_info.py.)
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from facetalk.errors import InvalidInput
from facetalk.service.api import create_app
from facetalk.service.api import docs as api_docs
from facetalk.service.errors import hide_paths
from facetalk.service.settings import ServiceSettings
from facetalk.service.web import CSP
from facetalk.settings import Limits
from helpers.service import LocalClient

LIMIT = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hardening") / "data"


@pytest.fixture(scope="module")
def api(storage: Path) -> Iterator[TestClient]:
    s = ServiceSettings(storage=storage, workers=1, limits=Limits(max_input_bytes=LIMIT))
    with LocalClient(create_app(s), raise_server_exceptions=False) as client:
        yield client


def _refused(r: httpx.Response, status: int | tuple[int, ...] = (400, 413, 415, 422)) -> dict[str, Any]:
    """The usual ``{error, detail, hint}`` with a 4xx, never an internal error."""
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) >= {"error", "detail", "hint"} and body["detail"], body
    assert body["error"] != "internal_error" and "Traceback" not in r.text
    return dict(body)


# -- 9: inputs that gave a 500 -------------------------------------------------------------
def test_deeply_nested_and_huge_numbers_in_options_are_a_422(api: TestClient) -> None:
    for options in ("[" * 30000 + "]" * 30000, '{"seed": ' + "1" * 5000 + "}",
                    '{"label": "x", "a": ' + "[" * 20000 + "]" * 20000 + "}"):
        r = api.post("/v1/jobs", files={"portrait": ("a", b"x")}, data={"options": options})
        assert _refused(r, 422)["error"] == "invalid_input"


def test_deeply_nested_json_body_is_a_400(api: TestClient) -> None:
    """The JSON bodies read by other routes (``/v1/say``): nesting deep enough to
    exhaust the parser's recursion is the client's error, not the server's."""
    r = api.post("/v1/say", content=b"[" * 60000, headers={"Content-Type": "application/json"})
    # The route's own parser says 422 (not JSON it takes); the app-level handler says 400.
    assert _refused(r, (400, 422))["error"] in ("bad_request", "invalid_input")


def test_a_huge_integer_in_a_say_body_is_a_422(api: TestClient) -> None:
    """An integer over Python's 4,300-digit conversion limit in ``/v1/say``'s JSON is the
    client's error (it raised ValueError, not JSONDecodeError, and became a 500)."""
    r = api.post("/v1/say", content=b'{"text": "hi", "n": ' + b"1" * 5000 + b"}",
                 headers={"Content-Type": "application/json"})
    assert _refused(r, 422)["error"] == "invalid_input"


def test_a_cursor_beyond_any_job_is_a_422(api: TestClient) -> None:
    for cursor in ("9" * 30, str(2**63), "9" * 5000):
        assert _refused(api.get("/v1/jobs", params={"cursor": cursor}), 422)["error"] == "invalid_input"
    assert api.get("/v1/jobs", params={"cursor": str(2**63 - 1)}).status_code == 200


@pytest.mark.parametrize("charset", ["rot13", "hex", "base64", "zlib", "bz2", "uu", "idna",
                                     "undefined", "utf-7", "punycode", "no-such-charset"])
def test_exotic_charsets_are_refused_or_read_as_utf8(api: TestClient, charset: str) -> None:
    body = (b'--B\r\nContent-Disposition: form-data; name="label"\r\n\r\nhello\xff\r\n'
            b'--B\r\nContent-Disposition: form-data; name="portrait"; filename="a"\r\n\r\nxx\r\n--B--\r\n')
    r = api.post("/v1/jobs", content=body,
                 headers={"Content-Type": f"multipart/form-data; boundary=B; charset={charset}"})
    assert _refused(r, 422)["error"] == "invalid_input"


# -- 10: no server path in an error ----------------------------------------------------------
def _no_server_path(text: str, storage: Path) -> None:
    for leak in (str(storage), str(storage.resolve()), tempfile.gettempdir() + "/"):
        assert leak not in text, text
    assert not re.search(r"(?<![\w.:/])/(?:tmp|var|home|root|usr|work)/", text), text


def test_broken_uploads_do_not_show_server_paths(api: TestClient, storage: Path,
                                                  portrait_bytes: bytes, speech_bytes: bytes) -> None:
    broken_mp4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 2000
    cases = [
        ("/v1/jobs", {"portrait": ("a.png", b""), "audio": ("b.wav", speech_bytes)}),
        ("/v1/jobs", {"portrait": ("a.png", portrait_bytes), "audio": ("b.wav", b"")}),
        ("/v1/jobs", {"portrait": ("a.png", portrait_bytes), "audio": ("b.wav", speech_bytes[:60])}),
        ("/v1/jobs", {"portrait": ("a.png", portrait_bytes[:300]), "audio": ("b.wav", speech_bytes)}),
        ("/v1/analyze", {"portrait": ("a.png", b"")}),
        ("/v1/analyze", {"audio": ("b.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")}),
        ("/v1/verify", {"video": ("v.mp4", b"")}),
        ("/v1/verify", {"video": ("v.mp4", broken_mp4)}),
        ("/v1/avatars", {"portrait": ("a.png", b"")}),
        ("/v1/avatars", {"portrait": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)}),
    ]
    for path, files in cases:
        r = api.post(path, files=files)
        _refused(r, (413, 415, 422))
        _no_server_path(r.text, storage)


def test_hide_paths_keeps_routes_and_urls() -> None:
    assert hide_paths("empty (0 bytes): /var/lib/facetalk/tmp/ab12cd") == "empty (0 bytes): [server path]"
    assert hide_paths("input: '/tmp/x/tmp/ab'") == "input: '[server path]'"
    for text in ("See /openapi.json for the routes.", "POST /v1/avatars first",
                 "http://127.0.0.1:8000/v1/jobs", "16 kHz mono/PCM16", "curl -F portrait=@face.jpg"):
        assert hide_paths(text) == text


# -- 11: the API docs and the live page ------------------------------------------------------
def test_docs_are_off_by_default_and_the_schema_stays(api: TestClient) -> None:
    for path in ("/docs", "/redoc", "/docs-assets/swagger-ui-bundle.js"):
        assert api.get(path).status_code == 404, path
    r = api.get("/openapi.json")
    assert r.status_code == 200 and "/v1/jobs" in r.json()["paths"]


def _fake_assets(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in api_docs.ASSETS:
        (folder / name).write_bytes(b"/* " + name.encode() + b" */")
    return folder


def test_docs_when_on_load_only_from_this_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_assets(tmp_path / "static")
    monkeypatch.setattr(api_docs, "asset_dir", lambda: folder)
    settings = ServiceSettings(storage=tmp_path / "data", workers=1, api_docs=True)
    with LocalClient(create_app(settings), raise_server_exceptions=False) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200
            urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html.text)
            urls += re.findall(r"""url:\s*['"]([^'"]+)""", html.text)
            assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
            assert "cdn" not in html.text.lower() and "googleapis" not in html.text
            if page == "/docs":
                assert '"validatorUrl": null' in html.text  # no badge from the public validator
            for u in urls:
                if u.startswith("/docs-assets/"):
                    got = client.get(u)
                    expected = (folder / u.rsplit("/", 1)[1]).read_bytes()
                    assert got.status_code == 200 and got.content == expected
        assert client.get("/docs-assets/../settings.py").status_code == 404
        assert client.get("/docs-assets/secret.txt").status_code == 404


def test_docs_on_without_the_assets_is_a_start_up_error(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_docs, "asset_dir", lambda: None)
    with pytest.raises(InvalidInput, match="fastapi-offline"):
        create_app(ServiceSettings(storage=tmp_path, workers=1, api_docs=True))
    assert ServiceSettings.load({}, {"FACETALK_API_DOCS": "on"}).api_docs is True
    assert ServiceSettings.load({}, {}).api_docs is False


def test_docs_with_the_real_package(tmp_path: Path) -> None:
    pytest.importorskip("fastapi_offline")
    assert api_docs.asset_dir() is not None
    with LocalClient(create_app(ServiceSettings(storage=tmp_path, workers=1, api_docs=True))) as client:
        js = client.get("/docs-assets/swagger-ui-bundle.js")
        assert js.status_code == 200 and len(js.content) > 100_000


class _Inline(HTMLParser):
    """Inline code in a page: <script> without src, <style>, style= and on*= attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k for k, _ in attrs}
        if (tag == "script" and "src" not in names) or tag == "style":
            self.found.append(tag)
        self.found += [f"{tag}[{k}]" for k in names if k == "style" or k.startswith("on")]


def test_live_page_has_the_main_pages_csp_and_frame_protection(api: TestClient) -> None:
    main, live = api.get("/"), api.get("/live")
    assert main.status_code == live.status_code == 200
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy",
                 "Permissions-Policy"):
        assert live.headers[name] == main.headers[name], name
    assert live.headers["Content-Security-Policy"] == CSP
    assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    for page in (main.text, live.text):
        parser = _Inline()
        parser.feed(page)
        assert parser.found == [], parser.found  # the CSP would block them anyway
