"""Measure a talking-head MP4 from the outside: decode it, re-track the face, read its audio.

Re-tracking uses facetalk's own face mesh runtime (:mod:`facetalk.face.mesh`, the
MediaPipe models on ONNX Runtime) in tracking mode, so measuring needs no mediapipe.

Nothing here looks at how the video was made; it works on any tool's output. Mouth
opening is the inner-lip gap (landmarks 13-14) in inter-ocular distances (IOD), so it
does not depend on resolution or framing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from ..face import landmarks as L
from ..options import GenerationOptions

#: Inner-lip gap (IOD) below which a mouth counts as closed.
CLOSED_GAP = 0.05
#: The lip-sync evaluation's sentences (tools/lipsync_eval.py and the tests): bilabials,
#: open vowels and pauses ("...") in plain English that espeak-ng speaks with timings.
EVAL_SENTENCES = (
    "Please bring me a map of the moon. ... Maybe by Monday, if you can.",
    "My father bought a blue boat in Boston. ... It was a bargain.",
    "Bob and Pam ate apples by the palm tree, ... and then they napped.",
    "How about a cup of hot coffee, my friend? ... I'd like that.",
    "We need to be home before ten, ... or Mom will be upset.",
    "Father parked the car far from the barn. ... The path was dark.",
)


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
    jaw: np.ndarray | None = None  # chin below the nose tip, IOD (nan where no face)

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


def track_frames(frames: list[np.ndarray], fps: float, keep_landmarks: bool = False,
                 device: str | None = None) -> Track:
    """Run the face mesh (tracking mode) over frames and derive mouth/eye/head measures."""
    from ..face.mesh import FaceMesh

    n = len(frames)
    found = np.zeros(n, bool)
    vals = np.full((n, 7), np.nan)
    kept: list[np.ndarray | None] = []
    h, w = frames[0].shape[:2] if frames else (0, 0)
    mesh = FaceMesh(max_faces=1, static=False, device=device)
    for i, img in enumerate(frames):
        faces = mesh.process(img)
        if not faces:
            kept.append(None)
            continue
        lm = faces[0].astype(np.float64)
        found[i] = True
        vals[i] = _measures(lm)
        kept.append(lm if keep_landmarks else None)
    return Track(fps=fps, width=w, height=h, found=found, gap=vals[:, 0], width_m=vals[:, 1],
                 eye_open=vals[:, 2], yaw=vals[:, 3], pitch=vals[:, 4], roll=vals[:, 5],
                 landmarks=kept if keep_landmarks else [], jaw=vals[:, 6])


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
    jaw = float(((lm[L.CHIN, :2] - nose) @ ey) / iod)
    return np.array([gap, width, eye, yaw, pitch, roll, jaw])


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


#: A blink is seen closed when the tracked eyelid gap drops below this fraction of the
#: open eye's (see count_blinks for why not lower).
BLINK_CLOSED = 0.6


def count_blinks(eye_open: np.ndarray, fps: float = 25.0) -> tuple[int, np.ndarray]:
    """Blinks = brief dips (at most 0.5 s) of the eyelid gap below 60% of its median.

    60%, not lower: the landmark model rarely believes a fully closed eye behind
    glasses or in a narrow-eyed face, and reads it as about half open. The duration
    limit keeps squints and looking down from counting. Returns the count and the
    frame index at which each blink starts.
    """
    valid = eye_open[np.isfinite(eye_open)]
    if valid.size == 0:
        return 0, np.zeros(0, int)
    ref = np.median(valid)
    closed = np.nan_to_num(eye_open, nan=ref) < BLINK_CLOSED * ref
    starts = []
    i, n = 0, len(closed)
    while i < n:
        if closed[i]:
            j = i
            while j < n and closed[j]:
                j += 1
            if (j - i) / fps <= 0.5:
                starts.append(i)
            i = j
        else:
            i += 1
    return len(starts), np.array(starts, int)


#: Landmarks that move with the skull only (eye corners, nose bridge): their
#: frame-to-frame wobble measures jitter, not expression.
STABLE = (33, 133, 263, 362, 168, 6)


@dataclass
class Evaluation:
    """Figures of one talking-head video, measured from the outside.

    ``av_offset_ms`` > 0 means the mouth moves after the sound (audio leads video);
    < 0 means the mouth moves before the sound (audio lags video).
    """

    frames: int
    fps: float
    video_s: float
    audio_s: float
    face_found_rate: float
    av_offset_ms: float
    pearson_r: float  # inner-lip gap vs audio RMS, same frame
    best_lag_r: float  # the same correlation at the best offset
    silent_frames: int
    silent_closed_rate: float
    blinks: int
    blinks_per_min: float
    blink_interval_cv: float  # spread of the intervals (0 = perfectly periodic)
    head_range_deg: tuple[float, float, float]  # yaw, pitch, roll (5th-95th percentile span)
    jitter_milli_iod: float  # median frame-to-frame acceleration of skull landmarks
    background_changed: float | None = None  # share of pixels outside the head that changed
    verdicts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output."""
        return asdict(self)


