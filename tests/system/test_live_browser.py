"""The /live page in real Chromium against a real ``facetalk serve`` with an API key.

Reuses test_web_browser.py's way of working: the venv's ``facetalk serve`` on a free
loopback port, Debian's Chromium driven by Playwright for Python, a fresh profile per
test, JavaScript errors fail the test. Chromium's fake microphone plays a WAV of
espeak-ng speech. What the page shows is read from the page itself: the pixels of the
canvas (sampled every 40 ms in the page) and the figures under it.
"""

from __future__ import annotations

import base64
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright import sync_api

from facetalk.face import landmarks as L
from facetalk.face.analysis import analyze_face
from facetalk.media import tts
from helpers.browser import CHROMIUM, ReadmeServer, browser, choose, running
from helpers.service import Server

pytestmark = [pytest.mark.slow, pytest.mark.realtime]

KEY = "live-browser-key-0123456789"

#: Records, in the page, when the canvas's pixels change (a frame was drawn) and how much
#: the mouth region ([x0, y0, x1, y1] in canvas pixels) changed with it.
WATCH_CANVAS = """([x0, y0, x1, y1]) => {
  const c = document.getElementById("view");
  const g = c.getContext("2d", { willReadFrequently: true });
  window.canvasChanges = [];
  let last = null, mouth = null;
  setInterval(() => {
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 12) h = (h * 31 + d[i] + 7 * d[i + 1]) >>> 0;
    if (h === last) return;
    const m = g.getImageData(x0, y0, x1 - x0, y1 - y0).data;
    let diff = 0;
    for (let i = 0; mouth && i < m.length; i += 4) {
      diff += Math.abs(m[i] - mouth[i]) + Math.abs(m[i + 1] - mouth[i + 1]);
    }
    window.canvasChanges.push([performance.now(), mouth ? diff / (m.length / 2) : 0]);
    last = h; mouth = m;
  }, 40);
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("live-server")
    with running(ReadmeServer(root / "data", "--workers", "1", api_key=KEY)) as s:
        yield s


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About two seconds of speech with a second of silence after (the fake mic loops it)."""
    if not tts.available():
        pytest.fail("espeak-ng is required: apt-get install espeak-ng (make test installs it)")
    s = tts.speak("Hello, my friend. Nice to see you.", wpm=175)
    samples = np.concatenate([s.samples, np.zeros(s.rate, np.float32)])
    path = tmp_path_factory.mktemp("live-media") / "voice.wav"
    tts.write_wav(str(path), samples, s.rate)
    return path


def open_live(page: Any, base: str, portrait: Path, prompts: list[str]) -> None:
    """Open /live, choose the portrait (answering the key prompt), wait for the stream."""
    page.on("dialog", lambda d: (prompts.append(d.message), d.accept(KEY)))
    assert page.goto(base + "/live").status == 200  # no key needed for the page
    choose(page, "#portrait", portrait)
    page.wait_for_selector("#mic:not([disabled])", timeout=60_000)  # "ready" arrived
    assert re.fullmatch(r"Avatar [0-9a-f]{16} \(512×512\)",
                        page.locator("#avatar-info").inner_text()), page.locator("#avatar-info").inner_text()
    page.wait_for_function("() => document.getElementById('view').width === 512")
    time.sleep(0.5)  # a few idle frames drawn
    page.evaluate(WATCH_CANVAS, mouth_box(page))


