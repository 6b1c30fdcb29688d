"""The MP4 writer's soundtrack: encoded ahead in its own thread, muxed interleaved with the
video, and stopped cleanly on failure or abort."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facetalk.media.video import Mp4Writer, ai_metadata

RATE = 48000
FPS = 25
W, H = 64, 48


def tone_frames(seconds: float, fail_after: int | None = None) -> Iterator[av.AudioFrame]:
    """A 440 Hz tone as 1024-sample float-planar frames; optionally raise midway."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for k, i in enumerate(range(0, n, 1024)):
        if fail_after is not None and k == fail_after:
            raise OSError("soundtrack source vanished")
        frame = av.AudioFrame.from_ndarray(x[None, i:i + 1024], format="fltp", layout="mono")
        frame.sample_rate = RATE
        frame.pts = i
        frame.time_base = Fraction(1, RATE)
        yield frame


def write_video(writer: Mp4Writer, frames: int) -> None:
    for i in range(frames):
        buf = writer.next_buffer()
        buf[:] = (i * 7) % 256
        writer.write_i420(buf)


def test_soundtrack_is_complete_and_interleaved(tmp_path: Path) -> None:
    # Longer than the muxer's own 10 s interleaving window, which would hide a writer
    # that held the audio back to the end.
    out = tmp_path / "a.mp4"
    writer = Mp4Writer(out, W, H, FPS, tone_frames(15.0), RATE, "mono", ai_metadata("t"))
    write_video(writer, 15 * FPS)
    writer.finish()
    order: list[tuple[str, float]] = []
    with av.open(str(out)) as c:
        for packet in c.demux():
            if packet.pts is not None and packet.dts is not None:
                order.append((packet.stream.type, float(packet.dts * packet.time_base)))
    with av.open(str(out)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert abs(len(audio) / RATE - 15.0) <= 2048 / RATE  # the whole track, within AAC priming
    # The tone came through (not silence, not noise).
    spectrum = np.abs(np.fft.rfft(audio[RATE:3 * RATE]))
    assert abs(np.argmax(spectrum) * RATE / (2 * RATE) - 440) < 2
    # Interleaved: in file order, neither track runs more than a second ahead of the other.
    last = {"video": 0.0, "audio": 0.0}
    for kind, t in order:
        last[kind] = t
        assert abs(last["video"] - last["audio"]) < 1.0 or t < 1.0, order


def test_a_failing_soundtrack_fails_the_write_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "b.mp4"
    writer = Mp4Writer(out, W, H, FPS, tone_frames(30.0, fail_after=20), RATE, "mono",
                       ai_metadata("t"))
    with pytest.raises(OSError, match="vanished"):
        write_video(writer, 30 * FPS)
        writer.finish()
    writer.abort()
    assert writer._audio_thread is not None and not writer._audio_thread.is_alive()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_abort_stops_the_audio_thread_while_it_waits(tmp_path: Path) -> None:
    out = tmp_path / "c.mp4"
    # Ten minutes of audio: far more than the packet queue holds, so the audio thread is
    # blocked on a full queue when the render is aborted after a few frames.
    writer = Mp4Writer(out, W, H, FPS, tone_frames(600.0), RATE, "mono", ai_metadata("t"))
    write_video(writer, 5)
    done = threading.Event()

    def stop() -> None:
        writer.abort()
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    assert done.wait(10), "abort hung on the audio thread"
    assert writer._audio_thread is not None and not writer._audio_thread.is_alive()
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("height", [48, 50])  # 50: not a multiple of 4 (PyAV's wrapper)
def test_frames_come_out_as_written(tmp_path: Path, height: int) -> None:
    """Every frame decodes to what was queued, though the writer's ring buffers are
    refilled while the encoder works (zero-copy hand-over to x264)."""
    rng = np.random.default_rng(height)
    frames = [rng.integers(16, 235, (height * 3 // 2, W), dtype=np.uint8) for _ in range(30)]
    frames = [cv2.GaussianBlur(f, (0, 0), 3) for f in frames]  # codable at CRF 18
    out = tmp_path / "d.mp4"
    writer = Mp4Writer(out, W, height, FPS, None, RATE, "mono", ai_metadata("t"))
    for f in frames:
        buf = writer.next_buffer()
        buf[:] = f
        writer.write_i420(buf)
    writer.finish()
    with av.open(str(out)) as c:
        decoded = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    assert len(decoded) == len(frames)
    for got, want in zip(decoded, frames, strict=True):
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want).mean() < 2.0
