"""Shared fixtures: sample portrait, synthesized speech with phoneme timings, renders."""

from __future__ import annotations

import wave
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetalk.media import tts

ASSETS = resources.files("facetalk") / "assets"

#: The end-to-end sentence: English with two clear pauses (> 200 ms) between phrases.
E2E_TEXT = ("Please bring me a map of the moon. ... Maybe by Monday, if you can. "
            "... Thank you, and goodbye.")


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    """The bundled sample portrait (NASA, public domain)."""
    return Path(str(ASSETS / "astronaut.png"))


@pytest.fixture(scope="session")
def astronaut(astronaut_path: Path) -> np.ndarray:
    """The sample portrait as an RGB array."""
    return np.asarray(Image.open(astronaut_path).convert("RGB"))


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide folder for generated media."""
    return tmp_path_factory.mktemp("media")


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    """16-bit PCM WAV from float samples (interleaved when channels > 1)."""
    pcm = (np.clip(samples, -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="session")
def speech(media_dir: Path) -> tuple[Path, tts.Speech]:
    """A ~6 s English sentence with pauses, from espeak-ng, with phoneme timings."""
    if not tts.available():
        pytest.fail("espeak-ng is required for the tests: apt-get install espeak-ng "
                    "(make test installs it)")
    s = tts.speak(E2E_TEXT, wpm=150)
    path = write_wav(media_dir / "speech.wav", s.samples, s.rate)
    return path, s


@pytest.fixture(scope="session")
def short_speech(media_dir: Path) -> Path:
    """A ~1.5 s clip for quick renders."""
    s = tts.speak("Hello, my friend.", wpm=170)
    return write_wav(media_dir / "short.wav", s.samples, s.rate)


@pytest.fixture(scope="session")
def portrait_bytes(astronaut_path: Path) -> bytes:
    """The bundled portrait's file, as an upload sends it."""
    return astronaut_path.read_bytes()


@pytest.fixture(scope="session")
def speech_bytes(short_speech: Path) -> bytes:
    """The short speech clip's file, as an upload sends it."""
    return short_speech.read_bytes()
