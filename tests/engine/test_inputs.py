"""Inputs users really have: audio formats and rates, silence, duration, picture modes,
plus progress reporting and cancellation."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from facetalk import Cancelled, GenerationOptions, generate
from facetalk.face.analysis import analyze_face
from facetalk.measure.evaluate import CLOSED_GAP, decode_audio, decode_frames, track_frames
from facetalk.media import tts
from facetalk.media.audio import load_audio
from facetalk.media.image import load_portrait
from facetalk.pipeline import Progress

SMALL = GenerationOptions(min_resolution=256)


def encode_audio(path: Path, samples: np.ndarray, rate: int, codec: str, fmt: str,
                 layout: str = "mono") -> Path:
    """Write ``samples`` (float mono) with PyAV in the given codec/container."""
    channels = 1 if layout == "mono" else 2
    data = np.repeat(samples[None, :], channels, axis=0).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        sample_fmt = s.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=sample_fmt, layout=layout, rate=rate)
        for f in resampler.resample(frame):
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def sentence() -> tts.Speech:
    return tts.speak("Hello there, how are you today?", wpm=170)


@pytest.mark.parametrize(("codec", "fmt", "ext", "rate", "layout"), [
    ("libmp3lame", "mp3", "mp3", 44100, "stereo"),
    ("aac", "mp4", "m4a", 48000, "stereo"),
    ("libopus", "ogg", "ogg", 48000, "mono"),
    ("flac", "flac", "flac", 22050, "mono"),
    ("pcm_s16le", "wav", "wav", 11025, "mono"),
])
def test_audio_formats_decode_to_the_same_speech(tmp_path: Path, sentence: tts.Speech,
                                                 codec: str, fmt: str, ext: str, rate: int,
                                                 layout: str) -> None:
    from scipy.signal import resample_poly

    x = resample_poly(sentence.samples, rate, sentence.rate).astype(np.float32) * 0.8
    path = encode_audio(tmp_path / f"s.{ext}", x, rate, codec, fmt, layout)
    a = load_audio(path)
    assert abs(a.duration - len(x) / rate) < 0.08  # encoder padding at most a few frames
    assert a.source_channels == (2 if layout == "stereo" else 1)
    assert a.output_layout == layout
    rms = np.sqrt(np.mean(a.samples**2))
    assert 0.02 < rms < 0.5  # real speech came through, mixed down at a sane level


def test_stereo_mp3_renders_with_stereo_soundtrack(tmp_path: Path, sentence: tts.Speech,
                                                   astronaut_path: Path) -> None:
    from scipy.signal import resample_poly

    x = resample_poly(sentence.samples, 44100, sentence.rate).astype(np.float32) * 0.8
    mp3 = encode_audio(tmp_path / "s.mp3", x, 44100, "libmp3lame", "mp3", "stereo")
    res = generate(astronaut_path, mp3, SMALL, output=tmp_path / "o.mp4")
    with av.open(str(res.path)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.channels == 2 and a.codec_context.sample_rate == 44100
    assert abs(res.duration - res.audio_duration) <= 1 / res.fps


def test_silent_audio_gives_a_still_closed_mouth_video(tmp_path: Path,
                                                       astronaut_path: Path) -> None:
    wav = tmp_path / "silence.wav"
    tts.write_wav(str(wav), np.zeros(32000, np.float32), 16000)
    # A fixed render id: the watermark pattern (keyed by it) nudges the re-tracked inner
    # lip by up to ~0.02 at 256 px, so a random id made the measurement vary run to run.
    res = generate(astronaut_path, wav, SMALL, output=tmp_path / "o.mp4", render_id="5e" * 16)
    assert any("no speech" in w for w in res.warnings)
    frames, fps = decode_frames(res.path)
    track = track_frames(frames, fps)
    assert len(frames) == 50 and track.found.all()
    assert np.all(track.gap < CLOSED_GAP)


def test_longer_duration_pads_with_closed_mouth_and_silence(tmp_path: Path, short_speech: Path,
                                                            astronaut_path: Path) -> None:
    audio_s = load_audio(short_speech).duration
    res = generate(astronaut_path, short_speech,
                   GenerationOptions(min_resolution=256, duration=audio_s + 1.2),
                   output=tmp_path / "o.mp4")
    assert res.frames == round((audio_s + 1.2) * 25)
    assert not res.warnings
    sound = decode_audio(res.path)
    assert abs(len(sound) / 16000 - res.duration) <= 1 / 25  # soundtrack padded, not short
    assert np.abs(sound[int((audio_s + 0.1) * 16000):]).max() < 1e-3  # the tail is silent
    frames, fps = decode_frames(res.path)
    tail = track_frames(frames[-20:], fps)
    assert np.all(tail.gap < CLOSED_GAP)  # idle, mouth closed


def test_shorter_duration_cuts_both_and_warns(tmp_path: Path, speech: tuple[Path, tts.Speech],
                                             astronaut_path: Path) -> None:
    wav, _ = speech
    res = generate(astronaut_path, wav, GenerationOptions(min_resolution=256, duration=2.0),
                   output=tmp_path / "o.mp4")
    assert res.frames == 50
    assert any("shorter than the audio" in w for w in res.warnings)
    frames, _ = decode_frames(res.path)
    assert len(frames) == 50
    assert abs(len(decode_audio(res.path)) / 16000 - 2.0) <= 1 / 25


def _encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_picture_modes_are_converted(astronaut: np.ndarray, mode: str) -> None:
    img = Image.fromarray(astronaut)
    if mode == "RGBA":
        rgba = img.convert("RGBA")
        alpha = np.full(astronaut.shape[:2], 255, np.uint8)
        alpha[:, :60] = 0  # transparent strip
        rgba.putalpha(Image.fromarray(alpha))
        data = _encoded(rgba, "PNG")
    elif mode == "CMYK":
        data = _encoded(img.convert("CMYK"), "JPEG", quality=95)
    elif mode == "I;16":
        gray = (np.asarray(img.convert("L")).astype(np.uint16) * 257)
        data = _encoded(Image.fromarray(gray), "PNG")
    else:
        data = _encoded(img.convert(mode), "PNG")
    rgb = load_portrait(data)
    assert rgb.shape == astronaut.shape and rgb.dtype == np.uint8
    if mode == "RGBA":
        assert (rgb[:, :60] == 255).all()  # transparency composited over white
    face = analyze_face(rgb)
    assert face.size > 60


def test_exif_orientation_is_honoured(astronaut: np.ndarray) -> None:
    # Store the picture rotated, with an EXIF tag saying how to turn it upright.
    rotated = Image.fromarray(np.rot90(astronaut, k=1))  # 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rgb = load_portrait(_encoded(rotated, "JPEG", exif=exif, quality=95))
    assert rgb.shape == astronaut.shape
    lm = analyze_face(rgb).landmarks
    assert lm[152, 1] > lm[10, 1] + 50  # chin below forehead: the face is upright


def test_progress_is_reported_and_cancel_stops_cleanly(tmp_path: Path, short_speech: Path,
                                                       astronaut_path: Path) -> None:
    seen: list[Progress] = []
    res = generate(astronaut_path, short_speech, SMALL, seen.append, output=tmp_path / "a.mp4")
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"face", "audio", "rendering", "done"} <= {p.stage for p in seen}
    assert any(p.frames_total == res.frames and p.eta_s is not None for p in seen)

    stop = threading.Event()

    def cancel_midway(p: Progress) -> None:
        if p.frames_done >= 10:
            stop.set()

    out = tmp_path / "b.mp4"
    with pytest.raises(Cancelled):
        generate(astronaut_path, short_speech, SMALL, cancel_midway, output=out, cancel=stop)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_duration_over_the_operators_audio_limit_is_refused_before_any_work(
        astronaut_path: Path) -> None:
    """An operator may lower FACETALK_MAX_AUDIO_SECONDS below the options' own ceiling: a
    longer ``duration`` is refused with LimitExceeded at once, not rendered for hours."""
    import time

    from facetalk import GenerationOptions, LimitExceeded, generate
    from facetalk.settings import Limits

    t0 = time.perf_counter()
    with pytest.raises(LimitExceeded, match="duration 60 s"):
        generate(astronaut_path, b"not even audio", GenerationOptions(duration=60.0),
                 limits=Limits(max_audio_seconds=30.0))
    assert time.perf_counter() - t0 < 2.0