def evaluate_track(track: Track, audio: np.ndarray, rate: int = 16000) -> Evaluation:
    """Lip sync, silence, blinks, head motion and jitter from a track and its audio."""
    rms = frame_rms(audio, rate, track.fps, track.n)
    gap = np.where(np.isfinite(track.gap), track.gap, 0.0)
    r = float(np.corrcoef(gap, rms)[0, 1]) if gap.std() > 0 and rms.std() > 0 else 0.0
    lag, lag_r = best_lag(gap, rms, max_lag=max(1, int(round(0.2 * track.fps))))
    silent = silent_frames(rms, track.fps)
    closed = gap < CLOSED_GAP
    blinks, starts = count_blinks(track.eye_open, track.fps)
    intervals = np.diff(starts) / track.fps
    cv = float(intervals.std() / intervals.mean()) if len(intervals) >= 2 else float("nan")
    video_s = track.n / track.fps

    def span(a: np.ndarray) -> float:
        v = a[np.isfinite(a)]
        return float(np.percentile(v, 95) - np.percentile(v, 5)) if v.size else 0.0

    jitter = float("nan")
    if track.landmarks and sum(lm is not None for lm in track.landmarks) >= 3:
        pts = np.array([lm[list(STABLE), :2] if lm is not None else np.full((len(STABLE), 2), np.nan)
                        for lm in track.landmarks])
        iod = np.nanmedian([np.linalg.norm(lm[263, :2] - lm[33, :2])
                            for lm in track.landmarks if lm is not None])
        acc = np.linalg.norm(pts[2:] - 2 * pts[1:-1] + pts[:-2], axis=2) / max(iod, 1e-9)
        jitter = float(np.nanmedian(acc) * 1000.0)
    ev = Evaluation(
        frames=track.n, fps=track.fps, video_s=video_s, audio_s=len(audio) / rate,
        face_found_rate=float(track.found.mean()) if track.n else 0.0,
        av_offset_ms=lag / track.fps * 1000.0, pearson_r=r, best_lag_r=lag_r,
        silent_frames=int(silent.sum()),
        silent_closed_rate=float(closed[silent].mean()) if silent.any() else 1.0,
        blinks=blinks, blinks_per_min=blinks / max(video_s, 1e-9) * 60.0,
        blink_interval_cv=cv,
        head_range_deg=(span(track.yaw), span(track.pitch * 57.3), span(track.roll)),
        jitter_milli_iod=jitter)
    ev.verdicts = verdicts(ev)
    return ev


