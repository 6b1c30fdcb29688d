"""Audio decoding with PyAV: any format its bundled FFmpeg reads, to 16 kHz mono float32.

A render analyses the 16 kHz copy chunk by chunk as it decodes (see stream_audio: it
never holds the whole signal) and decodes the soundtrack of the output again,
streaming, while the video is encoded, so memory stays flat in audio length.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import numpy as np

from ..errors import LimitExceeded, UnsupportedMedia
from ..settings import Limits
from .image import Source, open_source

ANALYSIS_RATE = 16000


@dataclass(frozen=True)
class Audio:
    """Mono analysis signal plus what the muxer needs to know about the original."""

    samples: np.ndarray  # float32, mono, ANALYSIS_RATE
    sample_rate: int
    source_rate: int
    source_channels: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate

    @property
    def output_rate(self) -> int:
        """Sample rate of the AAC soundtrack written to the MP4.

        44.1 kHz stays; everything else becomes 48 kHz, the rate every player handles
        and whose 1024-sample AAC frames (21 ms) keep the track's decoded tail within
        a video frame of the picture.
        """
        return 44100 if self.source_rate == 44100 else 48000

    @property
    def output_layout(self) -> str:
        """Channel layout of the soundtrack (mono stays mono, more becomes stereo)."""
        return "mono" if self.source_channels == 1 else "stereo"


def _open_container(stream: io.BufferedIOBase | io.BytesIO) -> av.container.InputContainer:
    try:
        container = av.open(stream, mode="r")
    except (av.error.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise UnsupportedMedia(f"the audio could not be read: {exc}") from None
    if not container.streams.audio:
        container.close()
        raise UnsupportedMedia("the audio file has no audio track")
    return container


def _declared_seconds(container: av.container.InputContainer) -> float | None:
    stream = container.streams.audio[0]
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def load_audio(src: Source, limits: Limits | None = None) -> Audio:
    """Decode, mix down and resample to the 16 kHz mono analysis signal.

    Refuses audio longer than ``limits.max_audio_seconds`` before decoding when the
    container states its duration, and otherwise as soon as decoding passes the limit.
    A render does not hold the whole signal: it analyses it chunk by chunk (see
    :func:`stream_audio`).
    """
    limits = limits or Limits()
    header, chunks, declared = _open_stream(src, limits)
    # One buffer sized from the declared length (grown if that was wrong), not a list
    # of chunks joined at the end: the peak stays at about one copy of the signal.
    buf = _Growing(int((declared or 30.0) * ANALYSIS_RATE * 1.02) + 4096)
    for chunk in chunks:
        buf.append(chunk)
    return replace(header, samples=buf.array())


def stream_audio(src: Source, limits: Limits | None = None, chunk_s: float = 0.5
                 ) -> tuple[Audio, Iterator[np.ndarray]]:
    """What the muxer needs to know about a recording (an :class:`Audio` with no samples),
    and its 16 kHz mono analysis signal as float32 chunks of about ``chunk_s`` seconds.

    Same checks as :func:`load_audio` (the declared length before any decoding, the
    decoded one as it passes the limit, an empty recording at the end), but only a chunk
    is in memory at a time: a half-hour lecture's signal (115 MB as float32) is never
    held whole.
    """
    header, chunks, _ = _open_stream(src, limits or Limits(), chunk_s)
    return header, chunks


def _open_stream(src: Source, limits: Limits, chunk_s: float = 0.5
                 ) -> tuple[Audio, Iterator[np.ndarray], float | None]:
    """Read the header (and refuse a declared length over the limit), then a generator
    that opens the source again and decodes it chunk by chunk."""
    with open_source(src, limits, "audio") as raw, _open_container(raw) as container:
        stream = container.streams.audio[0]
        declared = _declared_seconds(container)
        if declared is not None and declared > limits.max_audio_seconds:
            raise LimitExceeded(_too_long(declared, limits))
        source_rate = stream.codec_context.sample_rate or stream.rate or 0
        source_channels = stream.codec_context.channels or 1
    header = Audio(samples=np.zeros(0, np.float32), sample_rate=ANALYSIS_RATE,
                   source_rate=int(source_rate) or ANALYSIS_RATE,
                   source_channels=int(source_channels))
    return header, _decode_chunks(src, limits, max(1, int(chunk_s * ANALYSIS_RATE))), declared


def _decode_chunks(src: Source, limits: Limits, chunk: int) -> Iterator[np.ndarray]:
    cap = int(limits.max_audio_seconds * ANALYSIS_RATE)
    total = 0
    parts: list[np.ndarray] = []
    held = 0

    def flush() -> np.ndarray:
        nonlocal held
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        parts.clear()
        held = 0
        np.nan_to_num(out, copy=False)
        np.clip(out, -1.0, 1.0, out=out)
        return out

    with open_source(src, limits, "audio") as raw, _open_container(raw) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=ANALYSIS_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1).copy())
                    held += parts[-1].size
                    total += parts[-1].size
                if total > cap:
                    raise LimitExceeded(_too_long(total / ANALYSIS_RATE, limits))
                if held >= chunk:
                    yield flush()
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1).copy())
                total += parts[-1].size
        except av.error.FFmpegError as exc:
            if total == 0:
                raise UnsupportedMedia(f"the audio could not be decoded: {exc}") from None
            # A damaged tail still leaves usable audio; keep what decoded.
    if total == 0:
        raise UnsupportedMedia("the audio contains no samples (empty recording)",
                               hint="Record or export at least a fraction of a second.")
    parts[:] = [p for p in parts if p.size]
    if parts:
        yield flush()


class _Growing:
    """A float32 buffer that grows by half when full."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(capacity, 1024), np.float32)
        self.size = 0

    def append(self, chunk: np.ndarray) -> None:
        end = self.size + chunk.size
        if end > self._data.size:
            grown = np.empty(max(end, self._data.size * 3 // 2), np.float32)
            grown[:self.size] = self._data[:self.size]
            self._data = grown
        self._data[self.size:end] = chunk
        self.size = end

    def array(self) -> np.ndarray:
        """The samples so far (a copy only when the buffer is much too large)."""
        if self.size < self._data.size // 2:
            return self._data[:self.size].copy()
        return self._data[:self.size]


def _too_long(seconds: float, limits: Limits) -> str:
    return (f"the audio is {seconds / 60:.1f} minutes long; the limit is "
            f"{limits.max_audio_seconds / 60:.1f} minutes (FACETALK_MAX_AUDIO_SECONDS)")


def iter_soundtrack(src: Source, audio: Audio, limits: Limits, seconds: float,
                    frame_size: int = 1024) -> Iterator[av.AudioFrame]:
    """The original audio as fixed-size float-planar frames, cut or padded to ``seconds``.

    Decodes the source again, streaming, so the soundtrack never sits in memory.
    Padding is digital silence; frames carry consecutive sample timestamps.
    """
    rate, layout = audio.output_rate, audio.output_layout
    channels = 1 if layout == "mono" else 2
    wanted = int(round(seconds * rate))
    fifo = av.AudioFifo()
    emitted = 0

    def take(n: int) -> Iterator[av.AudioFrame]:
        nonlocal emitted
        while fifo.samples >= n and emitted < wanted:
            frame = fifo.read(min(n, wanted - emitted))
            frame.pts = emitted
            frame.time_base = Fraction(1, rate)  # pts counts samples, whatever the source's
            emitted += frame.samples
            yield frame

    with open_source(src, limits, "audio") as raw, _open_container(raw) as container:
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        try:
            for frame in container.decode(container.streams.audio[0]):
                frame.pts = None
                for out in resampler.resample(frame):
                    fifo.write(out)
                yield from take(frame_size)
                if emitted >= wanted:
                    return
            for out in resampler.resample(None):
                fifo.write(out)
        except av.error.FFmpegError:
            pass  # same tolerance as load_audio: keep what decoded
    if fifo.samples and emitted < wanted:
        yield from take(min(frame_size, fifo.samples))
        if fifo.samples:
            yield from take(fifo.samples)
    while emitted < wanted:
        n = min(frame_size, wanted - emitted)
        silence = np.zeros((channels, n), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = emitted
        frame.time_base = Fraction(1, rate)
        emitted += n
        yield frame
