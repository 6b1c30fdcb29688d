"""From acoustic features to per-frame controls: mouth, brows, blinks and head pose.

The mouth reads the sound, not words, so it works in any language:

* opening follows loudness, scaled by vowel openness (F1) and reduced for voiceless
  consonants;
* lips round for low F2 (o/u) and spread for high F2 (i/e), relative to this speaker;
* lips close in silence, in stop closures (the short silence before a p/b burst) and in
  nasal murmurs (m/n);
* onsets are anticipated (lips move before the sound) and every curve is smoothed
  with a zero-phase filter, so smoothing never adds lag.

Every computation looks at most LOOKAHEAD_S into the future, so one model serves two
drivers: ``plan_motion`` for a
whole recording (levels measured over all of it) and :class:`MotionStream` for live
audio (the same curves on a sliding window, with running levels). Blinks and head
motion are stochastic but seeded and causal: the same inputs and seed always give the
same motion, in both drivers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .features import Features, RawFeatures, derive
from .options import GenerationOptions
from .rig import CONTROLS

C = {name: i for i, name in enumerate(CONTROLS)}

#: How far any curve looks ahead in a live stream (the anticipation of onsets needs it).
LOOKAHEAD_S = 0.04
#: The offline driver has the whole recording and may look further: only speechiness
#: uses it (telling a tone from a vowel needs more than 60 ms of it).
OFFLINE_LOOKAHEAD_S = 0.7
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
    """Zero-phase Gaussian smoothing, truncated at LOOKAHEAD_S each side; edges held."""
    sigma = sigma_s * rate
    if sigma <= 0 or len(x) == 0:
        return x
    r = max(1, min(int(4 * sigma + 0.5), int(round(LOOKAHEAD_S * rate))))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(x, r, mode="edge"), k, mode="valid")


def _ema(x: np.ndarray, tau_s: float, rate: float, start: float | None = None) -> np.ndarray:
    """Causal exponential moving average (time constant ``tau_s``)."""
    a = 1.0 - np.exp(-1.0 / max(tau_s * rate, 1e-9))
    out = np.empty(len(x))
    acc = float(x[0]) if start is None and len(x) else (start or 0.0)
    for i, v in enumerate(x):
        acc += a * (float(v) - acc)
        out[i] = acc
    return out


def maximum_filter1d(x: np.ndarray, size: int, mode: str = "nearest") -> np.ndarray:
    """Running maximum over a centred window of ``size`` samples; edges held."""
    return running_max(x, size // 2, size - 1 - size // 2)


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


def f2_range(feat: Features) -> tuple[float, float]:
    """This speaker's F2 span: 10th and 90th percentile over loud voiced hops."""
    ok = feat.voiced & (feat.f2 > 0) & (feat.loud > 0.4)
    if ok.sum() > 20:
        lo, hi = np.percentile(feat.f2[ok], [10, 90])
        return float(lo), float(max(hi, lo + 400.0))
    return 900.0, 2300.0


def mouth_curves(feat: Features, dynamic_scale: float, smooth: bool,
                 f2_span: tuple[float, float] | None = None,
                 lookahead_s: float = OFFLINE_LOOKAHEAD_S) -> dict[str, np.ndarray]:
    """Mouth controls at the feature rate (100 per second).

    ``f2_span`` places F2 between rounded and spread; default: measured on ``feat``.
    ``lookahead_s`` is the future the driver can afford (see OFFLINE_LOOKAHEAD_S).
    """
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
    voice = speechiness(feat, ahead_s=lookahead_s)
    # Below 0.1 the sound is not speech (a tune scored at most 0.09, a tone 0, while 99 %
    # of loud speech hops score above 0.47): it must not move the mouth at all, not even
    # by the few percent that were left to open the lips on every loud note.
    voice = voice * np.clip((voice - 0.1) / 0.1, 0.0, 1.0)
    target = level * openness * speech * voice

    press = bilabial_closures(feat)
    target *= 1.0 - press

    # Rounding / spreading from F2, placed within this speaker's own F2 range (its 10th
    # to 90th percentile over loud voiced frames), so voices of any size are treated
    # alike: the low end is rounded (o, u), the high end spread (i, e).
    f2 = feat.f2
    ok = voiced & (f2 > 0)
    lo, hi = f2_span if f2_span is not None else f2_range(feat)
    rel = np.where(ok, (f2 - lo) / (hi - lo), 0.5)
    rnd = np.clip((0.35 - rel) / 0.25, 0.0, 1.0) * ok
    spr = np.clip((rel - 0.65) / 0.25, 0.0, 1.0) * ok
    gate = np.clip(loud * 2.0, 0, 1) * speech * voice
    rnd, spr = rnd * gate, spr * gate

    sig = 0.025 if smooth else 0.01
    target = _smooth(target, sig, rate)
    press = _smooth(press, 0.012, rate)
    rnd = _smooth(rnd, 0.03 if smooth else 0.015, rate)
    spr = _smooth(spr, 0.03 if smooth else 0.015, rate)
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


