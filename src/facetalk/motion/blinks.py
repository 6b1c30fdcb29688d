"""Blinks: causal and seeded, about 15 a minute at irregular intervals, drawn to phrase
boundaries. One scheduler, stepped hop by hop, serves both drivers."""

from __future__ import annotations

import numpy as np

from .filters import LOOKAHEAD_S


class BlinkScheduler:
    """Causal, seeded blinks: call :meth:`step` hop by hop with the voice activity.

    Intervals follow a gamma distribution (mean ~4 s: 15 per minute, irregular); once
    a pause has begun (LOOKAHEAD_S of silence after speech), a blink due within the next
    second is taken there instead, since people blink at phrase boundaries. Each blink
    closes in ~100 ms, stays closed 40-80 ms and opens in ~150 ms; a few are double. Every
    blink closes the eye fully: half blinks exist, but at 25 fps they read as squints.
    """

    def __init__(self, rng: np.random.Generator, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.t = 0.0
        self.next = float(rng.uniform(0.4, 2.5))
        self.last = -10.0
        self.active: list[tuple[float, float, float, float]] = []
        self.silent_for = 0.0
        self.spoke = False
        self.starts: list[float] = []

    def _begin(self, t: float) -> None:
        rng = self.rng
        shape = (t, float(rng.uniform(0.08, 0.11)), float(rng.uniform(0.04, 0.08)),
                 float(rng.uniform(0.13, 0.18)))
        self.active.append(shape)
        self.starts.append(t)
        self.last = t
        if rng.random() < 0.08:  # an occasional double blink
            self.next = t + 0.35
        else:
            self.next = t + float(np.clip(rng.gamma(2.5, 4.0 / 2.5), 1.3, 10.0))

    def step(self, speaking: bool) -> float:
        """Advance one hop; return the eyelid closure (0 open .. 1 closed) at that hop."""
        t = self.t
        self.t += 1.0 / self.rate
        if speaking:
            self.spoke, self.silent_for = True, 0.0
        else:
            self.silent_for += 1.0 / self.rate
        pause_start = (self.spoke and not speaking
                       and abs(self.silent_for - LOOKAHEAD_S) < 0.5 / self.rate)
        if (pause_start and self.next - t < 1.0 and t - self.last > 1.5) or t >= self.next:
            self._begin(t)
        value = 0.0
        keep = []
        for start, close_t, hold_t, open_t in self.active:
            tt = t - start
            if tt > close_t + hold_t + open_t:
                continue
            keep.append((start, close_t, hold_t, open_t))
            if tt < close_t:
                u = tt / close_t
                v = u * u * (3 - 2 * u)
            else:
                d = min(1.0, max(0.0, (tt - close_t - hold_t) / open_t))
                v = 1.0 - d * d * (3 - 2 * d)
            value = max(value, v)
        self.active = keep
        return value


def blink_curve(vad: np.ndarray, rate: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Blink amount per hop for a whole recording, and the blink start times."""
    sched = BlinkScheduler(rng, rate)
    curve = np.array([sched.step(bool(v)) for v in vad])
    return curve, np.array(sched.starts)
