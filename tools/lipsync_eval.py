"""Render several sentences onto two portraits and print the outside-in lip-sync figures.

    python tools/lipsync_eval.py [--min-resolution 512] [--json out.json]

Uses espeak-ng's phoneme timings as ground truth for p/b/m closures and open vowels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from facetalk import GenerationOptions, generate
from facetalk.measure.evaluate import (
    EVAL_SENTENCES,
    decode_audio,
    evaluate_track,
    phoneme_report,
    track_video,
)
from facetalk.media import tts

ROOT = Path(__file__).resolve().parents[1]
PORTRAITS = {
    "astronaut": Path(str(resources.files("facetalk") / "assets" / "astronaut.png")),
    "hopper": ROOT / "tests" / "data" / "grace_hopper.jpg",
}


def measure(portrait: Path, text: str, options: GenerationOptions, tmp: Path) -> dict[str, float]:
    speech = tts.speak(text, wpm=150)
    wav = tmp / "s.wav"
    tts.write_wav(str(wav), speech.samples, speech.rate)
    res = generate(portrait, wav, options, output=tmp / "s.mp4")
    track, _ = track_video(res.path)
    ev = evaluate_track(track, decode_audio(res.path))
    ph = phoneme_report(track, list(speech.phonemes))
    return {"av_offset_ms": ev.av_offset_ms, "r": ev.pearson_r,
            "silent_closed": ev.silent_closed_rate, "silent_frames": ev.silent_frames,
            "bilabials": ph.bilabials, "bilabials_closed": ph.bilabials_closed,
            "open_vowels": ph.open_vowels, "open_vowels_open": ph.open_vowels_open,
            "correction_ms": res.sync_offset_ms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-resolution", type=int, default=512)
    ap.add_argument("--preset", default=None, help="a named preset (e.g. subtle) applied first")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    options = GenerationOptions.build(args.preset, min_resolution=args.min_resolution)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        for name, portrait in PORTRAITS.items():
            for i, text in enumerate(EVAL_SENTENCES):
                m = measure(portrait, text, options, Path(t))
                m.update(portrait=name, sentence=i + 1)
                rows.append(m)
                print(f"{name:9} s{i + 1}  offset {m['av_offset_ms']:+6.1f} ms  r {m['r']:.2f}  "
                      f"silence closed {m['silent_closed']:.0%} ({m['silent_frames']})  "
                      f"p/b/m closed {m['bilabials_closed']:.0%} ({m['bilabials']})  "
                      f"open vowels open {m['open_vowels_open']:.0%} ({m['open_vowels']})  "
                      f"[correction {m['correction_ms']:+.0f} ms]")
    agg = {k: float(np.mean([r[k] for r in rows])) for k in
           ("av_offset_ms", "r", "silent_closed", "bilabials_closed", "open_vowels_open")}
    pbm = sum(r["bilabials"] * r["bilabials_closed"] for r in rows) / sum(r["bilabials"] for r in rows)
    ov = sum(r["open_vowels"] * r["open_vowels_open"] for r in rows) / sum(r["open_vowels"] for r in rows)
    print(f"\nmean offset {agg['av_offset_ms']:+.1f} ms (range {min(r['av_offset_ms'] for r in rows):+.0f}.."
          f"{max(r['av_offset_ms'] for r in rows):+.0f}), mean r {agg['r']:.3f} (min "
          f"{min(r['r'] for r in rows):.2f}), silence closed {agg['silent_closed']:.1%}, "
          f"p/b/m closed {pbm:.1%}, open vowels open {ov:.1%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
