"""The web page's server side, in-process: the page files (public even with API keys),
``GET /v1/options`` (the schema the form is built from) and ``POST /v1/analyze`` (the
engine's own face analysis and framing, in a helper process that ends with the app).
The page itself is driven in real Chromium by ``test_web_browser.py``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facetalk.face.analysis import analyze_face
from facetalk.face.framing import plan_framing
from facetalk.media.image import load_portrait
from facetalk.options import FRAMINGS, PRESETS, GenerationOptions, field_info
from facetalk.service.api import create_app
from facetalk.service.helpers.analyzer import peaks
from facetalk.service.settings import ServiceSettings
from facetalk.service.web import PAGE_FILES, static_dir
from facetalk.settings import Limits
from helpers.service import TINY, LocalClient, alive, decode_mp4, submit, wait_for, wait_gone

KEY = "web-test-key-0123456789"


def make_client(tmp: Path, **settings: Any) -> TestClient:
    return LocalClient(create_app(ServiceSettings(storage=tmp, workers=1, **settings)),
                       raise_server_exceptions=False)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("web-api")) as client:
        yield client


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def landscape() -> np.ndarray:
    """A picture with no face: sky gradient, hills and a sun."""
    h, w = 360, 480
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 255 - y * 120 // h
    img[..., 1] = 160 - y * 60 // h
    img[..., 0] = 90
    hills = y > 250 + 30 * np.sin(x / 50.0)
    img[hills] = (40, 120, 50)
    sun = (x - 380) ** 2 + (y - 80) ** 2 < 40**2
    img[sun] = (250, 220, 80)
    return img


# -- the page files ---------------------------------------------------------------------
def test_page_is_served_with_its_assets_and_a_strict_csp(api: TestClient) -> None:
    r = api.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = r.text
    # Everything the page loads comes from this server: no CDN, no other host.
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert refs and all(ref.startswith("/web/") for ref in refs), refs
    assert not re.search(r"\son[a-z]+=", html)  # no inline handlers (the CSP forbids them)
    for ref in refs:
        asset = api.get(ref)
        assert asset.status_code == 200, ref
        assert asset.headers["x-content-type-options"] == "nosniff"
    for name in PAGE_FILES:
        assert (static_dir() / name).is_file(), name
        body = (static_dir() / name).read_text(encoding="utf-8")
        assert "http://" not in body.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in body, f"{name} refers to an outside address"
    assert api.head("/").status_code == 200


def test_unknown_page_file_is_a_json_404(api: TestClient) -> None:
    for path in ("/web/nope.js", "/web/../pyproject.toml", "/web/static/main.js", "/web/"):
        r = api.get(path)
        assert r.status_code == 404, path
        body = r.json()
        assert body["error"] == "not_found" and body["hint"]


def test_page_is_public_but_the_api_needs_the_key(tmp_path: Path, astronaut_path: Path) -> None:
    """A browser cannot send a key when it opens a URL: the page must load to ask for it."""
    with make_client(tmp_path, api_keys=(KEY,)) as client:
        assert client.get("/").status_code == 200
        assert client.get("/web/main.js").status_code == 200
        for method, path in (("GET", "/v1/options"), ("POST", "/v1/analyze"),
                             ("POST", "/"), ("GET", "/v1/jobs")):
            r = client.request(method, path)
            assert r.status_code == 401, (method, path)
            assert r.json()["error"] == "unauthorized"
        auth = {"Authorization": f"Bearer {KEY}"}
        assert client.get("/v1/options", headers=auth).status_code == 200
        r = client.post("/v1/analyze", headers=auth,
                        files={"portrait": ("p", astronaut_path.read_bytes())})
        assert r.status_code == 200, r.text


# -- the schema -------------------------------------------------------------------------
def test_options_are_the_engines_field_info_and_presets(api: TestClient) -> None:
    body = api.get("/v1/options").json()
    assert body["fields"] == json.loads(json.dumps(field_info()))
    assert [f["name"] for f in body["fields"]] == [
        f.name for f in dataclasses.fields(GenerationOptions)]
    assert body["presets"] == PRESETS
    assert body["limits"]["max_input_bytes"] > 0 and body["limits"]["max_audio_seconds"] > 0
    for f in body["fields"]:  # what the form needs to build and explain each control
        assert f["type"] in ("int", "float", "bool", "str") and f["help"]
        assert set(f) >= {"name", "type", "optional", "default", "min", "max", "choices", "unit"}


def test_every_parameter_has_english_and_chinese_labels() -> None:
    strings = json.loads((static_dir() / "i18n.json").read_text(encoding="utf-8"))
    assert set(strings) == {"en", "zh"}
    missing = set(strings["en"]) - set(strings["zh"])
    assert not missing, f"keys without a Chinese text: {sorted(missing)}"
    for info in field_info():
        name = info["name"]
        for lang in ("en", "zh"):
            assert strings[lang].get(f"opt.{name}.label"), (lang, name)
            for choice in info["choices"] or ():
                assert strings[lang].get(f"choice.{name}.{choice}"), (lang, name, choice)
        # English help comes from the engine's own docstring line; Chinese is translated.
        assert strings["zh"].get(f"opt.{name}.help"), name
    # Placeholders must match, or a translated sentence loses its number.
    for key, text in strings["en"].items():
        assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", strings["zh"][key])), key
    for name in PRESETS:
        assert strings["en"].get(f"preset.{name}") and strings["zh"].get(f"preset.{name}")


# -- analyze: the engine's face analysis and framing --------------------------------------
def test_analyze_portrait_matches_the_engine(api: TestClient, astronaut_path: Path) -> None:
    r = api.post("/v1/analyze", files={"portrait": ("x.bin", astronaut_path.read_bytes())},
                 data={"expand_ratio": "0.3", "min_resolution": "768"})
    assert r.status_code == 200, r.text
    got = r.json()
    rgb = load_portrait(str(astronaut_path))
    face = analyze_face(rgb)
    assert (got["width"], got["height"]) == (rgb.shape[1], rgb.shape[0])
    assert got["face"]["box"] == pytest.approx(list(face.box), abs=0.01)
    for name in FRAMINGS:
        fr = plan_framing(face, GenerationOptions(framing=name, expand_ratio=0.3, min_resolution=768))
        rect = got["framings"][name]
        assert (rect["out_width"], rect["out_height"]) == (fr.out_w, fr.out_h)
        assert rect["width"] == pytest.approx(fr.out_w / fr.scale, abs=0.01)
        assert rect["height"] == pytest.approx(fr.out_h / fr.scale, abs=0.01)
        # The rectangle is inside the picture and its first pixel centre is the framing's origin.
        assert rect["x"] >= -0.01 and rect["y"] >= -0.01
        assert rect["x"] + rect["width"] <= got["width"] + 0.01
        assert rect["y"] + rect["height"] <= got["height"] + 0.01
        assert rect["x"] + 0.5 / fr.scale - 0.5 == pytest.approx(fr.origin_x, abs=0.01)
    crop, full, vertical = (got["framings"][n] for n in ("crop", "full", "vertical"))
    assert (full["x"], full["y"], full["width"], full["height"]) == (0, 0, 512, 512)
    x0, y0, x1, _ = got["face"]["box"]
    assert crop["x"] < x0 and crop["y"] < y0 and crop["x"] + crop["width"] > x1
    assert vertical["height"] / vertical["width"] == pytest.approx(16 / 9, rel=0.01)
    preview = got["preview"]
    assert preview["src"].startswith("data:image/jpeg;base64,")
    assert (preview["width"], preview["height"]) == (512, 512)


def test_analyze_turns_the_picture_upright_like_the_engine(api: TestClient, astronaut: np.ndarray) -> None:
    """A portrait stored sideways with an EXIF orientation: coordinates are of the upright picture."""
    im = Image.fromarray(astronaut[:, :400]).rotate(90, expand=True)  # stored turned left
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view"
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=92)
    got = api.post("/v1/analyze", files={"portrait": ("p", buf.getvalue())}).json()
    assert (got["width"], got["height"]) == (400, 512)
    assert (got["preview"]["width"], got["preview"]["height"]) == (400, 512)
    upright = analyze_face(np.ascontiguousarray(astronaut[:, :400])).box
    assert got["face"]["box"] == pytest.approx(list(upright), abs=4.0)  # JPEG, not bit-exact


def test_analyze_no_face_is_the_jobs_422(api: TestClient) -> None:
    r = api.post("/v1/analyze", files={"portrait": ("p.png", png_bytes(landscape()))})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "no_face_found" and "no face" in body["detail"] and body["hint"]


def test_analyze_refuses_bad_requests_with_the_api_error_shape(api: TestClient,
                                                                astronaut_path: Path) -> None:
    portrait = astronaut_path.read_bytes()
    cases = [
        ({"files": {"portrait": ("p", b"not a picture at all")}}, 415, "unsupported_media"),
        ({"files": {"portrait": ("p", portrait)}, "data": {"expand_ratio": "7"}}, 422, "invalid_input"),
        ({"files": {"portrait": ("p", portrait)}, "data": {"colour": "red"}}, 422, "invalid_input"),
        ({"files": {"expand_ratio": (None, "0.2")}}, 422, "invalid_input"),
        ({"files": {"portrait": ("p", portrait), "audio": ("a", b"RIFF")}}, 422, "invalid_input"),
        ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, 415,
         "unsupported_content_type"),
    ]
    for kwargs, status, code in cases:
        r = api.post("/v1/analyze", **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (kwargs.get("data"), r.text)
        body = r.json()
        assert body["error"] == code and body["detail"] and "hint" in body


def test_analyze_audio_reads_length_and_waveform(api: TestClient, short_speech: Path) -> None:
    with wave.open(str(short_speech)) as w:
        seconds = w.getnframes() / w.getframerate()
    got = api.post("/v1/analyze", files={"audio": ("a", short_speech.read_bytes())}).json()
    assert got["duration_s"] == pytest.approx(seconds, abs=0.002)
    assert len(got["peaks"]) == 240 and max(got["peaks"]) > 0.1 and min(got["peaks"]) >= 0


def test_analyze_refuses_audio_over_the_length_limit(tmp_path: Path, short_speech: Path) -> None:
    with make_client(tmp_path, limits=Limits(max_audio_seconds=0.5)) as client:
        r = client.post("/v1/analyze", files={"audio": ("a", short_speech.read_bytes())})
        assert r.status_code == 413 and r.json()["error"] == "limit_exceeded"


def test_peaks_envelope() -> None:
    x = np.zeros(1000, np.float32)
    x[100] = -0.8
    x[900] = 0.5
    p = peaks(x, 10)
    assert len(p) == 10 and p[1] == 0.8 and p[9] == 0.5 and p[5] == 0.0
    assert peaks(np.zeros(0, np.float32), 10) == []
    assert len(peaks(np.ones(3, np.float32), 10)) == 3


def test_analyzer_process_starts_on_demand_and_ends_with_the_app(
        tmp_path: Path, astronaut_path: Path) -> None:
    with make_client(tmp_path) as client:
        analyzer = client.app.state.web_analyzer  # type: ignore[attr-defined]
        assert analyzer.pid() is None  # an API-only server never pays for it
        assert client.post("/v1/analyze",
                           files={"portrait": ("p", astronaut_path.read_bytes())}).status_code == 200
        pid = analyzer.pid()
        assert pid is not None and alive(pid)
        # A helper that dies is replaced at the next request.
        os.kill(pid, signal.SIGKILL)
        assert wait_gone([pid], 5.0) == []
        r = client.post("/v1/analyze", files={"portrait": ("p", astronaut_path.read_bytes())})
        assert r.status_code == 200, r.text
        second = analyzer.pid()
        assert second is not None and second != pid
        assert list((tmp_path / "tmp").iterdir()) == []  # uploads are deleted after analysis
    assert wait_gone([second], 5.0) == []


def encode_speech(wav: Path, out: Path, fmt: str, codec: str, rate: int) -> Path:
    """Re-encode a WAV with PyAV (what a browser recording or a phone's MP3 would be)."""
    with wave.open(str(wav)) as w:
        src_rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(1, -1)
    with av.open(str(out), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt_name = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt_name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = src_rate
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out


@pytest.mark.parametrize("fmt,codec,rate", [("webm", "libopus", 48000), ("mp3", "libmp3lame", 44100)])
def test_soundtrack_of_a_recording_is_as_long_as_the_recording(
        api: TestClient, tmp_path: Path, astronaut_path: Path, short_speech: Path,
        fmt: str, codec: str, rate: int) -> None:
    audio = encode_speech(short_speech, tmp_path / f"speech.{fmt}", fmt, codec, rate)
    r = submit(api, astronaut_path.read_bytes(), audio.read_bytes(), **TINY)
    assert r.status_code == 202, r.text
    job = wait_for(api, r.json()["id"])
    assert job["status"] == "succeeded", job
    mp4 = api.get(job["links"]["video"]).content
    assert decode_mp4(mp4)["audio"]
    with av.open(io.BytesIO(mp4)) as c:
        a = c.streams.audio[0]
        track_s = float(a.duration * a.time_base)
    assert track_s == pytest.approx(job["result"]["duration"], abs=0.1)
