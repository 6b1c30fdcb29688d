"""Renderer and rig: stillness, bit-identical background, determinism, framing sizes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facetalk import GenerationOptions, generate
from facetalk.face.analysis import FaceModel, analyze_face
from facetalk.face.framing import plan_framing
from facetalk.face.landmarks import face_triangles
from facetalk.measure.evaluate import decode_frames, track_frames
from facetalk.motion.controls import CONTROLS
from facetalk.render import renderer as render
from facetalk.render.renderer import i420_planes, make_renderer
from facetalk.render.rig import EYE_L, EYE_R, MOUTH, build_rig


@pytest.fixture(scope="module")
def face(astronaut: np.ndarray) -> FaceModel:
    return analyze_face(astronaut)


def controls(**values: float) -> np.ndarray:
    v = np.zeros(len(CONTROLS))
    for name, x in values.items():
        v[CONTROLS.index(name)] = x
    return v


def test_face_mesh_topology(face: FaceModel) -> None:
    tris = face_triangles()
    assert tris.shape == (852, 3)  # 468 vertices, holes at the mouth and both eyes
    rig = build_rig(face.landmarks)
    kinds = set(rig.kinds.tolist())
    assert {MOUTH, EYE_R, EYE_L} <= kinds
    assert rig.source_gap > 0.05  # the astronaut smiles with her teeth showing


@pytest.mark.parametrize("quality", [True, False])
def test_zero_controls_reproduce_the_still_frame(face: FaceModel, quality: bool) -> None:
    rig = build_rig(face.landmarks)
    r = make_renderer(face, rig, plan_framing(face, GenerationOptions()), quality=quality)
    frame = r.frame(np.zeros(len(CONTROLS)), np.zeros(5))
    diff = np.abs(frame.astype(int) - r.still.astype(int)).max(axis=2)
    # Only the antialiased rim of the portrait's own mouth opening may differ, by a few
    # levels on a handful of pixels: nothing a viewer can see.
    assert diff.max() <= 6 and (diff > 3).sum() <= 50 and diff.mean() < 0.05


def test_full_framing_keeps_pixels_outside_the_face_bit_identical(face: FaceModel) -> None:
    opts = GenerationOptions(framing="full", min_resolution=512, motion_scale=0)
    framing = plan_framing(face, opts)
    assert (framing.out_w, framing.out_h) == (512, 512)
    r = make_renderer(face, build_rig(face.landmarks), framing, quality=True)
    assert np.array_equal(r.still, face.image)  # 1:1 framing is the portrait itself
    frame = r.frame(controls(jaw=0.9, lip_down=0.5, blink_r=1, blink_l=1), np.zeros(5))
    x0, y0, x1, y1 = r.roi
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert outside.mean() > 0.5  # the moving region is the face, not the picture
    assert np.array_equal(frame[outside], face.image[outside])
    assert not np.array_equal(frame[y0:y1, x0:x1], face.image[y0:y1, x0:x1])


def test_framings_have_the_promised_shapes(face: FaceModel) -> None:
    crop = plan_framing(face, GenerationOptions(min_resolution=768))
    assert (crop.out_w, crop.out_h) == (768, 768)
    vert = plan_framing(face, GenerationOptions(framing="vertical", min_resolution=512))
    assert (vert.out_w, vert.out_h) == (512, 910)
    odd = plan_framing(face, GenerationOptions(min_resolution=513))
    assert odd.out_w % 2 == 0 and odd.out_h % 2 == 0
    # The face centre sits on the upper third line of a vertical frame (if the picture
    # leaves room above it).
    x0, y0, x1, y1 = face.box
    cy = vert.to_output(np.array([(x0 + x1) / 2, (y0 + y1) / 2]))[1]
    assert cy < vert.out_h * 0.5


def test_controls_move_what_they_should(face: FaceModel) -> None:
    rig = build_rig(face.landmarks)
    base = rig.deform(np.zeros(len(CONTROLS)))
    jaw = rig.deform(controls(jaw=1.0))
    iod = rig.frame.iod
    # The lower lip drops, the upper lip and the eyes stay.
    assert (jaw[14] - base[14]) @ rig.frame.ey > 0.15 * iod
    assert abs((jaw[13] - base[13]) @ rig.frame.ey) < 0.01 * iod
    assert np.abs(jaw[[33, 133, 263, 362]] - base[[33, 133, 263, 362]]).max() < 1e-6
    # Closing brings the portrait's inner lips together.
    closed = rig.deform(controls(close=1.0))
    assert abs((closed[14] - closed[13]) @ rig.frame.ey) < 0.01 * iod
    # A blink brings the lid margins together without moving the brows.
    blink = rig.deform(controls(blink_r=1.0))
    assert abs((blink[145] - blink[159]) @ rig.frame.ey) < 0.25 * abs((base[145] - base[159]) @ rig.frame.ey)
    assert np.abs(blink[[70, 105]] - base[[70, 105]]).max() < 1e-6
    # The outermost anchor ring never moves (no seam at the edge of the moving region).
    posed = rig.deform(controls(jaw=1, brow=1), np.array([0.1, 0.1, 0.1, 0.05, 0.05]))
    assert np.abs(posed[rig.outer_ring] - base[rig.outer_ring]).max() < 1e-9



def test_rounding_pouts_without_baring_the_upper_teeth_or_slotting_a_small_mouth(
        face: FaceModel) -> None:
    """A rounded vowel pushes the lips out; it must not lift the upper lip's inner edge off
    the teeth (the widest frames showed two tall incisors filling the opening), nor squeeze
    a small mouth to a slot (corners drawn in by a fixed distance took away most of it)."""
    rig = build_rig(face.landmarks)
    iod, ey = rig.frame.iod, rig.frame.ey
    base = rig.deform(np.zeros(len(CONTROLS)))
    rnd = rig.deform(controls(round=1.0))
    # The outer upper lip pouts up; its inner edge (landmark 13) rises far less.
    assert (base[0] - rnd[0]) @ ey > 0.03 * iod
    assert (base[13] - rnd[13]) @ ey < 0.015 * iod
    # A small mouth: the lips' landmarks drawn towards the mouth's centre to 70 % width.
    lm = face.landmarks.copy()
    lips = [i for i in range(468) if abs(lm[i, 1] - lm[13, 1]) < 0.12 * iod
            and abs(lm[i, 0] - lm[13, 0]) < 1.05 * abs(lm[291, 0] - lm[13, 0])]
    lm[lips, 0] = lm[13, 0] + 0.7 * (lm[lips, 0] - lm[13, 0])
    small = build_rig(lm)
    rest = small.deform(np.zeros(len(CONTROLS)))
    rounded = small.deform(controls(round=1.0))
    width = lambda p: float(np.linalg.norm(p[291] - p[61]))  # noqa: E731
    assert width(rounded) > 0.58 * width(rest)

def test_posing_is_a_faded_rigid_head_motion(face: FaceModel) -> None:
    """The compiled posing against the geometry written out with matrices: each core
    vertex is rotated in 3D about the pivot (yaw, then pitch, then roll) and shifted
    along the face axes, faded by its head weight; a control's displacement rides
    along through the rotation's linear part; spline points follow their core points."""
    rig = build_rig(face.landmarks)
    yaw, pitch, roll, tx, ty = pose = np.array([0.12, -0.08, 0.05, 0.04, -0.03])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    rot = rz @ rx @ ry
    core = rig.src[: rig.n_core]
    p3 = np.concatenate([core, rig.z[:, None]], axis=1) - rig.pivot
    shift = (tx * rig.frame.ex + ty * rig.frame.ey) * rig.frame.iod
    w = rig.head_weight[:, None]
    head = core + w * ((p3 @ rot.T + rig.pivot)[:, :2] + shift - core)
    c = controls(jaw=0.7, round=0.4, blink_l=1.0)
    disp = np.tensordot(c, rig.bases, axes=1)
    moved = head + (1 - w) * disp + w * (disp @ rot[:2, :2].T)
    dst, head_all = rig.deform_pair(c, pose)
    n = rig.n_core
    assert np.abs(head_all[:n] - head).max() < 1e-9
    assert np.abs(dst[:n] - moved).max() < 1e-9
    splines = np.einsum("nk,nkc->nc", rig.dense_w, moved[rig.dense_idx])
    assert np.abs(dst[n:] - splines).max() < 1e-9
    assert np.array_equal(rig.deform(c, pose), dst)
    assert np.abs(rig.deform(c, pose, local=False) - head_all).max() < 1e-9
    with pytest.raises(ValueError):
        rig.deform_pair(np.zeros(3), pose)  # too few controls: refused, not read past


