"""Phoneme-timed articulation figures (``facetalk eval --phonemes``) on synthetic tracks.

No video: a Track is built by hand, so what each figure counts is checked exactly.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from facetalk.errors import InvalidInput
from facetalk.measure.evaluate import (
    Phone,
    Track,
    align_transcript,
    articulation_report,
    read_phonemes,
)

FPS = 25.0


def track(gap: list[float], width: list[float] | None = None) -> Track:
    n = len(gap)
    w = np.array(width if width is not None else [0.8] * n, float)
    z = np.zeros(n)
    return Track(fps=FPS, width=384, height=384, found=np.ones(n, bool), gap=np.array(gap, float),
                 width_m=w, eye_open=z + 0.2, yaw=z, pitch=z, roll=z)


def test_read_phonemes_tsv_and_json(tmp_path: Path) -> None:
    tsv = tmp_path / "p.tsv"
    tsv.write_text("# start end phone\n0.000\t0.120\tSIL\n0.12 0.2 M\n\n0.2\t0.35\tAA1\n")
    assert read_phonemes(tsv) == [Phone("SIL", 0.0, 0.12), Phone("M", 0.12, 0.2), Phone("AA1", 0.2, 0.35)]
    js = tmp_path / "p.json"
    js.write_text(json.dumps([{"start": 0.1, "end": 0.2, "phone": "p"}]))
    assert read_phonemes(js) == [Phone("p", 0.1, 0.2)]
    bad = tmp_path / "bad.tsv"
    bad.write_text("0.1 M\n")
    with pytest.raises(ValueError, match="start end phone"):
        read_phonemes(bad)


def test_articulation_counts_closures_openings_and_fv() -> None:
    # Frames every 40 ms: closed at 0-1, open 2-5, almost closed (f) at 6, open 7-9.
    gap = [0.0, 0.01, 0.2, 0.25, 0.2, 0.15, 0.04, 0.15, 0.2, 0.2]
    tr = track(gap)
    ph = [Phone("M", 0.0, 0.06), Phone("AA1", 0.08, 0.2), Phone("B", 0.28, 0.32),
          Phone("F", 0.23, 0.25), Phone("V", 0.3, 0.31), Phone("AE", 0.32, 0.36)]
    rep = articulation_report(tr, ph)
    assert rep.bilabials == 2 and rep.bilabials_closed == 0.5  # M closed, B at an open mouth
    assert rep.open_vowels == 2 and rep.open_vowels_open == 1.0  # with and without stress digit
    assert rep.labiodentals == 2 and rep.labiodentals_shown == 0.5  # F reaches frame 6, V does not


def test_espeak_names_are_not_read_as_arpabet() -> None:
    """eSpeak's "V" is the vowel of "cup", not a /v/; its "f" and "v" are."""
    tr = track([0.2] * 10)
    ph = [Phone("m", 0.0, 0.06), Phone("V", 0.08, 0.2), Phone("f", 0.23, 0.25), Phone("aI", 0.3, 0.36)]
    rep = articulation_report(tr, ph)
    assert (rep.bilabials, rep.labiodentals, rep.open_vowels) == (1, 1, 1)


def test_round_spread_width_ratio() -> None:
    width = [0.7, 0.7, 0.9, 0.9, 0.7, 0.9]
    tr = track([0.1] * 6, width)
    ph = [Phone("UW1", 0.0, 0.06), Phone("IY", 0.08, 0.12), Phone("OW", 0.16, 0.16),
          Phone("EY2", 0.2, 0.2)]
    rep = articulation_report(tr, ph)
    assert rep.rounded == 2 and rep.spread == 2
    assert rep.round_spread_width == pytest.approx(0.7 / 0.9)
    assert np.isnan(articulation_report(tr, ph[:1]).round_spread_width)  # nothing to compare


@pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is not None, reason="pocketsphinx installed")
def test_align_without_pocketsphinx_says_how_to_install() -> None:
    with pytest.raises(InvalidInput, match=r"pip install 'facetalk\[align\]'"):
        align_transcript(np.zeros(16000, np.float32), "hello")


def test_labiodental_needs_a_part_open_jaw() -> None:
    """f/v is the lower lip at the upper teeth with the jaw part-open: small lip gaps with
    the jaw at its closed-lips rest (a p/b/m shape) do not count."""
    gap = [0.0, 0.0, 0.2, 0.03, 0.2, 0.03, 0.2, 0.0]
    jaw = [1.0, 1.0, 1.1, 1.0, 1.1, 1.04, 1.1, 1.0]  # rest 1.0 (median where closed)
    tr = track(gap)
    tr.jaw = np.array(jaw, float)
    ph = [Phone("F", 0.11, 0.13), Phone("V", 0.19, 0.21)]  # frame 3 (jaw at rest), frame 5 (part-open)
    rep = articulation_report(tr, ph, margin_s=0.0)
    assert rep.labiodentals == 2 and rep.labiodentals_shown == 0.5
    tr.jaw = None  # no jaw measured: judged on the gap alone
    assert articulation_report(tr, ph, margin_s=0.0).labiodentals_shown == 1.0
