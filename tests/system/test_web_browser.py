"""The web page in real Chromium against the real ``facetalk serve`` process.

Why Playwright for Python: its locators wait for the page by themselves (no sleeps),
it sets files on ``<input type=file>``, reads media state with ``evaluate`` and takes
screenshots, all from pytest; it drives Debian's ``/usr/bin/chromium`` given as
``executable_path``, so it never downloads a browser. Each test gets a fresh browser
profile (``--user-data-dir``) and closes its browser; each server is started by
the module and stopped with all its processes.

``FACETALK_WEB_SCREENSHOTS=docs pytest tests/test_web_browser.py`` also writes the
screenshots linked from the README (docs/web_*.png).
"""

from __future__ import annotations

import os
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright import sync_api

from facetalk.face.analysis import analyze_face
from facetalk.media import tts
from facetalk.media.image import load_portrait
from helpers.browser import CHROMIUM, PHONE, ReadmeServer, browser, running
from helpers.service import TINY, Server, decode_mp4, submit, wait_for

pytestmark = pytest.mark.slow

KEY = "browser-test-key-0123456789"
SHOTS = os.environ.get("FACETALK_WEB_SCREENSHOTS")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("web-server")
    with running(ReadmeServer(root / "data", "--workers", "1")) as s:
        yield s


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver "
                    "(make test installs it)")
    with sync_api.sync_playwright() as pw:
        yield pw


def open_page(page: Any, base: str) -> None:
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready=true]")


def shot(page: Any, tmp: Path, name: str) -> None:
    """Screenshot the whole page (into docs/ when FACETALK_WEB_SCREENSHOTS says so)."""
    path = (Path(SHOTS) if SHOTS else tmp) / f"web_{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    with Image.open(path) as im:
        im.load()
    assert im.width >= 300 and len(np.unique(np.asarray(im.convert("L")))) > 20  # not blank
    im.save(path, optimize=True)  # smaller files in the repository


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


