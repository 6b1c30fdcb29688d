"""Acoustic features every 10 ms, from the sound alone (any language, no transcript).

What the motion model needs to know about speech, per 10 ms hop:

* loudness (dB, and normalized 0..1 against this recording's own noise floor and peak),
* voice activity,
* voicing and pitch (F0) by normalized autocorrelation,
* the first two formants by LPC: F1 ~ jaw/vowel openness, F2 ~ lip rounding vs spreading,
* band energies to tell fricatives, nasal murmurs and stop bursts apart.

All of it is vectorized over frames with numpy; a minute of audio takes well under a
second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

HOP_S = 0.010
WIN_S = 0.025
LPC_ORDER = 12


@dataclass(frozen=True)
class Features:
    """Per-hop acoustic features; all arrays have one value per 10 ms."""

    rate: float  # hops per second (100)
    db: np.ndarray  # frame energy in dBFS
    loud: np.ndarray  # 0..1 loudness relative to this recording's floor and speech peak
    vad: np.ndarray  # bool, speech present
    voiced: np.ndarray  # bool, periodic (vowels, voiced consonants)
    f0: np.ndarray  # Hz, 0 where unvoiced
    f1: np.ndarray  # Hz, first formant (0 where not estimated)
    f2: np.ndarray  # Hz, second formant
    low_ratio: np.ndarray  # energy share below 500 Hz (nasal murmur is high)
    labial: np.ndarray  # log10 energy 500-1000 Hz over 1000-2000 Hz; low in /m/ murmurs
    high_ratio: np.ndarray  # energy share above 3 kHz (fricatives, bursts are high)
    flux: np.ndarray  # positive spectral flux (onsets, bursts)
    floor_db: float
    peak_db: float

    @property
    def n(self) -> int:
        """Number of hops."""
        return len(self.db)

    @property
    def times(self) -> np.ndarray:
        """Centre time of each hop in seconds."""
        return np.arange(self.n) / self.rate


#: Hops analysed at once: bounds the spectra held in memory (~8 MB) whatever the length.
BLOCK_HOPS = 2048


def analyze(samples: np.ndarray, sr: int) -> Features:
    """Compute :class:`Features` for a mono float32 signal at ``sr`` Hz.

    Spectral work runs in blocks of BLOCK_HOPS hops so memory stays flat in the
    recording's length; only per-hop values (a few numbers per 10 ms) are kept.
    """
    if len(samples) == 0:
        raise ValueError("no samples")
    offset = float(np.mean(samples, dtype=np.float64))
    hop, win = int(round(HOP_S * sr)), int(round(WIN_S * sr))
    n = int(np.ceil(len(samples) / hop))
    window = np.hanning(win).astype(np.float32)
    nfft = 1 << int(np.ceil(np.log2(win)))
    freqs = np.fft.rfftfreq(nfft, 1 / sr)
    bands = {"all": freqs >= 60, "low": (freqs >= 60) & (freqs < 500),
             "high": freqs >= 3000, "b1": (freqs >= 500) & (freqs < 1000),
             "b2": (freqs >= 1000) & (freqs < 2000)}
    out = {k: np.zeros(n) for k in ("db", "low", "high", "labial", "flux", "lag", "strength",
                                     "f1", "f2")}
    prev_log: np.ndarray | None = None
    for start in range(0, n, BLOCK_HOPS):
        stop = min(n, start + BLOCK_HOPS)
        frames = _block_frames(samples, offset, start, stop, hop, win)
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        out["db"][start:stop] = 20 * np.log10(rms + 1e-9)
        spec = np.abs(np.fft.rfft(frames * window, nfft, axis=1)) ** 2
        total = spec[:, bands["all"]].sum(axis=1) + 1e-12
        out["low"][start:stop] = spec[:, bands["low"]].sum(axis=1) / total
        out["high"][start:stop] = spec[:, bands["high"]].sum(axis=1) / total
        # /m/'s murmur has an antiresonance near 1 kHz (/n/ near 1.5-2 kHz, /ng/ higher),
        # so little energy between 500 and 1000 Hz relative to 1-2 kHz marks closed lips.
        out["labial"][start:stop] = np.log10((spec[:, bands["b1"]].sum(axis=1) + 1e-12)
                                             / (spec[:, bands["b2"]].sum(axis=1) + 1e-12))
        logspec = np.log(spec + 1e-10)
        before = logspec[:1] if prev_log is None else prev_log
        diff = np.diff(np.concatenate([before, logspec]), axis=0)
        out["flux"][start:stop] = np.clip(diff, 0, None).mean(axis=1)
        prev_log = logspec[-1:]
        lag, strength = _pitch_lags(frames, sr)
        out["lag"][start:stop] = lag
        out["strength"][start:stop] = strength
        f1, f2 = _formants(frames, sr, window)
        out["f1"][start:stop] = f1
        out["f2"][start:stop] = f2
    db = out["db"]
    floor_db, peak_db = _levels(db)
    loud = np.clip((db - floor_db) / max(peak_db - floor_db, 6.0), 0.0, 1.0)
    vad = _vad(db, floor_db, peak_db)
    voiced = vad & (out["strength"] > 0.45)
    f0 = np.where(voiced, sr / np.maximum(out["lag"], 1.0), 0.0)
    return Features(rate=1.0 / HOP_S, db=db, loud=loud, vad=vad, voiced=voiced, f0=f0,
                    f1=np.where(vad, out["f1"], 0.0), f2=np.where(vad, out["f2"], 0.0),
                    low_ratio=out["low"], labial=out["labial"], high_ratio=out["high"],
                    flux=out["flux"], floor_db=floor_db, peak_db=peak_db)


def _block_frames(x: np.ndarray, offset: float, start: int, stop: int, hop: int,
                  win: int) -> np.ndarray:
    """Analysis windows ``start..stop`` (hop-centred, zero beyond the signal), DC removed."""
    pad_left = win // 2
    lo = start * hop - pad_left
    hi = (stop - 1) * hop - pad_left + win
    seg = np.zeros(hi - lo, dtype=np.float32)
    a, b = max(lo, 0), min(hi, len(x))
    if b > a:
        seg[a - lo:b - lo] = x[a:b] - offset
    return sliding_window_view(seg, win)[::hop][: stop - start]


def _levels(db: np.ndarray) -> tuple[float, float]:
    """Noise floor and speech peak (dB) of this recording, robust to long silences."""
    floor = float(np.percentile(db, 10))
    peak = float(np.percentile(db, 97))
    if peak - floor < 6.0:  # nearly constant level: silence, a tone, or noise
        floor = min(floor, peak - 40.0)
    # Digital silence sits at -180 dB; keep the floor meaningful for speech levels.
    floor = max(floor, peak - 60.0)
    return floor, peak


def _vad(db: np.ndarray, floor: float, peak: float) -> np.ndarray:
    """Speech present where the level clears the floor, with hangover and gap bridging."""
    thresh = floor + max(6.0, 0.3 * (peak - floor))
    active = db > thresh
    if peak < -55.0:  # whole recording is (near) silent
        return np.zeros_like(active)
    # Bridge gaps shorter than 60 ms, drop blips shorter than 40 ms.
    out = active.copy()
    _fill_short(out, value=False, max_len=6)
    _fill_short(out, value=True, max_len=4)
    return out


def _fill_short(mask: np.ndarray, value: bool, max_len: int) -> None:
    """Flip runs of ``value`` shorter than ``max_len`` that sit between other runs."""
    n = len(mask)
    i = 0
    while i < n:
        if mask[i] == value:
            j = i
            while j < n and mask[j] == value:
                j += 1
            if i > 0 and j < n and (j - i) <= max_len:
                mask[i:j] = not value
            i = j
        else:
            i += 1


def _pitch_lags(frames: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation peak lag (samples) and strength in 70-400 Hz, per frame."""
    win = frames.shape[1]
    f = frames - frames.mean(axis=1, keepdims=True)
    nfft = 1 << int(np.ceil(np.log2(2 * win)))
    spec = np.fft.rfft(f, nfft, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, nfft, axis=1)[:, :win]
    energy = ac[:, :1] + 1e-12
    # Unbiased normalization so long lags are not penalized.
    ac = ac / energy * (win / np.maximum(win - np.arange(win), 1))
    lo, hi = int(sr / 400), min(int(sr / 70), win - 1)
    seg = ac[:, lo:hi]
    return np.argmax(seg, axis=1) + lo, seg.max(axis=1)


