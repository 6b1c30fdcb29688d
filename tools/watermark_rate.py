"""Watermark robustness as measured rates (issue 22, item 14): found after re-encoding,
false positives on videos facetalk did not mark, and frame PSNR.

For every portrait (the bundled one, tests/data/grace_hopper.jpg, and the images in any
``--portraits`` folder -- for local measurement only, nothing is written next to them):

1. render one unmarked clip of the longest ``--lengths`` at ``--size`` with espeak-ng
   speech, exactly as ``generate()`` does up to the overlays (the renderer's I420 frames
   and its mouth box), kept in memory;
2. for each length (a prefix of that clip: the mark starts at frame 0 either way) and
   each of ``--ids`` random render ids, mark the frames with the render path's overlay
   (``WatermarkOverlay.apply_i420`` with the mouth box), encode them with libx264 at the
   render's own settings (CRF 18), decode, re-encode with libx264 ``veryfast`` at each
   ``--crf`` and read the result with ``verify_report`` (found = the right render id);
3. false positives: ``verify_report`` on videos without the mark -- the unmarked clip of
   each length at CRF 18 and at each ``--crf``, a still-image video of the photo, a slow
   zoom over it, and noise / gradient / moving-box clips -- any "found" is counted.

PSNR is computed on RGB (the I420 frames converted as a player does) of the marked vs the
unmarked frames over the first two seconds of each marked clip (frames at the
modulation's zero crossing are identical and left out). ``--json`` writes the figures.

Run: ``PYTHONPATH=src python tools/watermark_rate.py --portraits /path/to/photos``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("Please bring me a map of the moon. Maybe by Monday, if you can. Thank you, and "
        "goodbye. I will see you again next week, at the station by the river.")
FPS = 25


@dataclass
class Clip:
    """An unmarked render: I420 frames, the mouth box the overlay is told about."""

    name: str
    frames: list[np.ndarray]
    width: int
    height: int
    quiet: tuple[float, float, float, float]
    photo: np.ndarray


def render_unmarked(path: Path, seconds: float, size: int, wav: Path) -> Clip:
    """The renderer's I420 frames for ``path`` (the stages of ``generate()`` before the
    overlays, with the same functions), without a watermark."""
    from facetalk import GenerationOptions
    from facetalk.face.framing import plan_framing
    from facetalk.media.audio import load_audio
    from facetalk.media.image import load_portrait
    from facetalk.motion.features import analyze
    from facetalk.motion.plan import plan_motion
    from facetalk.pipeline import prepare_face
    from facetalk.render.renderer import make_renderer

    options = GenerationOptions(min_resolution=size, duration=seconds, watermark=False)
    image = load_portrait(path.read_bytes())
    face, rig = prepare_face(image, options)
    sound = load_audio(wav.read_bytes())
    feats = analyze(sound.samples, sound.sample_rate)
    n = int(round(seconds * options.fps))
    plan = plan_motion(feats, n, options)
    framing = plan_framing(face, options)
    renderer = make_renderer(face, rig, framing, options.quality_tier == "quality")
    w, h = framing.out_w, framing.out_h
    frames = []
    for i in range(n):
        buf = np.empty((h * 3 // 2, w), np.uint8)
        frames.append(renderer.frame_i420(plan.controls[i], plan.pose[i], buf).copy())
    return Clip(path.stem, frames, w, h, renderer.mouth_region(), image)


def encode_i420(frames: list[np.ndarray], width: int, height: int, crf: int,
                preset: str = "veryfast") -> bytes:
    """libx264 MP4 of I420 frames, in memory."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": str(crf), "preset": preset}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="yuv420p")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return out.getvalue()


def encode_rgb(frames: list[np.ndarray], crf: int, fps: int = FPS) -> bytes:
    h, w = frames[0].shape[:2]
    h, w = h - h % 2, w - w % 2
    i420 = [cv2.cvtColor(np.ascontiguousarray(f[:h, :w]), cv2.COLOR_RGB2YUV_I420) for f in frames]
    return encode_i420(i420, w, h, crf)


def decode_i420(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]


