"""Offline speech from text with libespeak-ng, with the audio position of every phoneme.

Used for the demo clip, benchmark workloads and test data whose ground truth we know:
the library reports each phoneme's position in the audio it generates (the
``espeak-ng`` command line does not). Needs Debian's ``espeak-ng`` package
(``libespeak-ng1``); :func:`available` says whether it is there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInput

_EVENT_PHONEME = 7
_EVENT_MSG_TERMINATED = 6
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_PARAM_RATE = 1


class _EventId(ctypes.Union):
    _fields_ = (("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8))


class _Event(ctypes.Structure):
    _fields_ = (("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId))


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phoneme:
    """One phoneme (eSpeak mnemonic) and its span in the audio, in seconds."""

    name: str
    start: float
    end: float


@dataclass(frozen=True)
class Speech:
    """Synthesized speech: mono float32 samples, rate, and phoneme timings."""

    samples: np.ndarray
    rate: int
    phonemes: tuple[Phoneme, ...]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.rate


class _Engine:
    """The one libespeak-ng instance of this process (the C library is global)."""

    lock = threading.Lock()
    lib: ctypes.CDLL | None = None
    rate = 0


def _library_path() -> str | None:
    for name in ("libespeak-ng.so.1", "libespeak-ng.so"):
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return ctypes.util.find_library("espeak-ng")


def available() -> bool:
    """True when libespeak-ng can be loaded on this machine."""
    return _library_path() is not None


def _engine() -> ctypes.CDLL:
    if _Engine.lib is None:
        path = _library_path()
        if path is None:
            raise InvalidInput("espeak-ng is not installed",
                               hint="Debian/Ubuntu: apt-get install espeak-ng")
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS)
        if rate <= 0:
            raise InvalidInput("espeak-ng failed to initialize",
                               hint="Reinstall the espeak-ng package.")
        _Engine.lib, _Engine.rate = lib, rate
    return _Engine.lib


def speak(text: str, voice: str = "en-us", wpm: int = 160) -> Speech:
    """Synthesize ``text`` and return samples plus phoneme timings."""
    if not text.strip():
        raise InvalidInput("no text to speak")
    with _Engine.lock:
        lib = _engine()
        chunks: list[np.ndarray] = []
        events: list[tuple[int, str]] = []

        def on_audio(wav: ctypes.POINTER(ctypes.c_short), n: int,  # type: ignore[valid-type]
                     ev: ctypes.POINTER(_Event)) -> int:  # type: ignore[valid-type]
            if n > 0 and wav:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while ev and ev[i].type != 0:
                if ev[i].type == _EVENT_PHONEME:
                    name = bytes(ev[i].id.string).split(b"\0")[0].decode("utf-8", "replace")
                    events.append((ev[i].audio_position, name))
                i += 1
            return 0

        callback = _CALLBACK(on_audio)
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise InvalidInput(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_PARAM_RATE, int(wpm), 0)
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, 1, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise InvalidInput(f"espeak-ng could not speak the text (error {err})")
        rate = _Engine.rate
    samples = (np.concatenate(chunks).astype(np.float32) / 32768.0) if chunks else np.zeros(0, np.float32)
    total = len(samples) / rate
    phonemes = []
    for k, (pos, name) in enumerate(events):
        start = pos / 1000.0
        end = events[k + 1][0] / 1000.0 if k + 1 < len(events) else total
        if name and end > start:
            phonemes.append(Phoneme(name, start, end))
    return Speech(samples=samples, rate=rate, phonemes=tuple(phonemes))


def write_wav(path: str, samples: np.ndarray, rate: int) -> None:
    """Write mono float samples as 16-bit PCM WAV (stdlib only)."""
    import wave

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
