"""Live mode over HTTP and WebSocket: avatars, ``/v1/say``, the ``/live`` page, ``/v1/stream``.

The HTTP routes run in-process with the FastAPI TestClient (as in test_service_api.py).
The WebSocket tests talk to a real uvicorn server on a loopback port with a real client
(``websockets``): the TestClient hides what a browser sees when a socket is refused
(a close before the handshake is a bare HTTP 403 on the wire, not a 44xx close code),
and its ``receive`` cannot time out. Everything about the frames is measured from the
bytes received: headers parsed, JPEGs decoded, the mouth found in the decoded picture.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from websockets.exceptions import ConnectionClosed

from facetalk import GenerationOptions
from facetalk.errors import LimitExceeded
from facetalk.face import landmarks as L
from facetalk.face.analysis import analyze_face
from facetalk.media import tts
from facetalk.settings import Limits
from helpers.live import KEY, RATE, SIZE, LiveServer, app_client, create_avatar, decode, refusal, session
from helpers.service import stream_until_refused


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """No API keys: the HTTP routes."""
    with app_client(tmp_path_factory.mktemp("live-api")) as client:
        yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server with an API key: the WebSocket."""
    with LiveServer(tmp_path_factory.mktemp("live-ws"), api_keys=(KEY,)) as s:
        yield s