def _window_sum(x: np.ndarray, before: int, after: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    idx = np.arange(len(x))
    return c[np.minimum(idx + after + 1, len(x))] - c[np.maximum(idx - before, 0)]


def speechiness(feat: Features, history_s: float = 1.4, ahead_s: float = LOOKAHEAD_S
                ) -> np.ndarray:
    """0..1 per hop: how much the sound around it behaves like speech.

    Speech alternates voiced and voiceless sounds (about a quarter of its active time
    is voiceless: fricatives, bursts) several times a second, and its pitch glides.
    Tones and instrumental music are almost always voiced, change voicing rarely and
    hold each pitch. Scored over the last ``history_s`` seconds and ``ahead_s`` ahead
    so a long vowel inside speech still counts as speech; the mouth opening is scaled
    by it, so a tone or a tune leaves the mouth at rest instead of chattering. With
    little look-ahead (live), a new sound is trusted until it can be judged.
    """
    n = feat.n
    if n == 0:
        return np.zeros(0)
    before = max(1, int(history_s * feat.rate))
    after = int(round(ahead_s * feat.rate))
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
    active = _window_sum(act, before, after)
    u = _window_sum(unvoiced, before, after) / np.maximum(active, 1.0)
    t = _window_sum(trans, before, after) / ((before + after) / feat.rate)
    st = _window_sum(steady, before, after) / np.maximum(_window_sum(pair, before, after), 1.0)
    score = np.clip(0.6 * np.clip(u / 0.1, 0, 1) + 0.4 * np.clip((t - 2.0) / 4.0, 0, 1), 0, 1)
    # Held pitch with hardly any voiceless sound: an instrument, not a voice.
    held = np.clip((st - 0.55) / 0.25, 0, 1) * (1.0 - np.clip(u / 0.05, 0, 1))
    score *= 1.0 - held
    score[active < 10] = 1.0  # too little sound around to judge: trust the level
    return _ema(score, 0.12, feat.rate)


def bilabial_closures(feat: Features) -> np.ndarray:
    """0..1 lip-closure strength per hop: stop closures, voice bars, /m/ murmurs.

    * A stop closure is a dip (at least 30 ms) well below the surrounding speech level
      right after speech. p, b but also t, d, k, g look alike here: their place of
      articulation is not told apart, so alveolar and velar stops close the lips
      briefly too (visually a blink of the lips, not a wrong shape).
    * A voice bar (voiced closure of b, d, g; or humming) is a weak, almost purely
      low-frequency stretch of voicing, at least 20 ms, clearly below the vowels.
    * A nasal murmur is voiced, quieter than the neighbouring vowels, with its energy
      below 500 Hz; only murmurs with the labial cue (see features) close the lips: /m/
      yes, /n/ and /ng/ no.

    Levels are compared with the loudest sound within LOOKAHEAD_S ahead and 75 or
    150 ms back, so no decision needs more future audio than that.
    """
    rate = feat.rate
    press = np.zeros(feat.n)
    ahead = int(round(LOOKAHEAD_S * rate))
    env = running_max(feat.db, int(0.075 * rate), ahead)
    env_long = running_max(feat.db, int(0.15 * rate), ahead)
    after_speech = running_max(feat.vad.astype(np.int8), 8, 0) > 0
    for s, e in _runs((feat.db < env_long - 14.0) & after_speech):
        if (e - s) / rate >= 0.03:
            press[s:e] = 1.0
    bar = (feat.voiced & (feat.low_ratio > 0.95) & (feat.high_ratio < 0.03)
           & (feat.db < env_long - 10.0))
    for s, e in _runs(bar):
        if (e - s) / rate >= 0.02:
            press[s:e] = 1.0
    labial = _smooth(feat.labial, 0.02, rate) < LABIAL_MAX
    nasal = (feat.voiced & (feat.low_ratio > 0.8) & (feat.high_ratio < 0.05) & labial
             & ((feat.db < env - 5.0) | (feat.db < env_long - 6.0)))
    for s, e in _runs(nasal):
        if (e - s) / rate >= 0.03:
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


class BlinkScheduler:
    """Causal, seeded blinks: call :meth:`step` hop by hop with the voice activity.

    Intervals follow a gamma distribution (mean ~4 s: 15 per minute, irregular); once
    a pause has begun (LOOKAHEAD_S of silence after speech), a blink due within the next
    second is taken there instead, since people blink at phrase boundaries. Each blink
    closes in ~100 ms and opens in ~150 ms; some are a little shallow, a few double.
    """

    def __init__(self, rng: np.random.Generator, rate: float) -> None:
        self.rng = rng
        self.rate = rate
        self.t = 0.0
        self.next = float(rng.uniform(0.4, 2.5))
        self.last = -10.0
        self.active: list[tuple[float, float, float, float, float]] = []
        self.silent_for = 0.0
        self.spoke = False
        self.starts: list[float] = []

    def _begin(self, t: float) -> None:
        rng = self.rng
        shape = (t, float(rng.uniform(0.08, 0.11)), float(rng.uniform(0.02, 0.06)),
                 float(rng.uniform(0.13, 0.18)),
                 1.0 if rng.random() > 0.15 else float(rng.uniform(0.75, 0.95)))
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
        for start, close_t, hold_t, open_t, depth in self.active:
            tt = t - start
            if tt > close_t + hold_t + open_t:
                continue
            keep.append((start, close_t, hold_t, open_t, depth))
            if tt < close_t:
                u = tt / close_t
                v = u * u * (3 - 2 * u)
            else:
                d = min(1.0, max(0.0, (tt - close_t - hold_t) / open_t))
                v = 1.0 - d * d * (3 - 2 * d)
            value = max(value, depth * v)
        self.active = keep
        return value


def blink_curve(vad: np.ndarray, rate: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Blink amount per hop for a whole recording, and the blink start times."""
    sched = BlinkScheduler(rng, rate)
    curve = np.array([sched.step(bool(v)) for v in vad])
    return curve, np.array(sched.starts)


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
    for i in np.nonzero((env == local_max) & (env > 0.35))[0]:
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


def _closure_frames(press: np.ndarray, rate: float, times: np.ndarray, fps: float
                    ) -> np.ndarray:
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
            # The frame nearest the closure: within half a frame of its middle.
            near = np.abs(times - (t0 + t1) / 2) <= 0.5 / fps + 1e-9
            if near.any():
                out[int(np.argmin(np.where(near, np.abs(times - (t0 + t1) / 2), np.inf)))] = 1.0
    return out


def frame_controls(mouth: dict[str, np.ndarray], brow: np.ndarray, blink: np.ndarray,
                   pose: np.ndarray, rate: float, times: np.ndarray, offset_s: float,
                   fps: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample per-hop curves at frame ``times`` (seconds on the curves' own clock).

    Smooth curves are averaged over ``width`` seconds (one frame offline, to avoid
    aliasing; 0 live, where half a frame of waiting would add latency), blinks read
    instantly (they are fast), and a lip closure near a frame shows in it (see
    :func:`_closure_frames`). ``offset_s`` moves the mouth (sync correction).
    """
    mouth_times = times - offset_s
    controls = np.zeros((len(times), len(CONTROLS)), np.float32)
    for name, curve in mouth.items():
        controls[:, C[name]] = _sample(curve, rate, mouth_times, width)
    # A lip closure shows as closed lips in its frame: p/b/m closures last 20-150 ms and
    # must not be averaged away.
    closure = _closure_frames(mouth["press"], rate, mouth_times, fps)
    keep = 1.0 - closure
    for name in ("jaw", "lip_up", "lip_down", "round", "spread"):
        controls[:, C[name]] *= keep
    controls[:, C["close"]] = np.maximum(controls[:, C["close"]], closure)
    controls[:, C["press"]] = closure
    controls[:, C["brow"]] = _sample(brow, rate, times, width)
    controls[:, C["blink_r"]] = np.interp(times, np.arange(len(blink)) / rate, blink)
    controls[:, C["blink_l"]] = controls[:, C["blink_r"]]
    frame_pose = np.stack([_sample(pose[:, k], rate, times, width) for k in range(5)], axis=1)
    return controls, frame_pose.astype(np.float32)


def plan_motion(feat: Features, n_frames: int, options: GenerationOptions) -> MotionPlan:
    """All controls and head pose for ``n_frames`` frames at ``options.fps`` (offline driver)."""
    rng = np.random.default_rng(options.seed)
    style = HeadStyle.draw(rng)
    rate = feat.rate
    n = max(feat.n, int(np.ceil(n_frames / options.fps * rate)) + 1)
    if n > feat.n:  # video longer than the audio: the tail is silence
        feat = _pad_silence(feat, n)
    mouth = mouth_curves(feat, options.dynamic_scale, options.smooth_motion)

    offset_s = 0.0
    if options.sync_offset_ms is not None:
        offset_s = options.sync_offset_ms / 1000.0
    elif options.lip_sync_correction and feat.vad.sum() > rate * 0.5:
        # Only the offline driver can afford this: it needs the whole recording.
        opening = mouth["jaw"]
        env = _smooth(feat.loud * feat.vad, 0.02, rate)
        lag = _xcorr_lag(opening, env, int(MAX_CORRECTION_S * rate)) / rate
        offset_s = -float(np.clip(lag, -MAX_CORRECTION_S, MAX_CORRECTION_S))

    blink, blink_times = blink_curve(feat.vad, rate, rng) if options.blink else (
        np.zeros(n), np.zeros(0))
    activity = _ema(feat.vad.astype(float), 0.5, rate, start=0.0)
    pose, brow = head_and_brows(feat, 0.0, style, options.motion_scale, activity)
    times = np.arange(n_frames) / options.fps
    controls, frame_pose = frame_controls(mouth, brow, blink, pose, rate, times, offset_s,
                                          options.fps, 1.0 / options.fps)
    return MotionPlan(controls=controls, pose=frame_pose, fps=options.fps,
                      offset_ms=offset_s * 1000.0, blink_times=blink_times)


class _RunningStats:
    """Levels and F2 span of a live voice, from what has been heard so far."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.db: list[float] = []
        self.f2: list[float] = []

    def add(self, db: np.ndarray, f2_strong: np.ndarray) -> None:
        self.db.extend(db.tolist())
        self.f2.extend(f2_strong.tolist())
        del self.db[: max(0, len(self.db) - int(8 * self.rate))]  # the last 8 s
        del self.f2[: max(0, len(self.f2) - 3000)]

    def levels(self) -> tuple[float, float]:
        if len(self.db) >= int(1.5 * self.rate):
            from .features import _levels

            return _levels(np.array(self.db))
        # Too little heard yet: assume speech peaks a little under the loudest so far.
        peak = max(max(self.db, default=-50.0) - 3.0, -50.0)
        return peak - 45.0, peak

    def f2_span(self) -> tuple[float, float]:
        if len(self.f2) > 20:
            lo, hi = np.percentile(self.f2, [10, 90])
            return float(lo), float(max(hi, lo + 400.0))
        return 900.0, 2300.0


@dataclass(frozen=True)
class StreamFrame:
    """One frame's motion from the streaming driver."""

    index: int
    time: float  # seconds on the audio timeline
    controls: np.ndarray
    pose: np.ndarray


class MotionStream:
    """The streaming driver: the same motion model, fed live raw features.

    Frame *n* (time n/fps) is planned once audio reaches n/fps + LOOKAHEAD_S:
    the same curves as offline are computed on a sliding window of the last few
    seconds with running levels; blinks and head motion continue through silence.
    """

    HISTORY_S = 3.0

    def __init__(self, options: GenerationOptions, rate: float = 100.0) -> None:
        rng = np.random.default_rng(options.seed)
        self.options = options
        self.rate = rate
        self.style = HeadStyle.draw(rng)
        self.blinks = BlinkScheduler(rng, rate) if options.blink else None
        self.stats = _RunningStats(rate)
        self.raw: RawFeatures | None = None
        self.raw_start = 0  # hop index of self.raw's first hop
        self.final = 0  # hops whose voice activity is settled (>= LOOKAHEAD_S old)
        # Per settled hop, from hop self.raw_start on (trimmed with the raw history).
        self.blink_curve: list[float] = []
        self.activity: list[float] = []
        self._act = 0.0
        self.next_frame = 0
        # Mouth later only: a negative offset would need more look-ahead than we have.
        self.offset_s = max(0.0, (options.sync_offset_ms or 0.0) / 1000.0)

    @property
    def lookahead_s(self) -> float:
        """Audio needed beyond a frame's time before it can be planned."""
        return LOOKAHEAD_S

    def push(self, raw: RawFeatures) -> list[StreamFrame]:
        """Add newly completed hops; return the frames that can now be planned."""
        if raw.n:
            self.raw = raw if self.raw is None else RawFeatures.join([self.raw, raw])
        if self.raw is None:
            return []
        end_hop = self.raw_start + self.raw.n  # hops known
        out: list[StreamFrame] = []
        fps = self.options.fps
        while (self.next_frame / fps + self.lookahead_s) * self.rate <= end_hop - 1:
            out.append(self._plan(self.next_frame, end_hop))
            self.next_frame += 1
        keep_from = int((self.next_frame / fps - self.HISTORY_S) * self.rate) - self.raw_start
        if keep_from > 0:
            self.raw = self.raw.window(keep_from, self.raw.n)
            del self.blink_curve[:keep_from]
            del self.activity[:keep_from]
            self.raw_start += keep_from
        return out

    def _plan(self, index: int, end_hop: int) -> StreamFrame:
        assert self.raw is not None
        fps, rate = self.options.fps, self.rate
        t = index / fps
        feat = derive(self.raw, *self.stats.levels())
        # Settle hops that are now LOOKAHEAD_S behind the newest: their activity is final.
        settle_to = end_hop - int(round(LOOKAHEAD_S * rate))
        for h in range(self.final, settle_to):
            k = h - self.raw_start
            if k < 0:
                continue
            speaking = bool(feat.vad[k])
            self._act += (1.0 - np.exp(-1.0 / (0.5 * rate))) * (float(speaking) - self._act)
            self.activity.append(self._act)
            self.blink_curve.append(self.blinks.step(speaking) if self.blinks else 0.0)
            strong = feat.voiced[k] and feat.f2[k] > 0 and feat.loud[k] > 0.4
            self.stats.add(feat.db[k:k + 1], feat.f2[k:k + 1] if strong else np.zeros(0))
        self.final = max(self.final, settle_to)
        mouth = mouth_curves(feat, self.options.dynamic_scale, self.options.smooth_motion,
                             self.stats.f2_span(), lookahead_s=LOOKAHEAD_S)
        t0 = self.raw_start / rate
        act = np.array(self.activity[:feat.n])
        act = np.concatenate([act, np.full(feat.n - len(act), self._act)])
        pose, brow = head_and_brows(feat, t0, self.style, self.options.motion_scale, act)
        blink = np.array(self.blink_curve[:feat.n])
        blink = np.concatenate([blink, np.zeros(feat.n - len(blink))])
        controls, frame_pose = frame_controls(mouth, brow, blink, pose, rate,
                                              np.array([t - t0]), self.offset_s, fps, 0.0)
        return StreamFrame(index, t, controls[0], frame_pose[0])


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