def verdicts(ev: Evaluation) -> list[str]:
    """Plain-language reading of the figures, against the broadcast sync tolerances."""
    out = []
    off = ev.av_offset_ms
    if off >= 0:
        lead = f"audio leads video by {off:.0f} ms"
        if off > 45:
            out.append(f"{lead}: visible (ITU-R BT.1359 detects audio leading by more than "
                       "45 ms; EBU R37 allows at most 40 ms)")
        elif off > 15:
            out.append(f"{lead}: within EBU R37 (40 ms) but visible to some viewers "
                       "(ATSC IS-191 allows 15 ms)")
        else:
            out.append(f"{lead}: in sync (within ATSC IS-191's 15 ms)")
    else:
        lag = f"audio lags video by {-off:.0f} ms (the mouth moves first)"
        if -off > 125:
            out.append(f"{lag}: visible (ITU-R BT.1359 detects audio lagging by more than 125 ms)")
        elif -off > 60:
            out.append(f"{lag}: beyond EBU R37's 60 ms")
        elif -off > 45:
            out.append(f"{lag}: within EBU R37 (60 ms), beyond ATSC IS-191 (45 ms)")
        else:
            out.append(f"{lag}: in sync (within ATSC IS-191's 45 ms)")
    r = ev.pearson_r
    strength = "strong" if r >= 0.8 else ("moderate" if r >= 0.6 else "weak")
    out.append(f"mouth opening follows the voice's loudness: r = {r:.2f} ({strength})")
    if ev.silent_frames:
        share = ev.silent_closed_rate
        if share >= 0.97:
            out.append(f"mouth rests in silences ({share:.0%} of {ev.silent_frames} silent frames)")
        else:
            out.append(f"mouth is open in {1 - share:.0%} of {ev.silent_frames} silent frames")
    bpm = ev.blinks_per_min
    if ev.video_s < 20:
        out.append(f"{ev.blinks} blink(s) in {ev.video_s:.0f} s (too short to judge the rate)")
    elif bpm < 5:
        out.append(f"{bpm:.0f} blinks per minute: eyes look frozen (people blink 10-20 times)")
    elif bpm > 30:
        out.append(f"{bpm:.0f} blinks per minute: more than people do (10-20)")
    else:
        periodic = ev.blink_interval_cv < 0.2
        out.append(f"{bpm:.0f} blinks per minute" + (", suspiciously regular" if periodic else
                                                      ", at irregular intervals"))
    if ev.face_found_rate < 0.99:
        out.append(f"face tracked in only {ev.face_found_rate:.0%} of frames")
    if ev.background_changed is not None:
        out.append(f"{ev.background_changed:.1%} of the picture outside the head changed"
                   + (" (background untouched)" if ev.background_changed < 0.01 else ""))
    return out


def evaluate_video(path: str | Path, audio: str | Path | None = None,
                   portrait: np.ndarray | None = None) -> Evaluation:
    """Decode and re-track ``path`` (streaming) and measure it; see :class:`Evaluation`.

    ``audio`` replaces the video's own soundtrack; ``portrait`` (RGB) enables the
    check of how much of the picture outside the head changed.
    """
    return evaluate_video_track(path, audio, portrait)[0]


def evaluate_video_track(path: str | Path, audio: str | Path | None = None,
                         portrait: np.ndarray | None = None) -> tuple[Evaluation, Track, np.ndarray]:
    """:func:`evaluate_video`, also returning the track and the 16 kHz audio measured
    (for phoneme-timed checks without tracking the video twice)."""
    track, sample_frames = track_video(path, keep_every=10 if portrait is not None else 0)
    sound = decode_audio(audio if audio is not None else path)
    ev = evaluate_track(track, sound)
    if portrait is not None and sample_frames:
        ev.background_changed = background_change(portrait, sample_frames, track)
        ev.verdicts = verdicts(ev)
    return ev, track, sound


