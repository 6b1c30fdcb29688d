"""The offline driver: controls and head pose for every frame of a whole recording.

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

from ..options import GenerationOptions
from . import kernels
from .blinks import blink_curve
from .controls import CONTROLS, C
from .features import Features
from .filters import _ema, _smooth, running_max
from .head import HeadStyle, head_and_brows
from .mouth import mouth_curves

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
    """Values at ``times`` (s), averaged over ``width`` seconds to avoid aliasing.

    The average must be centred on each time: an even-length box (4 hops for a 25 fps
    frame) padded k//2 before and k//2 - 1 after is centred half a hop early, which drew
    every frame from 5 ms before its time (a mouth 5 ms behind the sound, on any voice).
    """
    k = max(1, int(round(width * rate)))
    centre = 0.0
    if k > 1:
        kernel = np.ones(k) / k
        curve = np.convolve(np.pad(curve, (k // 2, k - 1 - k // 2), mode="edge"), kernel, "valid")
        centre = (k - 1) / 2 - k // 2  # where output i's window is centred, in hops from i
    grid = (np.arange(len(curve)) + centre) / rate
    return np.interp(times, grid, curve)


def _closure_frames(press: np.ndarray, rate: float, times: np.ndarray, fps: float
                    ) -> np.ndarray:
    """Per-frame lip closure: frames whose time falls inside a closure are closed, and a
    closure too short to contain any frame time closes the one frame nearest to it.

    p/b/m closures last 20-150 ms, so at 25 fps a short one can fall between frames and
    vanish if merely averaged; marking only the nearest frame keeps closures visible
    without closing the mouth on the loud burst that follows them.
    """
    # Compiled: the live driver asks for every frame, over the runs of its whole window.
    return kernels.closure_frames(np.ascontiguousarray(press > 0.5), float(rate),
                                   np.ascontiguousarray(times, dtype=np.float64), float(fps))


def frame_controls(mouth: dict[str, np.ndarray], brow: np.ndarray, blink: np.ndarray,
                   pose: np.ndarray, rate: float, times: np.ndarray, offset_s: float,
                   fps: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample per-hop curves at frame ``times`` (seconds on the curves' own clock).

    Smooth curves are averaged over ``width`` seconds (one frame offline, to avoid
    aliasing; 0 live, where half a frame of waiting would add latency), a blink shows
    its most closed moment since the previous frame (a blink holds its closure only
    20-60 ms: read instantly at 25 fps, many never showed a closed eye and read as a
    squint), and a lip closure near a frame shows in it (see :func:`_closure_frames`).
    ``offset_s`` moves the mouth (sync correction).
    """
    mouth_times = times - offset_s
    grids: dict[int, np.ndarray] = {}

    def sample(curve: np.ndarray, at: np.ndarray) -> np.ndarray:
        if max(1, int(round(width * rate))) > 1:
            return _sample(curve, rate, at, width)
        # Unaveraged (live): _sample's grid, made once for all the curves of a frame.
        if len(curve) not in grids:
            grids[len(curve)] = (np.arange(len(curve)) + 0.0) / rate
        return np.interp(at, grids[len(curve)], curve)

    controls = np.zeros((len(times), len(CONTROLS)), np.float32)
    for name, curve in mouth.items():
        if name in C:  # not "opening" (see mouth_curves)
            controls[:, C[name]] = sample(curve, mouth_times)
    # A lip closure shows as closed lips in its frame: p/b/m closures last 20-150 ms and
    # must not be averaged away.
    closure = _closure_frames(mouth["press"], rate, mouth_times, fps)
    keep = 1.0 - closure
    for name in ("jaw", "lip_up", "lip_down", "round", "spread"):
        controls[:, C[name]] *= keep
    controls[:, C["close"]] = np.maximum(controls[:, C["close"]], closure)
    controls[:, C["press"]] = closure
    controls[:, C["brow"]] = sample(brow, times)
    held = running_max(blink, max(0, int(round(rate / fps)) - 1), 0)
    controls[:, C["blink_r"]] = np.interp(times, np.arange(len(blink)) / rate, held)
    controls[:, C["blink_l"]] = controls[:, C["blink_r"]]
    frame_pose = np.stack([sample(pose[:, k], times) for k in range(5)], axis=1)
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
        # Against the sound's amplitude, as a viewer (and facetalk eval) compares them: the
        # log loudness rises before the amplitude and falls after it, so it read the
        # deliberate anticipation of onsets as the mouth being early and delayed it.
        opening = mouth["opening"]
        env = _smooth(np.clip(10 ** ((feat.db - feat.peak_db) / 20.0), 0.0, 1.0) * feat.vad, 0.02, rate)
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


def _pad_silence(feat: Features, n: int) -> Features:
    extra = n - feat.n

    def pad(a: np.ndarray, value: float | bool) -> np.ndarray:
        return np.concatenate([a, np.full(extra, value, dtype=a.dtype)])

    return Features(
        rate=feat.rate, db=pad(feat.db, feat.floor_db - 20), loud=pad(feat.loud, 0.0),
        vad=pad(feat.vad, False), voiced=pad(feat.voiced, False), f0=pad(feat.f0, 0.0),
        f1=pad(feat.f1, 0.0), f2=pad(feat.f2, 0.0), bright=pad(feat.bright, 0.0),
        low_ratio=pad(feat.low_ratio, 0.0),
        labial=pad(feat.labial, 0.0),
        high_ratio=pad(feat.high_ratio, 0.0), flux=pad(feat.flux, 0.0),
        floor_db=feat.floor_db, peak_db=feat.peak_db)