def test_rendered_mouth_and_eyes_read_as_such_when_re_tracked(face: FaceModel) -> None:
    rig = build_rig(face.landmarks)
    r = make_renderer(face, rig, plan_framing(face, GenerationOptions()), quality=True)
    frames = [r.frame(controls(close=1.0), np.zeros(5)),
              r.frame(controls(jaw=0.9, lip_down=0.4), np.zeros(5)),
              r.frame(controls(close=1.0, blink_r=1.0, blink_l=1.0), np.zeros(5))]
    track = track_frames(frames, 25)
    assert track.found.all()
    closed, opened, _ = track.gap
    assert closed < 0.05 and opened > 0.2
    assert track.eye_open[2] < 0.45 * track.eye_open[0]


def test_same_seed_same_frames_and_different_seed_different_motion(
        astronaut_path: Path, short_speech: Path, tmp_path: Path) -> None:
    # The watermark carries each render's own id, so compare with it off...
    opts = GenerationOptions(min_resolution=256, seed=7, watermark=False)
    a = generate(astronaut_path, short_speech, opts, output=tmp_path / "a.mp4")
    b = generate(astronaut_path, short_speech, opts, output=tmp_path / "b.mp4")
    fa, _ = decode_frames(a.path)
    fb, _ = decode_frames(b.path)
    assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    # ...and with it on, the same render id gives the same frames too.
    marked = GenerationOptions(min_resolution=256, seed=7)
    d = generate(astronaut_path, short_speech, marked, output=tmp_path / "d.mp4", render_id="job-1")
    e = generate(astronaut_path, short_speech, marked, output=tmp_path / "e.mp4", render_id="job-1")
    fd, _ = decode_frames(d.path)
    fe, _ = decode_frames(e.path)
    assert all(np.array_equal(x, y) for x, y in zip(fd, fe, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(fa, fd, strict=True))
    c = generate(astronaut_path, short_speech,
                 GenerationOptions(min_resolution=256, seed=8, watermark=False),
                 output=tmp_path / "c.mp4")
    fc, _ = decode_frames(c.path)
    assert any(not np.array_equal(x, y) for x, y in zip(fa, fc, strict=True))


def test_memory_does_not_grow_with_the_number_of_frames(face: FaceModel) -> None:
    """Per-frame scratch space is reused whatever size the mouth and eye boxes take: a
    buffer per box size once grew a 10-minute render's memory by ~180 MB."""
    rig = build_rig(face.landmarks)
    r = make_renderer(face, rig, plan_framing(face, GenerationOptions(min_resolution=256)),
                      quality=False)
    pose = np.zeros(5)

    def held() -> int:
        return sum(b.nbytes for b in r._buf.values())

    yuv = np.empty_like(r.still_i420)
    for jaw in np.linspace(0.0, 1.0, 15):  # every mouth box size once
        r.frame(controls(jaw=jaw, blink_l=jaw, blink_r=jaw), pose)
        r.frame_i420(controls(jaw=jaw, blink_l=jaw, blink_r=jaw), pose, yuv)
    after_sweep = held()
    for jaw in np.linspace(1.0, 0.0, 40):  # and again, many more frames
        r.frame(controls(jaw=jaw, blink_l=jaw, blink_r=jaw, round=0.5), pose)
        r.frame_i420(controls(jaw=jaw, blink_l=jaw, blink_r=jaw, round=0.5), pose, yuv)
    assert held() == after_sweep
    assert len(r._buf) <= 16, sorted(r._buf)


@pytest.mark.parametrize("framing, size, quality", [
    ("crop", 512, True), ("crop", 512, False), ("full", 512, True), ("crop", 256, True),
    ("vertical", 512, True)])
def test_i420_frames_match_the_rgb_frames_converted(
        face: FaceModel, framing: str, size: int, quality: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder's path (luma and chroma read from planes, features patched in) shows
    the same picture as rendering RGB and converting it: every coarse grid (1, 2, 4),
    a partial moving region (full framing) and odd-sized regions. Forced on: with
    OpenCV 4 renders take the RGB route (render.PLANAR), the planar one must still hold."""
    monkeypatch.setattr(render, "PLANAR", True)
    rig = build_rig(face.landmarks)
    r = make_renderer(face, rig, plan_framing(face, GenerationOptions(
        framing=framing, min_resolution=size)), quality=quality)
    h, w = r.still.shape[:2]
    cases = [(controls(), np.zeros(5)),
             (controls(jaw=0.9, lip_down=0.4), np.array([0.05, 0.03, 0.02, 0.01, 0.01])),
             (controls(close=1.0, blink_r=1.0, blink_l=0.6), np.array([-0.04, 0.02, 0, 0, 0]))]
    for c, pose in cases:
        ref = cv2.cvtColor(r.frame(c, pose), cv2.COLOR_RGB2YUV_I420).astype(np.float64)
        out = np.empty((h * 3 // 2, w), np.uint8)
        assert r.frame_i420(c, pose, out) is out
        err = np.abs(ref - out)
        psnr = 10 * np.log10(255.0 ** 2 / max(np.mean(err ** 2), 1e-12))
        assert psnr >= 48.0 and err.mean() < 0.5, (psnr, err.mean())
        assert (err > 8).sum() <= 10  # a few pixels at the feature patches' chroma edges
    x0, y0, x1, y1 = r.roi
    assert x0 % 2 == y0 % 2 == x1 % 2 == y1 % 2 == 0  # whole chroma samples
    if framing == "full":  # outside the moving region: the still frame, bit for bit
        out = np.empty_like(r.still_i420)
        r.frame_i420(controls(jaw=0.9, blink_l=1.0), np.zeros(5), out)
        y_out, _, _ = i420_planes(out, w, h)
        y_still, _, _ = i420_planes(r.still_i420, w, h)
        outside = np.ones((h, w), bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(y_out[outside], y_still[outside])
        assert not np.array_equal(y_out[y0:y1, x0:x1], y_still[y0:y1, x0:x1])


_WARM_UP_CHILD = """
import json, sys
import numpy as np
from facetalk import GenerationOptions
from facetalk.render import layers, raster
from facetalk.render import renderer as render
from facetalk.render import rig as rig_module
from facetalk.face.analysis import analyze_face
from facetalk.face.framing import plan_framing
from facetalk.media.image import load_portrait
from facetalk.motion.controls import CONTROLS
from facetalk.render.rig import build_rig

render.warm_up()
kernels = (raster._raster, rig_module._pose_vertices, layers.composite_mouth, layers.composite_eye)
before = [len(k.signatures) for k in kernels]
face = analyze_face(load_portrait(sys.argv[1]))
c = np.zeros(len(CONTROLS))
c[[0, 2, 8, 9]] = (0.8, 0.4, 1.0, 0.5)  # jaw, lip_down, both blinks
pose = np.array([0.03, -0.02, 0.01, 0.01, 0.0])
for framing, quality in (("crop", True), ("full", False)):
    r = render.make_renderer(face, build_rig(face.landmarks), plan_framing(
        face, GenerationOptions(framing=framing, min_resolution=512)), quality=quality)
    r.frame_i420(c, pose, np.empty_like(r.still_i420))
    r.frame(c, np.zeros(5))
print(json.dumps([before, [len(k.signatures) for k in kernels]]))
"""


def test_warm_up_loads_every_kernel_the_renderer_calls() -> None:
    """render.warm_up() runs beside the face analysis so that the first frame finds its
    compiled kernels loaded; a kernel called with other array types than the warm-up's
    would be compiled again at the first frame (seconds). In a fresh interpreter,
    rendering after the warm-up must add no compiled signature."""
    import json
    import subprocess
    import sys
    from importlib import resources

    portrait = str(resources.files("facetalk") / "assets" / "astronaut.png")
    proc = subprocess.run([sys.executable, "-c", _WARM_UP_CHILD, portrait],
                          capture_output=True, text=True, check=True, timeout=300)
    before, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert min(before) >= 1 and after == before
