"""``facetalk bench``'s workload and child processes (the command is ``facetalk.cli.bench``):
end-to-end speed against the encoder's own floor, measured in one run.

For each size and framing, child processes run on the same workload (the bundled
portrait and a speech clip of the requested length):

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
RSS (``ru_maxrss``) and stage timings; the
parent prints them side by side. Nothing is estimated: every figure is measured.
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


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _child_render(portrait: str, audio: str, size: int, framing: str, out: str
                  ) -> dict[str, Any]:
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
    return {"wall_s": wall, "cpu_s": _cpu_s() - c0, "frames": res.frames, "width": res.width,
            "height": res.height, "audio_s": res.audio_duration, "timings": res.timings,
            "stats": res.stats, "first_frame_epoch": first[0] if first else None,
            "peak_rss_mb": _peak_rss_mb()}


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
