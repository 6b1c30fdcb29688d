"""generate(): portrait + speech -> MP4, as numbered stages.

Frames are streamed to the encoder one by one (memory does not grow with the audio's
length), progress is reported through a callback and a cancel flag is checked before
every frame, so a service can stop a render within a frame's time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import Cancelled, FacetalkError, LimitExceeded, RenderError
from .face.analysis import FaceModel, analyze_face
from .face.framing import plan_framing
from .media.audio import iter_soundtrack, stream_audio
from .media.image import Source, load_portrait
from .media.video import Mp4Writer, ai_metadata, new_render_id
from .motion.features import analyze_stream
from .motion.plan import plan_motion
from .options import GenerationOptions
from .provenance.overlays import build_overlays
from .render.renderer import make_renderer, warm_up, working_scale
from .render.rig import Rig, build_rig
from .settings import Limits


@dataclass(frozen=True)
class Progress:
    """Where a render is: stage name, overall fraction 0..1, frames, ETA."""

    stage: str
    fraction: float
    frames_done: int = 0
    frames_total: int = 0
    eta_s: float | None = None


@dataclass
class GenerationResult:
    """What a render produced and how long each stage took."""

    path: Path
    duration: float  # seconds of video
    frames: int
    width: int
    height: int
    fps: int
    audio_duration: float
    timings: dict[str, float]  # wall seconds per stage; they add up to the whole render
    warnings: list[str]
    sync_offset_ms: float  # lip-sync correction applied (positive = mouth later)
    render_id: str
    options: GenerationOptions
    stats: dict[str, float] = field(default_factory=dict)  # finer breakdown (may overlap)

    @property
    def wall_s(self) -> float:
        """Total wall time of the render in seconds."""
        return sum(self.timings.values())

    def summary(self) -> str:
        """One line for logs and the CLI."""
        fps = self.frames / max(self.wall_s, 1e-9)
        return (f"{self.path}: {self.duration:.2f} s, {self.frames} frames, "
                f"{self.width}x{self.height}, rendered in {self.wall_s:.1f} s ({fps:.0f} frames/s)")


CancelFlag = threading.Event | Callable[[], bool] | None
ProgressCallback = Callable[[Progress], None] | None


def _cancelled(flag: CancelFlag) -> bool:
    if flag is None:
        return False
    if isinstance(flag, threading.Event):
        return flag.is_set()
    return bool(flag())


class _Background:
    """Run ``fn(*args)`` in a thread; ``result()`` joins and returns or re-raises."""

    def __init__(self, fn: Callable[..., object], *args: object) -> None:
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


#: The portrait is shrunk to the working scale when that saves more than this share per axis.
SHRINK_BELOW = 0.9


def prepare_face(image: np.ndarray, options: GenerationOptions, device: str | None = None
                 ) -> tuple[FaceModel, Rig]:
    """Face analysis, then the portrait at the scale this render's output needs, and its rig.

    Detection and landmarks run on a downscaled copy anyway (see face.analysis); once the
    framing is known, a portrait larger than the working scale (see
    render.renderer.working_scale) is shrunk once, so a phone photo's setup and memory
    follow the output's size, not the photo's.
    """
    face = analyze_face(image, device=device)
    k = working_scale(plan_framing(face, options).scale, options.quality_tier == "quality")
    if k < SHRINK_BELOW:
        face = face.scaled(k)
    return face, build_rig(face.landmarks)


@contextlib.contextmanager
def _render_threads() -> Iterator[None]:
    """One thread for BLAS and OpenCV while a render runs, restored afterwards.

    The encoder already keeps the cores busy; idle BLAS threads spin (sched_yield)
    after every tiny per-frame matrix product and OpenCV's pool competes with x264,
    so more threads here cost time instead of saving it (measured: a third of the
    CPU went to system time with the defaults).
    """
    from threadpoolctl import threadpool_limits

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(previous)


def generate(portrait: Source, audio: Source, options: GenerationOptions | None = None,
             on_progress: ProgressCallback = None, *, output: str | os.PathLike[str] | None = None,
             limits: Limits | None = None, cancel: CancelFlag = None,
             render_id: str | None = None, device: str | None = None) -> GenerationResult:
    """Render ``portrait`` speaking ``audio`` into an MP4 and describe the result.

    ``portrait`` and ``audio`` are paths or bytes. ``output`` defaults to a new file in
    the temp directory. ``render_id`` names this render in the file's metadata (a
    service passes its job id; default: a fresh random id). Raises a
    :class:`~facetalk.errors.FacetalkError` subclass for bad input or cancellation; no
    partial file is left behind on any failure. ``device`` (``auto``, ``cpu``, ``cuda``,
    ``tensorrt``, ``openvino``, ``cann``; default ``$FACETALK_DEVICE`` or ``auto``) is
    where the neural stages run: a setting of the machine, not of the video.
    """
    from .devices import resolve

    resolve(device)  # an unavailable device fails here, before any work
    with _render_threads():
        return _generate(portrait, audio, options, on_progress, output, limits, cancel,
                         render_id, device)


def _generate(portrait: Source, audio: Source, options: GenerationOptions | None,
              on_progress: ProgressCallback, output: str | os.PathLike[str] | None,
              limits: Limits | None, cancel: CancelFlag, render_id: str | None,
              device: str | None = None) -> GenerationResult:
    options = options or GenerationOptions()
    limits = limits or Limits.from_env()
    if options.duration is not None and options.duration > limits.max_audio_seconds:
        # The options' own ceiling is the default limit; an operator may set a lower one.
        raise LimitExceeded(
            f"duration {options.duration:g} s is longer than this box allows "
            f"({limits.max_audio_seconds:g} s)",
            hint="ask for a shorter video (FACETALK_MAX_AUDIO_SECONDS sets the limit)")
    timings: dict[str, float] = {}
    warnings: list[str] = []
    render_id = render_id or new_render_id()
    out_path = Path(output) if output is not None else Path(
        tempfile.gettempdir()) / f"facetalk-{render_id}.mp4"

    def report(stage: str, fraction: float, done: int = 0, total: int = 0,
               eta: float | None = None) -> None:
        if on_progress is not None:
            on_progress(Progress(stage, min(max(fraction, 0.0), 1.0), done, total, eta))

    def check_cancel() -> None:
        if _cancelled(cancel):
            raise Cancelled("the render was cancelled")

    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    # 0. load the compiled render kernels in the background meanwhile
    warmer = threading.Thread(target=warm_up, name="facetalk-warm-up", daemon=True)
    warmer.start()

    # 1. decode the portrait (cheap checks first: limits, format)
    report("loading", 0.0)
    image = load_portrait(portrait, limits)

    # 2. analyze the face (once per portrait) in a thread, while this one decodes and
    #    analyzes the audio: the two do not depend on each other.
    face_job = _Background(prepare_face, image, options, device)
    del image  # the face model holds what the render needs (shrunk for a large photo)

    # 3. audio: decoded and analysed chunk by chunk (the 16 kHz signal is never held
    #    whole: memory stays flat in the clip's length)
    try:
        sound, chunks = stream_audio(audio, limits)
        lap("decode")
        check_cancel()
        report("audio", 0.03)
        decoded = 0

        def counted() -> Iterator[np.ndarray]:
            nonlocal decoded
            for chunk in chunks:
                decoded += len(chunk)
                yield chunk

        feats = analyze_stream(counted(), sound.sample_rate)
        audio_s = decoded / sound.sample_rate
        lap("features")  # the audio's decoding and analysis, streamed together
    finally:
        face, rig = face_job.result()  # re-raises NoFaceFound and friends
    lap("face")  # only the wait beyond the audio stages: the two overlap
    report("face", 0.05)
    warnings += face.warnings
    if rig.source_gap > 0.3:
        warnings.append("the portrait's mouth is wide open; closing it stretches the lips")
    if not feats.vad.any():
        warnings.append("no speech was detected in the audio; the mouth stays closed")
    check_cancel()

    # 4. plan the motion for every frame
    duration = options.duration if options.duration is not None else audio_s
    n_frames = max(1, int(round(duration * options.fps)))
    video_s = n_frames / options.fps
    if video_s < audio_s - 0.5 / options.fps:
        warnings.append(f"duration {video_s:.2f} s is shorter than the audio "
                        f"({audio_s:.2f} s); audio and video were both cut")
    plan = plan_motion(feats, n_frames, options)
    del feats  # the plan is all the frames need (25 rows of float32 per second)
    lap("motion")
    check_cancel()

    # 5. prepare the renderer (framing, working image, still frame)
    warmer.join()
    framing = plan_framing(face, options)
    renderer = make_renderer(face, rig, framing, options.quality_tier == "quality")
    overlays = build_overlays(options, framing, render_id, quiet=renderer.mouth_region())
    lap("setup")

    # 6. render and encode, frame by frame (the encoder runs in its own thread)
    writer = Mp4Writer(
        out_path, framing.out_w, framing.out_h, options.fps,
        iter_soundtrack(audio, sound, limits, video_s), sound.output_rate,
        sound.output_layout,
        ai_metadata(render_id, {"watermark": "on" if options.watermark else "off"}))
    try:
        start = time.perf_counter()
        for i in range(n_frames):
            check_cancel()
            # Drawn straight into the encoder's next buffer, in its own format.
            frame = renderer.frame_i420(plan.controls[i], plan.pose[i], writer.next_buffer())
            for overlay in overlays:
                overlay.apply_i420(frame, i)
            writer.write_i420(frame)
            if on_progress is not None and (i % 5 == 0 or i == n_frames - 1):
                done = i + 1
                elapsed = time.perf_counter() - start
                eta = elapsed / done * (n_frames - done)
                report("rendering", 0.06 + 0.93 * done / n_frames, done, n_frames, eta)
        writer.finish()
    except FacetalkError:
        writer.abort()
        raise
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise RenderError(f"rendering failed: {type(exc).__name__}: {exc}") from exc
    lap("render")
    stats = {f"render.{k}": v for k, v in renderer.timings.items()}
    if writer.colour_s:  # frames handed over as RGB (the renderer's I420 path has none)
        stats["colour"] = writer.colour_s
    stats["encode (writer thread)"] = writer.encode_s
    report("done", 1.0, n_frames, n_frames, 0.0)
    return GenerationResult(
        path=out_path, duration=video_s, frames=n_frames, width=framing.out_w,
        height=framing.out_h, fps=options.fps, audio_duration=audio_s,
        timings=timings, warnings=warnings, sync_offset_ms=plan.offset_ms,
        render_id=render_id, options=options, stats=stats)
