"""verify_report edge cases and the visible label's corners (fast, no render)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facetalk.errors import InvalidInput, UnsupportedMedia
from facetalk.provenance.label import POSITIONS, make_label
from facetalk.provenance.verify import verify_report


def _tiny_video(path: Path, tags: dict[str, str] | None = None) -> Path:
    with av.open(str(path), "w", options={"movflags": "use_metadata_tags"}) as c:
        for k, v in (tags or {}).items():
            c.metadata[k] = v
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(30):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (96, 128, 3), np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def test_untagged_video_has_no_label_and_no_watermark(tmp_path: Path) -> None:
    report = verify_report(_tiny_video(tmp_path / "v.mp4"))
    assert report["metadata"]["ai_generated"] is False
    assert report["watermark"]["found"] is False
    assert report["watermark"]["payload"] == {} and report["watermark"]["confidence"] == 0.0
    assert report["watermark"]["frames"] == 30


def test_metadata_tags_are_read(tmp_path: Path) -> None:
    path = _tiny_video(tmp_path / "v.mp4", {"ai_generated": "true", "generator": "x 1"})
    meta = verify_report(path)["metadata"]
    assert meta["ai_generated"] is True and meta["generator"] == "x 1"


def test_bad_inputs_raise_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        verify_report(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(UnsupportedMedia):
        verify_report(junk)


@pytest.mark.parametrize("position", POSITIONS)
def test_label_goes_to_the_requested_corner(position: str) -> None:
    label = make_label("AI-generated", 320, 240, position)
    h, w = label.alpha.shape[:2]
    assert (label.x + w / 2 > 160) == position.endswith("right")
    assert (label.y + h / 2 > 120) == position.startswith("bottom")
    with pytest.raises(InvalidInput):
        make_label("AI-generated", 320, 240, "middle")


@pytest.mark.parametrize("position", POSITIONS)
def test_label_on_i420_frames_matches_the_rgb_label_converted(position: str) -> None:
    """The render path draws the label into I420 frames (odd label sizes included)."""
    rng = np.random.default_rng(2)
    frame = rng.integers(40, 200, (240, 320, 3)).astype(np.uint8)
    label = make_label("AI-generated (synthetic)" if position == "top-left" else "AI-generated",
                       320, 240, position)
    rgb = frame.copy()
    label.apply(rgb)
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).astype(np.float64)
    got = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
    label.apply_i420(got, 320, 240)
    luma = np.abs(want[:240] - got[:240])
    assert luma.max() <= 2  # the text itself: sharp, same levels
    chroma = np.abs(want[240:] - got[240:])
    assert chroma.mean() < 1.0  # chroma of a grey label over a noisy picture: near enough
