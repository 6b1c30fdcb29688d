"""Synthetic test signals with known content: speech-like vowel syllables, a tone, music."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

RATE = 16000
I_FORMANTS = ((280, 60), (2250, 90), (2900, 120))  # /i/ as in "see": spread lips
U_FORMANTS = ((310, 60), (870, 80), (2250, 120))  # /u/ as in "shoe": rounded lips


def _resonator(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    r = np.exp(-np.pi * bw / RATE)
    c = -r * r
    b = 2 * r * np.cos(2 * np.pi * freq / RATE)
    return lfilter([1 - b - c], [1, -b, -c], x)


def syllable(formants: tuple[tuple[int, int], ...], dur: float, rng: np.random.Generator
             ) -> tuple[np.ndarray, float]:
    """/s/ + vowel with falling intonation (a cascade formant synthesizer); vowel start."""
    n = int(dur * RATE)
    t = np.arange(n) / RATE
    f0 = 140.0 + (105.0 - 140.0) * t / dur
    pulses = np.diff(np.floor(np.cumsum(f0 / RATE)), prepend=0)
    y = lfilter([1], [1, -0.97], pulses)
    for f, bw in formants:
        y = _resonator(y, f, bw)
    env = np.minimum(1, np.minimum(t / 0.03, (dur - t) / 0.06))
    y = y * env / np.abs(y).max() * 0.5
    s = lfilter([1, -1], [1], rng.normal(0, 1, int(0.09 * RATE)))
    s = s / np.abs(s).max() * 0.4 * np.minimum(1, np.arange(len(s)) / 200)
    return np.concatenate([s, y]), len(s) / RATE


def vowel_pairs(repeats: int = 4, seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Alternating /si/ and /su/ syllables with pauses, and where each vowel is."""
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(0.3 * RATE))
    parts, marks, t = [gap], [], 0.3
    for k in range(2 * repeats):
        name, form = ("i", I_FORMANTS) if k % 2 == 0 else ("u", U_FORMANTS)
        syl, vowel_start = syllable(form, 0.4, rng)
        marks.append((name, t + vowel_start, t + len(syl) / RATE))
        parts += [syl, gap]
        t += len(syl) / RATE + 0.3
    return np.concatenate(parts).astype(np.float32), marks


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    """A steady sine tone."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def music(seconds: float, bpm: float = 120.0, seed: int = 0) -> np.ndarray:
    """Plucked notes with harmonics on the beat, over a bass line: an instrumental tune."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE))
    beat = 60.0 / bpm
    notes = (261.6, 293.7, 329.6, 349.2, 392.0, 440.0, 493.9, 523.3)
    t = 0.0
    while t < seconds:
        f = float(rng.choice(notes))
        n = int(min(beat, seconds - t) * RATE)
        tt = np.arange(n) / RATE
        note = sum((0.5 / k) * np.sin(2 * np.pi * f * k * tt) for k in range(1, 6)) * np.exp(-tt * 3)
        bass = 0.3 * np.sin(2 * np.pi * f / 4 * tt) * np.exp(-tt * 2)
        i = int(t * RATE)
        out[i:i + n] += note + bass
        t += beat
    return (0.5 * out / np.abs(out).max()).astype(np.float32)
