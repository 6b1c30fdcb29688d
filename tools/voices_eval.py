"""Render every clip of the recorded-speech set and measure the renders from the outside.

    /work/venvs/voices/bin/python tools/voices_set.py          # builds build/voices/ once
    python tools/voices_eval.py [--only libri,ns-] [--json build/voices/after.json]

Each clip is rendered with the bundled portrait (384 px by default), the OUTPUT video is
re-tracked (facetalk.measure.evaluate.track_video) and measured against its own soundtrack
(AV offset, r, silent frames closed) and against the clip's phoneme timings
(p/b/m closed, open vowels open, rounded/spread width ratio, f/v shown). Non-speech
clips report the share of frames with the mouth closed. Medians are printed per set
(tune / held-out) and variant (clean, phone, noisy, fast, music).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from facetalk import GenerationOptions, generate
from facetalk.measure.evaluate import (
    CLOSED_GAP,
    articulation_report,
    decode_audio,
    evaluate_track,
    read_phonemes,
    track_video,
)

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = Path(str(resources.files("facetalk") / "assets" / "astronaut.png"))
KEYS = ("av_offset_ms", "r", "bilabials_closed", "open_vowels_open", "round_spread_width",
        "labiodentals_shown", "silent_closed", "closed_frames")


def measure(wav: Path, phonemes: Path | None, options: GenerationOptions, tmp: Path) -> dict:
    """Render one clip and measure the re-tracked output."""
    res = generate(PORTRAIT, wav, options, output=tmp / "v.mp4")
    track, _ = track_video(res.path)
    ev = evaluate_track(track, decode_audio(res.path))
    gap = np.nan_to_num(track.gap, nan=0.0)
    out = {"av_offset_ms": ev.av_offset_ms, "r": ev.pearson_r, "silent_closed": ev.silent_closed_rate,
           "silent_frames": ev.silent_frames, "closed_frames": float(np.mean(gap < CLOSED_GAP)),
           "mean_gap": float(np.mean(gap)), "correction_ms": res.sync_offset_ms}
    if phonemes is not None and phonemes.exists():
        out.update(articulation_report(track, read_phonemes(phonemes)).to_dict())
    return out


def fmt(v: object, pct: bool = False) -> str:
    """A figure for the table ('-' where not measured)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "   -  "
    return f"{v:6.0%}" if pct else f"{v:+6.1f}" if abs(float(v)) >= 2 else f"{v:6.2f}"  # type: ignore[arg-type]


def main() -> None:
    """Render, measure, print per clip and medians per set and variant."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--set-dir", type=Path, default=ROOT / "build" / "voices")
    ap.add_argument("--only", default="", help="comma-separated clip-name prefixes")
    ap.add_argument("--variants", default="", help="comma-separated variants (clean,phone,noisy,fast,music,"
                    "nonspeech); default all")
    ap.add_argument("--min-resolution", type=int, default=384)
    ap.add_argument("--preset", default=None, help="a named preset (e.g. subtle) applied first")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    index = json.loads((args.set_dir / "index.json").read_text())
    prefixes = [p for p in args.only.split(",") if p]
    variants = [v for v in args.variants.split(",") if v]
    clips = [c for c in index if (not prefixes or any(c["clip"].startswith(p) for p in prefixes))
             and (not variants or c["variant"] in variants)]
    options = GenerationOptions.build(args.preset, min_resolution=args.min_resolution)
    rows = []
    print("clip                  set       offset    r   p/b/m  open  rnd/spr  f/v   silent closed")
    with tempfile.TemporaryDirectory() as t:
        for c in clips:
            wav = args.set_dir / f"{c['clip']}.wav"
            m = measure(wav, args.set_dir / f"{c['clip']}.phonemes.tsv", options, Path(t))
            m.update(clip=c["clip"], set=c["set"], variant=c["variant"], speaker=c.get("speaker"),
                     language=c.get("language"))
            rows.append(m)
            print(f"{c['clip']:21} {c['set']:8} {m['av_offset_ms']:+5.0f} ms {m['r']:5.2f} "
                  f"{fmt(m.get('bilabials_closed'), True)} {fmt(m.get('open_vowels_open'), True)} "
                  f"{fmt(m.get('round_spread_width'))} {fmt(m.get('labiodentals_shown'), True)} "
                  f"{m['silent_closed']:6.0%} ({m['silent_frames']:3d}) {m['closed_frames']:6.0%}",
                  flush=True)
    print("\nmedians            n  offset     r   p/b/m   open  rnd/spr   f/v  silent  closed")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["variant"]), []).append(r)
    for (s, v), rs in sorted(groups.items()):
        med = {k: float(np.nanmedian([r.get(k, np.nan) for r in rs])) if any(
            np.isfinite(r.get(k, np.nan)) for r in rs) else float("nan") for k in KEYS}
        print(f"{s:8} {v:9} {len(rs):2d} {med['av_offset_ms']:+5.0f} ms {med['r']:5.2f} "
              f"{fmt(med['bilabials_closed'], True)} {fmt(med['open_vowels_open'], True)} "
              f"{fmt(med['round_spread_width'])} {fmt(med['labiodentals_shown'], True)} "
              f"{med['silent_closed']:6.0%} {med['closed_frames']:6.0%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
