"""From acoustic features to per-frame controls: mouth, brows, blinks and head pose.

The mouth reads the sound, not words, so it works in any language:

* opening follows loudness, scaled by vowel openness (F1) and reduced for voiceless
  consonants;
* lips round for low F2 (o/u) and spread for high F2 (i/e), relative to this speaker;
* lips close in silence, in stop closures (the short silence before a p/b burst) and in
  nasal murmurs (m/n);
* onsets are anticipated (lips move before the sound) and every curve is smoothed
  with a zero-phase filter, so smoothing never adds lag.

Blinks and head motion are stochastic but seeded: the same inputs and seed always
give the same motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .features import Features
from .options import GenerationOptions
from .rig import CONTROLS

C = {name: i for i, name in enumerate(CONTROLS)}

#: Lips start to move this long before a sound onset (mouth leads voice).
ANTICIPATION_S = 0.04
#: A nasal murmur whose labial index (see features) is below this is an /m/.
LABIAL_MAX = -0.4
#: Largest residual offset lip_sync_correction will cancel.
MAX_CORRECTION_S = 0.12


@dataclass(frozen=True)
class MotionPlan:
    """Controls and head pose for every video frame."""

    controls: np.ndarray  # (n_frames, len(CONTROLS)) float32
    pose: np.ndarray  # (n_frames, 5): yaw, pitch, roll (rad), tx, ty (IOD units)
    fps: int
    offset_ms: float  # sync correction applied (positive = mouth moved later)
    blink_times: np.ndarray  # seconds at which blinks start

    @property
    def n_frames(self) -> int:
        """Number of frames planned."""
        return len(self.controls)


def _smooth(x: np.ndarray, sigma_s: float, rate: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing (symmetric kernel, so no delay); edges held."""
    sigma = sigma_s * rate
    if sigma <= 0 or len(x) == 0:
        return x
    r = max(1, int(4 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(x, r, mode="edge"), k, mode="valid")


def maximum_filter1d(x: np.ndarray, size: int, mode: str = "nearest") -> np.ndarray:
    """Running maximum over a centred window of ``size`` samples; edges held."""
    if len(x) == 0 or size <= 1:
        return x.copy()
    half = size // 2
    padded = np.pad(x, (half, size - 1 - half), mode="edge")
    return sliding_window_view(padded, size).max(axis=1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of True runs."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0], strict=True))


def mouth_curves(feat: Features, dynamic_scale: float, smooth: bool) -> dict[str, np.ndarray]:
    """Mouth controls at the feature rate (100 per second)."""
    rate = feat.rate
    n = feat.n
    speech = feat.vad.astype(np.float64)
    loud = feat.loud.copy()
    # Vowel openness from F1 (about 250 Hz closed to 800 Hz open), only when voiced.
    f1 = feat.f1
    voiced = feat.voiced & (f1 > 0)
    vo = np.clip((f1 - 250.0) / 550.0, 0.0, 1.0)
    vo = np.where(voiced, vo, 0.0)
    vo = _smooth(vo, 0.02, rate)
    openness = np.where(voiced, 0.6 + 0.4 * vo, 0.45)
    # Voiceless frication (s, f, sh...): energy mostly above 3 kHz, mouth nearly closed.
    fric = (~feat.voiced) & (feat.high_ratio > 0.5)
    openness = np.where(fric, 0.3, openness)
    # Opening level: mostly linear amplitude (the jaw opens most on loud vowel nuclei,
    # little on unstressed ones), with some log loudness so quiet syllables still show.
    amp = np.clip(10 ** ((feat.db - feat.peak_db) / 20.0), 0.0, 1.0)
    level = 0.2 * np.power(loud, 0.8) + 0.8 * np.power(amp, 0.8)
    voice = speechiness(feat)
    target = level * openness * speech * voice

    press = bilabial_closures(feat)
    target *= 1.0 - press

    # Rounding / spreading from F2, placed within this speaker's own F2 range (its 10th
    # to 90th percentile over loud voiced frames), so voices of any size are treated
    # alike: the low end is rounded (o, u), the high end spread (i, e).
    f2 = feat.f2
    ok = voiced & (f2 > 0)
    strong = ok & (feat.loud > 0.4)
    if strong.sum() > 20:
        lo, hi = np.percentile(f2[strong], [10, 90])
    else:
        lo, hi = 900.0, 2300.0
    hi = max(hi, lo + 400.0)
    rel = np.where(ok, (f2 - lo) / (hi - lo), 0.5)
    rnd = np.clip((0.35 - rel) / 0.25, 0.0, 1.0) * ok
    spr = np.clip((rel - 0.65) / 0.25, 0.0, 1.0) * ok
    gate = np.clip(loud * 2.0, 0, 1) * speech * voice
    rnd, spr = rnd * gate, spr * gate

    sig = 0.025 if smooth else 0.01
    target = _smooth(target, sig, rate)
    press = _smooth(press, 0.012, rate)
    rnd = _smooth(rnd, 0.04 if smooth else 0.015, rate)
    spr = _smooth(spr, 0.04 if smooth else 0.015, rate)
    # Anticipation: the mouth begins to open before the sound does -- except before a
    # burst after silence, where the lips are shut for the plosive until its release.
    lead = int(round(ANTICIPATION_S * rate))
    if lead > 0:
        ahead = np.concatenate([target[lead:], np.zeros(lead)])
        ahead[burst_onsets(feat)] = 0.0
        target = np.maximum(target, 0.6 * ahead)
    o = np.clip(target * dynamic_scale, 0.0, 1.3)
    # Lips part in proportion to the opening: a portrait that shows its teeth reveals
    # them gradually instead of snapping from closed to its own (open) smile.
    close = 1.0 - np.clip(o, 0.0, 1.0)
    out = {
        "jaw": 0.8 * o,
        "lip_up": 0.35 * o,
        "lip_down": 0.45 * o,
        "close": close,
        "round": 0.9 * rnd * np.clip(dynamic_scale, 0, 1.5),
        "spread": 0.7 * spr * np.clip(dynamic_scale, 0, 1.5),
        "press": press,
    }
    for k in out:
        out[k] = out[k][:n]
    return out


def _window_sum(x: np.ndarray, half: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    idx = np.arange(len(x))
    return c[np.minimum(idx + half + 1, len(x))] - c[np.maximum(idx - half, 0)]


def speechiness(feat: Features, window_s: float = 1.5) -> np.ndarray:
    """0..1 per hop: how much the sound around it behaves like speech.

    Speech alternates voiced and voiceless sounds (about a quarter of its active time
    is voiceless: fricatives, bursts) several times a second, and its pitch glides.
    Tones and instrumental music are almost always voiced, change voicing rarely and
    hold each pitch. Scored over a sliding window so a long vowel inside speech still
    counts as speech; the mouth opening is scaled by it, so a tone or a tune leaves
    the mouth at rest instead of chattering with the beat.
    """
    n = feat.n
    if n == 0:
        return np.zeros(0)
    half = max(1, int(window_s * feat.rate / 2))
    act = feat.vad.astype(float)
    voiced = (feat.voiced & feat.vad)
    unvoiced = (feat.vad & ~feat.voiced).astype(float)
    trans = np.zeros(n)
    trans[1:] = (voiced[1:] != voiced[:-1]) & feat.vad[1:] & feat.vad[:-1]
    f0 = np.maximum(feat.f0, 1.0)
    pair = np.zeros(n)
    pair[1:] = voiced[1:] & voiced[:-1]
    steady = np.zeros(n)
    steady[1:] = pair[1:] * (np.abs(np.diff(np.log2(f0))) < 0.004)
    active = _window_sum(act, half)
    u = _window_sum(unvoiced, half) / np.maximum(active, 1.0)
    t = _window_sum(trans, half) / (2 * half / feat.rate)
    st = _window_sum(steady, half) / np.maximum(_window_sum(pair, half), 1.0)
    score = np.clip(0.6 * np.clip(u / 0.1, 0, 1) + 0.4 * np.clip((t - 2.0) / 4.0, 0, 1), 0, 1)
    # Held pitch with hardly any voiceless sound: an instrument, not a voice.
    held = np.clip((st - 0.55) / 0.25, 0, 1) * (1.0 - np.clip(u / 0.05, 0, 1))
    score *= 1.0 - held
    score[active < 10] = 1.0  # too little sound around to judge: trust the level
    return _smooth(score, 0.2, feat.rate)


def bilabial_closures(feat: Features) -> np.ndarray:
    """0..1 lip-closure strength per hop: stop closures, voice bars, /m/ murmurs.

    * A stop closure is a short dip (30-160 ms) well below the surrounding speech level
      ending in a burst (a jump in spectral flux). p, b but also t, d, k, g look alike
      here: their place of articulation is not told apart, so alveolar and velar stops
      close the lips briefly too (visually a blink of the lips, not a wrong shape).
    * A voice bar (voiced closure of b, d, g) is a weak, almost purely low-frequency
      stretch of voicing, 20-150 ms, clearly below the neighbouring vowels.
    * A nasal murmur is voiced, quieter than the neighbouring vowels, with its energy
      below 500 Hz; only murmurs with the labial cue (see features) close the lips: /m/
      yes, /n/ and /ng/ no. The level is compared with the loudest sound within
      150 ms on either side, so a long /m/ after a vowel still counts.
    """
    n = feat.n
    rate = feat.rate
    press = np.zeros(n)
    env = maximum_filter1d(feat.db, size=int(0.15 * rate) | 1)
    env_long = maximum_filter1d(feat.db, size=int(0.3 * rate) | 1)
    flux_ref = float(np.median(feat.flux[feat.vad] if feat.vad.any() else feat.flux))
    for s, e in _runs(feat.db < env - 14.0):
        dur = (e - s) / rate
        if not 0.03 <= dur <= 0.16:
            continue
        before = feat.vad[max(0, s - 8):s].any()
        after_burst = feat.flux[e:min(n, e + 4)].max(initial=0.0)
        if before and after_burst > 1.2 * flux_ref:
            press[s:e] = 1.0
    bar = (feat.voiced & (feat.low_ratio > 0.95) & (feat.high_ratio < 0.03)
           & (feat.db < env_long - 10.0))
    for s, e in _runs(bar):
        if 0.02 <= (e - s) / rate <= 0.15:
            press[s:e] = 1.0
    nasal = (feat.voiced & (feat.low_ratio > 0.8) & (feat.high_ratio < 0.05)
             & ((feat.db < env - 5.0) | (feat.db < env_long - 6.0)))
    for s, e in _runs(nasal):
        if (e - s) / rate >= 0.03 and float(np.median(feat.labial[s:e])) < LABIAL_MAX:
            press[s:e] = 1.0
    return press


def burst_onsets(feat: Features) -> np.ndarray:
    """Hops where speech starts with a burst (a plosive released after silence).

    Lips closed for p/b stay closed until the release, so such onsets get no
    anticipatory opening.
    """
    out = np.zeros(feat.n, bool)
    flux_ref = float(np.median(feat.flux[feat.vad])) if feat.vad.any() else 0.0
    for s, _ in _runs(feat.vad):
        window = slice(s, min(feat.n, s + 3))
        if s > 0 and feat.flux[window].max(initial=0.0) > 2.0 * flux_ref:
            out[max(0, s - 8):s + 1] = True
    return out


def blink_curve(n: int, rate: float, vad: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Blink amount (0 open .. 1 closed) per hop, and blink start times.

    Intervals follow a gamma distribution (mean ~4 s: 15 per minute, irregular);
    a blink that falls near the start of a pause moves to it, since people blink at
    phrase boundaries. Each blink closes in ~100 ms and opens in ~150 ms.
    """
    curve = np.zeros(n)
    duration = n / rate
    pauses = [s / rate for s, e in _runs(~vad) if (e - s) / rate >= 0.2 and s > 0]
    starts: list[float] = []
    t = float(rng.uniform(0.4, 2.5))
    while t < duration:
        near = [p for p in pauses if abs(p - t) < 1.0 and (not starts or p - starts[-1] > 1.5)]
        if near:
            t = min(near, key=lambda p: abs(p - t)) + 0.08
        starts.append(t)
        if rng.random() < 0.08:  # an occasional double blink
            starts.append(t + 0.35)
        t = starts[-1] + float(np.clip(rng.gamma(2.5, 4.0 / 2.5), 1.3, 10.0))
    for s in starts:
        close_t, hold_t, open_t = (float(rng.uniform(0.08, 0.11)), float(rng.uniform(0.02, 0.06)),
                                   float(rng.uniform(0.13, 0.18)))
        depth = 1.0 if rng.random() > 0.15 else float(rng.uniform(0.75, 0.95))
        tt = np.arange(n) / rate - s
        up = np.clip(tt / close_t, 0, 1)
        down = np.clip((tt - close_t - hold_t) / open_t, 0, 1)
        shape = np.where(tt < close_t, up * up * (3 - 2 * up),
                         1.0 - down * down * (3 - 2 * down))
        shape[(tt < 0) | (tt > close_t + hold_t + open_t)] = 0.0
        curve = np.maximum(curve, depth * shape)
    return curve, np.array(starts)


def _stress_peaks(feat: Features) -> list[tuple[int, float]]:
    """Syllable nuclei with their prominence (0..1), from the smoothed loudness."""
    rate = feat.rate
    env = _smooth(feat.loud * feat.vad, 0.04, rate)
    peaks = []
    w = int(0.18 * rate)
    local_max = maximum_filter1d(env, size=2 * w + 1)
    for i in np.nonzero((env == local_max) & (env > 0.35))[0]:
        lo = env[max(0, i - w * 2):i + 1].min()
        prom = env[i] - lo
        if prom > 0.2:
            peaks.append((int(i), float(min(1.0, prom))))
    return peaks


def head_and_brows(feat: Features, n: int, motion_scale: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Head pose (n, 5) and brow raise (n,) per hop, scaled by ``motion_scale``."""
    rate = feat.rate
    t = np.arange(n) / rate
    pose = np.zeros((n, 5))
    if motion_scale <= 0:
        return pose, np.zeros(n)
    deg = np.pi / 180
    # Slow drift: a few incommensurate sinusoids per axis with random phases.
    for axis, amp in ((0, 1.6), (1, 0.9), (2, 1.0)):
        freqs = rng.uniform(0.05, 0.33, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        weights = rng.uniform(0.5, 1.0, size=3)
        drift = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
        drift /= max(np.std(drift), 1e-6)
        pose[:, axis] = amp * deg * 0.6 * drift
    # Speech-driven nods and small turns on stressed syllables.
    activity = _smooth(feat.vad.astype(float), 0.5, rate)
    pose[:, :3] *= (0.7 + 0.5 * activity)[:, None]
    brow = np.zeros(n)
    f0 = feat.f0
    f0_ref = float(np.median(f0[f0 > 0])) if (f0 > 0).sum() > 10 else 0.0
    for i, prom in _stress_peaks(feat):
        tt = t - t[i]
        bump = np.exp(-0.5 * (tt / np.where(tt < 0, 0.09, 0.2)) ** 2)
        pose[:, 1] += 1.4 * deg * prom * bump
        pose[:, 0] += float(rng.uniform(-0.6, 0.6)) * deg * prom * bump
        pose[:, 2] += float(rng.uniform(-0.5, 0.5)) * deg * prom * bump
        if f0_ref > 0 and f0[i] > 0 and 12 * np.log2(f0[i] / f0_ref) > 1.5:
            brow += 0.55 * prom * np.exp(-0.5 * (tt / np.where(tt < 0, 0.1, 0.25)) ** 2)
    pose[:, 3] = 0.01 * pose[:, 0] / deg  # a turn carries the head sideways a little
    pose[:, 4] = 0.006 * pose[:, 1] / deg
    for k in range(3):
        pose[:, k] = _smooth(pose[:, k], 0.06, rate)
    pose *= motion_scale
    return pose, np.clip(brow * motion_scale, 0.0, 1.0)


def _xcorr_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Lag (in samples, sub-sample) that best aligns ``a`` to ``b``; + = a is late."""
    a = (a - a.mean()) / (a.std() + 1e-9)
    b = (b - b.mean()) / (b.std() + 1e-9)
    lags = np.arange(-max_lag, max_lag + 1)
    cc = np.array([np.mean(a[max(0, k):len(a) + min(0, k)] * b[max(0, -k):len(b) - max(0, k)])
                   for k in lags])
    i = int(np.argmax(cc))
    if 0 < i < len(cc) - 1:
        denom = cc[i - 1] - 2 * cc[i] + cc[i + 1]
        frac = 0.5 * (cc[i - 1] - cc[i + 1]) / denom if denom < 0 else 0.0
        return float(lags[i] + frac)
    return float(lags[i])


def _sample(curve: np.ndarray, rate: float, times: np.ndarray, width: float) -> np.ndarray:
    """Values at ``times`` (s), averaged over ``width`` seconds to avoid aliasing."""
    k = max(1, int(round(width * rate)))
    if k > 1:
        kernel = np.ones(k) / k
        curve = np.convolve(np.pad(curve, (k // 2, k - 1 - k // 2), mode="edge"), kernel, "valid")
    grid = np.arange(len(curve)) / rate
    return np.interp(times, grid, curve)


def _closure_frames(press: np.ndarray, rate: float, times: np.ndarray) -> np.ndarray:
    """Per-frame lip closure: frames whose time falls inside a closure are closed, and a
    closure too short to contain any frame time closes the one frame nearest to it.

    p/b/m closures last 20-150 ms, so at 25 fps a short one can fall between frames and
    vanish if merely averaged; marking only the nearest frame keeps closures visible
    without closing the mouth on the loud burst that follows them.
    """
    out = np.zeros(len(times))
    if len(times) == 0:
        return out
    for s, e in _runs(press > 0.5):
        t0, t1 = s / rate, e / rate
        inside = (times >= t0) & (times < t1)
        if inside.any():
            out[inside] = 1.0
        else:
            out[int(np.argmin(np.abs(times - (t0 + t1) / 2)))] = 1.0
    return out


def plan_motion(feat: Features, n_frames: int, options: GenerationOptions) -> MotionPlan:
    """All controls and head pose for ``n_frames`` frames at ``options.fps``."""
    rng = np.random.default_rng(options.seed)
    rate = feat.rate
    n = max(feat.n, int(np.ceil(n_frames / options.fps * rate)) + 1)
    if n > feat.n:  # video longer than the audio: the tail is silence
        feat = _pad_silence(feat, n)
    mouth = mouth_curves(feat, options.dynamic_scale, options.smooth_motion)

    offset_s = 0.0
    if options.sync_offset_ms is not None:
        offset_s = options.sync_offset_ms / 1000.0
    elif options.lip_sync_correction and feat.vad.sum() > rate * 0.5:
        opening = mouth["jaw"]
        env = _smooth(feat.loud * feat.vad, 0.02, rate)
        lag = _xcorr_lag(opening, env, int(MAX_CORRECTION_S * rate)) / rate
        offset_s = -float(np.clip(lag, -MAX_CORRECTION_S, MAX_CORRECTION_S))

    blink, blink_times = blink_curve(n, rate, feat.vad, rng) if options.blink else (
        np.zeros(n), np.zeros(0))
    pose, brow = head_and_brows(feat, n, options.motion_scale, rng)

    times = np.arange(n_frames) / options.fps
    width = 1.0 / options.fps
    mouth_times = times - offset_s
    controls = np.zeros((n_frames, len(CONTROLS)), np.float32)
    for name, curve in mouth.items():
        controls[:, C[name]] = _sample(curve, rate, mouth_times, width)
    # A lip closure anywhere inside a frame's time shows as closed lips in that frame:
    # p/b/m closures last 30-120 ms and must not be averaged away.
    closure = _closure_frames(mouth["press"], rate, mouth_times)
    keep = 1.0 - closure
    for name in ("jaw", "lip_up", "lip_down", "round", "spread"):
        controls[:, C[name]] *= keep
    controls[:, C["close"]] = np.maximum(controls[:, C["close"]], closure)
    controls[:, C["press"]] = closure
    controls[:, C["brow"]] = _sample(brow, rate, times, width)
    # Blinks are fast; sample them without the averaging window so they stay crisp.
    controls[:, C["blink_r"]] = np.interp(times, np.arange(n) / rate, blink)
    controls[:, C["blink_l"]] = controls[:, C["blink_r"]]
    frame_pose = np.stack([_sample(pose[:, k], rate, times, width) for k in range(5)], axis=1)
    return MotionPlan(controls=controls, pose=frame_pose.astype(np.float32), fps=options.fps,
                      offset_ms=offset_s * 1000.0, blink_times=blink_times)


def _pad_silence(feat: Features, n: int) -> Features:
    extra = n - feat.n

    def pad(a: np.ndarray, value: float | bool) -> np.ndarray:
        return np.concatenate([a, np.full(extra, value, dtype=a.dtype)])

    return Features(
        rate=feat.rate, db=pad(feat.db, feat.floor_db - 20), loud=pad(feat.loud, 0.0),
        vad=pad(feat.vad, False), voiced=pad(feat.voiced, False), f0=pad(feat.f0, 0.0),
        f1=pad(feat.f1, 0.0), f2=pad(feat.f2, 0.0), low_ratio=pad(feat.low_ratio, 0.0),
        labial=pad(feat.labial, 0.0),
        high_ratio=pad(feat.high_ratio, 0.0), flux=pad(feat.flux, 0.0),
        floor_db=feat.floor_db, peak_db=feat.peak_db)
