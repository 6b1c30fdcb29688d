"""facetalk batch: good rows render, bad rows are reported, the batch goes on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from facetalk.measure.evaluate import decode_frames


def test_bad_rows_are_reported_and_skipped(tmp_path: Path, astronaut_path: Path,
                                           short_speech: Path) -> None:
    shutil.copy(astronaut_path, tmp_path / "face.png")
    shutil.copy(short_speech, tmp_path / "a.wav")
    Image.new("RGB", (300, 300), (120, 140, 160)).save(tmp_path / "plain.png")
    (tmp_path / "jobs.csv").write_text(
        "portrait,audio,output,min_resolution,dynamic_scale\n"
        "face.png,a.wav,good1.mp4,256,\n"
        "missing.png,a.wav,,256,\n"
        "plain.png,a.wav,,256,\n"
        "face.png,a.wav,../escape.mp4,256,1.2\n"
        "face.png,a.wav,bad_option.mp4,256,9\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "facetalk.cli", "batch",
                           str(tmp_path / "jobs.csv"), "--out", str(out), "--workers", "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr  # some rows failed
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines() if ln[:4].strip().isdigit()}
    assert "ok" in lines["1"] and "ok" in lines["4"]
    assert "FAILED" in lines["2"] and "not found" in lines["2"]
    assert "FAILED" in lines["3"] and "no_face_found" in lines["3"]
    assert "FAILED" in lines["5"] and "dynamic_scale" in lines["5"]
    assert "2/5 succeeded" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["escape.mp4", "good1.mp4"]
    assert not (tmp_path / "escape.mp4").exists()  # names never leave --out
    for name in ("good1.mp4", "escape.mp4"):
        frames, _ = decode_frames(out / name)
        assert len(frames) > 20 and frames[0].shape == (256, 256, 3)
