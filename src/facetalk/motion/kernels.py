"""Compiled loops of the motion model: the live driver re-plans a ~3 s window for every
frame, in the server's one process, so its per-hop loops must neither hold the GIL nor
cost a Python call per element.

Each kernel does exactly the arithmetic of the numpy code it replaces, in the same order
(no fastmath, so no reassociation or fused multiply-adds): the results are bit for bit
the same. Transcendental functions (exp, log, sin) stay in numpy, whose vectorized
versions may differ from libm's in the last bit. numpy's error model: a division by zero
gives inf or NaN, as in numpy, instead of raising.
"""

from __future__ import annotations

import numpy as np

from .._jit import configure_cache

configure_cache()
from numba import njit  # noqa: E402 - after the cache folder is chosen


@njit(cache=True, nogil=True, error_model="numpy")
def fill_short(mask: np.ndarray, value: bool, max_len: int) -> None:  # pragma: no cover - compiled
    """Flip runs of ``value`` no longer than ``max_len`` that sit between other runs."""
    n = len(mask)
    i = 0
    while i < n:
        if mask[i] == value:
            j = i
            while j < n and mask[j] == value:
                j += 1
            if i > 0 and j < n and (j - i) <= max_len:
                for k in range(i, j):
                    mask[k] = not value
            i = j
        else:
            i += 1