def _formants(frames: np.ndarray, sr: int, window: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """F1, F2 from LPC roots (autocorrelation method, Levinson-Durbin, batched)."""
    x = frames.astype(np.float64)
    x[:, 1:] -= 0.97 * frames[:, :-1]  # pre-emphasis (first-order high-pass)
    x *= window
    n, win = x.shape
    nfft = 1 << int(np.ceil(np.log2(2 * win)))
    spec = np.fft.rfft(x, nfft, axis=1)
    r = np.fft.irfft(np.abs(spec) ** 2, nfft, axis=1)[:, : LPC_ORDER + 1]
    r[:, 0] *= 1.0 + 1e-6  # white-noise correction keeps the recursion stable
    r[:, 0] += 1e-12
    a = np.zeros((n, LPC_ORDER + 1))
    a[:, 0] = 1.0
    err = r[:, 0].copy()
    for i in range(1, LPC_ORDER + 1):
        acc = r[:, i] + np.einsum("nj,nj->n", a[:, 1:i], r[:, i - 1:0:-1])
        k = -acc / err
        a_prev = a.copy()
        a[:, i] = k
        a[:, 1:i] = a_prev[:, 1:i] + k[:, None] * a_prev[:, i - 1:0:-1]
        err = err * (1.0 - k * k)
    # Roots of each polynomial = eigenvalues of its companion matrix (batched).
    comp = np.zeros((n, LPC_ORDER, LPC_ORDER))
    comp[:, 0, :] = -a[:, 1:]
    comp[:, np.arange(1, LPC_ORDER), np.arange(LPC_ORDER - 1)] = 1.0
    roots = np.linalg.eigvals(comp)
    ang = np.angle(roots)
    freq = ang * sr / (2 * np.pi)
    bw = -np.log(np.abs(roots) + 1e-12) * sr / np.pi
    ok = (freq > 200) & (freq < 4000) & (bw < 500) & (np.imag(roots) > 0)
    freq = np.where(ok, freq, np.inf)
    freq.sort(axis=1)
    f1 = np.where(np.isfinite(freq[:, 0]), freq[:, 0], 0.0)
    f2 = np.where(np.isfinite(freq[:, 1]), freq[:, 1], 0.0)
    return f1, f2