def read(data: bytes, tmp: Path) -> dict:
    from facetalk.provenance.verify import verify_report

    tmp.write_bytes(data)
    return verify_report(tmp)["watermark"]


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    ra = cv2.cvtColor(a, cv2.COLOR_YUV2RGB_I420).astype(np.float32)
    rb = cv2.cvtColor(b, cv2.COLOR_YUV2RGB_I420).astype(np.float32)
    mse = float(np.mean((ra - rb) ** 2))
    return 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")


def foreign_patterns(rng: np.random.Generator) -> list[tuple[str, list[np.ndarray]]]:
    """Synthetic clips facetalk did not make (2 s each, RGB)."""
    n = 2 * FPS
    noise = [rng.integers(0, 256, (256, 320, 3), dtype=np.uint8) for _ in range(n)]
    grad = np.tile(np.linspace(0, 255, 384, dtype=np.uint8)[None, :, None], (288, 1, 3))
    box = []
    for i in range(n):
        f = grad.copy()
        x = (i * 7) % 300
        f[100:180, x:x + 80] = (200, 40, 40)
        box.append(f)
    field = cv2.GaussianBlur(rng.normal(0, 40, (320, 320)), (0, 0), 6)
    breathing = [np.repeat(np.clip(128 + field * np.cos(2 * np.pi * i / FPS), 0, 255)
                           .astype(np.uint8)[..., None], 3, axis=2) for i in range(n)]
    return [("noise", noise), ("gradient", [grad] * n), ("moving_box", box),
            ("breathing", breathing)]