@njit(cache=True, nogil=True, error_model="numpy")
def running_max(x: np.ndarray, before: int, after: int) -> np.ndarray:  # pragma: no cover
    """Maximum over ``before`` samples back and ``after`` ahead, edges held (NaN wins)."""
    n = len(x)
    out = np.empty(n, x.dtype)
    for i in range(n):
        lo = max(0, i - before)
        hi = min(n, i + after + 1)
        m = x[lo]
        for j in range(lo + 1, hi):
            if m != m:
                break
            v = x[j]
            if v > m or v != v:
                m = v
        out[i] = m
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def ema(x: np.ndarray, a: float, acc: float) -> np.ndarray:  # pragma: no cover - compiled
    """Causal EMA with step ``a`` from ``acc``: ``acc += a * (x - acc)`` per sample."""
    out = np.empty(len(x))
    for i in range(len(x)):
        acc += a * (float(x[i]) - acc)
        out[i] = acc
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def window_sum(x: np.ndarray, before: int, after: int) -> np.ndarray:  # pragma: no cover
    """Sum over ``before`` samples back and ``after`` ahead (clipped at the edges), as the
    difference of a running sum (np.cumsum adds in order too)."""
    n = len(x)
    c = np.empty(n + 1)
    c[0] = 0.0
    if n:
        acc = float(x[0])
        c[1] = acc
        for i in range(1, n):
            acc = acc + float(x[i])
            c[i + 1] = acc
    out = np.empty(n)
    for i in range(n):
        out[i] = c[min(i + after + 1, n)] - c[max(i - before, 0)]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Starts and ends (exclusive) of the True runs of ``mask``."""
    n = len(mask)
    starts = np.empty(n // 2 + 1, np.int64)
    ends = np.empty(n // 2 + 1, np.int64)
    k = 0
    i = 0
    while i < n:
        if mask[i]:
            j = i
            while j < n and mask[j]:
                j += 1
            starts[k] = i
            ends[k] = j
            k += 1
            i = j
        else:
            i += 1
    return starts[:k], ends[:k]


@njit(cache=True, nogil=True, error_model="numpy")
def mark_runs(out: np.ndarray, mask: np.ndarray, rate: float, min_s: float) -> None:  # pragma: no cover
    """Set ``out`` to 1 over every True run of ``mask`` lasting at least ``min_s`` seconds."""
    starts, ends = runs(mask)
    for r in range(len(starts)):
        i, j = starts[r], ends[r]
        if (j - i) / rate >= min_s:
            out[i:j] = 1.0


@njit(cache=True, nogil=True, error_model="numpy")
def mark_run_cores(out: np.ndarray, mask: np.ndarray, level: np.ndarray, rate: float, min_s: float,
                   core: int) -> None:  # pragma: no cover - compiled
    """Set ``out`` to 1 around the quietest hop (first minimum of ``level``), ``core`` hops
    each side, of every True run of ``mask`` lasting at least ``min_s`` seconds."""
    starts, ends = runs(mask)
    for r in range(len(starts)):
        i, j = starts[r], ends[r]
        if (j - i) / rate >= min_s:
            c = i  # np.argmin: the first minimum, or the first NaN
            for k in range(i + 1, j):
                if level[c] != level[c]:
                    break
                if level[k] < level[c] or level[k] != level[k]:
                    c = k
            out[max(i, c - core):min(j, c + core + 1)] = 1.0


@njit(cache=True, nogil=True, error_model="numpy")
def median(x: np.ndarray) -> float:  # pragma: no cover - compiled
    """np.median of a non-empty 1-D array: the middle value, or the mean of the middle two
    (their sum halved, as np.mean does); NaN if any value is NaN. By selection, as numpy."""
    for v in x:
        if v != v:
            return np.nan
    return np.median(x.astype(np.float64))


@njit(cache=True, nogil=True, error_model="numpy")
def stress_candidates(env: np.ndarray, local_max: np.ndarray, f0: np.ndarray, voiced: np.ndarray,
                      dip_back: int, pitch_back: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """head.stress_peaks's candidates: hops where ``env`` is its local maximum, over 0.35
    and the start of a plateau; per candidate its prominence over the lowest ``env`` up to
    ``dip_back`` hops before it, and the median voiced F0 over ``pitch_back`` hops up to
    it (0 if ten or fewer hops are voiced)."""
    n = len(env)
    peaks = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        if env[i] == local_max[i] and env[i] > 0.35 and (i == 0 or env[i] != env[i - 1]):
            peaks[m] = i
            m += 1
    peaks = peaks[:m]
    prom = np.empty(m)
    ref = np.zeros(m)
    for p in range(m):
        i = peaks[p]
        lo = env[max(0, i - dip_back)]
        for j in range(max(0, i - dip_back) + 1, i + 1):
            if lo != lo:
                break
            v = env[j]
            if v < lo or v != v:
                lo = v
        prom[p] = env[i] - lo
        a = max(0, i - pitch_back)
        count = 0
        for j in range(a, i + 1):
            if voiced[j]:
                count += 1
        if count > 10:
            vals = np.empty(count)
            k = 0
            for j in range(a, i + 1):
                if voiced[j]:
                    vals[k] = f0[j]
                    k += 1
            ref[p] = median(vals)
    return peaks, prom, ref


@njit(cache=True, nogil=True, error_model="numpy")
def add_rows(out: np.ndarray, coefs: np.ndarray, rows: np.ndarray) -> None:  # pragma: no cover
    """``out += coefs[k] * rows[k]`` for k in order (each product rounded, then added)."""
    for k in range(rows.shape[0]):
        c = coefs[k]
        for j in range(rows.shape[1]):
            out[j] = out[j] + c * rows[k, j]


@njit(cache=True, nogil=True, error_model="numpy")
def add_nods(pose: np.ndarray, coefs: np.ndarray, rows: np.ndarray) -> None:  # pragma: no cover
    """add_rows into pose columns 1 (nod), 0 (turn) and 2 (tilt) with coefs[0], [1], [2]."""
    add_rows(pose[:, 1], coefs[0], rows)
    add_rows(pose[:, 0], coefs[1], rows)
    add_rows(pose[:, 2], coefs[2], rows)


@njit(cache=True, nogil=True, error_model="numpy")
def closure_frames(closed: np.ndarray, rate: float, times: np.ndarray, fps: float
                   ) -> np.ndarray:  # pragma: no cover - compiled
    """plan._closure_frames over the True runs of ``closed`` (same comparisons, same order)."""
    m = len(times)
    out = np.zeros(m)
    half = 0.5 / fps + 1e-9
    starts, ends = runs(closed)
    for r in range(len(starts)):
        i, j = starts[r], ends[r]
        t0, t1 = i / rate, j / rate
        inside = False
        for f in range(m):
            if times[f] >= t0 and times[f] < t1:
                out[f] = 1.0
                inside = True
        if not inside:
            # The frame nearest the closure: within half a frame of its middle (the first
            # of the nearest, as np.argmin).
            mid = (t0 + t1) / 2
            best = -1
            best_d = np.inf
            for f in range(m):
                d = abs(times[f] - mid)
                if d <= half and (best < 0 or d < best_d):
                    best, best_d = f, d
            if best >= 0:
                out[best] = 1.0
    return out


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _clip(x: float, lo: float, hi: float) -> float:  # pragma: no cover - compiled
    """np.clip of one float: max then min, a NaN kept (numpy's own definition)."""
    if x != x:
        return x
    v = x if x > lo else lo
    return v if v < hi else hi


#: Pitch steps (octaves per hop) of a gliding voice: more than a held note's, less than
#: a jump between notes or an octave error.
GLIDE_MIN, GLIDE_MAX = 0.004, 0.06
#: F1 change per hop (Hz) that counts as the vowel moving.
F1_MOVE_HZ = 40.0
#: Ramps of the gliding and moving shares of voiced hop pairs and of the mean brightness
#: change per active hop (log10 units), from no evidence of a voice to full. Tune speakers
#: over a tune 10 dB down (2 s windows, 10th percentiles): 0.43-0.65 gliding, 0.36-0.49
#: moving, 0.12-0.23 brightness change. Tunes, notes, beeps and tones: at most 0.04
#: gliding, 0.14 moving; harmonic notes with a 3-5 % vibrato: 0.2-0.5 gliding, 0.06-0.36
#: moving, but 0.01-0.02 brightness change.
GLIDE_SHARE = (0.2, 0.4)
F1_MOVE_SHARE = (0.15, 0.35)
TIMBRE_MOVE = (0.04, 0.1)
#: Voiced hop pairs a window needs before the glide is judged (noise has few).
GLIDE_PAIRS = 30.0


@njit(cache=True, nogil=True, error_model="numpy")
def speech_score(vad: np.ndarray, voiced_raw: np.ndarray, high_ratio: np.ndarray, log_f0: np.ndarray,
                 f1: np.ndarray, bright: np.ndarray, before: int, after: int, rate: float
                 ) -> np.ndarray:  # pragma: no cover - compiled
    """mouth.speechiness's score before its EMA (see there), hop by hop."""
    n = len(vad)
    act = np.empty(n)
    unvoiced = np.empty(n)
    fric = np.empty(n)
    trans = np.zeros(n)
    pair = np.zeros(n)
    steady = np.zeros(n)
    glide = np.zeros(n)
    moving = np.zeros(n)
    timbre = np.zeros(n)
    for i in range(n):
        act[i] = 1.0 if vad[i] else 0.0
        uv = vad[i] and not voiced_raw[i]
        unvoiced[i] = 1.0 if uv else 0.0
        # Frication: voiceless sound with its energy up high (s, f, sh, bursts). A beep's or
        # a note's edges are voiceless too, but quiet and dull: they must not pass for speech.
        fric[i] = 1.0 if uv and high_ratio[i] > 0.3 else 0.0
        if i > 0:
            v1 = voiced_raw[i] and vad[i]
            v0 = voiced_raw[i - 1] and vad[i - 1]
            trans[i] = 1.0 if (v1 != v0) and vad[i] and vad[i - 1] else 0.0
            pair[i] = 1.0 if v1 and v0 else 0.0
            step = abs(log_f0[i] - log_f0[i - 1])
            steady[i] = pair[i] * (1.0 if step < 0.004 else 0.0)
            glide[i] = pair[i] * (1.0 if GLIDE_MIN <= step < GLIDE_MAX else 0.0)
            moving[i] = pair[i] * (1.0 if abs(f1[i] - f1[i - 1]) > F1_MOVE_HZ else 0.0)
            if vad[i] and vad[i - 1]:
                timbre[i] = abs(bright[i] - bright[i - 1])
    active = window_sum(act, before, after)
    s_unvoiced = window_sum(unvoiced, before, after)
    s_fric = window_sum(fric, before, after)
    s_trans = window_sum(trans, before, after)
    s_steady = window_sum(steady, before, after)
    s_pair = window_sum(pair, before, after)
    s_glide = window_sum(glide, before, after)
    s_moving = window_sum(moving, before, after)
    s_timbre = window_sum(timbre, before, after)
    span = (before + after) / rate
    score = np.empty(n)
    for i in range(n):
        a = max(active[i], 1.0)
        u = s_unvoiced[i] / a
        uf = s_fric[i] / a
        t = s_trans[i] / span
        st = s_steady[i] / max(s_pair[i], 1.0)
        s = _clip(0.6 * _clip(u / 0.1, 0.0, 1.0) + 0.4 * _clip((t - 2.0) / 4.0, 0.0, 1.0), 0.0, 1.0)
        # A voice under a steady bed of music: the bed's harmonics make nearly every hop
        # voiced, so the voiceless share and the voicing changes above vanish. What stays
        # is the voice's own pitch gliding, its F1 moving from hop to hop and its timbre
        # (brightness) changing with every sound; a note holds all three (or jumps), and
        # an instrument's vibrato glides but keeps its timbre, so all three must move.
        if s_pair[i] >= GLIDE_PAIRS:
            g = _clip((s_glide[i] / s_pair[i] - GLIDE_SHARE[0]) / (GLIDE_SHARE[1] - GLIDE_SHARE[0]),
                      0.0, 1.0)
            m = _clip((s_moving[i] / s_pair[i] - F1_MOVE_SHARE[0])
                      / (F1_MOVE_SHARE[1] - F1_MOVE_SHARE[0]), 0.0, 1.0)
            b = _clip((s_timbre[i] / a - TIMBRE_MOVE[0]) / (TIMBRE_MOVE[1] - TIMBRE_MOVE[0]),
                      0.0, 1.0)
            s = max(s, min(g, min(m, b)))
        # Held pitch with hardly any frication: an instrument or a beep, not a voice (speech
        # holds its pitch in at most 45 % of voiced hop pairs, beeps in 87 %).
        held = _clip((st - 0.55) / 0.25, 0.0, 1.0) * (1.0 - _clip(uf / 0.05, 0.0, 1.0))
        # Almost nothing voiced: noise, breathing, clicks. Speech is voiceless in at most
        # about 60 % of any 2 s (voices set: 5th-95th percentile 16-62 %), noise in 93-99 %.
        noise = _clip((u - 0.75) / 0.15, 0.0, 1.0)
        s = s * ((1.0 - held) * (1.0 - noise))
        if active[i] < 10:
            s = 1.0  # too little sound around to judge: trust the level
        score[i] = s
    return score


@njit(cache=True, nogil=True, error_model="numpy")
def lip_closures(press: np.ndarray, db: np.ndarray, vad: np.ndarray, voiced: np.ndarray, low: np.ndarray,
                 high: np.ndarray, low_ratio: np.ndarray, high_ratio: np.ndarray, labial: np.ndarray,
                 env: np.ndarray, env_long: np.ndarray, floor_db: float, rate: float,
                 stop_dip: tuple[float, float], bar_dip: float, murmur_low: float, murmur_dip: float,
                 core: int) -> None:  # pragma: no cover - compiled
    """mouth.bilabial_closures's four kinds of closure, marked into ``press``: the same
    comparisons, hop by hop, as its numpy version."""
    n = len(db)
    stop = np.zeros(n, np.bool_)
    bar = np.zeros(n, np.bool_)
    murmur = np.zeros(n, np.bool_)
    nasal = np.zeros(n, np.bool_)
    above_floor = floor_db + 3.0
    last_voice = -(1 << 30)
    for i in range(n):
        if vad[i]:
            last_voice = i
        after_speech = i - last_voice <= 8  # speech within the last 8 hops
        depth = _clip(0.7 * (env_long[i] - floor_db), stop_dip[0], stop_dip[1])
        stop[i] = db[i] < env_long[i] - depth and after_speech
        above = db[i] > above_floor
        bar[i] = (voiced[i] and low[i] > 0.95 and high[i] < 0.03 and db[i] < env_long[i] - bar_dip
                  and above)
        murmur[i] = (low[i] > murmur_low and high[i] < 0.05 and vad[i]
                     and db[i] < env_long[i] - murmur_dip and above)
        nasal[i] = (voiced[i] and low_ratio[i] > 0.8 and high_ratio[i] < 0.05 and labial[i]
                    and (db[i] < env[i] - 5.0 or db[i] < env_long[i] - 6.0))
    mark_runs(press, stop, rate, 0.03)
    mark_runs(press, bar, rate, 0.02)
    mark_run_cores(press, murmur, db, rate, 0.03, core)
    mark_runs(press, nasal, rate, 0.03)


@njit(cache=True, nogil=True, error_model="numpy")
def burst_onsets(vad: np.ndarray, flux: np.ndarray, flux_ref: float) -> np.ndarray:  # pragma: no cover
    """mouth.burst_onsets: the 8 hops before (and the first hop of) every speech run after
    the first hop whose first 3 hops' largest flux (at least 0) exceeds twice ``flux_ref``
    (a NaN among them never does)."""
    n = len(vad)
    out = np.zeros(n, np.bool_)
    limit = 2.0 * flux_ref
    starts = runs(vad)[0]
    for r in range(len(starts)):
        i = starts[r]
        if i > 0:
            m = 0.0
            for k in range(i, min(n, i + 3)):
                v = flux[k]
                if v != v:
                    m = v
                    break
                if v > m:
                    m = v
            if m > limit:
                out[max(0, i - 8):i + 1] = True
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def vowel_openness(f1: np.ndarray, voiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """mouth_curves's vowel openness from F1 (before smoothing) and where it is measured
    (voiced, with an F1)."""
    n = len(f1)
    vo = np.empty(n)
    has = np.empty(n, np.bool_)
    for i in range(n):
        has[i] = voiced[i] and f1[i] > 0
        vo[i] = _clip((f1[i] - 250.0) / 550.0, 0.0, 1.0) if has[i] else 0.0
    return vo, has


@njit(cache=True, nogil=True, error_model="numpy")
def mouth_targets(vo: np.ndarray, has_f1: np.ndarray, voiced: np.ndarray, high_ratio: np.ndarray,
                  vad: np.ndarray, loud: np.ndarray, loud_08: np.ndarray, amp_08: np.ndarray,
                  voice: np.ndarray, press: np.ndarray, bright: np.ndarray, lo: float, hi: float,
                  round_from: float, round_ramp: float, spread_from: float, spread_ramp: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """mouth_curves's opening target, rounding and spreading before smoothing, elementwise
    in its numpy version's order (the powers come from numpy). Rounding is full
    ``round_ramp`` below ``round_from`` on the brightness span, spreading ``spread_ramp``
    above ``spread_from`` (see mouth.ROUND_FROM)."""
    n = len(vo)
    target = np.empty(n)
    rnd = np.empty(n)
    spr = np.empty(n)
    width = hi - lo
    for i in range(n):
        openness = 0.6 + 0.4 * vo[i] if has_f1[i] else 0.45
        if not voiced[i] and high_ratio[i] > 0.5:
            openness = 0.3
        level = 0.2 * loud_08[i] + 0.8 * amp_08[i]
        speech = 1.0 if vad[i] else 0.0
        v = voice[i] * _clip((voice[i] - 0.1) / 0.1, 0.0, 1.0)
        t = level * openness * speech * v
        target[i] = t * (1.0 - press[i])
        ok = 1.0 if voiced[i] else 0.0
        rel = (bright[i] - lo) / width if voiced[i] else 0.5
        gate = _clip(loud[i] * 2.0, 0.0, 1.0) * speech * v
        rnd[i] = (_clip((round_from - rel) / round_ramp, 0.0, 1.0) * ok) * gate
        spr[i] = (_clip((rel - spread_from) / spread_ramp, 0.0, 1.0) * ok) * gate
    return target, rnd, spr


@njit(cache=True, nogil=True, error_model="numpy")
def mouth_shapes(target: np.ndarray, rnd: np.ndarray, spr: np.ndarray, dynamic_scale: float,
                 shape_scale: float, round_gain: float, spread_gain: float, round_open: float
                 ) -> np.ndarray:  # pragma: no cover - compiled
    """mouth_curves's jaw, upper lip, lower lip, closure, rounding and spreading (rows);
    rounding grows with the opening up to ``round_open`` (see mouth.ROUND_OPEN)."""
    n = len(target)
    out = np.empty((6, n))
    for i in range(n):
        o = _clip(target[i] * dynamic_scale, 0.0, 1.3)
        out[0, i] = 0.8 * o
        out[1, i] = 0.35 * o
        out[2, i] = 0.45 * o
        out[3, i] = 1.0 - _clip(o, 0.0, 1.0)
        out[4, i] = round_gain * rnd[i] * _clip(o / round_open, 0.0, 1.0) * shape_scale
        out[5, i] = spread_gain * spr[i] * shape_scale
    return out


def warm_up() -> None:
    """Load every kernel (numba's on-disk cache, or compile it once) with the argument
    types the motion model passes, so a live session's first frame does not wait for it
    (called from render.warm_up, which runs while a portrait is analysed)."""
    f = np.zeros(12)
    b = np.zeros(12, np.bool_)
    b[3:6] = True
    fill_short(b.copy(), False, 6)
    running_max(f, 2, 1)
    running_max(b.astype(np.int8), 2, 0)
    ema(f, 0.5, 0.0)
    window_sum(f, 2, 1)
    runs(b)
    mark_runs(f.copy(), b, 100.0, 0.03)
    mark_run_cores(f.copy(), b, f, 100.0, 0.03, 1)
    median(f)
    stress_candidates(f, f, f, b, 2, 3)
    add_nods(np.zeros((12, 5)), np.ones((3, 1)), np.ones((1, 12)))
    add_rows(f.copy(), np.ones(1), np.ones((1, 12)))  # the brows
    closure_frames(b, 100.0, np.array([0.04]), 25.0)
    speech_score(b, b, f, f, f, f, 2, 1, 100.0)
    burst_onsets(b, f, 1.0)
    vowel_openness(f, b)
    mouth_targets(f, b, b, f, b, f, f, f, f, f, f, -2.4, -0.2, 0.6, 0.4, 0.6, 0.3)
    mouth_shapes(f, f, f, 1.0, 1.0, 1.2, 0.9, 0.5)
    lip_closures(f.copy(), f, b, b, f, f, f, f, b, f, f, -60.0, 100.0, (6.0, 14.0), 6.0, 0.8, 6.0, 1)
