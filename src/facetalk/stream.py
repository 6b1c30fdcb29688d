"""Live talking portrait: push audio as it arrives, get timestamped frames back.

The second driver of the same engine as ``generate()``: raw features are computed
incrementally (motion.features.FeatureStream), the same motion model plans each frame once
80 ms of audio beyond it has arrived (motion.live.MotionStream), and the same renderer draws
it. A portrait is analysed once into an :class:`Avatar` that any number of streams can
share.

    avatar = Avatar.prepare("face.jpg", GenerationOptions(min_resolution=512))
    live = Stream(avatar)
    for frame in live.push_audio(pcm16_chunk):   # 16 kHz mono
        show(frame.time, frame.rgb)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from .face.analysis import FaceModel, analyze_face
from .face.framing import Framing, plan_framing
from .media.image import Source, load_portrait
from .media.video import new_render_id
from .motion.features import FeatureStream
from .motion.live import MotionStream, StreamFrame
from .options import GenerationOptions
from .provenance.overlays import Overlay, build_overlays
from .render.renderer import Renderer, make_renderer, warm_up
from .render.rig import Rig, build_rig
from .settings import Limits

#: Live audio is 16 kHz mono: what the analysis runs at, and what clients send.
STREAM_RATE = 16000


@dataclass
class Avatar:
    """A portrait analysed once for live use: face, rig, framing and renderer."""

    face: FaceModel
    rig: Rig
    framing: Framing
    renderer: Renderer
    options: GenerationOptions
    warnings: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _spare: list[Renderer] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._spare.append(self.renderer)

    @classmethod
    def prepare(cls, portrait: Source, options: GenerationOptions | None = None,
                limits: Limits | None = None) -> Avatar:
        """Decode and analyse ``portrait`` (path or bytes); raises NoFaceFound etc."""
        options = options or GenerationOptions()
        warmer = threading.Thread(target=warm_up, daemon=True)
        warmer.start()
        face = analyze_face(load_portrait(portrait, limits or Limits.from_env()))
        rig = build_rig(face.landmarks)
        framing = plan_framing(face, options)
        renderer = make_renderer(face, rig, framing, options.quality_tier == "quality")
        warmer.join()
        return cls(face, rig, framing, renderer, options, list(face.warnings))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        return self.framing.out_w, self.framing.out_h

    @contextmanager
    def borrow_renderer(self) -> Iterator[Renderer]:
        """A renderer nobody else is drawing with, for the length of the ``with``.

        A renderer reuses its scratch buffers, so two threads must not draw with the same
        one; sharing one behind a lock serialised every session of an avatar on one core.
        Copies share the precomputed (read-only) arrays and get their own buffers, so
        there are at most as many as frames drawn at once (a few MB each at 512 px).
        """
        with self.lock:
            if self._spare:
                renderer = self._spare.pop()
            else:
                renderer = replace(self.renderer, timings={}, _buf={})
        try:
            yield renderer
        finally:
            with self.lock:
                self._spare.append(renderer)


@dataclass(frozen=True)
class Frame:
    """A rendered live frame and where it sits on the audio timeline."""

    index: int
    time: float  # seconds of audio from the start of the stream
    rgb: np.ndarray


class Stream:
    """One live session on an avatar: push 16 kHz mono audio, receive frames.

    Frame *n* shows time n/fps and is returned as soon as audio up to
    n/fps + :attr:`lookahead_s` has been pushed. When the speaker is silent, push
    silence (:meth:`push_silence`) to keep frames coming: blinks and small head motion
    go on, the mouth rests.
    """

    def __init__(self, avatar: Avatar, options: GenerationOptions | None = None,
                 stream_id: str | None = None) -> None:
        self.avatar = avatar
        self.options = options or avatar.options
        self.id = stream_id or new_render_id()
        self._features = FeatureStream(STREAM_RATE)
        self._motion = MotionStream(self.options)
        self._overlays: list[Overlay] = build_overlays(self.options, avatar.framing, self.id,
                                                         quiet=avatar.renderer.mouth_region())
        self.samples_in = 0

    @property
    def fps(self) -> int:
        """Frames per second."""
        return self.options.fps

    @property
    def lookahead_s(self) -> float:
        """Most audio needed beyond a frame's time: motion look-ahead, the second half of
        the analysis window and up to one hop of rounding."""
        fs = self._features
        return self._motion.lookahead_s + (fs.win - fs.win // 2 + fs.hop) / STREAM_RATE

    @property
    def audio_time(self) -> float:
        """Seconds of audio received so far."""
        return self.samples_in / STREAM_RATE

    def push_audio(self, pcm: bytes | np.ndarray) -> list[Frame]:
        """Add audio (PCM16 little-endian bytes, or float samples in -1..1); get new frames."""
        return [self.draw(p) for p in self.plan(pcm)]

    def plan(self, pcm: bytes | np.ndarray) -> list[StreamFrame]:
        """Add audio and plan the frames it completes, without drawing them.

        With :meth:`draw` this lets a live server skip drawing frames that would arrive
        too late (the motion must still be planned for every frame: it carries state).
        """
        if isinstance(pcm, (bytes, bytearray, memoryview)):
            data = bytes(pcm)
            if len(data) % 2:
                raise ValueError("PCM16 audio must have an even number of bytes")
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self.samples_in += len(samples)
        return self._motion.push(self._features.push(samples))

    def draw(self, planned: StreamFrame) -> Frame:
        """Render a planned frame with its overlays (thread-safe across streams)."""
        with self.avatar.borrow_renderer() as renderer:
            rgb = renderer.frame(planned.controls, planned.pose)
        for overlay in self._overlays:
            overlay.apply(rgb, planned.index)
        return Frame(planned.index, planned.time, rgb)

    def push_silence(self, seconds: float) -> list[Frame]:
        """Advance the timeline with silence (idle: blinks and breathing go on)."""
        return self.push_audio(np.zeros(int(round(seconds * STREAM_RATE)), np.float32))
