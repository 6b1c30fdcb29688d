"""Measure a talking-head MP4 from the outside: decode it, re-track the face, read its audio.

Nothing here looks at how the video was made; it works on any tool's output. Mouth
opening is the inner-lip gap (landmarks 13-14) in inter-ocular distances (IOD), so it
does not depend on resolution or framing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from . import landmarks as L
from .face import _quiet_native_logs

#: Inner-lip gap (IOD) below which a mouth counts as closed.
CLOSED_GAP = 0.05


@dataclass
class Track:
    """Per-frame measurements of a decoded video."""

    fps: float
    width: int
    height: int
    found: np.ndarray  # bool per frame
    gap: np.ndarray  # inner-lip gap, IOD (nan where no face)
    width_m: np.ndarray  # mouth corner distance, IOD
    eye_open: np.ndarray  # mean eyelid gap, IOD
    yaw: np.ndarray  # rough head angles from landmarks (degrees)
    pitch: np.ndarray
    roll: np.ndarray
    landmarks: list[np.ndarray | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        """Number of frames."""
        return len(self.found)


def decode_frames(path: str | Path) -> tuple[list[np.ndarray], float]:
    """All video frames as RGB arrays, and the frame rate."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 25)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    return frames, fps


def decode_audio(path: str | Path, rate: int = 16000) -> np.ndarray:
    """The file's audio track as mono float32 at ``rate`` (empty if it has none)."""
    out = []
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return np.zeros(0, np.float32)
        res = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in c.decode(c.streams.audio[0]):
            for o in res.resample(frame):
                out.append(o.to_ndarray().reshape(-1))
        for o in res.resample(None):
            out.append(o.to_ndarray().reshape(-1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def track_frames(frames: list[np.ndarray], fps: float, keep_landmarks: bool = False) -> Track:
    """Run Face Mesh (tracking mode) over frames and derive mouth/eye/head measures."""
    from mediapipe.python.solutions import face_mesh

    n = len(frames)
    found = np.zeros(n, bool)
    vals = np.full((n, 6), np.nan)
    kept: list[np.ndarray | None] = []
    h, w = frames[0].shape[:2] if frames else (0, 0)
    with _quiet_native_logs(), face_mesh.FaceMesh(
            static_image_mode=False, refine_landmarks=True, max_num_faces=1,
            min_detection_confidence=0.5, min_tracking_confidence=0.5) as fm:
        for i, img in enumerate(frames):
            res = fm.process(img)
            if not res.multi_face_landmarks:
                kept.append(None)
                continue
            lm = np.array([[p.x * w, p.y * h, p.z * w]
                           for p in res.multi_face_landmarks[0].landmark])
            found[i] = True
            vals[i] = _measures(lm)
            kept.append(lm if keep_landmarks else None)
    return Track(fps=fps, width=w, height=h, found=found, gap=vals[:, 0], width_m=vals[:, 1],
                 eye_open=vals[:, 2], yaw=vals[:, 3], pitch=vals[:, 4], roll=vals[:, 5],
                 landmarks=kept if keep_landmarks else [])


def _measures(lm: np.ndarray) -> np.ndarray:
    r_eye = lm[list(L.R_EYE_UP + L.R_EYE_LO), :2].mean(0)
    l_eye = lm[list(L.L_EYE_UP + L.L_EYE_LO), :2].mean(0)
    iod = float(np.linalg.norm(l_eye - r_eye)) + 1e-9
    ex = (l_eye - r_eye) / iod
    ey = np.array([-ex[1], ex[0]])
    gap = float((lm[14, :2] - lm[13, :2]) @ ey) / iod
    width = float(np.linalg.norm(lm[291, :2] - lm[61, :2])) / iod
    eye = (float((lm[145, :2] - lm[159, :2]) @ ey) + float((lm[374, :2] - lm[386, :2]) @ ey)) / 2 / iod
    roll = float(np.degrees(np.arctan2(ex[1], ex[0])))
    mid = (r_eye + l_eye) / 2
    nose = lm[L.NOSE_TIP, :2]
    yaw = float(np.degrees(np.arcsin(np.clip(((nose - mid) @ ex) / iod * 1.6, -1, 1))))
    pitch = float(((nose - mid) @ ey) / iod)
    return np.array([gap, width, eye, yaw, pitch, roll])


def frame_rms(audio: np.ndarray, rate: int, fps: float, n: int) -> np.ndarray:
    """RMS of the audio in a one-frame window centred on each frame's timestamp."""
    half = int(round(rate / fps / 2))
    out = np.zeros(n)
    for i in range(n):
        c = int(round(i / fps * rate))
        seg = audio[max(0, c - half):c + half]
        out[i] = np.sqrt(np.mean(seg.astype(np.float64) ** 2)) if seg.size else 0.0
    return out


def silent_frames(rms: np.ndarray, fps: float, min_s: float = 0.2) -> np.ndarray:
    """Frames inside silences at least ``min_s`` long (excluding one frame at each edge)."""
    speech_level = np.percentile(rms[rms > 0], 90) if np.any(rms > 0) else 0.0
    quiet = rms < max(speech_level * 0.05, 1e-4)
    out = np.zeros_like(quiet)
    i = 0
    n = len(quiet)
    while i < n:
        if quiet[i]:
            j = i
            while j < n and quiet[j]:
                j += 1
            if (j - i) / fps >= min_s:
                out[i + 1:j - 1] = True
            i = j
        else:
            i += 1
    return out


def best_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, float]:
    """Sub-frame lag (frames, + = ``a`` later than ``b``) maximizing correlation, and that r."""
    a = np.nan_to_num(a - np.nanmean(a))
    b = b - b.mean()
    best = (-2.0, 0)
    cc = []
    for k in range(-max_lag, max_lag + 1):
        x = a[max(0, k):len(a) + min(0, k)]
        y = b[max(0, -k):len(b) - max(0, k)]
        r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
        cc.append(r)
        if r > best[0]:
            best = (r, k)
    i = best[1] + max_lag
    lag = float(best[1])
    if 0 < i < len(cc) - 1:
        denom = cc[i - 1] - 2 * cc[i] + cc[i + 1]
        if denom < 0:
            lag += 0.5 * (cc[i - 1] - cc[i + 1]) / denom
    return lag, best[0]


@dataclass
class SyncReport:
    """Lip-sync figures of one video, measured from the outside."""

    frames: int
    fps: float
    face_found_rate: float
    pearson_r: float  # inner-lip gap vs audio RMS, same frame
    lag_ms: float  # + = mouth later than the sound
    lag_r: float
    silent_frames: int
    silent_closed_rate: float
    blinks: int
    blinks_per_min: float
    video_s: float
    audio_s: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for JSON output."""
        return asdict(self)


def count_blinks(eye_open: np.ndarray) -> int:
    """Blinks = dips of the eyelid gap below 45% of its typical (median) value."""
    valid = eye_open[np.isfinite(eye_open)]
    if valid.size == 0:
        return 0
    ref = np.median(valid)
    closed = np.nan_to_num(eye_open, nan=ref) < 0.45 * ref
    return int(np.sum(closed[1:] & ~closed[:-1]) + int(closed[0]))


def sync_report(path: str | Path, track: Track | None = None) -> SyncReport:
    """Measure lip sync, silence closure and blinks of an MP4 with an audio track."""
    if track is None:
        frames, fps = decode_frames(path)
        track = track_frames(frames, fps)
    audio = decode_audio(path)
    rate = 16000
    rms = frame_rms(audio, rate, track.fps, track.n)
    gap = np.where(np.isfinite(track.gap), track.gap, 0.0)
    r = float(np.corrcoef(gap, rms)[0, 1]) if gap.std() > 0 and rms.std() > 0 else 0.0
    lag, lag_r = best_lag(gap, rms, max_lag=5)
    silent = silent_frames(rms, track.fps)
    closed = (gap < CLOSED_GAP)
    blinks = count_blinks(track.eye_open)
    video_s = track.n / track.fps
    return SyncReport(
        frames=track.n, fps=track.fps, face_found_rate=float(track.found.mean()) if track.n else 0.0,
        pearson_r=r, lag_ms=lag / track.fps * 1000.0, lag_r=lag_r,
        silent_frames=int(silent.sum()),
        silent_closed_rate=float(closed[silent].mean()) if silent.any() else 1.0,
        blinks=blinks, blinks_per_min=blinks / max(video_s, 1e-9) * 60.0,
        video_s=video_s, audio_s=len(audio) / rate)
