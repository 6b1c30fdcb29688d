"""A strip of mouth close-ups from a real render, with the phoneme sounding at each frame.

    python tools/phoneme_strip.py docs/phoneme_strip.png ["sentence"]
"""

from __future__ import annotations

import sys
import tempfile
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from facetalk import GenerationOptions, generate
from facetalk.measure.evaluate import decode_frames, track_frames
from facetalk.media import tts


def main() -> None:
    out = Path(sys.argv[1])
    text = sys.argv[2] if len(sys.argv) > 2 else "Bob bought a map of the moon."
    portrait = Path(str(resources.files("facetalk") / "assets" / "astronaut.png"))
    speech = tts.speak(text, wpm=130)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        tts.write_wav(str(wav), speech.samples, speech.rate)
        res = generate(portrait, wav, GenerationOptions(min_resolution=768), output=Path(tmp) / "s.mp4")
        frames, fps = decode_frames(res.path)
    track = track_frames(frames, fps, keep_landmarks=True)
    ref = next(lm for lm in track.landmarks if lm is not None)
    m = ref[[61, 291, 0, 17], :2]
    cx, cy = m.mean(axis=0)
    half = max(np.ptp(m[:, 0]), np.ptp(m[:, 1])) * 0.85
    tiles = []
    for p in speech.phonemes:
        if p.name.startswith("_") or p.end - p.start < 0.02:
            continue
        i = int(round((p.start + p.end) / 2 * fps))
        if i >= len(frames):
            break
        crop = frames[i][int(cy - half * 0.8):int(cy + half * 0.8), int(cx - half):int(cx + half)]
        tile = cv2.resize(crop, (150, 120), interpolation=cv2.INTER_AREA)
        band = np.full((26, 150, 3), 255, np.uint8)
        cv2.putText(band, f"/{p.name}/ {i}", (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
        tiles.append(np.concatenate([tile, band], axis=0))
    cols = 8
    shown = len(tiles)
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[k:k + cols], axis=1) for k in range(0, len(tiles), cols)]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print(f"{out}: {shown} phonemes of '{text}'")


if __name__ == "__main__":
    main()
