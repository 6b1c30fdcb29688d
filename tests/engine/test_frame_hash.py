"""Behaviour lock: a short reference render, hashed, must match the recorded hashes.

Renders in process (no encoder, so x264/PyAV versions do not matter) ~2 s of the bundled
speech on the bundled portrait with a fixed seed and no watermark (it carries a date),
and hashes (sha256) the offline motion plan, the live driver's frames of the same audio,
and the renderer's I420 frame buffers. Moving code must not change one bit of these.

The hashes are kept per OpenCV major version (4 renders RGB and converts, 5 reads the
planes: see ``PLANAR`` in the renderer) and per SIMD level of the CPU, in
``tests/data/frame_hashes.json``. The SIMD level matters: numpy and onnxruntime pick their
kernels by it, and a machine without AVX-512 gave other bits for the same commit and
package versions, from the landmarks (ONNX) and the motion plan (numpy) on.

A commit that changes the look ON PURPOSE re-records them in every environment and says so
in its message. Recording drops the other CPU classes' hashes of that OpenCV major (they are
stale, and only a machine of their class can record them again); a class with no hashes
is skipped, with the reason, rather than judged by another class's bits::

    FACETALK_RECORD_FRAME_HASHES=1 .venv/bin/python -m pytest -q tests/engine/test_frame_hash.py
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetalk.face.analysis import analyze_face
from facetalk.face.framing import plan_framing
from facetalk.media.audio import load_audio
from facetalk.media.image import load_portrait
from facetalk.motion.features import FeatureStream, analyze
from facetalk.motion.live import MotionStream
from facetalk.motion.plan import plan_motion
from facetalk.options import GenerationOptions
from facetalk.render.renderer import make_renderer
from facetalk.render.rig import build_rig

HASHES = Path(__file__).resolve().parents[1] / "data" / "frame_hashes.json"
RECORD_VAR = "FACETALK_RECORD_FRAME_HASHES"
SECONDS = 2.0
CHUNK = 320  # 20 ms at 16 kHz, as a live client sends


def _cpu_tag() -> str:
    """'' on a CPU with AVX-512 (the bare key, as the first hashes were recorded on one),
    else its widest SIMD level as numpy reports it: a machine without AVX-512 gave other
    bits for the same commit and package versions."""
    core = getattr(np, "_core", None) or np.core
    features = core._multiarray_umath.__cpu_features__
    if features.get("AVX512F"):
        return ""
    for level in ("AVX2", "AVX", "SSE42"):
        if features.get(level):
            return "-" + level.lower()
    return "-baseline"


def _env_key() -> str:
    return f"opencv{cv2.__version__.split('.')[0]}{_cpu_tag()}"


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def reference_hashes() -> dict[str, str]:
    """Hashes of the reference clip's motion (offline and live) and I420 frames."""
    assets = resources.files("facetalk") / "assets"
    options = GenerationOptions(seed=7, watermark=False)
    image = load_portrait(Path(str(assets / "astronaut.png")))
    sound = load_audio(Path(str(assets / "speech.wav")))
    samples = sound.samples[: int(SECONDS * sound.sample_rate)]
    sound = replace(sound, samples=samples)
    face = analyze_face(image)
    rig = build_rig(face.landmarks)
    feats = analyze(sound.samples, sound.sample_rate)
    n_frames = int(round(SECONDS * options.fps))
    plan = plan_motion(feats, n_frames, options)

    live_fs, live_ms = FeatureStream(sound.sample_rate), MotionStream(options)
    live = []
    for i in range(0, len(samples), CHUNK):
        for f in live_ms.push(live_fs.push(samples[i:i + CHUNK])):
            live += [np.array([f.index, f.time]), f.controls, f.pose]

    framing = plan_framing(face, options)
    renderer = make_renderer(face, rig, framing, options.quality_tier == "quality")
    buf = np.empty((framing.out_h * 3 // 2, framing.out_w), np.uint8)
    frames = hashlib.sha256()
    for i in range(n_frames):
        frames.update(renderer.frame_i420(plan.controls[i], plan.pose[i], buf).tobytes())
    return {
        "landmarks": _digest([face.landmarks]),
        "plan": _digest([plan.controls, plan.pose, plan.blink_times, np.array([plan.offset_ms])]),
        "live": _digest(live),
        "frames_i420": frames.hexdigest(),
        "size": f"{framing.out_w}x{framing.out_h}x{n_frames}",
    }


def _major(key: str) -> str:
    return key.split("-")[0]


def test_reference_render_matches_recorded_hashes() -> None:
    got = reference_hashes()
    key = _env_key()
    recorded = json.loads(HASHES.read_text()) if HASHES.exists() else {}
    if os.environ.get(RECORD_VAR) == "1":
        # A look changed on purpose: the other CPU classes' hashes of this OpenCV major are
        # stale now, and only a machine of their class can record them again.
        recorded = {k: v for k, v in recorded.items() if _major(k) != _major(key)}
        recorded[key] = {**got, "numpy": np.__version__, "opencv": cv2.__version__}
        HASHES.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        return
    if key not in recorded:
        # Bits differ between CPU classes, so another class's hashes cannot judge this one.
        pytest.skip(f"no frame hashes recorded for {key} (this CPU class); record them from a "
                    f"known-good commit with {RECORD_VAR}=1 (see this module's docstring)")
    want = recorded[key]
    changed = [k for k in got if got[k] != want.get(k)]
    assert not changed, (
        f"the reference render changed ({', '.join(changed)}) in {key} "
        f"(recorded with numpy {want.get('numpy')}, OpenCV {want.get('opencv')}); if on purpose, "
        f"re-record with {RECORD_VAR}=1 in every environment and say so in the commit")
