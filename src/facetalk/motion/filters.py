"""The hand-written filters every motion curve is made of: zero-phase smoothing truncated at
the live look-ahead, causal EMAs, running maxima, runs and window sums.

Kept bit for bit as they were (scipy.ndimage has equivalents; swapping them in may change
the last bits of the output, so that is a separate, re-recorded change)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from . import kernels

#: How far any curve looks ahead in a live stream (the anticipation of onsets needs it).
LOOKAHEAD_S = 0.04


@lru_cache(maxsize=64)
def _gauss_kernel(sigma_s: float, rate: float) -> tuple[int, np.ndarray]:
    """Half-width and taps of _smooth's kernel: the same few per stream, so computed once
    (the live driver smooths a window for every frame)."""
    sigma = sigma_s * rate
    r = max(1, min(int(4 * sigma + 0.5), int(round(LOOKAHEAD_S * rate))))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    k.setflags(write=False)
    return r, k


def _pad_edge(x: np.ndarray, before: int, after: int) -> np.ndarray:
    """np.pad(x, (before, after), mode="edge") without its generic machinery."""
    out = np.empty(len(x) + before + after, x.dtype)
    out[before:before + len(x)] = x
    out[:before] = x[0]
    out[before + len(x):] = x[-1]
    return out


def _smooth(x: np.ndarray, sigma_s: float, rate: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing, truncated at LOOKAHEAD_S each side; edges held."""
    sigma = sigma_s * rate
    if sigma <= 0 or len(x) == 0:
        return x
    r, k = _gauss_kernel(sigma_s, rate)
    return np.convolve(_pad_edge(np.asarray(x), r, r), k, mode="valid")


def ema_alpha(tau_s: float, rate: float) -> float:
    """Per-sample step of a causal exponential moving average with time constant ``tau_s``
    (one definition for the offline curve and the live driver's running value)."""
    return 1.0 - np.exp(-1.0 / max(tau_s * rate, 1e-9))


def _ema(x: np.ndarray, tau_s: float, rate: float, start: float | None = None) -> np.ndarray:
    """Causal exponential moving average (time constant ``tau_s``)."""
    a = ema_alpha(tau_s, rate)
    acc = float(x[0]) if start is None and len(x) else (start or 0.0)
    return kernels.ema(np.asarray(x, np.float64), float(a), acc)


def running_max(x: np.ndarray, before: int, after: int) -> np.ndarray:
    """Maximum over ``before`` samples back and ``after`` ahead; edges held."""
    if len(x) == 0 or before + after == 0:
        return x.copy()
    return kernels.running_max(np.ascontiguousarray(x), before, after)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of True runs."""
    starts, ends = kernels.runs(np.ascontiguousarray(mask, dtype=np.bool_))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _window_sum(x: np.ndarray, before: int, after: int) -> np.ndarray:
    """Sum over ``before`` samples back and ``after`` ahead, clipped at the edges."""
    return kernels.window_sum(np.asarray(x, np.float64), before, after)


def percentile_sorted(values: Sequence[float], q: float) -> float:
    """np.percentile(values, q) of already sorted, NaN-free ``values``, with numpy's own
    arithmetic (linear method): a live voice's levels keep their values sorted as they
    arrive, instead of partitioning thousands of them for every frame."""
    n = len(values)
    v = (n - 1) * (q / 100)
    if v >= n - 1:
        return float(values[-1])
    prev = int(np.floor(v))
    gamma = v - prev
    a, b = float(values[prev]), float(values[prev + 1])
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma
