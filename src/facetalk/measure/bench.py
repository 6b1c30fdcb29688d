"""``facetalk bench``'s workload and child processes (the command is ``facetalk.cli.bench``):
end-to-end speed against the encoder's own floor, measured in one run.

For each portrait, size and framing, child processes run on the same workload (a portrait
and a speech clip of the requested length). Portraits: ``small`` (the bundled 512-pixel
one), ``phone`` (a 3024x4032 JPEG made from it, see :func:`phone_portrait`: the size and
EXIF rotation of a phone photo) or any file.

* render: ``generate()`` end to end (decode, face, features, motion, render, encode);
* floor (run before and after each render; the faster of the two counts): the same number of
  frames of the same size and content pushed through the same writer (libx264 with the
  same settings + muxing), with no rendering -- the frames
  are a loop of 50 frames rendered beforehand, untimed, already in the encoder's I420
  format (as the renderer hands them over: no colour conversion on either side) and
  with the default overlays drawn in (the watermark: it is in every default output
  and costs the encoder bits and time, measured +36 % bytes and about +5 % CPU).

With ``--repeat N`` each size is rendered N times, floor runs in between (N + 1 in
all), and the median ratio and the range are printed as well: the machine's speed may
drift between runs, and one ratio moves with it.

Each child reports its wall time, its CPU time (user + system, all threads), its peak
RSS (``VmHWM``, or ``ru_maxrss`` without /proc) and stage timings, and the render child
the sharpness of its output
against the portrait (:func:`sharpness_ratio`); the parent prints them side by side. The
memory workload renders a short and a long clip (30 minutes by default) and compares
their peak RSS. Nothing is estimated: every figure is measured.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import click

BENCH_TEXT = ("Good morning, and welcome to the library. Today we look at how the moon "
              "moves around the earth. ... Please open your books at page twelve. "
              "Maybe you remember the map we made on Monday? ... Thank you for listening, "
              "and have a wonderful day. ")


def speech_clip(seconds: float, path: Path) -> Path:
    """A speech WAV of exactly ``seconds``: espeak-ng sentences repeated, or the bundled clip."""
    import numpy as np

    from ..media import tts

    if tts.available():
        s = tts.speak(BENCH_TEXT, wpm=150)
        samples, rate = s.samples, s.rate
    else:  # pragma: no cover - depends on the machine
        from ..media.audio import load_audio

        a = load_audio((resources.files("facetalk") / "assets" / "speech.wav").read_bytes())
        samples, rate = a.samples, a.sample_rate
    n = int(round(seconds * rate))
    reps = int(np.ceil(n / len(samples)))
    tts.write_wav(str(path), np.tile(samples, reps)[:n], rate)
    return path


#: Size of the phone-like portrait (upright width x height): a 12-megapixel phone photo.
PHONE_SIZE = (3024, 4032)


def phone_portrait(path: Path) -> Path:
    """A phone-size JPEG (3024x4032 upright) made from the bundled portrait.

    Phone photos are large, fine-grained and stored sideways with an EXIF orientation
    tag. This one is the bundled portrait enlarged to the frame's width and extended
    downwards (its lower part mirrored), with a fixed grain (sensor-like noise,
    so the JPEG is not trivially compressible and a decoder has real work), saved at
    quality 92 with its pixels rotated and orientation 6 (rotate 90 degrees clockwise to
    display): a loader that ignores the tag gets a landscape picture with the face on its
    side.
    """
    import cv2
    import numpy as np
    from PIL import Image

    w, h = PHONE_SIZE
    small = np.asarray(Image.open(resources.files("facetalk") / "assets" / "astronaut.png")
                       .convert("RGB"))
    big = cv2.resize(small, (w, w), interpolation=cv2.INTER_CUBIC)
    upright = cv2.copyMakeBorder(big, 0, h - w, 0, 0, cv2.BORDER_REFLECT_101)
    rng = np.random.default_rng(21)
    grain = rng.normal(0.0, 5.0, (h, w, 1)).astype(np.float32)
    upright = np.clip(upright.astype(np.float32) + grain, 0, 255).astype(np.uint8)
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # 90 deg anticlockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the 0th row is the right side -> rotate clockwise
    stored.save(path, "JPEG", quality=92, exif=exif)
    return path


def sharpness_ratio(portrait: str, video: str, size: int, framing: str) -> float:
    """Laplacian variance of the face in the output's first frame over the same region of
    the portrait resized to the output (area filter when shrinking, cubic when enlarging).

    1.0 is as sharp as the portrait allows at that size; a blurring resampler scores
    lower (H.264 also takes some: compare runs of the same encoder settings).
    """
    import av
    import cv2
    import numpy as np

    from ..face.analysis import analyze_face
    from ..face.framing import plan_framing
    from ..media.image import load_portrait
    from ..options import GenerationOptions

    img = load_portrait(portrait)
    face = analyze_face(img)
    fr = plan_framing(face, GenerationOptions(min_resolution=size, framing=framing))
    (x0, y0), (x1, y1) = fr.to_image(np.array([[-0.5, -0.5], [fr.out_w - 0.5, fr.out_h - 0.5]]))
    region = img[max(0, round(y0)):round(y1), max(0, round(x0)):round(x1)]
    interp = cv2.INTER_AREA if fr.scale < 1 else cv2.INTER_CUBIC
    ref = cv2.resize(region, (fr.out_w, fr.out_h), interpolation=interp)
    with av.open(video) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    bx0, by0, bx1, by1 = (int(round(v)) for v in fr.to_output(
        np.array([face.box[:2], face.box[2:]])).reshape(-1))
    bx0, by0 = max(bx0, 0), max(by0, 0)

    def lapvar(rgb: np.ndarray) -> float:
        gray = cv2.cvtColor(rgb[by0:by1, bx0:bx1], cv2.COLOR_RGB2GRAY)
        return float(cv2.Laplacian(gray, cv2.CV_64F).var())

    return lapvar(first) / max(lapvar(ref), 1e-9)


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM where /proc has it. ru_maxrss survives execve
    on Linux, so a child started by a parent that held a long clip would report the
    parent's peak; VmHWM belongs to the new address space and starts afresh."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:  # pragma: no cover - not Linux
        pass
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _child_render(portrait: str, audio: str, size: int, framing: str, out: str,
                  sharpness: bool = True) -> dict[str, Any]:
    from ..options import GenerationOptions
    from ..pipeline import Progress, generate

    first: list[float] = []

    def on_progress(p: Progress) -> None:
        if p.frames_done >= 1 and not first:
            first.append(time.time())  # compared with the parent's launch time

    t0, c0 = time.perf_counter(), _cpu_s()
    res = generate(portrait, audio, GenerationOptions(min_resolution=size, framing=framing),
                   on_progress, output=out)
    wall = time.perf_counter() - t0
    cpu, rss = _cpu_s() - c0, _peak_rss_mb()  # before the (untimed) sharpness check
    return {"wall_s": wall, "cpu_s": cpu, "frames": res.frames, "width": res.width,
            "height": res.height, "audio_s": res.audio_duration, "timings": res.timings,
            "stats": res.stats, "first_frame_epoch": first[0] if first else None,
            "peak_rss_mb": rss,
            "sharpness": sharpness_ratio(portrait, out, size, framing) if sharpness else None}


def _child_floor(portrait: str, audio: str, size: int, framing: str, out: str,
                 frames: int) -> dict[str, Any]:
    import numpy as np

    from ..face.analysis import analyze_face
    from ..face.framing import plan_framing
    from ..media.image import load_portrait
    from ..media.video import Mp4Writer, ai_metadata, new_render_id
    from ..motion.controls import CONTROLS
    from ..options import GenerationOptions
    from ..provenance.overlays import build_overlays
    from ..render.renderer import make_renderer
    from ..render.rig import build_rig

    face = analyze_face(load_portrait(portrait))
    options = GenerationOptions(min_resolution=size, framing=framing)
    framing_ = plan_framing(face, options)
    renderer = make_renderer(face, build_rig(face.landmarks), framing_, True)
    overlays = build_overlays(options, framing_, new_render_id(), quiet=renderer.mouth_region())
    pool = []
    for i in range(50):  # representative content: talking mouth, moving head
        c = np.zeros(len(CONTROLS))
        o = abs(np.sin(i / 3.0))
        c[:4] = (0.8 * o, 0.35 * o, 0.45 * o, 1 - o)
        pose = np.array([0.03 * np.sin(i / 8), 0.02 * np.cos(i / 11), 0.02 * np.sin(i / 13), 0, 0])
        buf = np.empty((framing_.out_h * 3 // 2, framing_.out_w), np.uint8)
        renderer.frame_i420(c, pose, buf)
        for overlay in overlays:
            overlay.apply_i420(buf, i)
        pool.append(buf)
    t0, c0 = time.perf_counter(), _cpu_s()
    writer = Mp4Writer(out, framing_.out_w, framing_.out_h, options.fps, None, 48000, "mono",
                       ai_metadata("floor"))
    for i in range(frames):
        writer.write_i420(pool[i % len(pool)])
    writer.finish()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "cpu_s": _cpu_s() - c0, "frames": frames,
            "encode_s": writer.encode_s, "peak_rss_mb": _peak_rss_mb()}


def _run_child(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (clean peak RSS, cold imports)."""
    args = [sys.executable, "-m", "facetalk.measure.bench", kind, json.dumps(kwargs)]
    launched = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise click.ClickException(f"{kind} run failed:\n{proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out.get("first_frame_epoch") is not None:
        # From launching the interpreter: includes imports, face analysis, first frame.
        out["first_frame_s"] = out.pop("first_frame_epoch") - launched
    return out


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
            "python": platform.python_version(), "machine": platform.machine()}


def _main() -> None:  # pragma: no cover - child entry point
    kind, raw = sys.argv[1], sys.argv[2]
    kwargs = json.loads(raw)
    if kind == "render":
        out = _child_render(**kwargs)
    elif kind == "floor":
        out = _child_floor(**kwargs)
    else:
        raise SystemExit(f"unknown child {kind}")
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":  # pragma: no cover
    _main()
