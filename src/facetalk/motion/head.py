"""Head pose and brows: slow seeded drift plus nods, turns and tilts on stressed syllables,
brows raised on pitch accents."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from . import kernels
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
    peaks: list[tuple[int, float, float]] = []
    # Compiled (kernels.stress_candidates): a flat top (loudness clipped at 1, as the live
    # driver's first second can be before it knows the voice's levels) is one peak, not
    # one per hop: only where the plateau starts. Each with its prominence over the dip
    # before it, and (pitch accent) the median F0 of the last 3 s.
    candidates, proms, refs = kernels.stress_candidates(env, local_max, f0, voiced, 2 * w_before,
                                                        int(3 * rate))
    for i, prom, ref in zip(candidates.tolist(), proms.tolist(), refs.tolist(), strict=True):
        if prom <= 0.2:
            continue
        # Pitch accent: this syllable's F0 against the median of the last 3 s.
        accent = 12 * np.log2(f0[i] / ref) if ref > 0 and f0[i] > 0 else 0.0
        peaks.append((int(i), float(min(1.0, prom)), float(accent)))
    return peaks


#: Drift amplitude per axis (yaw, pitch, roll), radians per unit of normalized drift.
_DRIFT_AMP = np.array([amp * (np.pi / 180) * 0.6 for amp in (1.6, 0.9, 1.0)])


@dataclass(frozen=True)
class HeadStyle:
    """Seeded constants of one speaker's head motion (drift and nod directions)."""

    freqs: np.ndarray  # (3 axes, 3 components) Hz
    phases: np.ndarray
    weights: np.ndarray
    turn_seed: int

    @cached_property
    def drift_rms(self) -> np.ndarray:
        """Expected RMS of each axis' weighted sines (a constant of the style)."""
        return np.array([np.sqrt(0.5 * float((self.weights[axis] ** 2).sum())) for axis in range(3)])

    @classmethod
    def draw(cls, rng: np.random.Generator) -> HeadStyle:
        """Draw a style from ``rng``."""
        return cls(freqs=rng.uniform(0.05, 0.33, size=(3, 3)),
                   phases=rng.uniform(0, 2 * np.pi, size=(3, 3)),
                   weights=rng.uniform(0.5, 1.0, size=(3, 3)),
                   turn_seed=int(rng.integers(0, 2**31 - 1)))


#: Hops per block of head_and_brows' syllable bumps, and how long after its start a
#: bump can still be non-zero: rise (0.15 s at most) + decay (0.35 s at most) x 746 (the
#: exponent at which exp underflows to 0).
_BLOCK = 256
_REACH_S = 0.15 + 0.35 * 746.0


def _bump(tt: np.ndarray, rise: float, decay: float) -> np.ndarray:
    """0 before 0, smooth rise over ``rise`` s, exponential decay afterwards."""
    u = np.clip(tt / rise, 0.0, 1.0)
    up = u * u * (3 - 2 * u)
    # The exponent is clipped where the branch is not taken (it would overflow there).
    tail = np.exp(-np.maximum(tt - rise, 0.0) / decay)
    return np.where(tt < 0, 0.0, np.where(tt < rise, up, tail))


@lru_cache(maxsize=4096)
def _turn_tilt(seed: int) -> tuple[float, float]:
    """A syllable's turn and tilt draws (the live driver meets each syllable in ~75
    frames; a generator costs more than the rest of its motion)."""
    r = np.random.default_rng(seed)
    return float(r.uniform(-0.6, 0.6)), float(r.uniform(-0.5, 0.5))


def head_and_brows(feat: Features, t0: float, style: HeadStyle, motion_scale: float,
                   activity: np.ndarray, span: tuple[int, int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Head pose (n, 5) and brow raise (n,) per hop of ``feat`` (starting at ``t0`` s).

    Slow drift is a sum of incommensurate sinusoids of absolute time; on stressed
    syllables the head nods (and turns or tilts a little, direction seeded per
    syllable), starting once the peak is confirmed; brows rise on pitch accents.
    ``activity`` (0..1 per hop, causal) scales the motion up while speaking.

    ``span`` (first, stop): only these hops are computed, the others are left at rest.
    The live driver samples one frame from two hops of its window; each hop's value is
    the same as when all are computed (the stress peaks are still found in all of them).
    """
    n = feat.n
    rate = feat.rate
    pose = np.zeros((n, 5))
    brow = np.zeros(n)
    if motion_scale <= 0 or n == 0:
        return pose, brow
    lo, hi = (0, n) if span is None else (min(max(0, span[0]), n), max(0, min(n, span[1])))
    hi = max(lo, hi)
    deg = np.pi / 180
    hops = np.arange(lo, hi) / rate
    t = t0 + hops
    # All three axes at once, (axis, hop): the sum of three unit-RMS-weighted sines (added
    # in order, one component at a time: a whole (axis, component, hop) array is 13 MB
    # for a 30-minute clip), normalized by its expected RMS.
    def wave(c: int) -> np.ndarray:
        return style.weights[:, c, None] * np.sin(
            2 * np.pi * style.freqs[:, c, None] * t + style.phases[:, c, None])

    drift = wave(0) + wave(1)
    drift += wave(2)
    drift /= style.drift_rms[:, None]
    part = pose[lo:hi]
    part[:, :3] = (_DRIFT_AMP[:, None] * drift).T
    part[:, :3] *= (0.7 + 0.5 * activity[lo:hi])[:, None]
    peaks = stress_peaks(feat)
    if peaks and hi > lo:
        starts = np.array([(i / rate) + PEAK_CONFIRM_S for i, _, _ in peaks])
        coefs = np.empty((3, len(peaks)))  # nod, turn, tilt per syllable
        for k, (i, prom, _) in enumerate(peaks):
            # Direction of the small turn and tilt: fixed per syllable by its absolute time.
            u_turn, u_tilt = _turn_tilt(style.turn_seed + int(round((t0 + i / rate) * 100)))
            coefs[:, k] = (1.4 * deg * prom, u_turn * deg * prom, u_tilt * deg * prom)
        accented = np.array([k for k, (_, _, accent) in enumerate(peaks) if accent > 1.5], int)
        lifts = np.array([0.55 * peaks[k][1] for k in accented])
        # Syllables' bumps, added in order, block by block of hops: a bump is exactly 0
        # before its start and once its tail underflows (exp below -745), so only the
        # syllables that can reach a block are computed for it (every syllable against
        # every hop at once needed peaks x hops floats: 10 GB for a 30-minute clip).
        for b0 in range(0, hi - lo, _BLOCK):
            blk = hops[b0:b0 + _BLOCK]
            near = np.flatnonzero((starts <= blk[-1]) & (starts >= blk[0] - _REACH_S))
            if len(near) == 0:
                continue
            tt = blk[None, :] - starts[near, None]
            kernels.add_nods(part[b0:b0 + _BLOCK], np.ascontiguousarray(coefs[:, near]),
                             _bump(tt, 0.15, 0.3))
            acc = np.flatnonzero(np.isin(near, accented))
            if len(acc):
                kernels.add_rows(brow[lo + b0:lo + b0 + len(blk)],
                                 lifts[np.searchsorted(accented, near[acc])],
                                 _bump(tt[acc], 0.12, 0.35))
    pose[:, 3] = 0.01 * pose[:, 0] / deg  # a turn carries the head sideways a little
    pose[:, 4] = 0.006 * pose[:, 1] / deg
    return pose * motion_scale, np.clip(brow * motion_scale, 0.0, 1.0)