def mouth_box(page: Any) -> list[int]:
    """The mouth's box in the canvas, found by face analysis of what the canvas shows."""
    url = page.evaluate("document.getElementById('view').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        face = analyze_face(np.asarray(im.convert("RGB")))
    lips = face.landmarks[list(L.MOUTH_OUTER_UP + L.MOUTH_OUTER_LO), :2]
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    pad = 0.3 * (x1 - x0)
    return [int(x0 - pad / 2), int(y0 - pad), int(x1 + pad / 2), int(y1 + pad)]


def changes(page: Any, seconds: float, top: float = 1.0) -> tuple[int, float]:
    """During the next ``seconds``: how many times the canvas changed, and the mean change
    of the mouth region per change (mean absolute difference of its R and G values), over
    the ``top`` share of the largest changes (a window longer than the speech it watches
    must not average the speech away)."""
    t0 = page.evaluate("performance.now()")
    time.sleep(seconds)
    got = page.evaluate("t0 => window.canvasChanges.filter(([t]) => t > t0)", t0)
    diffs = sorted((d for _, d in got), reverse=True)[:max(1, int(round(top * len(got))))]
    return len(got), float(np.mean(diffs)) if got else 0.0


def figures(page: Any) -> dict[str, str]:
    return {k: page.locator(f"#{k}").inner_text() for k in ("lat", "fps", "drop")}


def wait_figures(page: Any) -> dict[str, str]:
    """Wait until latency, frames/s and dropped all show numbers; return them."""
    page.wait_for_function("""() => /^\\d+ ms$/.test(document.getElementById("lat").textContent)
        && +document.getElementById("fps").textContent > 0
        && /^\\d+$/.test(document.getElementById("drop").textContent)""", timeout=30_000)
    return figures(page)


def test_microphone_drives_the_live_portrait(pw: Any, server: Server, tmp_path: Path,
                                             astronaut_path: Path, voice: Path) -> None:
    mic = ("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
           f"--use-file-for-fake-audio-capture={voice}")
    prompts: list[str] = []
    with browser(pw, tmp_path, extra_args=mic) as page:
        open_live(page, server.base, astronaut_path, prompts)
        assert len(prompts) == 1 and "API key" in prompts[0]  # asked once, then kept
        assert page.evaluate("sessionStorage.getItem('facetalk-key')") == KEY
        drawn, idle = changes(page, 1.5)
        assert drawn >= 5  # idle frames are drawn before any audio
        page.get_by_role("button", name="Microphone").click()
        clicked = time.monotonic()
        page.wait_for_selector("#status:has-text('Listening')")
        shown = wait_figures(page)
        # At most 25 frames a second were planned since the click: the server may drop
        # some to stay live, but a stream that sheds more than half of them is not live.
        planned = 25 * (time.monotonic() - clicked)
        drawn, talking = changes(page, 3.0)  # the fake microphone's loop: 2 s speech, 1 s silence
        print(f"mic: mouth change per frame idle {idle:.2f}, talking {talking:.2f}")
        assert drawn >= 15, "the canvas should show the talking frames"  # 5 frames/s, shared CPU
        assert talking > 2 * idle, (talking, idle)
        assert 0 < int(shown["lat"].split()[0]) < 5000 and 0 < int(shown["fps"]) <= 60
        assert int(shown["drop"]) <= 0.5 * planned, (shown, planned)
        page.get_by_role("button", name="Stop").click()
        page.wait_for_selector("#status:has-text('Stopped')")
        assert "error" not in (page.locator("#status").get_attribute("class") or "")


def test_audio_file_and_typed_sentence(pw: Any, server: Server, tmp_path: Path,
                                       astronaut_path: Path, voice: Path) -> None:
    prompts: list[str] = []
    with browser(pw, tmp_path) as page:
        open_live(page, server.base, astronaut_path, prompts)
        time.sleep(2.0)  # idle: the server's timeline runs on with silence
        drawn, idle = changes(page, 1.0)
        choose(page, "#file", voice)
        page.wait_for_selector("#status:has-text('Playing')")
        # Frames are shown as their sound plays: the canvas goes on changing right away.
        drawn, talking = changes(page, 2.0)
        print(f"file: mouth change per frame idle {idle:.2f}, talking {talking:.2f}")
        assert drawn >= 10, "frames of the played file should be drawn"  # 5 frames/s, shared CPU
        assert talking > 2 * idle, (talking, idle)
        shown = wait_figures(page)
        assert 0 < int(shown["lat"].split()[0]) < 5000, shown
        page.wait_for_selector("#stop[disabled]", timeout=30_000)  # the whole file was sent
        time.sleep(0.5)
        page.fill("#text", "Hello, nice to see you, my friend.")
        page.get_by_role("button", name="Say").click()
        page.wait_for_selector("#status:has-text('Speaking')")
        # The sentence is synthesized first, so its frames may start a second or more
        # after "Speaking" on a slow box: watch 4 s and judge the busier half of them.
        drawn, talking = changes(page, 4.0, top=0.5)
        print(f"say: mouth change per frame {talking:.2f}")
        assert drawn >= 10, "frames of the spoken sentence should be drawn"
        assert talking > 2 * idle, (talking, idle)
        assert "error" not in (page.locator("#status").get_attribute("class") or "")
