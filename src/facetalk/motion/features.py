"""Acoustic features every 10 ms, from the sound alone (any language, no transcript).

What the motion model needs to know about speech, per 10 ms hop:

* loudness (dB, and normalized 0..1 against this recording's own noise floor and peak),
* voice activity,
* voicing and pitch (F0) by normalized autocorrelation,
* the first two formants by LPC: F1 ~ jaw/vowel openness, F2 ~ lip rounding vs spreading,
* spectral brightness (energy 1.5-3.5 kHz over 0.3-1.2 kHz): rounding vs spreading that
  recorded voices show reliably (their LPC F2 often lands on the wrong pole),
* band energies to tell fricatives, nasal murmurs and stop bursts apart.

All of it is vectorized over frames with numpy; a minute of audio takes well under a
second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import kernels
from .filters import percentile_sorted

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
    bright: np.ndarray  # log10 energy 1.5-3.5 kHz over 0.3-1.2 kHz: low for u/o, high for i/e
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
#: Hops per block of the chunked analysis (raw_features_stream): smaller blocks keep its
#: transient spectra (two threads' worth) small; per-hop results do not depend on it.
STREAM_BLOCK_HOPS = 512
#: Clips shorter than twice this many hops are measured in one block, on one thread.
MIN_PARALLEL_HOPS = 500
RAW_FIELDS = ("db", "low", "high", "labial", "flux", "lag", "strength", "f1", "f2", "bright")


@dataclass(frozen=True)
class RawFeatures:
    """Per-hop measurements before any normalization to the recording's levels.

    Everything here depends only on the audio around each hop (its 25 ms window), so it
    can be computed incrementally for a live stream exactly as for a whole file.
    """

    rate: float
    db: np.ndarray
    low: np.ndarray
    high: np.ndarray
    labial: np.ndarray
    flux: np.ndarray
    lag: np.ndarray  # autocorrelation peak lag (samples)
    strength: np.ndarray  # its normalized strength (periodicity)
    f1: np.ndarray
    f2: np.ndarray
    bright: np.ndarray
    sr: int

    @property
    def n(self) -> int:
        """Number of hops."""
        return len(self.db)

    def window(self, start: int, stop: int) -> RawFeatures:
        """Hops ``start:stop``."""
        return RawFeatures(self.rate, *(getattr(self, k)[start:stop] for k in RAW_FIELDS), self.sr)

    @staticmethod
    def join(parts: list[RawFeatures]) -> RawFeatures:
        """Concatenate consecutive pieces."""
        first = parts[0]
        return RawFeatures(first.rate, *(np.concatenate([getattr(p, k) for p in parts])
                                         for k in RAW_FIELDS), first.sr)


class _Measure:
    """Per-hop measurements of analysis windows; keeps the state spectral flux needs."""

    def __init__(self, sr: int) -> None:
        self.sr = sr
        self.win = int(round(WIN_S * sr))
        self.window = np.hanning(self.win).astype(np.float32)
        self.nfft = 1 << int(np.ceil(np.log2(self.win)))
        freqs = np.fft.rfftfreq(self.nfft, 1 / sr)
        self.bands = {"all": freqs >= 60, "low": (freqs >= 60) & (freqs < 500),
                      "high": freqs >= 3000, "b1": (freqs >= 500) & (freqs < 1000),
                      "b2": (freqs >= 1000) & (freqs < 2000),
                      "dark": (freqs >= 300) & (freqs < 1200), "light": (freqs >= 1500) & (freqs < 3500)}
        self.prev_log: np.ndarray | None = None

    def __call__(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        # Each window's own mean is its DC: removed per window, so a live stream and a
        # file give the same numbers.
        frames = frames - frames.mean(axis=1, keepdims=True)
        out: dict[str, np.ndarray] = {}
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        out["db"] = 20 * np.log10(rms + 1e-9)
        spec = np.abs(np.fft.rfft(frames * self.window, self.nfft, axis=1)) ** 2
        b = self.bands
        total = spec[:, b["all"]].sum(axis=1) + 1e-12
        out["low"] = spec[:, b["low"]].sum(axis=1) / total
        out["high"] = spec[:, b["high"]].sum(axis=1) / total
        # /m/'s murmur has an antiresonance near 1 kHz (/n/ near 1.5-2 kHz, /ng/ higher),
        # so little energy between 500 and 1000 Hz relative to 1-2 kHz marks closed lips.
        out["labial"] = np.log10((spec[:, b["b1"]].sum(axis=1) + 1e-12)
                                 / (spec[:, b["b2"]].sum(axis=1) + 1e-12))
        # Rounded vowels (low F2, lips forward) put little energy above 1.5 kHz, spread ones
        # (high F2) much: a band ratio needs no formant picking, which fails on real voices.
        out["bright"] = np.log10((spec[:, b["light"]].sum(axis=1) + 1e-12)
                                 / (spec[:, b["dark"]].sum(axis=1) + 1e-12))
        logspec = np.log(spec + 1e-10)
        before = logspec[:1] if self.prev_log is None else self.prev_log
        out["flux"] = np.clip(np.diff(np.concatenate([before, logspec]), axis=0), 0, None).mean(axis=1)
        self.prev_log = logspec[-1:]
        out["lag"], out["strength"] = _pitch_lags(frames, self.sr)
        out["f1"], out["f2"] = _formants(frames, self.sr, self.window)
        return out


def raw_features(samples: np.ndarray, sr: int) -> RawFeatures:
    """Per-hop measurements of a whole signal, in blocks of at most BLOCK_HOPS.

    Blocks are measured two at a time in threads (the FFTs and eigenvalue solves
    release the GIL): a long clip's analysis stands before the first frame, so it
    should use both cores. Memory stays flat in the clip's length. Each block after
    the first also measures the hop before it, which spectral flux compares with, so
    the result is the same as one pass over the whole signal.
    """
    if len(samples) == 0:
        raise ValueError("no samples")
    hop, win = int(round(HOP_S * sr)), int(round(WIN_S * sr))
    n = int(np.ceil(len(samples) / hop))
    blocks = -(-n // BLOCK_HOPS)
    blocks += blocks % 2 if n >= 2 * MIN_PARALLEL_HOPS else 0  # even: both threads busy
    edges = np.linspace(0, n, blocks + 1).round().astype(int)
    out = {k: np.zeros(n) for k in RAW_FIELDS}

    def measure(start: int, stop: int) -> None:
        lead = 1 if start > 0 else 0
        values = _Measure(sr)(_block_frames(samples, start - lead, stop, hop, win))
        for k in RAW_FIELDS:
            out[k][start:stop] = values[k][lead:]

    spans = list(pairwise(int(e) for e in edges))
    if len(spans) == 1:
        measure(*spans[0])
    else:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="facetalk-features") as pool:
            for done in [pool.submit(measure, a, b) for a, b in spans]:
                done.result()  # re-raises
    return RawFeatures(1.0 / HOP_S, *(out[k] for k in RAW_FIELDS), sr)


def raw_features_stream(chunks: Iterable[np.ndarray], sr: int) -> RawFeatures:
    """:func:`raw_features` of a signal that arrives in chunks, holding only a few
    blocks of it: blocks of windows (each with the hop before it, for spectral
    flux), measured two at a time in threads while the next chunks decode.

    The result equals ``raw_features(np.concatenate(chunks), sr)``; what stays per second
    of audio is the per-hop measurements themselves (10 float64 values per 10 ms, 8 kB/s).
    """
    hop, win = int(round(HOP_S * sr)), int(round(WIN_S * sr))
    pad = win // 2
    held = np.zeros(0, np.float32)
    held_start = 0  # sample index of held[0]
    total = 0
    done = 0  # hops submitted so far
    futures: list[Future[dict[str, np.ndarray]]] = []

    def segment(start: int, stop: int) -> np.ndarray:
        """The samples of hops start..stop's windows, copied out (zero beyond the signal)."""
        lo, hi = start * hop - pad, (stop - 1) * hop - pad + win
        seg = np.zeros(hi - lo, dtype=np.float32)
        a, b = max(lo, held_start), min(hi, held_start + len(held), total)
        if b > a:
            seg[a - lo:b - lo] = held[a - held_start:b - held_start]
        return seg

    def measure(seg: np.ndarray, count: int, lead: int) -> dict[str, np.ndarray]:
        values = _Measure(sr)(sliding_window_view(seg, win)[::hop][:count])
        return {k: values[k][lead:] for k in RAW_FIELDS}

    def submit(pool: ThreadPoolExecutor, stop: int) -> None:
        nonlocal done, held, held_start
        lead = 1 if done > 0 else 0
        # At most a few blocks in flight: decoding may outrun the measuring.
        pending = [f for f in futures if not f.done()]
        if len(pending) >= 2:
            pending[0].result()
        futures.append(pool.submit(measure, segment(done - lead, stop), stop - done + lead, lead))
        # ``held`` drops what no later block reads: everything before the next block's
        # lead hop's window.
        done = stop
        keep = max((done - 1) * hop - pad, held_start)
        held = held[keep - held_start:]
        held_start = keep

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="facetalk-features") as pool:
        for chunk in chunks:
            held = np.concatenate([held, np.asarray(chunk, np.float32)])
            total += len(chunk)
            # Hop h is complete once samples up to h*hop - pad + win are in.
            while (total - win + pad) // hop + 1 - done >= STREAM_BLOCK_HOPS:
                submit(pool, done + STREAM_BLOCK_HOPS)
        if total == 0:
            raise ValueError("no samples")
        n = -(-total // hop)
        while done < n:
            submit(pool, min(done + STREAM_BLOCK_HOPS, n))
        parts = [f.result() for f in futures]
    return RawFeatures(1.0 / HOP_S, *(np.concatenate([p[k] for p in parts]) for k in RAW_FIELDS),
                       sr)


def analyze_stream(chunks: Iterable[np.ndarray], sr: int) -> Features:
    """:func:`analyze` of a signal that arrives in chunks (see :func:`raw_features_stream`)."""
    raw = raw_features_stream(chunks, sr)
    return derive(raw, *_levels(raw.db))


def derive(raw: RawFeatures, floor_db: float, peak_db: float) -> Features:
    """Loudness, voice activity and voicing, given the recording's floor and peak levels."""
    db = raw.db
    loud = np.clip((db - floor_db) / max(peak_db - floor_db, 6.0), 0.0, 1.0)
    vad = _vad(db, floor_db, peak_db)
    voiced = vad & (raw.strength > 0.45)
    f0 = np.where(voiced, raw.sr / np.maximum(raw.lag, 1.0), 0.0)
    return Features(rate=raw.rate, db=db, loud=loud, vad=vad, voiced=voiced, f0=f0,
                    f1=np.where(vad, raw.f1, 0.0), f2=np.where(vad, raw.f2, 0.0), bright=raw.bright,
                    low_ratio=raw.low, labial=raw.labial, high_ratio=raw.high,
                    flux=raw.flux, floor_db=floor_db, peak_db=peak_db)


def analyze(samples: np.ndarray, sr: int) -> Features:
    """Compute :class:`Features` for a mono float32 signal at ``sr`` Hz.

    Levels (noise floor, speech peak) come from the whole recording; a live stream uses
    running levels instead (see :class:`FeatureStream`), everything else is the same.
    """
    raw = raw_features(samples, sr)
    return derive(raw, *_levels(raw.db))


class FeatureStream:
    """Raw features of a live signal: push samples, get every hop whose window is complete."""

    def __init__(self, sr: int) -> None:
        self.sr = sr
        self.hop = int(round(HOP_S * sr))
        self.win = int(round(WIN_S * sr))
        self._measure = _Measure(sr)
        # Hop h's window starts at h*hop - win//2: begin with that much silence.
        self._buf = np.zeros(self.win // 2, np.float32)
        self._buf_start = -(self.win // 2)  # sample index of _buf[0]
        self.hops = 0  # hops produced so far

    def push(self, samples: np.ndarray) -> RawFeatures:
        """Add samples; return the hops that became complete (possibly none)."""
        self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32)])
        end = self._buf_start + len(self._buf)
        # Hop h is complete when samples up to h*hop - win//2 + win are in.
        last = (end - self.win + self.win // 2) // self.hop  # last complete hop index
        count = max(0, last - self.hops + 1)
        if count == 0:
            return self._empty()
        first = self.hops * self.hop - self.win // 2 - self._buf_start
        seg = self._buf[first:first + (count - 1) * self.hop + self.win]
        frames = sliding_window_view(seg, self.win)[::self.hop][:count]
        values = self._measure(frames)
        self.hops += count
        keep_from = self.hops * self.hop - self.win // 2 - self._buf_start
        self._buf = self._buf[keep_from:]
        self._buf_start += keep_from
        return RawFeatures(1.0 / HOP_S, *(np.asarray(values[k], float) for k in RAW_FIELDS), self.sr)

    def _empty(self) -> RawFeatures:
        return RawFeatures(1.0 / HOP_S, *(np.zeros(0) for _ in RAW_FIELDS), self.sr)


def _block_frames(x: np.ndarray, start: int, stop: int, hop: int, win: int) -> np.ndarray:
    """Analysis windows ``start..stop`` (hop-centred, zero beyond the signal)."""
    pad_left = win // 2
    lo = start * hop - pad_left
    hi = (stop - 1) * hop - pad_left + win
    seg = np.zeros(hi - lo, dtype=np.float32)
    a, b = max(lo, 0), min(hi, len(x))
    if b > a:
        seg[a - lo:b - lo] = x[a:b]
    return sliding_window_view(seg, win)[::hop][: stop - start]


def _levels(db: np.ndarray) -> tuple[float, float]:
    """Noise floor and speech peak (dB) of this recording, robust to long silences."""
    return _floor_and_peak(float(np.percentile(db, 10)), float(np.percentile(db, 97)))


def _levels_sorted(db: Sequence[float]) -> tuple[float, float]:
    """:func:`_levels` of sorted, NaN-free levels (a live voice's, kept sorted)."""
    return _floor_and_peak(percentile_sorted(db, 10), percentile_sorted(db, 97))


def _floor_and_peak(floor: float, peak: float) -> tuple[float, float]:
    """Floor and peak from the 10th and 97th percentile of the levels."""
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
    """Flip runs of ``value`` shorter than ``max_len`` that sit between other runs.

    Compiled: the live driver runs this on its whole window for every frame."""
    kernels.fill_short(mask, bool(value), int(max_len))


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
        # The right-hand side is computed in full before it is stored (no copy of a needed:
        # it reads columns 1..i-1 only).
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1:0:-1]
        a[:, i] = k
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