def track_video(path: str | Path, keep_every: int = 0, device: str | None = None
                ) -> tuple[Track, list[tuple[int, np.ndarray]]]:
    """Re-track a video frame by frame without holding it in memory.

    Keeps every ``keep_every``-th decoded frame (0 = none) for image checks.
    """
    from ..face.mesh import FaceMesh

    found, vals, kept_lm, kept = [], [], [], []
    mesh = FaceMesh(max_faces=1, static=False, device=device)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate or vs.guessed_rate or 25)
        w = h = 0
        for i, frame in enumerate(c.decode(vs)):
            img = frame.to_ndarray(format="rgb24")
            h, w = img.shape[:2]
            if keep_every and i % keep_every == 0:
                kept.append((i, img))
            faces = mesh.process(img)
            if not faces:
                found.append(False)
                vals.append(np.full(7, np.nan))
                kept_lm.append(None)
                continue
            lm = faces[0].astype(np.float64)
            found.append(True)
            vals.append(_measures(lm))
            kept_lm.append(lm)
    v = np.array(vals).reshape(-1, 7)
    track = Track(fps=fps, width=w, height=h, found=np.array(found, bool), gap=v[:, 0],
                  width_m=v[:, 1], eye_open=v[:, 2], yaw=v[:, 3], pitch=v[:, 4], roll=v[:, 5],
                  landmarks=kept_lm, jaw=v[:, 6])
    return track, kept


