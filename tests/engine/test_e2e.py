"""End-to-end: render an English sentence onto the sample portrait, then measure the MP4
from the outside (decode, re-track the face with the face mesh, read the audio track).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facetalk import GenerationOptions, generate
from facetalk.face.analysis import analyze_face
from facetalk.face.framing import plan_framing
from facetalk.measure.evaluate import (
    CLOSED_GAP,
    Track,
    decode_audio,
    decode_frames,
    evaluate_track,
    frame_rms,
    silent_frames,
    track_frames,
)
from facetalk.media import tts
from facetalk.media.image import load_portrait
from facetalk.render.renderer import make_renderer
from facetalk.render.rig import build_rig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rendered(astronaut_path: Path, speech: tuple[Path, tts.Speech],
             tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, list[np.ndarray], Track, object]:
    wav, _ = speech
    out = tmp_path_factory.mktemp("e2e") / "talk.mp4"
    result = generate(astronaut_path, wav, GenerationOptions(), output=out)
    frames, fps = decode_frames(out)
    track = track_frames(frames, fps, keep_landmarks=True)
    return out, frames, track, result


def test_duration_matches_audio_within_one_frame(rendered, speech) -> None:  # type: ignore[no-untyped-def]
    out, frames, track, result = rendered
    _, s = speech
    assert abs(len(frames) / track.fps - s.duration) <= 1.0 / track.fps
    audio = decode_audio(out)
    assert abs(len(audio) / 16000 - s.duration) <= 1.0 / track.fps
    assert result.frames == len(frames)


def test_face_found_in_every_frame(rendered) -> None:  # type: ignore[no-untyped-def]
    _, _, track, _ = rendered
    assert track.found.all(), np.nonzero(~track.found)[0]


def test_lip_sync_measured_from_the_outside(rendered) -> None:  # type: ignore[no-untyped-def]
    out, _, track, _ = rendered
    rep = evaluate_track(track, decode_audio(out))
    assert rep.pearson_r >= 0.75, rep
    assert abs(rep.av_offset_ms) <= 1000.0 / track.fps, rep  # best lag within one frame
    assert rep.silent_frames >= 10, rep  # the sentence has real pauses to test
    assert rep.silent_closed_rate >= 0.95, rep


def test_mouth_at_rest_in_silences(rendered) -> None:  # type: ignore[no-untyped-def]
    out, _, track, _ = rendered
    rms = frame_rms(decode_audio(out), 16000, track.fps, track.n)
    quiet = silent_frames(rms, track.fps)
    gap = track.gap[quiet]
    assert np.mean(gap < CLOSED_GAP) >= 0.95
    # ...and clearly open somewhere while speaking.
    assert np.nanmax(track.gap) > 3 * CLOSED_GAP


def _sharpness(img: np.ndarray, mask: np.ndarray) -> float:
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    return float(lap[mask].var())


def test_face_keeps_the_portraits_sharpness(rendered, astronaut_path) -> None:  # type: ignore[no-untyped-def]
    _, frames, _, result = rendered
    face = analyze_face(load_portrait(astronaut_path))
    framing = plan_framing(face, result.options)
    still = make_renderer(face, build_rig(face.landmarks), framing, quality=True).still
    lm = framing.to_output(face.landmarks[:, :2])
    h, w = still.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(lm[:468].astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    mouth = lm[[61, 291, 0, 17]]
    pad = 0.25 * np.ptp(mouth[:, 0])
    x0, y0 = (mouth.min(axis=0) - pad).astype(int)
    x1, y1 = (mouth.max(axis=0) + pad).astype(int)
    mask[max(y0, 0):y1, max(x0, 0):x1] = 0  # the mouth changes on purpose
    m = mask.astype(bool)
    ref = _sharpness(still, m)
    ratios = [_sharpness(f, m) / ref for f in frames[::4]]
    assert np.median(ratios) >= 0.8, ratios
    assert min(ratios) >= 0.6, ratios


def test_blinks_and_head_motion_are_visible(rendered) -> None:  # type: ignore[no-untyped-def]
    _, _, track, _ = rendered
    eye = track.eye_open
    assert np.nanmin(eye) < 0.45 * np.nanmedian(eye)  # at least one real blink
    assert np.nanmax(track.roll) - np.nanmin(track.roll) > 0.5  # the head moves a little...
    assert np.nanmax(track.roll) - np.nanmin(track.roll) < 10  # ...but only a little


def test_metadata_marks_ai_generated(rendered) -> None:  # type: ignore[no-untyped-def]
    import av

    out, _, _, result = rendered
    with av.open(str(out)) as c:
        tags = dict(c.metadata)
        v = c.streams.video[0]
        a = c.streams.audio[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert a.codec_context.name == "aac"
    assert tags.get("ai_generated") == "true"
    assert "facetalk" in tags.get("generator", "")
    assert tags.get("render_id") == result.render_id
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))