@pytest.fixture(scope="module")
def speech_2s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About two seconds of English speech from espeak-ng."""
    if not tts.available():
        pytest.fail("espeak-ng is required: apt-get install espeak-ng (make test installs it)")
    s = tts.speak("Hello, my friend. Nice to see you.", wpm=175)
    path = tmp_path_factory.mktemp("web-media") / "speech.wav"
    tts.write_wav(str(path), s.samples, s.rate)
    return path


def choose_inputs(page: Any, portrait: Path, audio: Path) -> None:
    page.set_input_files("#portrait-input", str(portrait))
    page.wait_for_selector("[data-testid=facebox]")
    page.set_input_files("#audio-input", str(audio))
    page.wait_for_selector("#audio-info:not([hidden])")


def wait_playable(page: Any, timeout: float = 180_000) -> dict[str, Any]:
    """Wait for the finished video to have data to play, play it (muted) for a moment."""
    page.wait_for_selector("#result:not([hidden])", timeout=timeout)
    page.wait_for_function("() => document.getElementById('video').readyState >= 3")
    page.evaluate("() => { const v = document.getElementById('video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.getElementById('video').currentTime > 0.3")
    return page.evaluate("""() => { const v = document.getElementById('video'); v.pause();
        return {duration: v.duration, width: v.videoWidth, height: v.videoHeight, src: v.src}; }""")


def landscape_png(path: Path) -> Path:
    h, w = 360, 480
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 255 - y * 120 // h
    img[..., 1] = 160 - y * 60 // h
    img[..., 0] = 90
    img[y > 250 + 30 * np.sin(x / 50.0)] = (40, 120, 50)
    img[(x - 380) ** 2 + (y - 80) ** 2 < 40**2] = (250, 220, 80)
    Image.fromarray(img).save(path)
    return path


# -- the acceptance path ----------------------------------------------------------------------
def test_portrait_and_voice_to_a_playing_video(playwright: Any, server: Server, tmp_path: Path,
                                                astronaut_path: Path, speech_2s: Path) -> None:
    seconds = wav_seconds(speech_2s)
    with browser(playwright, tmp_path) as page:
        open_page(page, server.base)
        assert page.locator("#generate").is_disabled()
        shot(page, tmp_path, "empty")

        # The portrait: the face box the page draws is the engine's own.
        page.set_input_files("#portrait-input", str(astronaut_path))
        box = page.locator("[data-testid=facebox]")
        box.wait_for()
        engine = analyze_face(load_portrait(str(astronaut_path))).box
        drawn = [float(box.get_attribute(a)) for a in ("x", "y", "width", "height")]
        assert drawn == pytest.approx([engine[0], engine[1], engine[2] - engine[0],
                                       engine[3] - engine[1]], abs=0.05)
        assert "Face found" in page.locator("#portrait-status").inner_text()
        # The framing preview follows the choice (vertical is 9:16).
        page.get_by_label("Vertical 9:16").check()
        frame = page.locator("#portrait-overlay rect.frame")
        assert float(frame.get_attribute("height")) / float(frame.get_attribute("width")) == \
            pytest.approx(16 / 9, rel=0.01)
        assert "512 × 910" in page.locator("#portrait-status").inner_text()
        page.get_by_label("Crop (square)").check()
        assert frame.get_attribute("width") == frame.get_attribute("height")

        # The voice: length shown and filled into `duration`, waveform drawn.
        page.set_input_files("#audio-input", str(speech_2s))
        page.wait_for_selector("#audio-info:not([hidden])")
        shown = page.locator("#audio-duration").inner_text()
        assert shown == f"{seconds:.2f} s"
        assert float(page.locator("#opt-duration").input_value()) == pytest.approx(seconds, abs=0.006)
        lit = page.evaluate("""() => { const c = document.getElementById('waveform');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200) n++; return n; }""")
        assert lit > 500  # bars were drawn

        # Fast preset: the generated fields take its values.
        page.get_by_role("button", name="Fast").click()
        assert page.get_by_role("button", name="Fast").get_attribute("aria-pressed") == "true"
        assert page.locator("#opt-inference_steps").input_value() == "10"
        assert page.locator("#opt-min_resolution").input_value() == "512"
        shot(page, tmp_path, "preview")

        page.get_by_role("button", name="Generate").click()
        video = wait_playable(page)
        job_id = page.locator("#history li").first.get_attribute("data-job")
        # The MP4 in the page is as long as the recording (to a frame plus AAC padding).
        assert abs(video["duration"] - seconds) < 0.1, (video["duration"], seconds)
        assert (video["width"], video["height"]) == (512, 512)
        assert video["src"].endswith(f"/v1/jobs/{job_id}/video")
        assert page.locator("#download").get_attribute("href") == f"/v1/jobs/{job_id}/video"
        assert "done" in page.locator("#history li").first.inner_text()
        page.evaluate("document.getElementById('video').currentTime = 1.0")
        page.wait_for_function("() => document.getElementById('video').readyState >= 2")
        shot(page, tmp_path, "done")

    # What the page sent: Fast's values; the duration left to the engine (the audio's own).
    with server.client() as http:
        job = wait_for(http, job_id)
        assert job["status"] == "succeeded"
        assert job["options"]["inference_steps"] == 10 and job["options"]["min_resolution"] == 512
        assert job["options"]["duration"] is None and job["options"]["framing"] == "crop"
        info = decode_mp4(http.get(job["links"]["video"]).content)
        assert info["frames"] == job["result"]["frames"] and info["audio"]


def test_cancel_a_running_job(playwright: Any, server: Server, tmp_path: Path,
                              astronaut_path: Path, speech_2s: Path) -> None:
    with browser(playwright, tmp_path) as page:
        open_page(page, server.base)
        choose_inputs(page, astronaut_path, speech_2s)
        page.get_by_role("button", name="Fast").click()
        # A minute of video (the recording plus a closed-mouth tail): long enough to cancel.
        page.locator("#advanced summary").click()
        page.get_by_label("Video length").fill("60")
        page.locator("#advanced summary").click()
        page.get_by_role("button", name="Generate").click()
        progress = page.locator("#progress-text")
        page.wait_for_function("() => /Rendering frame [1-9][0-9]* of 1500/"
                               ".test(document.getElementById('progress-text').textContent)")
        assert "left" in progress.inner_text()  # an ETA
        assert float(page.locator("#progress").get_attribute("value") or 0) > 0
        job_id = page.locator("#history li").first.get_attribute("data-job")
        assert "running" in page.locator("#history li").first.inner_text()
        shot(page, tmp_path, "progress")
        page.get_by_role("button", name="Cancel").click()
        page.wait_for_selector("#job-error:has-text('Cancelled')")
        assert page.locator("#progress-box").is_hidden()
        assert "cancelled" in page.locator("#history li").first.inner_text()
        assert page.locator("#generate").is_enabled()
    with server.client() as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled" and job["options"]["duration"] == 60
        assert job["frames_done"] < job["frames_total"] == 1500


def test_picture_without_a_face_is_refused_clearly(playwright: Any, server: Server,
                                                   tmp_path: Path, speech_2s: Path) -> None:
    with browser(playwright, tmp_path) as page:
        open_page(page, server.base)
        page.set_input_files("#portrait-input", str(landscape_png(tmp_path / "hills.png")))
        status = page.locator("#portrait-status.bad")
        status.wait_for()
        assert "No face found" in status.inner_text()
        assert "facing the camera" in status.inner_text()  # the engine's hint
        page.set_input_files("#audio-input", str(speech_2s))
        page.wait_for_selector("#audio-info:not([hidden])")
        assert page.locator("#generate").is_disabled()
        assert page.locator("#generate-hint").inner_text() == "Choose a portrait with a face."
        assert page.locator("[data-testid=facebox]").count() == 0


# -- API key, language, phone, keyboard, microphone --------------------------------------------
def test_api_key_is_asked_once_per_session(playwright: Any, tmp_path: Path,
                                           astronaut_path: Path, speech_2s: Path) -> None:
    keyed = ReadmeServer(tmp_path / "data", "--workers", "1", api_key=KEY)
    with running(keyed), browser(playwright, tmp_path) as page:
        page.goto(keyed.base + "/")
        dialog = page.locator("#key-dialog")
        dialog.wait_for()
        page.get_by_role("textbox", name="API key").fill("not-the-key-000")
        page.get_by_role("button", name="Continue").click()
        page.wait_for_selector("#key-error:has-text('not accepted')")
        page.get_by_role("textbox", name="API key").fill(KEY)
        page.get_by_role("button", name="Continue").click()
        page.wait_for_selector("body[data-ready=true]")
        assert dialog.is_hidden()
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert dialog.is_hidden()  # kept for the session: not asked again
        choose_inputs(page, astronaut_path, speech_2s)
        page.get_by_role("button", name="Fast").click()
        page.get_by_role("button", name="Generate").click()
        video = wait_playable(page)  # fetched with the key, played from memory
        assert video["src"].startswith("blob:")
        assert abs(video["duration"] - wav_seconds(speech_2s)) < 0.1


def test_chinese_labels_phone_layout_and_keyboard(playwright: Any, server: Server, tmp_path: Path,
                                                  astronaut_path: Path) -> None:
    with browser(playwright, tmp_path, viewport=PHONE) as page:
        open_page(page, server.base)
        # Phone width: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.set_input_files("#portrait-input", str(astronaut_path))
        page.wait_for_selector("[data-testid=facebox]")
        # Keyboard: Tab reaches the file input, the presets, the Advanced toggle.
        focused = []
        for _ in range(14):
            page.keyboard.press("Tab")
            focused.append(page.evaluate(
                "document.activeElement.id || document.activeElement.textContent.trim()"))
        assert "portrait-input" in focused and "audio-input" in focused and "Fast" in focused
        shot(page, tmp_path, "phone")
        page.locator("#advanced summary").click()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        # Every generated control has a label; file inputs are reachable by their labels.
        unlabeled = page.evaluate("""() => [...document.querySelectorAll(
            '#advanced-fields input, #advanced-fields select, #framing-choices input')]
            .filter(e => !e.labels || !e.labels.length).map(e => e.id)""")
        assert unlabeled == []
        assert page.get_by_label("Drop a photo here, or choose one").count() == 1
        # The preset buttons work from the keyboard.
        page.locator("[data-preset=quality]").focus()
        page.keyboard.press("Enter")
        assert page.locator("#opt-min_resolution").input_value() == "1024"

        page.select_option("#lang", "zh")
        assert page.locator("#generate").inner_text() == "生成"
        assert page.locator("label[for=opt-min_resolution]").inner_text().startswith("分辨率（短边）")
        assert "人脸" in page.locator("#portrait-status").inner_text()
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        assert page.locator("#opt-min_resolution").input_value() == "1024"  # values kept
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator("#generate").inner_text() == "生成"  # the choice is remembered


def test_record_from_the_microphone(playwright: Any, server: Server, tmp_path: Path,
                                    astronaut_path: Path, speech_2s: Path) -> None:
    """Chromium's fake microphone plays a WAV; the page records it and makes a video."""
    mic = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
           f"--use-file-for-fake-audio-capture={speech_2s}")
    with browser(playwright, tmp_path, extra_args=mic) as page:
        open_page(page, server.base)
        page.set_input_files("#portrait-input", str(astronaut_path))
        page.wait_for_selector("[data-testid=facebox]")
        record = page.get_by_role("button", name="Record", exact=True)
        record.click()
        page.wait_for_selector("#record[aria-pressed=true]")
        page.wait_for_function(
            "() => /Recording… [3-9]/.test(document.getElementById('audio-status').textContent)")
        page.get_by_role("button", name="Stop recording").click()
        page.wait_for_selector("#audio-info:not([hidden])")
        recorded = float(page.locator("#audio-duration").inner_text().split()[0])
        assert 2.3 < recorded < 5.0
        page.get_by_role("button", name="Fast").click()
        page.get_by_role("button", name="Generate").click()
        video = wait_playable(page)
        assert abs(video["duration"] - recorded) < 0.1, (video["duration"], recorded)
        job_id = page.locator("#history li").first.get_attribute("data-job")
    with server.client() as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    # The page sends the recording as 48 kHz mono WAV, whatever codec the browser recorded in.
    assert job["inputs"]["audio"]["sample_rate"] == 48000 and job["inputs"]["audio"]["channels"] == 1
    assert job["inputs"]["audio"]["duration_s"] == pytest.approx(recorded, abs=0.01)


