"""Render a sentence and build a contact sheet of real output frames (for docs and review).

Picks, from the decoded MP4 and the re-tracked face: a neutral frame, the widest open
vowel, a mid opening (half the widest), a closed p/b/m (from espeak-ng's phoneme
timings), a rounded vowel, a blink, the most turned head, and a zoom on the open mouth.
Usage:

    python tools/contact_sheet.py docs/contact_sheet.png [--min-resolution 512] [--portrait P]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from facetalk import GenerationOptions, generate
from facetalk.measure.evaluate import decode_frames, track_frames
from facetalk.media import tts

TEXT = ("Please bring me a map of the moon. ... Would you go too? ... "
        "We see the blue boat, maybe by Monday.")
BILABIAL = {"p", "b", "m"}
ROUNDED = {"u:", "U", "oU", "O:", "w"}


def _nearest_frame(t: float, fps: float, n: int) -> int:
    return int(np.clip(round(t * fps), 0, n - 1))


def pick(track, phonemes, fps: float) -> dict[str, int]:  # type: ignore[no-untyped-def]
    n = track.n
    gap = np.nan_to_num(track.gap, nan=0.0)
    eye = np.nan_to_num(track.eye_open, nan=np.nanmedian(track.eye_open))
    picks: dict[str, int] = {}
    calm = (gap < 0.04) & (eye > 0.8 * np.median(eye))
    picks["neutral"] = int(np.argmax(calm)) if calm.any() else 0
    picks["open vowel"] = int(np.argmax(gap))
    talking = np.nonzero(gap > 0.02)[0]
    if len(talking):
        picks["mid opening"] = int(talking[np.argmin(np.abs(gap[talking] - 0.5 * gap.max()))])
    bil = [p for p in phonemes if p.name in BILABIAL and p.end - p.start > 0.03]
    if bil:
        cands = [_nearest_frame((p.start + p.end) / 2, fps, n) for p in bil]
        picks["closed p/b/m"] = min(cands, key=lambda i: gap[i])
    rnd = [p for p in phonemes if p.name in ROUNDED]
    if rnd:
        cands = [_nearest_frame((p.start + p.end) / 2, fps, n) for p in rnd]
        width = np.nan_to_num(track.width_m, nan=9.0)
        picks["rounded vowel"] = min(cands, key=lambda i: width[i])
    picks["blink"] = int(np.argmin(eye))
    yaw = np.nan_to_num(track.yaw - np.nanmedian(track.yaw))
    picks["head turned"] = int(np.argmax(np.abs(yaw)))
    return picks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--min-resolution", type=int, default=512)
    ap.add_argument("--portrait", type=Path, default=None)
    ap.add_argument("--tile", type=int, default=320)
    args = ap.parse_args()
    from importlib import resources

    portrait = args.portrait or Path(str(resources.files("facetalk") / "assets" / "astronaut.png"))
    speech = tts.speak(TEXT, wpm=150)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        tts.write_wav(str(wav), speech.samples, speech.rate)
        mp4 = Path(tmp) / "s.mp4"
        res = generate(portrait, wav, GenerationOptions(min_resolution=args.min_resolution),
                       output=mp4)
        frames, fps = decode_frames(mp4)
    track = track_frames(frames, fps, keep_landmarks=True)
    picks = pick(track, speech.phonemes, fps)
    tiles = []
    for name, i in picks.items():
        img = cv2.resize(frames[i], (args.tile, args.tile), interpolation=cv2.INTER_AREA)
        tiles.append(_caption(img, f"{name} (frame {i})"))
    # Mouth zoom of the open-vowel frame, from full-resolution pixels.
    i = picks["open vowel"]
    lm = track.landmarks[i]
    if lm is not None:
        m = lm[[61, 291, 0, 17], :2]
        cx, cy = m.mean(axis=0)
        half = max(np.ptp(m[:, 0]), np.ptp(m[:, 1])) * 0.9
        y0, y1 = int(max(cy - half, 0)), int(min(cy + half, frames[i].shape[0]))
        x0, x1 = int(max(cx - half, 0)), int(min(cx + half, frames[i].shape[1]))
        zoom = cv2.resize(frames[i][y0:y1, x0:x1], (args.tile, args.tile),
                          interpolation=cv2.INTER_CUBIC)
        tiles.append(_caption(zoom, "mouth zoom (open)"))
    cols = 4
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[k:k + cols], axis=1) for k in range(0, len(tiles), cols)]
    sheet = np.concatenate(rows, axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"{args.out}: {len(picks) + 1} tiles from {res.frames} frames at "
          f"{res.width}x{res.height}")


def _caption(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, out.shape[0] - 24), (out.shape[1], out.shape[0]), (0, 0, 0), -1)
    cv2.putText(out, text, (6, out.shape[0] - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


if __name__ == "__main__":
    main()