def zoom_clip(photo: np.ndarray, size: int, n: int) -> list[np.ndarray]:
    h, w = photo.shape[:2]
    out = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.05 * i, 1.0 + 0.003 * i)
        warped = cv2.warpAffine(photo, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        out.append(cv2.resize(warped, (size, size * h // w // 2 * 2), interpolation=cv2.INTER_AREA))
    return out


def portraits(folders: list[Path]) -> list[Path]:
    found = [ROOT / "tests" / "data" / "grace_hopper.jpg",
             ROOT / "src" / "facetalk" / "assets" / "astronaut.png"]
    seen = {hashlib.sha256(p.read_bytes()).hexdigest() for p in found}
    for folder in folders:
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
                continue
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest not in seen:  # the same photo in two folders counts once
                seen.add(digest)
                found.append(p)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--portraits", type=Path, action="append", default=[],
                    help="folder of portrait photos (repeatable; read only)")
    ap.add_argument("--lengths", default="2,5,10", help="clip lengths in seconds")
    ap.add_argument("--ids", type=int, default=3, help="random render ids per portrait and length")
    ap.add_argument("--crf", default="35,28", help="re-encode CRFs (libx264 veryfast)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0, help="seed of the render ids and the noise")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N portraits")
    ap.add_argument("--no-foreign", action="store_true", help="skip the false-positive set")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    from facetalk.media import tts
    from facetalk.provenance import watermark as wm

    lengths = [float(x) for x in args.lengths.split(",")]
    crfs = [int(x) for x in args.crf.split(",")]
    rng = np.random.default_rng(args.seed)
    tmpdir = Path(f"/tmp/wmrate-{uuid.uuid4().hex[:8]}")
    tmpdir.mkdir()
    tmp = tmpdir / "v.mp4"
    wav = tmpdir / "speech.wav"
    s = tts.speak(TEXT, wpm=150)
    tts.write_wav(str(wav), s.samples, s.rate)
    photos = portraits(args.portraits)
    if args.limit:
        photos = photos[:args.limit]
    rows: list[dict] = []
    foreign: list[dict] = []
    psnrs: list[float] = []
    t_start = time.perf_counter()
    for photo in photos:
        clip = render_unmarked(photo, max(lengths), args.size, wav)
        for length in lengths:
            n = int(round(length * FPS))
            plain = clip.frames[:n]
            for k in range(args.ids):
                rid = uuid.UUID(bytes=rng.bytes(16)).hex
                overlay = wm.WatermarkOverlay(clip.width, clip.height, rid, FPS, quiet=clip.quiet)
                marked = []
                for i, f in enumerate(plain):
                    g = f.copy()
                    overlay.apply_i420(g, i)
                    marked.append(g)
                if k == 0:
                    psnrs += [v for v in (psnr_rgb(a, b) for a, b in zip(marked[:50], plain[:50],
                                                                         strict=True))
                              if np.isfinite(v)]
                render = decode_i420(encode_i420(marked, clip.width, clip.height, 18))
                for crf in crfs:
                    mark = read(encode_i420(render, clip.width, clip.height, crf), tmp)
                    ok = bool(mark["found"]) and mark["payload"].get("render_id") == rid[:7]
                    rows.append({"portrait": clip.name, "length": length, "crf": crf,
                                 "found": ok, "sync_z": mark["sync_z"],
                                 "confidence": mark["confidence"]})
            if not args.no_foreign:
                base = decode_i420(encode_i420(plain, clip.width, clip.height, 18))
                for crf in [18, *crfs]:
                    data = encode_i420(base, clip.width, clip.height, crf)
                    foreign.append({"video": f"{clip.name}/{length:g}s/unmarked/crf{crf}",
                                    "found": bool(read(data, tmp)["found"])})
        if not args.no_foreign:
            still = [clip.photo] * 50
            zoom = zoom_clip(clip.photo, args.size, 50)
            for name, frames in (("still", still), ("zoom", zoom)):
                for crf in (23, 35):
                    foreign.append({"video": f"{clip.name}/{name}/crf{crf}",
                                    "found": bool(read(encode_rgb(frames, crf), tmp)["found"])})
        done = [r for r in rows if r["portrait"] == clip.name]
        print(f"{clip.name}: " + ", ".join(
            f"crf{c} {sum(r['found'] for r in done if r['crf'] == c)}/"
            f"{sum(1 for r in done if r['crf'] == c)}" for c in crfs)
            + f"  ({time.perf_counter() - t_start:.0f} s)", flush=True)
    if not args.no_foreign:
        for crf in (18, 28, 35, 40):
            for name, frames in foreign_patterns(rng):
                foreign.append({"video": f"{name}/crf{crf}",
                                "found": bool(read(encode_rgb(frames, crf), tmp)["found"])})

    print("\nfound rate (render id read back) per portrait / length / CRF:")
    names = list(dict.fromkeys(r["portrait"] for r in rows))
    header = "portrait".ljust(18) + "".join(f"{f'{c}/{L:g}s':>10s}" for c in crfs for L in lengths)
    print(header)
    for name in names:
        line = name.ljust(18)
        for c in crfs:
            for length in lengths:
                sel = [r["found"] for r in rows
                       if r["portrait"] == name and r["crf"] == c and r["length"] == length]
                line += f"{f'{sum(sel)}/{len(sel)}':>10s}"
        print(line)
    summary: dict = {"size": args.size, "portraits": len(names), "lengths": lengths}
    for c in crfs:
        sel = [r for r in rows if r["crf"] == c]
        z = np.array([r["sync_z"] for r in sel])
        hit = sum(r["found"] for r in sel)
        summary[f"crf{c}"] = {"found": hit, "encodes": len(sel), "rate": hit / max(len(sel), 1),
                              "sync_z_min": float(z.min()) if len(z) else None}
        print(f"CRF {c}: found {hit}/{len(sel)} = {100 * hit / max(len(sel), 1):.1f} %"
              f" (sync z min {z.min():.1f}, median {np.median(z):.1f})")
    if foreign:
        fp = [f["video"] for f in foreign if f["found"]]
        summary["false_positives"] = {"found": len(fp), "videos": len(foreign), "which": fp}
        print(f"false positives: {len(fp)}/{len(foreign)} foreign videos {fp if fp else ''}")
    p = np.array(psnrs)
    summary["psnr_db"] = {"min": float(p.min()), "mean": float(p.mean()), "frames": len(p)}
    print(f"PSNR marked vs unmarked (RGB): min {p.min():.2f} dB, mean {p.mean():.2f} dB over "
          f"{len(p)} frames")
    print(f"wall {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows, "foreign": foreign},
                                        indent=1))
    tmp.unlink(missing_ok=True)
    wav.unlink(missing_ok=True)
    tmpdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
