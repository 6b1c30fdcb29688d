"""Export MediaPipe's face models to ONNX for facetalk, and check them against mediapipe.

Development-time only (needs the ``reference`` extra: mediapipe==0.10.21, tflite,
onnx). Run from the repository root:

    .venv/bin/python tools/export_onnx.py            # write the models, then verify
    .venv/bin/python tools/export_onnx.py --check    # verify the shipped models only

It reads three .tflite files from the installed mediapipe wheel
(``mediapipe/modules/face_detection/face_detection_short_range.tflite``,
``.../face_detection_full_range_sparse.tflite`` and
``mediapipe/modules/face_landmark/face_landmark_with_attention.tflite``: the model
``FaceMesh(refine_landmarks=True)`` runs, 478 points with irises), converts them with
``tools/tflite_to_onnx.py``, appends to the mesh model the landmark refinement
MediaPipe's graph does after it (lips, eyes and irises overwrite the mesh points they
refine; an iris's depth is the mean depth of its eye's contour), and writes them to
``src/facetalk/face/models/`` with the face mesh's triangle list. The export is
deterministic: the same wheel and the same versions of ``tflite`` and ``onnx`` give
the same bytes (the SHA-256 of each file is printed).

Verification runs mediapipe and facetalk's ONNX pipeline on several 512x512
portraits (the bundled astronaut, Grace Hopper, and rotated, scaled, shifted and
mirrored variants) and fails unless every landmark agrees within 0.5 px on average and
1.5 px at worst, and both detectors' boxes agree (IoU >= 0.98).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "facetalk" / "face" / "models"
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "src"))

MEAN_TOL_PX = 0.5
MAX_TOL_PX = 1.5
BOX_IOU_TOL = 0.98


def mediapipe_modules() -> Path:
    import mediapipe

    if mediapipe.__version__ != "0.10.21":
        raise SystemExit(f"mediapipe 0.10.21 is required (found {mediapipe.__version__})")
    return Path(mediapipe.__file__).parent / "modules"


# --------------------------------------------------------------------- export
def _trace_subset(conv, output_name: str) -> list[int]:
    """Subset indices of the Landmarks2TransformMatrix op a model output depends on."""
    from flatbuffers import flexbuffers
    from tflite.BuiltinOperator import BuiltinOperator

    g, model = conv.g, conv.model
    producer = {}
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        for j in range(op.OutputsLength()):
            producer[op.Outputs(j)] = op
    start = next(g.Outputs(k) for k in range(g.OutputsLength())
                 if g.Tensors(g.Outputs(k)).Name().decode() == output_name)
    todo, seen = [start], set()
    while todo:
        t = todo.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        op = producer[t]
        oc = model.OperatorCodes(op.OpcodeIndex())
        if (max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) == BuiltinOperator.CUSTOM
                and oc.CustomCode().decode() == "Landmarks2TransformMatrix"):
            opts = flexbuffers.Loads(bytes(op.CustomOptionsAsNumpy()))
            return [int(i) for i in np.array(opts["subset_idxs"]).reshape(-1)]
        todo.extend(op.Inputs(j) for j in range(op.InputsLength()) if op.Inputs(j) >= 0)
    raise SystemExit(f"no attention crop found behind {output_name}")


def add_refinement(model, conv) -> None:
    """Replace the mesh model's seven outputs by ``landmarks`` (1, 478, 3) and ``face_flag`` (1, 1).

    MediaPipe's LandmarksRefinementCalculator: the lip and eye models' points
    overwrite the mesh points of the same region (x, y only); the irises become
    points 468-472 (the eye of points 33/133, the subject's right) and 473-477, their
    depth the mean depth of the first 16 points (the lid contour) of that eye's
    region. Which mesh points each region refines is the subset its attention crop is
    built from, read from the model's own custom-op options.
    """
    from onnx import TensorProto, helper, numpy_helper

    lips = _trace_subset(conv, "output_lips")
    eye_a = _trace_subset(conv, "output_left_eye")
    eye_b = _trace_subset(conv, "output_right_eye")
    if (len(lips), len(eye_a), len(eye_b)) != (80, 71, 71) or eye_a[0] != 33 or eye_b[0] != 263:
        raise SystemExit("unexpected refinement regions in the attention model")
    if _trace_subset(conv, "output_left_iris") != eye_a or _trace_subset(conv, "output_right_iris") != eye_b:
        raise SystemExit("iris crops do not match the eye crops")
    # Rows of the concatenated sources: mesh 0-467, lips, eye a, eye b, iris a, iris b.
    source = np.arange(478, dtype=np.int64)
    offset = 468
    for region in (lips, eye_a, eye_b):
        for k, idx in enumerate(region):
            source[idx] = offset + k
        offset += len(region)
    source[468:473] = offset + np.arange(5)
    source[473:478] = offset + 5 + np.arange(5)

    g = model.graph
    n = [0]

    def const(value: np.ndarray) -> str:
        n[0] += 1
        name = f"refine_const_{n[0]}"
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], **attrs) -> str:
        n[0] += 1
        out = f"refine_{op.lower()}_{n[0]}"
        g.node.append(helper.make_node(op, inputs, [out], name=f"n_{out}", **attrs))
        return out

    mesh = node("Reshape", ["output_mesh_identity", const(np.array([468, 3], np.int64))])
    xy_parts = [node("Slice", [mesh, const(np.array([0], np.int64)), const(np.array([2], np.int64)),
                               const(np.array([1], np.int64))])]
    for name, count in (("output_lips", 80), ("output_left_eye", 71), ("output_right_eye", 71),
                        ("output_left_iris", 5), ("output_right_iris", 5)):
        xy_parts.append(node("Reshape", [name, const(np.array([count, 2], np.int64))]))
    xy_all = node("Concat", xy_parts, axis=0)
    xy = node("Gather", [xy_all, const(source)], axis=0)  # (478, 2)
    z_mesh = node("Slice", [mesh, const(np.array([2], np.int64)), const(np.array([3], np.int64)),
                            const(np.array([1], np.int64))])  # (468, 1)
    z_parts = [z_mesh]
    for eye in (eye_a, eye_b):
        ring = node("Gather", [z_mesh, const(np.array(eye[:16], np.int64))], axis=0)
        mean = node("ReduceMean", [ring], axes=[0], keepdims=1)  # (1, 1)
        z_parts.append(node("Tile", [mean, const(np.array([5, 1], np.int64))]))
    z = node("Concat", z_parts, axis=0)  # (478, 1)
    lm = node("Concat", [xy, z], axis=1)
    g.node.append(helper.make_node("Unsqueeze", [lm, const(np.array([0], np.int64))], ["landmarks"],
                                   name="n_landmarks"))
    g.node.append(helper.make_node("Reshape", ["conv_faceflag", const(np.array([1, 1], np.int64))],
                                   ["face_flag"], name="n_face_flag"))
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, [1, 478, 3]),
                     helper.make_tensor_value_info("face_flag", TensorProto.FLOAT, [1, 1])])


def face_triangles_from_mediapipe() -> np.ndarray:
    """The (852, 3) triangles of the 468-vertex mesh, from mediapipe's edge list.

    mediapipe ships the tessellation as edges; its faces are the 3-cliques of that
    graph, except two spurious cliques each of whose three edges is shared by three
    cliques. The mesh has holes at the mouth and both eyes (the renderer wants them).
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adj: dict[int, set[int]] = {}
    edges = set()
    for a, b in FACEMESH_TESSELATION:
        edges.add((min(a, b), max(a, b)))
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    cliques = set()
    for a, b in edges:
        for c in adj[a] & adj[b]:
            cliques.add(tuple(sorted((a, b, c))))
    use: Counter[tuple[int, int]] = Counter()
    for t in cliques:
        use.update([(t[0], t[1]), (t[0], t[2]), (t[1], t[2])])
    faces = [t for t in cliques
             if not all(use[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]
    return np.array(sorted(faces), dtype=np.int32)


def export(out: Path = OUT) -> dict[str, str]:
    """Write the models and the triangle list to ``out``; returns file name -> SHA-256."""
    import onnx
    from tflite_to_onnx import convert

    mods = mediapipe_modules()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [("face_detection/face_detection_short_range.tflite", "face_detection_short_range.onnx"),
            ("face_detection/face_detection_full_range_sparse.tflite", "face_detection_full_range.onnx"),
            ("face_landmark/face_landmark_with_attention.tflite", "face_landmark_with_attention.onnx")]
    digests = {}
    for src, dst in jobs:
        model, conv = convert(str(mods / src), Path(dst).stem)
        if dst.startswith("face_landmark"):
            add_refinement(model, conv)
        model.doc_string = (f"Converted from mediapipe 0.10.21's {Path(src).name} by facetalk's "
                            "tools/export_onnx.py. Model: Copyright The MediaPipe Authors, "
                            "Apache License 2.0 (see NOTICE).")
        onnx.checker.check_model(model, full_check=True)
        data = model.SerializeToString(deterministic=True)
        (out / dst).write_bytes(data)
        digests[dst] = hashlib.sha256(data).hexdigest()
    tri = face_triangles_from_mediapipe()
    text = "# facetalk face mesh triangles (vertex indices), from mediapipe 0.10.21's FACEMESH_TESSELATION\n"
    text += "".join(f"{a} {b} {c}\n" for a, b, c in tri)
    (out / "face_mesh_triangles.txt").write_text(text)
    digests["face_mesh_triangles.txt"] = hashlib.sha256(text.encode()).hexdigest()
    return digests


# ---------------------------------------------------------------- verification
def test_portraits() -> dict[str, np.ndarray]:
    """512x512 RGB portraits: the two bundled ones and geometric variants of them."""
    import cv2
    from PIL import Image

    def square(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        return cv2.resize(img[y0:y0 + s, x0:x0 + s], (512, 512), interpolation=cv2.INTER_AREA)

    def affine(img: np.ndarray, angle: float, scale: float, dx: float, dy: float) -> np.ndarray:
        m = cv2.getRotationMatrix2D((256, 256), angle, scale)
        m[:, 2] += (dx, dy)
        return cv2.warpAffine(img, m, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(128, 128, 128))

    astro = square(np.asarray(Image.open(ROOT / "src/facetalk/assets/astronaut.png").convert("RGB")))
    hopper = square(np.asarray(Image.open(ROOT / "tests/data/grace_hopper.jpg").convert("RGB")))
    return {
        "astronaut": astro,
        "grace_hopper": hopper,
        "astronaut_rot+20": affine(astro, 20, 1.0, 0, 0),
        "hopper_rot-15": affine(hopper, -15, 1.0, 0, 0),
        "astronaut_small_0.7": affine(astro, 0, 0.7, 60, -40),
        "hopper_zoom_1.4": affine(hopper, 0, 1.4, 0, 40),
        "astronaut_mirror": np.ascontiguousarray(astro[:, ::-1]),
        "hopper_shift_rot+8": affine(hopper, 8, 0.8, -70, 30),
        "hopper_wide_640x400": cv2.resize(hopper, (640, 640))[120:520],
        # Two faces side by side, each cropped close (the short-range detector wants faces
        # that fill a good part of the picture).
        "two_faces_512x256": np.concatenate([cv2.resize(astro[18:230, 118:331], (256, 256)),
                                             cv2.resize(hopper[0:392, 58:466], (256, 256))], axis=1),
        "no_face": np.tile(np.linspace(40, 220, 512, dtype=np.uint8)[:, None, None], (1, 512, 3)),
    }


def _mp_mesh(rgb: np.ndarray) -> list[np.ndarray]:
    from mediapipe.python.solutions import face_mesh

    h, w = rgb.shape[:2]
    with face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=5,
                            min_detection_confidence=0.5) as fm:
        res = fm.process(rgb)
    return [np.array([[p.x * w, p.y * h, p.z * w] for p in f.landmark])
            for f in res.multi_face_landmarks or []]


def _mp_boxes(rgb: np.ndarray, model_selection: int) -> list[tuple[float, ...]]:
    from mediapipe.python.solutions import face_detection

    h, w = rgb.shape[:2]
    with face_detection.FaceDetection(model_selection=model_selection, min_detection_confidence=0.5) as fd:
        res = fd.process(rgb)
    out = []
    for d in res.detections or []:
        b = d.location_data.relative_bounding_box
        out.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
    return out


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def compare(name: str, rgb: np.ndarray) -> dict[str, object]:
    """Figures for one portrait: landmark error (px) and box agreement of both detectors."""
    from facetalk.face.detector import FULL, SHORT, detect_faces
    from facetalk.face.mesh import FaceMesh

    ref = _mp_mesh(rgb)
    ours = FaceMesh(max_faces=5, static=True, device="cpu").process(rgb)
    row: dict[str, object] = {"portrait": name, "faces_mp": len(ref), "faces_onnx": len(ours)}
    if ref and len(ref) == len(ours):
        errs, z_errs = [], []
        for r in ref:  # pair each reference face with the nearest of ours
            o = min(ours, key=lambda f: float(np.abs(f[:, :2] - r[:, :2]).mean()))
            errs.append(np.linalg.norm(r[:, :2] - o[:, :2], axis=1))
            z_errs.append(np.abs(r[:, 2] - o[:, 2]))
        err = np.concatenate(errs)
        row.update(mean_px=float(err.mean()), max_px=float(err.max()),
                   z_mean_px=float(np.concatenate(z_errs).mean()))
    for label, spec, sel in (("short", SHORT, 0), ("full", FULL, 1)):
        mp_b = _mp_boxes(rgb, sel)
        on_b = [d.box for d in detect_faces(rgb, spec, None, "cpu")]
        row[f"boxes_{label}"] = (len(mp_b), len(on_b))
        if len(mp_b) == len(on_b) == 0:
            row[f"iou_{label}"], row[f"box_px_{label}"] = 1.0, 0.0
        elif len(mp_b) == len(on_b):
            row[f"iou_{label}"] = min(max(_iou(a, b) for b in on_b) for a in mp_b)
            row[f"box_px_{label}"] = max(min(float(np.abs(np.subtract(a, b)).max()) for b in on_b)
                                         for a in mp_b)
    return row


#: Portraits whose mediapipe results are stored for the tests (they run without mediapipe).
REFERENCE_PORTRAITS = ("astronaut", "grace_hopper", "astronaut_rot+20", "hopper_wide_640x400",
                       "two_faces_512x256")
REFERENCE_FILE = ROOT / "tests" / "data" / "facemesh_reference.npz"


def mediapipe_reference(names: tuple[str, ...] = REFERENCE_PORTRAITS) -> dict[str, np.ndarray]:
    """mediapipe's landmarks and boxes on the named test portraits, as arrays to store."""
    portraits = test_portraits()
    out: dict[str, np.ndarray] = {}
    for name in names:
        rgb = portraits[name]
        faces = sorted(_mp_mesh(rgb), key=lambda f: float(f[:, 0].mean()))
        out[f"{name}/landmarks"] = np.array(faces, np.float32).reshape(len(faces), 478, 3)
        out[f"{name}/boxes_short"] = np.array(_mp_boxes(rgb, 0), np.float32).reshape(-1, 4)
        out[f"{name}/boxes_full"] = np.array(_mp_boxes(rgb, 1), np.float32).reshape(-1, 4)
    return out


def write_reference(path: Path = REFERENCE_FILE) -> None:
    """Store mediapipe's results so the suite can compare against them without mediapipe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **mediapipe_reference())


def verify() -> bool:
    rows = [compare(n, img) for n, img in test_portraits().items()]
    ok = True
    print(f"{'portrait':22s} faces  mean px  max px  z mean  short IoU (px)   full IoU (px)")
    for r in rows:
        good = (r["faces_mp"] == r["faces_onnx"]
                and (r["faces_mp"] == 0 or (r["mean_px"] <= MEAN_TOL_PX and r["max_px"] <= MAX_TOL_PX))
                and all(r.get(f"iou_{k}", 0.0) >= BOX_IOU_TOL for k in ("short", "full")))
        ok &= good
        print(f"{r['portrait']:22s} {r['faces_mp']}/{r['faces_onnx']}   "
              f"{r.get('mean_px', float('nan')):7.3f} "
              f"{r.get('max_px', float('nan')):7.3f} {r.get('z_mean_px', float('nan')):7.3f}  "
              f"{r.get('iou_short', 0):.4f} ({r.get('box_px_short', float('nan')):.2f})  "
              f"{r.get('iou_full', 0):.4f} ({r.get('box_px_full', float('nan')):.2f})  "
              f"{'ok' if good else 'FAIL'}")
    print(f"tolerance: mean <= {MEAN_TOL_PX} px, max <= {MAX_TOL_PX} px, box IoU >= {BOX_IOU_TOL}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only verify the models already in the package")
    ap.add_argument("--write-reference", action="store_true",
                    help="also store mediapipe's results for the tests in "
                         f"{REFERENCE_FILE.relative_to(ROOT)}")
    args = ap.parse_args()
    if args.write_reference:
        write_reference()
    if not args.check:
        for name, digest in export().items():
            print(f"{digest}  {name}")
    return 0 if verify() else 1


if __name__ == "__main__":
    raise SystemExit(main())
