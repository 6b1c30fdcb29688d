"""Render portraits with blinks and measure, from the re-tracked video, how far each blink closes.

    python tools/blink_closure.py PORTRAIT [PORTRAIT ...] [--seconds 30] [--min-resolution 384]

For every blink the motion plan schedules, prints the tracked eyelid gap at its most closed
frame as a fraction of the gap's median over the clip (the open eye). The face mesh seldom
reads a closed eye as fully shut (behind glasses or on narrow eyes it reads about half
open), so a blink counts as closed below BLINK_CLOSED, as in `facetalk eval`'s blink count.
Portraits whose eyes are nearly shut already (a laugh) say little here.
"""

from __future__ import annotations

import argparse
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from facetalk import GenerationOptions
from facetalk.measure.evaluate import BLINK_CLOSED, blink_closure

SPEECH = Path(str(resources.files("facetalk") / "assets" / "speech.wav"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("portraits", nargs="+", type=Path)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--min-resolution", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    all_ratios = []
    with tempfile.TemporaryDirectory() as t:
        for p in args.portraits:
            options = GenerationOptions(min_resolution=args.min_resolution, duration=args.seconds,
                                        seed=args.seed, watermark=False)
            ratios = blink_closure(p, SPEECH, options, Path(t) / "b.mp4")
            all_ratios += list(ratios)
            closed = np.mean(np.array(ratios) < BLINK_CLOSED) if len(ratios) else float("nan")
            print(f"{p.name:24} blinks {len(ratios):3d}  closed {closed:6.1%}  "
                  f"min gap / open: median {np.median(ratios):.2f}, worst {np.max(ratios):.2f}")
    r = np.array(all_ratios)
    print(f"all: {len(r)} blinks, {np.mean(r < BLINK_CLOSED):.1%} closed (gap < {BLINK_CLOSED} of open), "
          f"median {np.median(r):.2f}")


if __name__ == "__main__":
    main()
