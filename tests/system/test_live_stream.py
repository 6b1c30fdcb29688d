"""Live mode acceptance: real speech at real-time pace, abrupt disconnects, garbage.

Against a real uvicorn server on a loopback port (test_live_api.py's LiveServer and
client), everything is measured from the outside: frames are timed when they arrive
and decoded, the received frames and the audio sent are put back together into an MP4
that facetalk.measure.evaluate re-tracks (as ``facetalk eval`` does) to measure lip sync.
Clients that misbehave use a plain socket with websockets' sans-I/O protocol, so they
can send invalid frames or vanish without a close frame. Last, the /live page in
Chromium (as in test_live_browser.py) when a second portrait replaces the first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from facetalk.measure.evaluate import decode_audio, evaluate_track, track_video
from facetalk.media import tts
from facetalk.media.audio import iter_soundtrack, load_audio
from facetalk.media.video import Mp4Writer, ai_metadata
from facetalk.service.api.live import RenderGate
from facetalk.settings import Limits
from helpers.browser import CHROMIUM, browser, choose, running
from helpers.live import CHUNK, KEY, RATE, LiveServer, Session, create_avatar, decode, session

#: About five seconds of English with a clear pause between the two phrases.
TEXT = "Please bring me a map of the moon. ... Maybe by Monday, if you can."
#: Bound on the time from sending audio to receiving its frame: the target, 150 ms.
#: ``make test`` runs the tests marked ``realtime`` alone (not beside the other
#: environment's suite, where two copies on two cores once pushed p95 to 274 ms), so the
#: measurement means what it says; alone this test measures p95 53-60 ms here.
LATENCY_P95_MS = 150.0

pytestmark = pytest.mark.realtime


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server with an API key, for this module alone (its state is inspected)."""
    with LiveServer(tmp_path_factory.mktemp("live-stream"), api_keys=(KEY,)) as s:
        yield s


