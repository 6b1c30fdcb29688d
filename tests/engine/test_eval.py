"""facetalk eval: measures any video from the outside, including ones we did not make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from facetalk import GenerationOptions, generate
from facetalk.media import tts

pytestmark = pytest.mark.slow


def run_eval(*args: str | Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-m", "facetalk.cli", "eval", *map(str, args), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_eval_of_our_render_full_framing(tmp_path: Path, astronaut_path: Path,
                                         speech: tuple[Path, tts.Speech]) -> None:
    wav, _ = speech
    res = generate(astronaut_path, wav, GenerationOptions(framing="full", motion_scale=0),
                   output=tmp_path / "o.mp4")
    d = run_eval(res.path, "--portrait", astronaut_path)
    assert d["frames"] == res.frames and d["face_found_rate"] == 1.0
    assert d["background_changed"] < 0.001  # outside the face the picture is the portrait
    assert abs(d["av_offset_ms"]) <= 40 and d["pearson_r"] > 0.7
    assert any("in sync" in v for v in d["verdicts"])


def _still_video(path: Path, image: np.ndarray, speech: tts.Speech) -> Path:
    """A video some other tool might make: the portrait, unmoving, over the speech."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        a = c.add_stream("aac", rate=speech.rate)
        a.layout = "mono"
        for i in range(int(speech.duration * 25)):
            f = av.VideoFrame.from_ndarray(image, format="rgb24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        frame = av.AudioFrame.from_ndarray(speech.samples[None, :], format="flt", layout="mono")
        frame.sample_rate = speech.rate
        for p in a.encode(frame):
            c.mux(p)
        for p in a.encode(None):
            c.mux(p)
    return path


def test_eval_of_a_video_made_elsewhere(tmp_path: Path, astronaut: np.ndarray,
                                        speech: tuple[Path, tts.Speech]) -> None:
    _, s = speech
    d = run_eval(_still_video(tmp_path / "still.mp4", astronaut, s))
    # The portrait's mouth is open (teeth) and never moves: no sync, no rest in silence.
    assert d["pearson_r"] < 0.3
    assert d["silent_closed_rate"] < 0.5
    assert d["blinks"] == 0
    assert any("weak" in v for v in d["verdicts"])


def test_eval_refuses_a_non_video(tmp_path: Path) -> None:
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    proc = subprocess.run([sys.executable, "-m", "facetalk.cli", "eval", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")
