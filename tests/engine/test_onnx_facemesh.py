"""The ONNX face mesh runtime against mediapipe 0.10.21, and its behaviour for users.

Two kinds of check:
- against a live mediapipe (the ``reference`` extra, installed in the main test
  environment by ``make test``): landmarks and boxes on the export tool's portraits,
  the stored reference still matching mediapipe, and the export being byte-for-byte
  reproducible. These skip where mediapipe is absent (the numpy-2 environment of
  ``make test``), and only there.
- against the stored reference (``tests/data/facemesh_reference.npz``, written by
  ``tools/export_onnx.py --write-reference``): runs everywhere, so the numpy-2 /
  OpenCV-5 environment proves the same landmarks without mediapipe.
"""

from __future__ import annotations

import hashlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetalk.errors import NoFaceFound
from facetalk.face import mesh
from facetalk.face.analysis import analyze_face
from facetalk.face.detector import FULL, MODELS, SHORT, detect_faces
from facetalk.face.mesh import FaceMesh
from facetalk.media.image import load_portrait

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import export_onnx  # noqa: E402  (a tool, not a package: its folder is put on the path above)

HAS_REFERENCE_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("mediapipe", "tflite", "onnx"))
needs_reference = pytest.mark.skipif(not HAS_REFERENCE_EXTRA,
                                     reason="needs the 'reference' extra (mediapipe, tflite, onnx)")
MEAN_TOL, MAX_TOL = export_onnx.MEAN_TOL_PX, export_onnx.MAX_TOL_PX


@pytest.fixture(scope="module")
def portraits() -> dict[str, np.ndarray]:
    return export_onnx.test_portraits()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(export_onnx.REFERENCE_FILE) as z:
        return {k: z[k] for k in z.files}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return export_onnx._iou(tuple(a), tuple(b))


@pytest.mark.parametrize("name", export_onnx.REFERENCE_PORTRAITS)
def test_landmarks_match_stored_mediapipe_reference(name: str, portraits, reference) -> None:  # type: ignore[no-untyped-def]
    ref = reference[f"{name}/landmarks"]
    ours = sorted(FaceMesh(max_faces=5, device="cpu").process(portraits[name]),
                  key=lambda f: float(f[:, 0].mean()))
    assert len(ours) == len(ref) >= 1
    for r, o in zip(ref, ours, strict=True):
        err = np.linalg.norm(r[:, :2] - o[:, :2], axis=1)
        assert err.mean() <= MEAN_TOL and err.max() <= MAX_TOL, (err.mean(), err.max())
        assert np.abs(r[:, 2] - o[:, 2]).mean() <= MEAN_TOL


@pytest.mark.parametrize("name", export_onnx.REFERENCE_PORTRAITS)
@pytest.mark.parametrize("spec", [SHORT, FULL], ids=["short", "full"])
def test_boxes_match_stored_mediapipe_reference(name: str, spec, portraits, reference) -> None:  # type: ignore[no-untyped-def]
    ref = reference[f"{name}/boxes_{'short' if spec is SHORT else 'full'}"]
    ours = [np.array(d.box) for d in detect_faces(portraits[name], spec, device="cpu")]
    assert len(ours) == len(ref)
    for r in ref:
        assert max(_iou(r, o) for o in ours) >= export_onnx.BOX_IOU_TOL


@needs_reference
def test_onnx_pipeline_matches_live_mediapipe(portraits) -> None:  # type: ignore[no-untyped-def]
    """Every portrait of the export check: same face count, landmarks and boxes."""
    for name, rgb in portraits.items():
        row = export_onnx.compare(name, rgb)
        assert row["faces_mp"] == row["faces_onnx"], row
        if row["faces_mp"]:
            assert row["mean_px"] <= MEAN_TOL and row["max_px"] <= MAX_TOL, row
        assert row["iou_short"] >= export_onnx.BOX_IOU_TOL and row["iou_full"] >= export_onnx.BOX_IOU_TOL, row


@needs_reference
def test_stored_reference_is_what_mediapipe_gives(reference) -> None:  # type: ignore[no-untyped-def]
    fresh = export_onnx.mediapipe_reference()
    assert set(fresh) == set(reference)
    for key, value in fresh.items():
        np.testing.assert_allclose(value, reference[key], atol=1e-3, err_msg=key)


@needs_reference
def test_export_is_reproducible(tmp_path: Path) -> None:
    """Same wheel and tools -> the very bytes shipped in the package."""
    digests = export_onnx.export(tmp_path)
    for name, digest in digests.items():
        shipped = (MODELS / name).read_bytes()
        assert hashlib.sha256(shipped).hexdigest() == digest, name


