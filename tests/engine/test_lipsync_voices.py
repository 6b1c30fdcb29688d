"""Issue 19 from the outside: `facetalk eval --phonemes` on a render, and non-speech that
must leave the rendered mouth closed (re-tracked output, not the plan).

The recorded-voice figures themselves come from tools/voices_eval.py on the voices set
(fetched at run time, so not part of the test suite).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facetalk import GenerationOptions, generate
from facetalk.measure.evaluate import CLOSED_GAP, articulation_report, read_phonemes, track_video
from facetalk.media import tts

pytestmark = pytest.mark.slow
R = 16000


def test_eval_reports_phoneme_figures_from_a_timing_file(tmp_path: Path, astronaut_path: Path) -> None:
    speech = tts.speak("Bob bought a map of the moon. Five fine fish.", wpm=150)
    wav = tmp_path / "s.wav"
    tts.write_wav(str(wav), speech.samples, speech.rate)
    res = generate(astronaut_path, wav, GenerationOptions(min_resolution=384), output=tmp_path / "s.mp4")
    timings = tmp_path / "p.tsv"
    timings.write_text("# start end phone\n" + "".join(
        f"{p.start:.3f}\t{p.end:.3f}\t{p.name}\n" for p in speech.phonemes))
    proc = subprocess.run([sys.executable, "-m", "facetalk.cli", "eval", str(res.path), "--phonemes",
                           str(timings), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ph = json.loads(proc.stdout)["phonemes"]
    names = [p.name for p in speech.phonemes]
    assert ph["bilabials"] == sum(n in ("p", "b", "m") for n in names) >= 5
    assert ph["labiodentals"] == sum(n in ("f", "v") for n in names) >= 2
    own = articulation_report(track_video(res.path)[0], read_phonemes(timings))
    assert ph["bilabials_closed"] == pytest.approx(own.bilabials_closed)
    assert ph["labiodentals_shown"] == pytest.approx(own.labiodentals_shown)
    text = subprocess.run([sys.executable, "-m", "facetalk.cli", "eval", str(res.path), "--phonemes",
                           str(timings)], capture_output=True, text=True, timeout=300).stdout
    assert "p/b/m closed" in text and "f/v lip to teeth" in text


def _write(path: Path, x: np.ndarray) -> Path:
    tts.write_wav(str(path), x.astype(np.float32), R)
    return path


@pytest.mark.parametrize("kind", ["beeps", "noise"])
def test_beeps_and_noise_leave_the_rendered_mouth_closed(kind: str, astronaut_path: Path,
                                                          tmp_path: Path) -> None:
    t = np.arange(4 * R) / R
    if kind == "beeps":
        x = np.where((t % 0.5) < 0.15, 0.3 * np.sin(2 * np.pi * 1000 * t), 0)
    else:
        x = 0.1 * np.random.default_rng(0).standard_normal(len(t)) * ((t % 1.5) < 1.0)
    res = generate(astronaut_path, _write(tmp_path / "n.wav", x), GenerationOptions(min_resolution=384),
                   output=tmp_path / "n.mp4")
    track, _ = track_video(res.path)
    closed = np.nan_to_num(track.gap, nan=0.0) < CLOSED_GAP
    assert closed.mean() >= 0.95, closed.mean()