@pytest.fixture(scope="module")
def avatar(server: LiveServer, portrait_bytes: bytes) -> dict[str, Any]:
    with httpx.Client(base_url=server.base, timeout=120) as http:
        r = create_avatar(http.post, portrait_bytes, **{"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def speech_pcm() -> bytes:
    """About two seconds of English speech as 16 kHz mono PCM16."""
    from scipy.signal import resample_poly

    if not tts.available():
        pytest.fail("espeak-ng is required: apt-get install espeak-ng (make test installs it)")
    s = tts.speak("Hello, my friend. Nice to see you.", wpm=175)
    x = resample_poly(s.samples, RATE, s.rate)
    return bytes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def noise_png() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (320, 320, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# -- avatars -------------------------------------------------------------------------------
def test_create_get_and_delete_an_avatar(api: TestClient, portrait_bytes: bytes) -> None:
    r = create_avatar(api.post, portrait_bytes)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert len(doc["id"]) == 16 and doc["id"].isalnum()
    assert min(doc["width"], doc["height"]) == SIZE and doc["fps"] == 25
    assert doc["portrait_sha256"] == hashlib.sha256(portrait_bytes).hexdigest()
    assert doc["options"]["min_resolution"] == SIZE
    assert doc["stream_url"] == f"/v1/stream?avatar={doc['id']}"
    # Kept: GET answers the same document, without analysing the portrait again.
    got = api.get(f"/v1/avatars/{doc['id']}")
    assert got.status_code == 200 and got.json() == doc
    folder = api.app.state.settings.storage / "avatars"
    assert (folder / f"{doc['id']}.portrait").read_bytes() == portrait_bytes
    # Deleted: gone from memory and disk.
    assert api.delete(f"/v1/avatars/{doc['id']}").status_code == 204
    gone = api.get(f"/v1/avatars/{doc['id']}")
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert api.delete(f"/v1/avatars/{doc['id']}").status_code == 404
    assert not list(folder.glob(f"{doc['id']}*"))


def test_unknown_or_malformed_avatar_ids_are_404(api: TestClient) -> None:
    for avatar_id in ("0123456789abcdef", "..%2F..%2Fsecret", "a" * 65, "x.json"):
        r = api.get(f"/v1/avatars/{avatar_id}")
        assert r.status_code == 404, (avatar_id, r.text)
    assert api.delete("/v1/avatars/0123456789abcdef").status_code == 404


def test_picture_without_a_face_is_refused_clearly(api: TestClient) -> None:
    r = create_avatar(api.post, noise_png())
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "no_face_found" and err["detail"] and "frontal" in err["hint"]
    assert not list((api.app.state.settings.storage / "avatars").glob("*.portrait"))


def test_bad_avatar_requests_are_4xx(api: TestClient, portrait_bytes: bytes) -> None:
    not_image = api.post("/v1/avatars", files={"portrait": ("a.png", b"not an image")})
    assert 400 <= not_image.status_code < 500, not_image.text
    assert api.post("/v1/avatars", data={"fps": "25"}).status_code == 422  # no portrait
    assert api.post("/v1/avatars", content=b"{}",
                    headers={"content-type": "application/json"}).status_code == 422
    r = api.post("/v1/avatars", files={"portrait": ("p.png", portrait_bytes)},
                 data={"duration": "5"})  # a per-render option: no sense for an avatar
    assert r.status_code == 422 and "duration" in r.json()["detail"]
    r = api.post("/v1/avatars", files={"portrait": ("p.png", portrait_bytes)},
                 data={"options": "[1, 2]"})
    assert r.status_code == 422


def test_avatar_survives_a_restart_on_the_same_storage(tmp_path: Path, portrait_bytes: bytes) -> None:
    with app_client(tmp_path) as first:
        doc = create_avatar(first.post, portrait_bytes).json()
    with app_client(tmp_path) as second:
        r = second.get(f"/v1/avatars/{doc['id']}")
        assert r.status_code == 200, r.text
        again = r.json()
        assert {k: again[k] for k in ("id", "width", "height", "fps", "portrait_sha256", "options")} \
            == {k: doc[k] for k in ("id", "width", "height", "fps", "portrait_sha256", "options")}
        with second.websocket_connect(f"/v1/stream?avatar={doc['id']}") as ws:
            ready = ws.receive_json()
            assert ready["type"] == "ready" and (ready["width"], ready["height"]) == \
                (doc["width"], doc["height"])
            ws.send_json({"type": "stop"})


# -- /v1/say, /live and the API key ----------------------------------------------------------
def test_say_returns_a_wav_of_speech(api: TestClient) -> None:
    r = api.post("/v1/say", json={"text": "Good morning, how are you today?"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(r.content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    assert len(pcm) / RATE > 0.5
    assert np.sqrt(np.mean(pcm**2)) > 0.01  # speech, not silence


@pytest.mark.parametrize("body", [b"not json", b'{"text": 5}', b'["hello"]', b'{"text": "   "}',
                                  b'{"words": "hello"}', json.dumps({"text": "x" * 1001}).encode()])
def test_say_refuses_bad_requests(api: TestClient, body: bytes) -> None:
    r = api.post("/v1/say", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"] and r.json()["detail"]


def test_live_page_needs_no_key_but_the_api_does(server: LiveServer, portrait_bytes: bytes) -> None:
    with httpx.Client(base_url=server.base, timeout=60) as http:
        page = http.get("/live")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<canvas" in page.text and '<script src="/web/live.js"' in page.text
        script = http.get("/web/live.js")  # the page's files need no key either
        assert script.status_code == 200 and "/v1/stream" in script.text
        assert create_avatar(http.post, portrait_bytes).status_code == 401
        assert create_avatar(http.post, portrait_bytes, **{"X-API-Key": "wrong-key-0000"}).status_code == 401
        assert http.get("/v1/avatars/0123456789abcdef").status_code == 401
        assert http.delete("/v1/avatars/0123456789abcdef").status_code == 401
        assert http.post("/v1/say", json={"text": "hi"}).status_code == 401
        assert http.post("/v1/say", json={"text": "hi"},
                         headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


# -- WS /v1/stream -------------------------------------------------------------------------
def test_stream_refusals_have_close_codes(server: LiveServer, avatar: dict[str, Any]) -> None:
    assert refusal(server.ws_url("0123456789abcdef"))[0] == 4404
    assert refusal(server.ws_url(""))[0] == 4404
    code, reason = refusal(server.ws_url(avatar["id"], key=None))
    assert code == 4401 and "api_key" in reason
    assert refusal(server.ws_url(avatar["id"], key="wrong-key-0000"))[0] == 4401
    assert refusal(server.ws_url(avatar["id"], key=None), **{"X-API-Key": "wrong-key-0000"})[0] == 4401
    # The right key, in the query (browsers) or as a header (other clients), works.
    with session(server.ws_url(avatar["id"])) as s:
        assert s.ready["type"] == "ready"
    with session(server.ws_url(avatar["id"], key=None), **{"X-API-Key": KEY}) as s:
        assert s.ready["type"] == "ready"


def test_speech_streams_to_timestamped_jpeg_frames_with_a_moving_mouth(
        server: LiveServer, avatar: dict[str, Any], speech_pcm: bytes) -> None:
    with session(server.ws_url(avatar["id"])) as s:
        ready = s.ready
        assert ready["type"] == "ready" and ready["format"] == "jpeg"
        assert (ready["width"], ready["height"]) == (avatar["width"], avatar["height"])
        assert ready["fps"] == 25 and ready["sample_rate"] == RATE
        assert 0 < ready["lookahead_ms"] <= 200
        fps = ready["fps"]
        lengths = s.send_paced(speech_pcm)
        n_speech = len(lengths)
        lengths += s.send_paced(bytes(2 * int(1.6 * RATE)))  # then silence
        s.wait(lambda: len(s.acks) == len(lengths), what="an audio echo per chunk")
        end_t = s.acks[-1]["start_s"] + lengths[-1]
        s.ws.send(json.dumps({"type": "flush"}))
        s.wait(lambda: bool(s.frames) and s.frames[-1][1] >= end_t - 1 / fps, what="the last frames")
        s.ws.send(json.dumps({"type": "stop"}))
        assert s.ended.wait(20) and s.ws.close_code == 1000
    assert not s.errors, s.errors

    # Every chunk is echoed in order with its place on the timeline, right after the one
    # before (later if the server added idle silence between two late chunks).
    assert [a["seq"] for a in s.acks] == list(range(len(lengths)))
    starts = np.array([a["start_s"] for a in s.acks])
    assert starts[0] >= 0 and np.all(np.diff(starts) >= np.array(lengths[:-1]) - 1e-3)
    # Frames: indices increase, each stamped index / fps, JPEGs of the avatar's size.
    indices = np.array([f[0] for f in s.frames])
    times = np.array([f[1] for f in s.frames])
    assert np.all(np.diff(indices) > 0)
    assert np.allclose(times, indices / fps, atol=1e-5)
    pictures = {i: decode(jpeg) for i, _, jpeg in s.frames}
    assert {p.shape for p in pictures.values()} == {(avatar["height"], avatar["width"], 3)}

    def inside(t: float, chunks: range) -> bool:
        return any(starts[k] <= t < starts[k] + lengths[k] for k in chunks)

    speech, pause = range(n_speech), range(n_speech, len(lengths))
    talking = [i for i, t, _ in s.frames if inside(t, speech)]
    resting = [i for i, t, _ in s.frames if inside(t, pause)
               and t >= starts[n_speech] + 0.4]  # the mouth has had time to close
    expected = sum(lengths[:n_speech]) * fps
    assert len(talking) >= 0.9 * expected, (len(talking), expected)
    assert len(resting) >= 15

    # The mouth, found in a decoded frame, moves while the voice speaks and rests after.
    face = analyze_face(pictures[resting[-1]])
    lips = face.landmarks[list(L.MOUTH_OUTER_UP + L.MOUTH_OUTER_LO), :2]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    pad = 0.3 * (x1 - x0)
    box = (slice(int(y0 - pad), int(y1 + pad)), slice(int(x0 - pad / 2), int(x1 + pad / 2)))

    def motion(group: list[int]) -> float:
        """Mean absolute change of the mouth region between consecutive frames."""
        pairs = [(a, b) for a, b in itertools.pairwise(group) if b == a + 1]
        return float(np.mean([np.abs(pictures[b][box].astype(np.float32)
                                     - pictures[a][box].astype(np.float32)).mean()
                              for a, b in pairs]))

    spoken, still = motion(talking), motion(resting)
    print(f"mouth motion: speech {spoken:.2f}, silence {still:.2f}")
    assert spoken > 1.0 and spoken > 3 * still, (spoken, still)


def test_frames_keep_coming_without_audio(server: LiveServer, avatar: dict[str, Any]) -> None:
    with session(server.ws_url(avatar["id"])) as s:
        t0 = time.monotonic()
        s.wait(lambda: len(s.frames) >= 25 and len(s.stats) >= 1, timeout=45, what="idle frames")
        wall = time.monotonic() - t0
    indices = [f[0] for f in s.frames]
    assert indices[:25] == list(range(25)) or s.stats[-1]["dropped"] > 0
    # The idle timeline follows the clock: 25 frames (1 s) took about a second, not less.
    assert wall >= 0.8, wall
    assert s.stats[0]["frames"] > 0 and "dropped" in s.stats[0]
    assert not s.acks  # nothing was sent


def test_say_message_speaks_through_the_avatar(server: LiveServer, avatar: dict[str, Any]) -> None:
    with session(server.ws_url(avatar["id"])) as s:
        s.ws.send(json.dumps({"type": "say", "text": "Nice to meet you."}))
        # Messages are handled in order: the error for the empty text marks the end of the first.
        s.ws.send(json.dumps({"type": "say", "text": ""}))
        s.wait(lambda: bool(s.errors), timeout=45, what="the sentence, then an error for empty text")
        assert s.errors[0]["type"] == "error" and s.errors[0]["detail"]
        seconds = sum(len(pcm) for _, pcm in s.spoken) / 2 / RATE
        assert seconds > 0.5
        starts = np.array([t for t, _ in s.spoken])
        assert np.allclose(np.diff(starts), 0.04, atol=1e-4)  # back to back on the timeline
        s.wait(lambda: bool(s.frames) and s.frames[-1][1] >= starts[-1], what="frames of the speech")
        assert sum(starts[0] <= t <= starts[-1] for _, t, _ in s.frames) >= 0.9 * seconds * 25 - 2
        s.ws.send(json.dumps({"type": "dance"}))
        assert s.ended.wait(20) and s.ws.close_code == 1003


def test_stream_bench_measures_a_running_server(server: LiveServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from facetalk.cli.stream_bench import stream_bench

    out = tmp_path / "bench.json"
    r = CliRunner().invoke(stream_bench, ["--url", server.base, "--api-key", KEY, "--seconds", "2",
                                          "--size", str(SIZE), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "latency p50" in r.output and "frames/s" in r.output
    figures = json.loads(out.read_text())
    assert figures["sessions"] == figures["served"] == 1 and figures["refused"] == 0
    # 2 s of audio is 50 frames; 51 when a late chunk made the server add silence inside.
    assert figures["frames"] + figures["dropped"] == figures["expected"] in (50, 51)
    assert figures["frames"] >= 45 and figures["fps"] > 5
    # A frame needs its audio plus the look-ahead: its latency cannot be below ~40 ms.
    assert 30 < figures["latency_p50_ms"] <= figures["latency_p95_ms"] < 5000


def test_api_keys_in_logged_urls_are_blanked() -> None:
    """uvicorn logs a WebSocket's path with its query, where browsers must put the key."""
    import io
    import logging

    from facetalk.service.logs import JsonFormatter, RedactKeys

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactKeys())
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning('%s - "WebSocket %s" [accepted]', "127.0.0.1:5555",
                       "/v1/stream?avatar=ab12&api_key=s3cr3t-KEY&x=1")
        logger.warning("GET /live?API_KEY=other-secret HTTP/1.1")
        # Percent-encoded names authenticate too (the server decodes them): still blanked.
        logger.warning('"WebSocket %s"', "/v1/stream?avatar=ab12&api%5Fkey=encoded-secret")
        logger.warning("GET /v1/jobs?%61pi%5Fkey=more-encoded-secret&limit=2 HTTP/1.1")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "s3cr3t-KEY" not in text and "other-secret" not in text, text
    assert "encoded-secret" not in text and "limit=2" in text, text
    assert "avatar=ab12" in text and "api_key=***" in text and "&x=1" in text


def test_live_page_has_the_main_pages_csp_and_no_inline_code(api: TestClient) -> None:
    main, live = api.get("/"), api.get("/live")
    assert live.status_code == 200 and live.headers["content-type"].startswith("text/html")
    csp = live.headers["content-security-policy"]
    assert csp == main.headers["content-security-policy"] and "unsafe-inline" not in csp
    html = live.text
    assert "<script>" not in html and "<style" not in html and "style=" not in html
    for name in re.findall(r'(?:src|href)="/web/([\w.-]+)"', html) + ["live-tap.js"]:
        r = api.get(f"/web/{name}")
        assert r.status_code == 200 and r.content, name
    assert set(re.findall(r'(?:src|href)="/web/([\w.-]+)"', html)) == {"live.js", "live.css"}
    assert '"/web/live-tap.js"' in api.get("/web/live.js").text  # the worklet is a file, not a blob


def test_oversized_avatar_upload_is_cut_off_while_it_streams(tmp_path: Path) -> None:
    """/v1/avatars shares the job API's streaming parser: refused near the size limit."""
    with LiveServer(tmp_path, limits=Limits(max_input_bytes=1_000_000)) as s:
        response, sent = stream_until_refused(s.port, "/v1/avatars", "portrait", 256 << 20)
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert sent < 64 << 20, f"{sent / 1e6:.0f} MB were accepted before the refusal"
        assert not [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()]


def test_say_refuses_an_oversized_body(api: TestClient) -> None:
    r = api.post("/v1/say", content=b'{"text": "' + b"a" * 200_000 + b'"}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "limit_exceeded"


# -- capacity: the session cap, overload counted honestly, bounded speech synthesis ---------
def test_sessions_beyond_the_cap_are_refused_with_a_reason(tmp_path: Path, portrait_bytes: bytes) -> None:
    with LiveServer(tmp_path, live_sessions=2) as srv:
        with httpx.Client(base_url=srv.base, timeout=120) as http:
            avatar_id = create_avatar(http.post, portrait_bytes).json()["id"]
        url = srv.ws_url(avatar_id, key=None)
        with session(url) as first, session(url) as second:
            assert first.ready["type"] == second.ready["type"] == "ready"
            code, reason = refusal(url)
            print(f"\nthird session: close {code} {reason!r}")
            assert code == 1013 and "all 2 live sessions are in use" in reason
            # The two admitted sessions go on streaming.
            first.wait(lambda: len(first.frames) >= 5, what="frames of the first session")
        # Once they leave, their places are free again.
        with session(url) as third:
            assert third.ready["type"] == "ready"


def test_an_overloaded_stream_counts_its_drops(tmp_path: Path, portrait_bytes: bytes,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawing slower than 25 frames/s (one render thread, 70 ms a frame): the server
    skips frames to stay live and says so, and stream-bench reports them on both sides."""
    from click.testing import CliRunner

    from facetalk.cli.stream_bench import stream_bench
    from facetalk.render.renderer import Renderer
    from facetalk.service.api import live

    frame = Renderer.frame

    def slow_frame(self: Renderer, *args: Any, **kwargs: Any) -> np.ndarray:
        time.sleep(0.07)
        return frame(self, *args, **kwargs)

    monkeypatch.setattr(Renderer, "frame", slow_frame)
    monkeypatch.setattr(live, "LIVE_RENDER_SLOTS", 1)
    out = tmp_path / "bench.json"
    with LiveServer(tmp_path / "data", live_sessions=2) as srv:
        r = CliRunner().invoke(stream_bench, ["--url", srv.base, "--seconds", "3", "--sessions", "3",
                                              "--size", str(SIZE), "--json", str(out)])
    assert r.exit_code == 0, r.output
    print("\n" + r.output)
    figures = json.loads(out.read_text())
    assert figures["served"] == 2 and figures["refused"] == 1 and "1013" in figures["refusals"][0]
    # Two sessions of 25 frames/s need 3.5 s of drawing a second: most frames are skipped,
    # and every speech frame the client lacks was counted by the server as dropped.
    assert figures["dropped"] > 0.3 * figures["expected"], figures
    assert 0 < figures["dropped"] <= figures["server_dropped"], figures
    assert figures["frames"] + figures["dropped"] == figures["expected"]


def test_concurrent_speech_synthesis_is_bounded(tmp_path: Path) -> None:
    """60 concurrent /v1/say calls: a few are spoken, the rest get 429 with Retry-After
    at once, and a status request meanwhile stays fast (it used to wait seconds)."""
    with LiveServer(tmp_path) as srv, httpx.Client(base_url=srv.base, timeout=60) as http:
        def say(_: int) -> httpx.Response:
            return http.post("/v1/say", json={"text": "Hello there, this is a longer sentence. " * 5})

        def status() -> float:
            t0 = time.monotonic()
            assert http.get("/v1/jobs").status_code == 200
            return time.monotonic() - t0

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(64) as pool:
            calls = [pool.submit(say, i) for i in range(60)]
            time.sleep(0.3)
            waits = [status() for _ in range(5)]
            answers = [c.result() for c in calls]
    codes = [a.status_code for a in answers]
    print(f"\nsay: {codes.count(200)} spoken, {codes.count(429)} refused; status requests took "
          f"{[round(w * 1000) for w in waits]} ms")
    assert set(codes) <= {200, 429} and codes.count(200) >= 2 and codes.count(429) >= 30, codes
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.headers["Retry-After"] == "1" and busy.json()["error"] == "busy"
    assert max(waits) < 1.0, waits


def test_say_with_a_lone_surrogate_is_refused(api: TestClient) -> None:
    r = api.post("/v1/say", content=b'{"text": "hello \\ud800 there"}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and "surrogate" in r.json()["detail"], r.text


def test_say_message_with_a_lone_surrogate_gets_a_close_frame(server: LiveServer,
                                                             avatar: dict[str, Any]) -> None:
    from websockets.sync.client import connect

    with connect(server.ws_url(avatar["id"]), open_timeout=30) as ws:
        ws.recv(timeout=30)  # ready
        ws.send('{"type": "say", "text": "hi \\udc80"}')
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None, "closed without a close frame"
    assert closed.value.rcvd.code == 1007 and "surrogate" in closed.value.rcvd.reason


# -- avatars: retention, count and size caps ------------------------------------------------
def test_avatars_expire_and_are_capped(tmp_path: Path, portrait_bytes: bytes) -> None:
    with app_client(tmp_path, avatar_retention=3600.0, max_avatars=2) as client:
        ids = [create_avatar(client.post, portrait_bytes).json()["id"] for _ in range(3)]
        folder = tmp_path / "avatars"
        # The count cap: the least recently used (the first) made room for the third.
        assert sorted(p.stem for p in folder.glob("*.portrait")) == sorted(ids[1:])
        assert client.get(f"/v1/avatars/{ids[0]}").status_code == 404
        # Retention: an avatar unused for longer than it is gone, files and all.
        old = time.time() - 3601
        os.utime(folder / f"{ids[1]}.portrait", (old, old))
        assert client.get(f"/v1/avatars/{ids[1]}").status_code == 404
        assert not list(folder.glob(f"{ids[1]}.*"))
        # Using an avatar restarts its retention.
        assert client.get(f"/v1/avatars/{ids[2]}").status_code == 200
        assert (folder / f"{ids[2]}.portrait").stat().st_mtime > time.time() - 60


def test_avatar_storage_cap(tmp_path: Path, portrait_bytes: bytes) -> None:
    from facetalk.service.api.live import AvatarStore

    room = int(2.5 * len(portrait_bytes))
    store = AvatarStore(tmp_path / "avatars", max_bytes=room)
    first = store.add(portrait_bytes, GenerationOptions(min_resolution=SIZE))
    time.sleep(0.05)
    store.add(portrait_bytes, GenerationOptions(min_resolution=SIZE))
    time.sleep(0.05)
    store.add(portrait_bytes, GenerationOptions(min_resolution=SIZE))  # a third does not fit
    on_disk = list((tmp_path / "avatars").glob("*.portrait"))
    assert len(on_disk) == 2 and first.id not in {p.stem for p in on_disk}
    assert sum(p.stat().st_size for p in on_disk) <= room
    with pytest.raises(LimitExceeded):
        AvatarStore(tmp_path / "small", max_bytes=len(portrait_bytes) - 1).add(
            portrait_bytes, GenerationOptions(min_resolution=SIZE))
    # Expired avatars are deleted when the store opens (a restart).
    old = time.time() - 7200
    for p in on_disk:
        os.utime(p, (old, old))
    AvatarStore(tmp_path / "avatars", retention=3600.0)
    assert not list((tmp_path / "avatars").iterdir())


def test_render_gate_serves_speaking_sessions_first_and_survives_cancellation() -> None:
    import asyncio

    from facetalk.service.api.live import RenderGate

    async def main() -> list[str]:
        gate, order = RenderGate(1), []

        async def draw(name: str, urgent: bool) -> None:
            async with gate.slot(urgent):
                order.append(name)
                await asyncio.sleep(0.01)

        async with gate.slot():  # the one slot is taken while the others queue
            tasks = [asyncio.create_task(draw(name, urgent)) for name, urgent in
                     (("idle 1", False), ("talking 1", True), ("idle 2", False), ("talking 2", True))]
            await asyncio.sleep(0.01)
            tasks[2].cancel()  # a session that leaves while it waits
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert gate.borrowed_tokens == 0
        return order

    assert asyncio.run(main()) == ["talking 1", "talking 2", "idle 1"]