def test_triangles_are_shipped_data() -> None:
    from facetalk.face.landmarks import face_triangles

    tri = face_triangles()
    assert tri.shape == (852, 3) and tri.min() == 0 and tri.max() == 467
    assert len({tuple(t) for t in tri}) == 852


def test_iris_points_sit_inside_the_eyes() -> None:
    from facetalk.face import landmarks as L

    face = analyze_face(load_portrait(ROOT / "src/facetalk/assets/astronaut.png"))
    lm = face.landmarks
    for iris, up, lo in ((L.R_IRIS, L.R_EYE_UP, L.R_EYE_LO),
                         (L.L_IRIS, L.L_EYE_UP, L.L_EYE_LO)):
        contour = lm[list(up) + list(lo[::-1]), :2].astype(np.float32)
        centre = tuple(float(v) for v in lm[iris[0], :2])
        assert cv2.pointPolygonTest(contour, centre, False) > 0


def test_no_face_raises(portraits) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NoFaceFound):
        analyze_face(portraits["no_face"])


def test_several_faces_warn_and_take_the_largest(portraits) -> None:  # type: ignore[no-untyped-def]
    face = analyze_face(portraits["two_faces_512x256"])
    assert any("2 faces found" in w for w in face.warnings)
    _, _, x1, _ = face.box
    assert x1 > 256  # Grace Hopper's close crop (right half) is the larger face


def test_small_face_found_by_the_full_range_second_chance(monkeypatch: pytest.MonkeyPatch, portraits) -> None:  # type: ignore[no-untyped-def]
    """A face too small for the short-range detector is found via the full-range one."""
    canvas = np.full((1600, 1600, 3), 128, np.uint8)
    canvas[800:1400, 300:900] = cv2.resize(portraits["astronaut"], (600, 600), interpolation=cv2.INTER_AREA)
    from facetalk.face import analysis as face_mod

    calls = []
    real = face_mod._full_range_boxes
    monkeypatch.setattr(face_mod, "_full_range_boxes", lambda *a, **k: calls.append(1) or real(*a, **k))
    face = analyze_face(canvas)
    assert calls, "the short-range pass should have missed this face"
    x0, y0, x1, y1 = face.box
    assert 300 < x0 < x1 < 900 and 800 < y0 < y1 < 1400
    assert 100 < face.size < 160  # the face is about a fifth of the 600 px inset


def test_tracking_reuses_the_previous_landmarks(monkeypatch: pytest.MonkeyPatch, portraits) -> None:  # type: ignore[no-untyped-def]
    """Video mode runs the detector once, then follows the face from frame to frame."""
    calls = []
    real = mesh.detect_faces
    monkeypatch.setattr(mesh, "detect_faces", lambda *a, **k: calls.append(1) or real(*a, **k))
    base = portraits["astronaut"]
    tracker = FaceMesh(max_faces=1, static=False, device="cpu")
    prev = None
    for dx in range(0, 40, 4):
        m = np.float32([[1, 0, dx], [0, 1, dx / 2]])
        frame = cv2.warpAffine(base, m, (512, 512), borderMode=cv2.BORDER_REPLICATE)
        faces = tracker.process(frame)
        assert len(faces) == 1
        static = FaceMesh(max_faces=1, device="cpu").process(frame)[0]
        # Tracking crops differ from detection crops a little; the landmarks agree closely.
        assert np.linalg.norm(faces[0][:, :2] - static[:, :2], axis=1).mean() < 2.0
        if prev is not None:
            shift = (faces[0][:468, :2] - prev[:468, :2]).mean(axis=0)
            assert abs(shift[0] - 4) < 1.0 and abs(shift[1] - 2) < 1.0
        prev = faces[0]
    assert len(calls) == 1 + 10  # the tracker's one detection + one per static comparison


def test_face_analysis_is_fast(portraits) -> None:  # type: ignore[no-untyped-def]
    """Issue 9: face analysis <= 150 ms per portrait on this CPU (models loaded)."""
    rgb = load_portrait(ROOT / "tests/data/grace_hopper.jpg")
    analyze_face(rgb)  # load the sessions
    times = []
    for _ in range(5):
        t = time.perf_counter()
        analyze_face(rgb)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) <= 0.150, times


def _landmark_count(path: str) -> int:
    return len(analyze_face(load_portrait(path)).landmarks)


def test_face_analysis_in_a_forked_child() -> None:
    """A process forked after the parent loaded the models (a prefork worker pool) works."""
    import multiprocessing

    path = str(ROOT / "tests/data/grace_hopper.jpg")
    assert _landmark_count(path) == 478
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_landmark_count, (path,)).get(timeout=60) == 478
