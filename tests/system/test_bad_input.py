"""Bad input: a one-line error, a non-zero exit code, no traceback, no MP4 left behind.

Run through the real ``facetalk`` executable in a subprocess, as a user would.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetalk import LimitExceeded, NoFaceFound, UnsupportedMedia
from facetalk.media.audio import load_audio
from facetalk.media.image import load_portrait
from facetalk.settings import Limits

FACETALK = [sys.executable, "-m", "facetalk.cli"]


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FACETALK_DEBUG", None)
    return subprocess.run([*FACETALK, *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=300)


def assert_clean_failure(proc: subprocess.CompletedProcess[str], out: Path, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0].lower(), proc.stderr
    assert len(lines) <= 2  # the error, and at most one hint line
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    return tmp_path / "out.mp4"


def test_not_an_image(tmp_path: Path, out: Path, short_speech: Path) -> None:
    bad = tmp_path / "face.jpg"
    bad.write_text("this is not a picture")
    assert_clean_failure(run_cli("render", bad, short_speech, "-o", out), out, "not an image")


def test_truncated_jpeg(tmp_path: Path, out: Path, short_speech: Path, astronaut: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, "JPEG", quality=90)
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert_clean_failure(run_cli("render", bad, short_speech, "-o", out), out, "truncated")


def test_no_face(tmp_path: Path, out: Path, short_speech: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:400, 0:400]
    land = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    land = np.clip(land.astype(int) + rng.integers(-10, 10, land.shape), 0, 255).astype(np.uint8)
    pic = tmp_path / "pattern.png"
    Image.fromarray(land).save(pic)
    proc = run_cli("render", pic, short_speech, "-o", out)
    assert_clean_failure(proc, out, "no face")
    assert proc.returncode == NoFaceFound.exit_code
    assert "hint:" in proc.stderr


def test_one_pixel_image(tmp_path: Path, out: Path, short_speech: Path) -> None:
    pic = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 150, 120)).save(pic)
    assert_clean_failure(run_cli("render", pic, short_speech, "-o", out), out, "1x1")


def test_40_megapixel_image_refused_before_decoding(tmp_path: Path, out: Path,
                                                    short_speech: Path) -> None:
    # A valid PNG header claiming 8000x5000 with no pixel data: if the limit were
    # checked after decoding, this would fail as "truncated" instead.
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", 8000, 5000, 8, 2, 0, 0, 0)
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    pic = tmp_path / "huge.png"
    idat = zlib.compress(b"\0" * 64)  # far too little data for 8000x5000
    pic.write_bytes(sig + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    proc = run_cli("render", pic, short_speech, "-o", out)
    assert_clean_failure(proc, out, "megapixels")
    assert proc.returncode == LimitExceeded.exit_code
    with pytest.raises(LimitExceeded):
        load_portrait(pic)


def test_real_40_megapixel_image_is_refused(tmp_path: Path) -> None:
    pic = tmp_path / "huge_real.png"
    Image.new("RGB", (8000, 5000), (90, 120, 150)).save(pic, compress_level=1)
    with pytest.raises(LimitExceeded, match=r"40\.0 megapixels"):
        load_portrait(pic)
    # The documented limit is configurable.
    assert load_portrait(pic, Limits(max_image_pixels=41_000_000)).shape == (5000, 8000, 3)


def test_audio_that_is_not_audio(tmp_path: Path, out: Path, astronaut_path: Path) -> None:
    bad = tmp_path / "speech.wav"
    bad.write_bytes(os.urandom(20000))
    assert_clean_failure(run_cli("render", astronaut_path, bad, "-o", out), out, "audio")


def test_picture_given_as_audio(out: Path, astronaut_path: Path) -> None:
    proc = run_cli("render", astronaut_path, astronaut_path, "-o", out)
    assert_clean_failure(proc, out, "audio")


def test_empty_audio_file(tmp_path: Path, out: Path, astronaut_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert_clean_failure(run_cli("render", astronaut_path, empty, "-o", out), out, "empty")


def test_wav_with_no_samples(tmp_path: Path, out: Path, astronaut_path: Path) -> None:
    import wave

    p = tmp_path / "nothing.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    assert_clean_failure(run_cli("render", astronaut_path, p, "-o", out), out, "no samples")
    with pytest.raises(UnsupportedMedia):
        load_audio(p)


def _two_hour_wav(path: Path) -> Path:
    """A genuine 2-hour 8 kHz 8-bit WAV, written sparse (the data is silence)."""
    rate, seconds = 8000, 2 * 3600
    data_len = rate * seconds
    header = (b"RIFF" + struct.pack("<I", 36 + data_len) + b"WAVE"
              + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate, 1, 8)
              + b"data" + struct.pack("<I", data_len))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_len)
    return path


def test_two_hour_audio_refused(tmp_path: Path, out: Path, astronaut_path: Path) -> None:
    wav = _two_hour_wav(tmp_path / "long.wav")
    proc = run_cli("render", astronaut_path, wav, "-o", out)
    assert_clean_failure(proc, out, "minutes")
    assert proc.returncode == LimitExceeded.exit_code
    # Configurable: raise the limit and the same file is accepted by the decoder.
    proc = run_cli("render", astronaut_path, wav, "-o", out,
                   env={"FACETALK_MAX_AUDIO_SECONDS": "60"})
    assert_clean_failure(proc, out, "limit is 1.0 minutes")


def test_audio_limit_is_configurable(short_speech: Path) -> None:
    with pytest.raises(LimitExceeded):
        load_audio(short_speech, Limits(max_audio_seconds=0.5))
    assert load_audio(short_speech, Limits(max_audio_seconds=5)).duration > 1.0


def test_missing_file(tmp_path: Path, out: Path, short_speech: Path) -> None:
    proc = run_cli("render", tmp_path / "nope.jpg", short_speech, "-o", out)
    assert_clean_failure(proc, out, "not found")


def test_header_beyond_pillows_own_bomb_limit(tmp_path: Path) -> None:
    import zlib

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    pic = tmp_path / "bomb.png"
    pic.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                    + chunk(b"IEND", b""))
    with pytest.raises(LimitExceeded):
        load_portrait(pic)