def background_change(portrait: np.ndarray, frames: list[tuple[int, np.ndarray]],
                      track: Track) -> float:
    """Share of pixels outside the head region whose brightness differs from the portrait.

    The portrait is aligned to each sampled frame by a similarity fitted to skull
    landmarks, then refined by ECC image registration on the region outside the head,
    so any framing (crop, full, vertical) can be compared. Luma only, lightly blurred,
    with a 10-level threshold: H.264 and 4:2:0 chroma alone must not count as change.
    """
    import cv2

    from ..face.analysis import analyze_face

    ref = analyze_face(portrait).landmarks
    gray_p = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY).astype(np.float32)
    changed, total = 0, 0
    for i, img in frames:
        lm = track.landmarks[i] if i < len(track.landmarks) else None
        if lm is None:
            continue
        m, _ = cv2.estimateAffinePartial2D(ref[list(STABLE), :2].astype(np.float32),
                                           lm[list(STABLE), :2].astype(np.float32))
        if m is None:
            continue
        h, w = img.shape[:2]
        face = lm[:468, :2]
        cx, cy = face.mean(axis=0)
        half_w = (face[:, 0].max() - face[:, 0].min()) / 2
        half_h = (face[:, 1].max() - face[:, 1].min()) / 2
        yy, xx = np.mgrid[0:h, 0:w]
        head = ((xx - cx) / (1.7 * half_w)) ** 2 + ((yy - cy + 0.2 * half_h) / (1.9 * half_h)) ** 2 <= 1
        # Below the head (neck, collar) follows the jaw and head: not background either.
        head |= (np.abs(xx - cx) < 1.3 * half_w) & (yy > cy)
        gray_f = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        valid = cv2.warpAffine(np.ones(portrait.shape[:2], np.uint8), m, (w, h),
                               flags=cv2.INTER_NEAREST) > 0
        region = valid & ~head
        if region.sum() < 100:
            continue
        warp = m.astype(np.float32)
        try:
            # ECC finds the map from frame coordinates into the landmark-aligned portrait.
            _, inv = cv2.findTransformECC(
                cv2.GaussianBlur(gray_f, (0, 0), 1.0), cv2.GaussianBlur(
                    cv2.warpAffine(gray_p, m, (w, h), flags=cv2.INTER_LINEAR), (0, 0), 1.0),
                np.eye(2, 3, dtype=np.float32), cv2.MOTION_AFFINE,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5),
                region.astype(np.uint8), 3)
            # frame -> portrait is ECC's map then m's inverse; warpAffine wants its inverse.
            warp = cv2.invertAffineTransform(
                _compose(inv, cv2.invertAffineTransform(warp).astype(np.float32)))
        except cv2.error:
            pass  # keep the landmark alignment
        aligned = cv2.warpAffine(gray_p, warp, (w, h), flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpAffine(np.ones(portrait.shape[:2], np.uint8), warp, (w, h),
                               flags=cv2.INTER_NEAREST) > 0
        valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        region = valid & ~head
        diff = np.abs(cv2.GaussianBlur(gray_f, (0, 0), 1.0)
                      - cv2.GaussianBlur(aligned, (0, 0), 1.0))
        changed += int((diff[region] > 10).sum())
        total += int(region.sum())
    return changed / total if total else 0.0


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The affine map that applies ``a`` first, then ``b`` (both 2x3)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (b3 @ a3)[:2].astype(np.float32)


#: eSpeak phonemes whose lips close (p, b, m) and open vowels (trap, bath, palm, start,
#: price, mouth): the ground truth for closure and opening checks.
BILABIALS = frozenset({"p", "b", "m"})
OPEN_VOWELS = frozenset({"a", "aa", "A:", "A@", "aI", "aU"})
#: Inner-lip gap (IOD) from which a mouth counts as clearly open.
OPEN_GAP = 0.12


def _frames_in(start: float, end: float, fps: float, n: int) -> np.ndarray:
    """Frames whose timestamp lies in [start, end], or the nearest one if none does."""
    idx = np.arange(int(np.ceil(start * fps - 1e-9)), int(np.floor(end * fps + 1e-9)) + 1)
    idx = idx[(idx >= 0) & (idx < n)]
    if idx.size == 0:
        idx = np.array([int(np.clip(round((start + end) / 2 * fps), 0, n - 1))])
    return idx


@dataclass
class PhonemeReport:
    """How the mouth behaves on phonemes whose timing is known (from the synthesizer)."""

    bilabials: int
    bilabials_closed: float  # share of p/b/m where the lips actually close
    open_vowels: int
    open_vowels_open: float  # share of open vowels where the mouth is clearly open


def phoneme_report(track: Track, phonemes: list, margin_s: float = 0.02) -> PhonemeReport:  # type: ignore[type-arg]
    """Closure on p/b/m (within ``margin_s``) and opening on open vowels, from a track."""
    gap = np.where(np.isfinite(track.gap), track.gap, np.nan)
    closed, opened = [], []
    for p in phonemes:
        if p.name in BILABIALS:
            idx = _frames_in(p.start - margin_s, p.end + margin_s, track.fps, track.n)
            closed.append(bool(np.nanmin(gap[idx]) < CLOSED_GAP))
        elif p.name in OPEN_VOWELS:
            idx = _frames_in(p.start, p.end, track.fps, track.n)
            opened.append(bool(np.nanmax(gap[idx]) >= OPEN_GAP))
    return PhonemeReport(
        bilabials=len(closed), bilabials_closed=float(np.mean(closed)) if closed else 1.0,
        open_vowels=len(opened), open_vowels_open=float(np.mean(opened)) if opened else 1.0)


def blink_closure(portrait: str | Path, audio: str | Path, options: GenerationOptions,
                  output: str | Path) -> np.ndarray:
    """Render ``portrait`` speaking ``audio`` and measure each scheduled blink from outside.

    Returns, per blink the motion plan schedules, the re-tracked eyelid gap at its most
    closed frame divided by the gap of the open eye (the clip's median outside blinks):
    about 0 for a fully closed eye; the face mesh reads a closed eye behind glasses or on
    narrow eyes at up to about half open, a squint or half blink higher still (a blink
    counts as closed below BLINK_CLOSED).
    """
    from ..media.audio import load_audio
    from ..motion.features import analyze
    from ..motion.plan import plan_motion
    from ..pipeline import generate

    result = generate(portrait, audio, options, output=output)
    sound = load_audio(audio)
    plan = plan_motion(analyze(sound.samples, sound.sample_rate), result.frames, options)
    track, _ = track_video(result.path)
    fps = track.fps
    gap = track.eye_open
    in_blink = np.zeros(track.n, bool)
    windows = []
    for start in plan.blink_times:
        idx = _frames_in(float(start), float(start) + 0.32, fps, track.n)
        if len(idx):
            windows.append(idx)
            in_blink[idx] = True
    open_gap = float(np.nanmedian(gap[~in_blink])) if (~in_blink).any() else float("nan")
    return np.array([float(np.nanmin(gap[idx])) / open_gap for idx in windows
                     if np.isfinite(gap[idx]).any()])


#: The articulation classes beyond open/closed, per naming scheme: eSpeak's (mixed case;
#: its "V" is the vowel of "cup") and ARPAbet (CMU dictionary, pocketsphinx; stress
#: digits dropped). A timing file is ARPAbet when every name is upper case letters.
ESPEAK_CLASSES = {"bilabial": BILABIALS, "open": OPEN_VOWELS,
                  "rounded": frozenset({"u:", "oU", "U", "OI", "o:", "O:"}),
                  "spread": frozenset({"i", "i:", "eI", "I", "e"}),
                  "labiodental": frozenset({"f", "v"})}
ARPA_CLASSES = {"bilabial": frozenset({"P", "B", "M"}), "open": frozenset({"AA", "AE", "AW", "AY"}),
                "rounded": frozenset({"UW", "OW", "UH", "OY"}),
                "spread": frozenset({"IY", "EY", "IH"}),
                "labiodental": frozenset({"F", "V"})}
#: A labiodental shows when the inner-lip gap gets this small (lower lip at the upper
#: teeth): below OPEN_GAP's half, not necessarily the full closure of p/b/m ...
LABIODENTAL_GAP = 0.06
#: ... while the jaw stays part-open: the chin at least this far (IOD) below where it
#: rests with the lips closed. Lips shut by a closed jaw are a p/b/m shape, not f/v.
LABIODENTAL_JAW = 0.02


@dataclass(frozen=True)
class Phone:
    """One timed phoneme (seconds) from a timing file or an aligner."""

    name: str
    start: float
    end: float


def _phone_classes(phonemes: list) -> tuple[dict[str, frozenset[str]], bool]:  # type: ignore[type-arg]
    """The class table for these names, and whether they are ARPAbet."""
    import re

    arpa = bool(phonemes) and all(re.fullmatch(r"[A-Z]+[012]?", p.name) for p in phonemes)
    return (ARPA_CLASSES if arpa else ESPEAK_CLASSES), arpa


def read_phonemes(path: str | Path) -> list[Phone]:
    """Phoneme timings from a file: TSV lines ``start<TAB>end<TAB>phone`` (seconds; ``#``
    comments) or JSON ``[{"start": s, "end": s, "phone": name}, ...]``.

    Phone names are eSpeak's or ARPAbet (stress digits allowed); anything else is kept
    but counts in no class.
    """
    import json

    text = Path(path).read_text()
    if text.lstrip().startswith("["):
        return [Phone(str(d.get("phone", d.get("name", ""))), float(d["start"]), float(d["end"]))
                for d in json.loads(text)]
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 3:
            raise ValueError(f"{path}: expected 'start end phone', got {line!r}")
        out.append(Phone(parts[2], float(parts[0]), float(parts[1])))
    return out


@dataclass
class ArticulationReport:
    """p/b/m, open vowels, rounding and labiodentals on timed phonemes, from a track."""

    bilabials: int
    bilabials_closed: float
    open_vowels: int
    open_vowels_open: float
    rounded: int
    spread: int
    round_spread_width: float  # median mouth width on rounded / on spread vowels (< 1: narrower)
    labiodentals: int
    labiodentals_shown: float  # share of f/v with the lip gap small and the jaw part-open

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON output."""
        return asdict(self)


def articulation_report(track: Track, phonemes: list, margin_s: float = 0.02  # type: ignore[type-arg]
                        ) -> ArticulationReport:
    """Like :func:`phoneme_report`, for eSpeak or ARPAbet names, plus rounding and f/v.

    Width compares the mouth-corner distance in the middle frame of rounded (u, o) and
    spread (i, e) vowels. A labiodental counts as shown if, in one frame within it, the
    lip gap is below LABIODENTAL_GAP while the jaw is at least LABIODENTAL_JAW below its
    closed-lips rest (the median over frames with the lips closed); a track without jaw
    measurements (``track.jaw`` None) is judged on the gap alone.
    """
    gap = np.where(np.isfinite(track.gap), track.gap, np.nan)
    part_open = np.ones(track.n, bool)
    if track.jaw is not None and np.isfinite(track.jaw).any():
        jaw = np.asarray(track.jaw, float)
        shut = np.isfinite(jaw) & (np.nan_to_num(gap, nan=1.0) < CLOSED_GAP)
        rest = float(np.median(jaw[shut])) if shut.any() else float(np.nanpercentile(jaw, 10))
        part_open = np.nan_to_num(jaw, nan=-1.0) >= rest + LABIODENTAL_JAW
    width = track.width_m
    classes, arpa = _phone_classes(phonemes)
    closed, opened, rnd, spr, lab = [], [], [], [], []
    for p in phonemes:
        a = p.name.rstrip("012") if arpa else p.name
        if a in classes["bilabial"]:
            idx = _frames_in(p.start - margin_s, p.end + margin_s, track.fps, track.n)
            closed.append(bool(np.nanmin(gap[idx]) < CLOSED_GAP))
        elif a in classes["open"]:
            idx = _frames_in(p.start, p.end, track.fps, track.n)
            opened.append(bool(np.nanmax(gap[idx]) >= OPEN_GAP))
        elif a in classes["labiodental"]:
            idx = _frames_in(p.start, p.end + margin_s, track.fps, track.n)
            lab.append(bool(np.any((np.nan_to_num(gap[idx], nan=1.0) < LABIODENTAL_GAP) & part_open[idx])))
        if a in classes["rounded"] or a in classes["spread"]:
            mid = _frames_in((p.start + p.end) / 2, (p.start + p.end) / 2, track.fps, track.n)
            w = float(np.nanmean(width[mid])) if np.isfinite(width[mid]).any() else np.nan
            (rnd if a in classes["rounded"] else spr).append(w)
    ratio = (float(np.nanmedian(rnd) / np.nanmedian(spr))
             if rnd and spr and np.isfinite(rnd).any() and np.isfinite(spr).any() else float("nan"))
    return ArticulationReport(
        bilabials=len(closed), bilabials_closed=float(np.mean(closed)) if closed else float("nan"),
        open_vowels=len(opened), open_vowels_open=float(np.mean(opened)) if opened else float("nan"),
        rounded=len(rnd), spread=len(spr), round_spread_width=ratio,
        labiodentals=len(lab), labiodentals_shown=float(np.mean(lab)) if lab else float("nan"))


def align_transcript(audio: np.ndarray, text: str, rate: int = 16000) -> list[Phone]:
    """ARPAbet phone timings of English ``audio`` (16 kHz mono float) saying ``text``, by
    offline forced alignment with pocketsphinx's bundled English model.

    pocketsphinx is optional (BSD-2): the ``align`` extra, ``pip install 'facetalk[align]'``.
    Its frames are 10 ms.
    """
    try:
        from pocketsphinx import Decoder
    except ImportError:
        from ..errors import InvalidInput

        raise InvalidInput("aligning a transcript needs pocketsphinx, facetalk's optional 'align' extra: "
                           "pip install 'facetalk[align]' (or pip install pocketsphinx; or pass --phonemes "
                           "with timings from another aligner)") from None
    if rate != 16000:
        raise ValueError("align_transcript expects 16 kHz audio")
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    dec = Decoder(samprate=rate, bestpath=False)
    dec.set_align_text(" ".join(text.lower().split()))
    for second_pass in (False, True):
        if second_pass:
            dec.set_alignment()
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
    return [Phone(p.name, p.start / 100.0, (p.start + p.duration) / 100.0)
            for word in dec.get_alignment() for p in word]
