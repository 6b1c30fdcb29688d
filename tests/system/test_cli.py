"""The command line as users run it: demo, render --json, the visible label."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from facetalk.measure.evaluate import decode_frames


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facetalk.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_demo_renders_the_bundled_sample(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    proc = run("demo", "-o", out, "--min-resolution", "256", "--text", "Hello from the demo.")
    assert proc.returncode == 0, proc.stderr
    frames, fps = decode_frames(out)
    assert fps == 25 and len(frames) > 25 and frames[0].shape == (256, 256, 3)
    assert "frames" in proc.stdout and str(out) in proc.stdout  # the one-line summary


def test_render_json_and_label(tmp_path: Path, astronaut_path: Path, short_speech: Path) -> None:
    out = tmp_path / "o.mp4"
    proc = run("render", astronaut_path, short_speech, "-o", out, "--json",
               "--min-resolution", "256", "--framing", "vertical", "--label", "AI-generated",
               "--no-blink", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["width"], info["height"]) == (256, 454)
    assert info["options"]["blink"] is False and info["options"]["seed"] == 3
    assert info["frames"] == len(decode_frames(out)[0])
    assert set(info["timings"]) >= {"face", "render"}
    # The label sits in the bottom-right corner: bright text on a dark patch there.
    frame = decode_frames(out)[0][0].astype(int)
    corner = frame[-40:, -140:]
    assert corner.max() > 200 and corner.min() < 80
