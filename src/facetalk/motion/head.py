"""Head pose and brows: slow seeded drift plus nods, turns and tilts on stressed syllables,
brows raised on pitch accents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import Features
from .filters import _smooth, running_max

#: Stress peaks are confirmed this long after they happen (within the look-ahead).
PEAK_CONFIRM_S = 0.06


def stress_peaks(feat: Features) -> list[tuple[int, float, float]]:
    """Syllable nuclei: (hop, prominence 0..1, pitch accent in semitones above typical).

    A peak of the smoothed loudness that is the largest within 180 ms before it and
    PEAK_CONFIRM_S after it, and stands out from the dip before it.
    """
    rate = feat.rate
    env = _smooth(feat.loud * feat.vad, 0.025, rate)
    w_before, w_after = int(0.18 * rate), int(PEAK_CONFIRM_S * rate)
    local_max = running_max(env, w_before, w_after)
    f0 = feat.f0
    voiced = f0 > 0
    peaks = []
    # A flat top (loudness clipped at 1, as the live driver's first second can be before it
    # knows the voice's levels) is one peak, not one per hop: only where the plateau starts.
    starts = np.ones(len(env), bool)
    starts[1:] = env[1:] != env[:-1]
    for i in np.nonzero((env == local_max) & (env > 0.35) & starts)[0]:
        prom = env[i] - env[max(0, i - 2 * w_before):i + 1].min()
        if prom <= 0.2:
            continue
        # Pitch accent: this syllable's F0 against the median of the last 3 s.
        past = voiced[max(0, i - int(3 * rate)):i + 1]
        ref = float(np.median(f0[max(0, i - int(3 * rate)):i + 1][past])) if past.sum() > 10 else 0.0
        accent = 12 * np.log2(f0[i] / ref) if ref > 0 and f0[i] > 0 else 0.0
        peaks.append((int(i), float(min(1.0, prom)), float(accent)))
    return peaks


@dataclass(frozen=True)
class HeadStyle:
    """Seeded constants of one speaker's head motion (drift and nod directions)."""

    freqs: np.ndarray  # (3 axes, 3 components) Hz
    phases: np.ndarray
    weights: np.ndarray
    turn_seed: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> HeadStyle:
        """Draw a style from ``rng``."""
        return cls(freqs=rng.uniform(0.05, 0.33, size=(3, 3)),
                   phases=rng.uniform(0, 2 * np.pi, size=(3, 3)),
                   weights=rng.uniform(0.5, 1.0, size=(3, 3)),
                   turn_seed=int(rng.integers(0, 2**31 - 1)))


def _bump(tt: np.ndarray, rise: float, decay: float) -> np.ndarray:
    """0 before 0, smooth rise over ``rise`` s, exponential decay afterwards."""
    u = np.clip(tt / rise, 0.0, 1.0)
    up = u * u * (3 - 2 * u)
    # The exponent is clipped where the branch is not taken (it would overflow there).
    tail = np.exp(-np.maximum(tt - rise, 0.0) / decay)
    return np.where(tt < 0, 0.0, np.where(tt < rise, up, tail))


def head_and_brows(feat: Features, t0: float, style: HeadStyle, motion_scale: float,
                   activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head pose (n, 5) and brow raise (n,) per hop of ``feat`` (starting at ``t0`` s).

    Slow drift is a sum of incommensurate sinusoids of absolute time; on stressed
    syllables the head nods (and turns or tilts a little, direction seeded per
    syllable), starting once the peak is confirmed; brows rise on pitch accents.
    ``activity`` (0..1 per hop, causal) scales the motion up while speaking.
    """
    n = feat.n
    rate = feat.rate
    pose = np.zeros((n, 5))
    brow = np.zeros(n)
    if motion_scale <= 0 or n == 0:
        return pose, brow
    deg = np.pi / 180
    t = t0 + np.arange(n) / rate
    for axis, amp in ((0, 1.6), (1, 0.9), (2, 1.0)):
        waves = style.weights[axis][:, None] * np.sin(
            2 * np.pi * style.freqs[axis][:, None] * t + style.phases[axis][:, None])
        # The sum of three unit-RMS-weighted sines, normalized by its expected RMS.
        drift = waves.sum(0) / np.sqrt(0.5 * float((style.weights[axis] ** 2).sum()))
        pose[:, axis] = amp * deg * 0.6 * drift
    pose[:, :3] *= (0.7 + 0.5 * activity)[:, None]
    for i, prom, accent in stress_peaks(feat):
        start = (i / rate) + PEAK_CONFIRM_S
        bump = _bump(np.arange(n) / rate - start, 0.15, 0.3)
        # Direction of the small turn and tilt: fixed per syllable by its absolute time.
        r = np.random.default_rng(style.turn_seed + int(round((t0 + i / rate) * 100)))
        pose[:, 1] += 1.4 * deg * prom * bump
        pose[:, 0] += float(r.uniform(-0.6, 0.6)) * deg * prom * bump
        pose[:, 2] += float(r.uniform(-0.5, 0.5)) * deg * prom * bump
        if accent > 1.5:
            brow += 0.55 * prom * _bump(np.arange(n) / rate - start, 0.12, 0.35)
    pose[:, 3] = 0.01 * pose[:, 0] / deg  # a turn carries the head sideways a little
    pose[:, 4] = 0.006 * pose[:, 1] / deg
    return pose * motion_scale, np.clip(brow * motion_scale, 0.0, 1.0)