@pytest.fixture(scope="module")
def avatar_id(live: LiveServer, astronaut_path: Path) -> str:
    with httpx.Client(base_url=live.base, timeout=120) as http:
        r = create_avatar(http.post, astronaut_path.read_bytes(), **{"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
def speech() -> bytes:
    """:data:`TEXT` spoken by espeak-ng, as 16 kHz mono PCM16."""
    from scipy.signal import resample_poly

    if not tts.available():
        pytest.fail("espeak-ng is required: apt-get install espeak-ng (make test installs it)")
    s = tts.speak(TEXT, wpm=150)
    x = resample_poly(s.samples, RATE, s.rate)
    return bytes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """Records logged by the live router (sessions ending) and uvicorn (app exceptions)."""
    handler = _Records()
    live_log, uvicorn_log = logging.getLogger("facetalk.service.live"), logging.getLogger("uvicorn.error")
    level = live_log.level
    live_log.setLevel(logging.INFO)
    for logger in (live_log, uvicorn_log):
        logger.addHandler(handler)
    yield handler.records
    for logger in (live_log, uvicorn_log):
        logger.removeHandler(handler)
    live_log.setLevel(level)


# -- helpers -------------------------------------------------------------------------------
def render_slots(live: LiveServer) -> RenderGate:
    """The live routes' render slots, shared by all sessions (kept in the app's state)."""
    slots = live.server.config.app.state.live_slots
    assert isinstance(slots, RenderGate)
    return slots


def wait_idle(live: LiveServer, timeout: float = 10.0) -> None:
    """Wait until the server runs no ASGI task and holds no WebSocket connection."""
    state = live.server.server_state
    end = time.monotonic() + timeout
    while state.tasks or any("WebSocket" in type(c).__name__ for c in state.connections):
        assert time.monotonic() < end, (f"{len(state.tasks)} ASGI task(s) and "
                                        f"{len(state.connections)} connection(s) left")
        time.sleep(0.02)


def ended_sessions(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.getMessage() == "live session ended"]


def app_errors(records: list[logging.LogRecord]) -> list[str]:
    """Exceptions that escaped the app (uvicorn's own protocol errors are not counted)."""
    return [r.getMessage() for r in records if r.levelno >= logging.ERROR
            and (r.name.startswith("facetalk") or "Exception in ASGI application" in r.getMessage())]


def chunk_index(starts: np.ndarray, lengths: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each time on the timeline, the audio chunk that holds it (-1: server silence)."""
    k = np.searchsorted(starts, times + 1e-6, side="right") - 1
    inside = (k >= 0) & (times < starts[k.clip(0)] + lengths[k.clip(0)] - 1e-6)
    return np.where(inside, k, -1)


def assert_covered(times: np.ndarray, begin: float, end: float, fps: int) -> None:
    """Frames cover [begin, end] of the timeline, never more than two frames apart."""
    t = np.sort(times[(times >= begin - 2 / fps) & (times <= end + 2 / fps)])
    assert t.size, "no frames in the span"
    assert t[0] <= begin + 2 / fps and t[-1] >= end - 2 / fps, (t[0], t[-1], begin, end)
    holes = np.diff(t)
    worst = float(holes.max()) if holes.size else 0.0
    assert worst <= 2 / fps + 1e-6, f"a hole of {worst * fps:.0f} frames at {t[int(np.argmax(holes))]:.2f} s"


def stream_speech(s: Session, pcm: bytes) -> tuple[np.ndarray, np.ndarray, float]:
    """Send ``pcm`` at real-time pace and flush; wait for every echo and the last frames.

    Returns where each chunk landed on the timeline, its length, and the end of the audio.
    """
    fps = s.ready["fps"]
    lengths = s.send_paced(pcm)
    s.ws.send(json.dumps({"type": "flush"}))
    s.wait(lambda: len(s.acks) == len(lengths), what="an audio echo per chunk")
    assert [a["seq"] for a in s.acks] == list(range(len(lengths)))
    starts = np.array([a["start_s"] for a in s.acks])
    end = float(starts[-1] + lengths[-1])
    s.wait(lambda: bool(s.frames) and s.frames[-1][1] >= end - 1 / fps, what="the last frames")
    return starts, np.array(lengths), end


def reassemble(path: Path, s: Session, pcm: bytes, starts: np.ndarray, end: float) -> Path:
    """The received frames and the audio sent, each at its place on the timeline, as an MP4."""
    fps = s.ready["fps"]
    n = int(end * fps)
    pictures = {i: jpeg for i, _, jpeg in s.frames if i < n}
    sound = np.zeros(int(round(n / fps * RATE)), np.float32)
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    for k, start in enumerate(starts):
        at = int(round(start * RATE))
        part = samples[k * CHUNK:(k + 1) * CHUNK][:max(0, len(sound) - at)]
        sound[at:at + len(part)] = part
    wav = path.with_suffix(".wav")
    tts.write_wav(str(wav), sound, RATE)
    audio = load_audio(wav)
    writer = Mp4Writer(path, s.ready["width"], s.ready["height"], fps,
                       iter_soundtrack(wav, audio, Limits(), n / fps), audio.output_rate,
                       audio.output_layout, ai_metadata("live-reassembled"))
    last = decode(pictures[min(pictures)])
    for i in range(n):  # a missing frame would show the one before (coverage is checked apart)
        last = decode(pictures[i]) if i in pictures else last
        writer.write(last)
    return writer.finish()


class RawClient:
    """/v1/stream on a plain socket, with websockets' sans-I/O protocol: it sends exactly
    what it is told (invalid frames too) and can vanish without a close frame."""

    def __init__(self, url: str) -> None:
        uri = parse_uri(url)
        self.proto = ClientProtocol(uri, max_size=None)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=30)
        self.proto.send_request(self.proto.connect())
        self._flush()
        self._pending: deque[Frame] = deque()
        ready = self.receive()
        assert ready.opcode is Opcode.TEXT and json.loads(ready.data)["type"] == "ready", ready

    def _flush(self) -> None:
        data = b"".join(self.proto.data_to_send())
        if data:
            with contextlib.suppress(OSError):  # the server may have gone already
                self.sock.sendall(data)

    def receive(self) -> Frame:
        """The next text, binary or close frame from the server."""
        while not self._pending:
            data = self.sock.recv(1 << 16)
            if data:
                self.proto.receive_data(data)
            else:
                self.proto.receive_eof()
            for event in self.proto.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CLOSE):
                    self._pending.append(event)
            self._flush()
            if not data and not self._pending:
                raise ConnectionError("the server closed the connection without a close frame")
        return self._pending.popleft()

    def send_binary(self, data: bytes) -> None:
        self.proto.send_binary(data)
        self._flush()

    def send_text(self, data: bytes) -> None:
        """A text frame of ``data`` as is (even if it is not UTF-8)."""
        self.proto.send_text(data)
        self._flush()

    def closed_with(self) -> tuple[int, str]:
        """Read until the server's close frame; its code and reason."""
        while (frame := self.receive()).opcode is not Opcode.CLOSE:
            pass
        close = Close.parse(frame.data)
        self.sock.close()
        return close.code, close.reason

    def vanish(self, reset: bool = False) -> None:
        """Close the TCP socket without a close frame (``reset``: with an RST, not a FIN)."""
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


# -- real-time speech ----------------------------------------------------------------------
def test_real_time_speech_gets_prompt_frames_in_sync_with_it(
        live: LiveServer, avatar_id: str, speech: bytes, tmp_path: Path) -> None:
    seconds = len(speech) / 2 / RATE
    assert 4.0 <= seconds <= 6.5, seconds
    with session(live.ws_url(avatar_id)) as s:
        fps = s.ready["fps"]
        starts, lengths, end = stream_speech(s, speech)
        s.ws.send(json.dumps({"type": "stop"}))
        assert s.ended.wait(20) and s.ws.close_code == 1000
    assert not s.errors, s.errors
    times = np.array([t for _, t, _ in s.frames])
    indices = np.array([i for i, _, _ in s.frames])
    assert np.all(np.diff(indices) > 0) and np.allclose(times, indices / fps, atol=1e-5)
    # Frames cover the audio's whole span on the timeline.
    assert_covered(times, float(starts[0]), end, fps)
    assert starts[0] < 0.5 and end - starts[0] >= seconds - 1e-3

    # Latency: from sending a chunk to receiving the frame whose time lies in it.
    k = chunk_index(starts, lengths, times)
    latency = (np.array(s.arrived)[k >= 0] - np.array(s.sent)[k[k >= 0]]) * 1000
    assert latency.size >= 0.95 * seconds * fps
    p50, p95, worst = np.percentile(latency, 50), np.percentile(latency, 95), latency.max()

    # Lip sync of the frames as received, measured from the outside.
    video = reassemble(tmp_path / "received.mp4", s, speech, starts, end)
    track, _ = track_video(video)
    ev = evaluate_track(track, decode_audio(video))
    print(f"\nlive {seconds:.2f} s of speech, {len(s.frames)} frames: latency p50 {p50:.0f} ms, "
          f"p95 {p95:.0f} ms, max {worst:.0f} ms; dropped {s.stats[-1]['dropped'] if s.stats else 0}; "
          f"AV offset {ev.av_offset_ms:+.1f} ms, r {ev.pearson_r:.2f} (best lag {ev.best_lag_r:.2f}), "
          f"face tracked {ev.face_found_rate:.0%}")
    assert p95 <= LATENCY_P95_MS, f"latency p95 {p95:.0f} ms (p50 {p50:.0f}, max {worst:.0f})"
    assert abs(ev.av_offset_ms) <= 40, ev
    assert ev.pearson_r >= 0.5, ev


# -- clients that vanish -------------------------------------------------------------------
def test_client_that_vanishes_mid_speech_frees_its_session(
        live: LiveServer, avatar_id: str, speech: bytes,
        server_log: list[logging.LogRecord]) -> None:
    slots = render_slots(live)
    wait_idle(live)
    # One client streams 1.5 s of speech at once and vanishes as its first frames arrive,
    # leaving the server with a backlog to render; another asks the server to speak a
    # sentence and vanishes (with a TCP reset) while the server is speaking it.
    streamer = RawClient(live.ws_url(avatar_id))
    for i in range(0, 2 * int(1.5 * RATE), 2 * CHUNK):
        streamer.send_binary(speech[i:i + 2 * CHUNK])
    while not (streamer.receive().data[:1] == b"F"):
        pass
    streamer.vanish()
    speaker = RawClient(live.ws_url(avatar_id))
    speaker.send_text(json.dumps({"type": "say", "text": TEXT}).encode())
    got: set[bytes] = set()
    while not {b"A", b"F"} <= got:  # the server speaks (audio echoes) and animates
        got.add(bytes(speaker.receive().data[:1]))
    speaker.vanish(reset=True)

    # The server noticed: both sessions ended, no task or connection is left, no render
    # slot is held, and nothing failed.
    t0 = time.monotonic()
    wait_idle(live)
    ended = ended_sessions(server_log)
    print(f"\nvanished sessions ended {time.monotonic() - t0:.2f} s after the last left, "
          f"having sent {[getattr(r, 'frames', None) for r in ended]} frames")
    assert len(ended) == 2, [r.getMessage() for r in server_log]
    assert slots.borrowed_tokens == 0, slots.statistics()
    assert not app_errors(server_log), app_errors(server_log)

    # As many new sessions as there are render slots start and stream at once.
    def stream_one(pcm: bytes) -> tuple[Session, float, float]:
        with session(live.ws_url(avatar_id)) as s:
            starts, _, end = stream_speech(s, pcm)
            s.ws.send(json.dumps({"type": "stop"}))
            assert s.ended.wait(20) and s.ws.close_code == 1000
        return s, float(starts[0]), end

    n = int(slots.total_tokens)
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(stream_one, [speech[:2 * RATE]] * n))
    for s, begin, end in results:
        assert not s.errors, s.errors
        assert_covered(np.array([t for _, t, _ in s.frames]), begin, end, s.ready["fps"])
    wait_idle(live)
    assert len(ended_sessions(server_log)) == 2 + n
    assert slots.borrowed_tokens == 0 and not app_errors(server_log)


def test_drawing_stops_within_a_second_of_the_client_leaving(
        live: LiveServer, avatar_id: str, speech: bytes, server_log: list[logging.LogRecord],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client sends 10 s of speech at once (far more than a second of drawing) and
    leaves at its first frame: no frame is drawn for it a second later (the server used
    to draw the whole backlog, seconds of CPU for nobody)."""
    from facetalk.render.renderer import Renderer

    drawn: list[float] = []
    frame = Renderer.frame

    def counted(self: Renderer, *args: Any, **kwargs: Any) -> np.ndarray:
        drawn.append(time.monotonic())
        return frame(self, *args, **kwargs)

    wait_idle(live)
    monkeypatch.setattr(Renderer, "frame", counted)
    pcm = (speech * 3)[:2 * 10 * RATE]
    client = RawClient(live.ws_url(avatar_id))
    for i in range(0, len(pcm), 2 * 2 * RATE):  # 2 s a message, the most the server takes
        client.send_binary(pcm[i:i + 2 * 2 * RATE])
    while client.receive().data[:1] != b"F":
        pass
    left = time.monotonic()
    client.vanish()
    time.sleep(3.0)
    after = [round(t - left, 2) for t in drawn if t > left]
    print(f"\n{len(drawn)} frames drawn; after the client left: {after}")
    assert len(ended_sessions(server_log)) == 1
    assert not after or max(after) < 1.0, after
    wait_idle(live)
    assert render_slots(live).borrowed_tokens == 0 and not app_errors(server_log)


def test_idle_sessions_do_not_starve_a_speaking_one(tmp_path: Path, astronaut_path: Path,
                                                    speech: bytes) -> None:
    """20 sessions that send no audio and one real client, the cap raised to 21 so the
    server is overloaded on purpose: the real client is drawn first, the idle ones give
    way, and every session's stats count what it lost. (The probe saw a real client fall
    from 24.9 to 1.2 frames/s beside 20 idle sockets, its stats saying 0 dropped.)

    On a quiet box the real client gets (nearly) every frame; on a busy one, where even it
    cannot, it still gets at least twice the share of an idle session (with first come,
    first served drawing, every session got the same share)."""
    from helpers.service import Server

    def share(stats: list[dict[str, Any]], before: dict[str, Any]) -> float:
        drawn = stats[-1]["frames"] - before["frames"]
        return drawn / max(1, drawn + stats[-1]["dropped"] - before["dropped"])

    env = {"FACETALK_LIVE_SESSIONS": "21"}
    with running(Server(tmp_path / "data", "--workers", "1", env=env)) as srv:
        with httpx.Client(base_url=srv.base, timeout=120) as http:
            r = create_avatar(http.post, astronaut_path.read_bytes())
        assert r.status_code == 201, r.text
        url = f"ws://127.0.0.1:{srv.port}/v1/stream?avatar={r.json()['id']}"
        with contextlib.ExitStack() as stack:
            idle = [stack.enter_context(session(url)) for _ in range(20)]
            for other in idle:
                other.wait(lambda o=other: bool(o.stats), what="stats of an idle session")
            before = [dict(other.stats[-1]) for other in idle]
            with session(url) as s:
                fps = s.ready["fps"]
                starts, _, end = stream_speech(s, speech)
                s.ws.send(json.dumps({"type": "stop"}))
                assert s.ended.wait(20) and s.ws.close_code == 1000
            idle_share = float(np.mean([share(o.stats, b) for o, b in zip(idle, before, strict=True)]))
    times = np.array([t for _, t, _ in s.frames])
    got = int(((times >= starts[0]) & (times < end)).sum())
    expected = int((end - starts[0]) * fps)
    final = s.stats[-1]
    print(f"\nbeside 20 idle sessions: {got} of {expected} frames of speech ({got / expected:.0%}); "
          f"idle sessions drew {idle_share:.0%} of theirs meanwhile; stats {final}")
    assert got >= 0.9 * expected or got / expected >= 2 * idle_share, (got, expected, idle_share)
    # Its counts are the frames it got: sent = received, and what it lacks was dropped.
    assert final["frames"] == len(s.frames)
    assert final["dropped"] >= expected - got - 2, final


def test_client_leaving_mid_avatar_upload_is_not_an_error(
        live: LiveServer, portrait_bytes: bytes, server_log: list[logging.LogRecord]) -> None:
    """Half a portrait, then the client is gone: nothing is logged as an error and no
    upload is left in the temp folder."""
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=30)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"portrait\"; filename=\"p.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + portrait_bytes + b"\r\n--B--\r\n")
    head = (f"POST /v1/avatars HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body[:len(body) // 2])
    time.sleep(0.3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    time.sleep(1.0)
    # The server still answers, and took it as the client's doing.
    with httpx.Client(base_url=live.base, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
    assert not app_errors(server_log), app_errors(server_log)
    storage = live.server.config.app.state.settings.storage
    assert not [p for p in (storage / "tmp").rglob("*") if p.is_file()]


# -- clients that send garbage -------------------------------------------------------------
OVERSIZED_FRAME = b"\x82\xff" + struct.pack("!Q", (16 << 20) + 1) + bytes(4)  # header only


@pytest.mark.parametrize(("kind", "message", "code", "reason"), [
    pytest.param("text", b"hello there", 1003, "must be JSON", id="text-not-json"),
    pytest.param("text", b'{"text": "hello"}', 1003, "must be JSON", id="json-without-type"),
    pytest.param("text", b"[1, 2, 3]", 1003, "must be JSON", id="json-not-an-object"),
    pytest.param("text", b"[" * 100_000 + b"]" * 100_000, 1003, "must be JSON", id="json-nested-too-deep"),
    pytest.param("text", b'{"type": "dance"}', 1003, "unknown message type 'dance'", id="json-unknown-type"),
    pytest.param("binary", b"\x01" * 641, 1003, "PCM16", id="binary-odd-length"),
    pytest.param("binary", bytes(2 * (2 * RATE + 1)), 1003, "at most 2 s", id="binary-over-2-s"),
    pytest.param("raw", OVERSIZED_FRAME, 1009, "exceeds", id="frame-over-16-MiB"),
    pytest.param("text", b"\xff\xfe not UTF-8", 1007, None, id="text-not-utf8"),
])
def test_garbage_gets_a_close_code_and_reason(
        live: LiveServer, avatar_id: str, kind: str, message: bytes, code: int, reason: str | None,
        server_log: list[logging.LogRecord]) -> None:
    client = RawClient(live.ws_url(avatar_id))
    if kind == "raw":
        client.sock.sendall(message)
    elif kind == "binary":
        client.send_binary(message)
    else:
        client.send_text(message)
    got_code, got_reason = client.closed_with()
    print(f"\nclose {got_code}: {got_reason!r}")
    assert got_code == code, (got_code, got_reason)
    # uvicorn closes text that is not UTF-8 with 1007 and no reason; the code says it.
    assert reason is None or reason in got_reason, got_reason
    wait_idle(live)
    assert not app_errors(server_log), app_errors(server_log)
    assert render_slots(live).borrowed_tokens == 0


# -- the /live page ------------------------------------------------------------------------
#: Logs, in the page, each WebSocket's "ready" message and its close, in order.
LOG_SOCKETS = """(() => {
  const Native = window.WebSocket;
  let count = 0;
  window.socketLog = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const id = ++count;
      this.addEventListener("message", (e) => {
        const ready = typeof e.data === "string" && JSON.parse(e.data).type === "ready";
        if (ready) window.socketLog.push(`ready ${id}`);
      });
      this.addEventListener("close", () => window.socketLog.push(`close ${id}`));
    }
  };
})();"""


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    from playwright import sync_api


    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.mark.slow
def test_a_second_portrait_keeps_the_controls_of_its_stream(
        pw: Any, live: LiveServer, astronaut_path: Path, tmp_path: Path) -> None:

    with browser(pw, tmp_path) as page:
        page.add_init_script(LOG_SOCKETS)
        page.on("dialog", lambda d: d.accept(KEY))
        assert page.goto(live.base + "/live").status == 200
        choose(page, "#portrait", astronaut_path)
        page.wait_for_selector("#say:not([disabled])", timeout=60_000)
        first = page.locator("#avatar-info").inner_text()
        # Two sentences queued on the first socket, then a second portrait: the page closes
        # the old socket while the server is speaking on it and opens a new one; whichever
        # of the old close and the new "ready" comes first, the page ends up usable.
        page.fill("#text", TEXT)
        page.get_by_role("button", name="Say").click()
        page.get_by_role("button", name="Say").click()
        second = tmp_path / "second.png"  # the same file again would fire no change event
        second.write_bytes(astronaut_path.read_bytes())
        choose(page, "#portrait", second)
        page.wait_for_function("first => document.getElementById('avatar-info').textContent !== first",
                               arg=first, timeout=30_000)
        # Functions, not expressions: the page's Content-Security-Policy forbids eval.
        page.wait_for_function("() => ['ready 2', 'close 1'].every(e => window.socketLog.includes(e))",
                               timeout=30_000)
        log = page.evaluate("() => window.socketLog")
        for control in ("#mic", "#file", "#text", "#say"):
            assert page.is_enabled(control), (control, log)
        assert "error" not in (page.locator("#status").get_attribute("class") or "")
