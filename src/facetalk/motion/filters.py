"""The hand-written filters every motion curve is made of: zero-phase smoothing truncated at
the live look-ahead, causal EMAs, running maxima, runs and window sums.

Kept bit for bit as they were (scipy.ndimage has equivalents; swapping them in may change
the last bits of the output, so that is a separate, re-recorded change)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: How far any curve looks ahead in a live stream (the anticipation of onsets needs it).
LOOKAHEAD_S = 0.04


def _smooth(x: np.ndarray, sigma_s: float, rate: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing, truncated at LOOKAHEAD_S each side; edges held."""
    sigma = sigma_s * rate
    if sigma <= 0 or len(x) == 0:
        return x
    r = max(1, min(int(4 * sigma + 0.5), int(round(LOOKAHEAD_S * rate))))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(x, r, mode="edge"), k, mode="valid")


def ema_alpha(tau_s: float, rate: float) -> float:
    """Per-sample step of a causal exponential moving average with time constant ``tau_s``
    (one definition for the offline curve and the live driver's running value)."""
    return 1.0 - np.exp(-1.0 / max(tau_s * rate, 1e-9))


def _ema(x: np.ndarray, tau_s: float, rate: float, start: float | None = None) -> np.ndarray:
    """Causal exponential moving average (time constant ``tau_s``)."""
    a = ema_alpha(tau_s, rate)
    out = np.empty(len(x))
    acc = float(x[0]) if start is None and len(x) else (start or 0.0)
    for i, v in enumerate(x):
        acc += a * (float(v) - acc)
        out[i] = acc
    return out


def running_max(x: np.ndarray, before: int, after: int) -> np.ndarray:
    """Maximum over ``before`` samples back and ``after`` ahead; edges held."""
    if len(x) == 0 or before + after == 0:
        return x.copy()
    padded = np.pad(x, (before, after), mode="edge")
    return sliding_window_view(padded, before + after + 1).max(axis=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of True runs."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0], strict=True))


def _window_sum(x: np.ndarray, before: int, after: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    idx = np.arange(len(x))
    return c[np.minimum(idx + after + 1, len(x))] - c[np.maximum(idx - before, 0)]