def test_history_survives_a_reload_and_delete_removes_the_video(
        playwright: Any, server: Server, tmp_path: Path, astronaut_path: Path,
        speech_2s: Path) -> None:
    with server.client() as http:
        r = submit(http, astronaut_path.read_bytes(), speech_2s.read_bytes(), **TINY)
        job = r.json()
    with browser(playwright, tmp_path) as page:
        open_page(page, server.base)
        entry = {"id": job["id"], "status": "running", "created_at": job["created_at"]}
        page.evaluate("e => localStorage.setItem('facetalk.history', JSON.stringify([e]))", entry)
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        item = page.locator(f"#history li[data-job='{job['id']}']")
        item.get_by_text("done").wait_for()  # refreshed from the server on load
        item.get_by_role("button", name="Show").click()
        wait_playable(page)
        item.get_by_role("button", name="Delete").click()
        page.wait_for_selector("#history-empty:not([hidden])")
    with server.client() as http:
        assert http.get(f"/v1/jobs/{job['id']}").status_code == 404


def test_readme_screenshots_exist() -> None:
    """The README links these; FACETALK_WEB_SCREENSHOTS=docs regenerates them."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    readme = (docs.parent / "README.md").read_text(encoding="utf-8")
    for name in ("empty", "preview", "progress", "done", "phone"):
        path = docs / f"web_{name}.png"
        assert path.is_file(), f"{path} missing"
        assert f"docs/web_{name}.png" in readme
        with Image.open(path) as im:
            assert im.width >= 390 and im.height >= 600
