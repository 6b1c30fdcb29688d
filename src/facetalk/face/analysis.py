"""Face analysis: 478 Face Mesh landmarks, once per portrait, on ONNX Runtime.

The models are MediaPipe's Face Mesh (with attention: refined lips, eyes and irises)
and BlazeFace detectors, converted to ONNX and shipped in the package
(:mod:`facetalk.face.mesh`), so they run with no download, no network and no
mediapipe, on any CPU ONNX Runtime supports. The short-range detector used first
misses small faces in large pictures; when it finds nothing we look again with the
full-range detector and run the mesh on a crop around what it found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import NoFaceFound

#: Pictures are shown to the landmark model at most this large (long side); the model
#: itself looks at a 192 px face crop, so more pixels only cost time.
DETECT_MAX_SIDE = 1280
#: Faces narrower than this (in the original picture) are refused: too few pixels to animate.
MIN_FACE_PX = 40
#: Head turned further than this (degrees, estimated from the landmarks) is refused.
MAX_YAW_DEG = 50.0


@dataclass
class FaceModel:
    """A portrait and its face geometry: everything the renderer needs, computed once."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, upright
    landmarks: np.ndarray  # (478, 3) float32: x, y in image pixels; z in pixels, + = away
    warnings: list[str] = field(default_factory=list)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Landmark bounding box (x0, y0, x1, y1) in image pixels."""
        xy = self.landmarks[:468, :2]
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def size(self) -> float:
        """Face size in pixels (larger side of the landmark box)."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    def scaled(self, k: float) -> FaceModel:
        """The same face in the portrait shrunk by ``k`` (< 1, area filter).

        A render needs the portrait only at the scale its output uses: a 12 MP photo
        shrunk once costs every later step (colours, layers, working image) what a
        small one does. Pixel centres stay aligned: x' = (x + 0.5) * k - 0.5.
        """
        h, w = self.image.shape[:2]
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        image = cv2.resize(self.image, (nw, nh), interpolation=cv2.INTER_AREA)
        kx, ky = nw / w, nh / h
        lm = self.landmarks.copy()
        lm[:, 0] = (lm[:, 0] + 0.5) * kx - 0.5
        lm[:, 1] = (lm[:, 1] + 0.5) * ky - 0.5
        lm[:, 2] *= (kx + ky) / 2
        return FaceModel(image=image, landmarks=lm, warnings=list(self.warnings))


def _mesh(rgb: np.ndarray, max_faces: int, device: str | None = None) -> list[np.ndarray]:
    """All faces Face Mesh finds, as (478, 3) arrays in the pixel units of ``rgb``."""
    from .mesh import FaceMesh

    return FaceMesh(max_faces=max_faces, static=True, device=device).process(rgb)


def _full_range_boxes(rgb: np.ndarray, device: str | None = None) -> list[tuple[float, float, float, float]]:
    """Face boxes from the full-range detector (finds faces down to ~2% of the picture)."""
    from .detector import FULL, detect_faces

    return [d.box for d in detect_faces(rgb, FULL, device=device)]


def _downscaled(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return small, scale


def _find_faces(rgb: np.ndarray, max_faces: int, device: str | None = None) -> list[np.ndarray]:
    small, scale = _downscaled(rgb, DETECT_MAX_SIDE)
    faces = _mesh(small, max_faces, device)
    if not faces:
        # Second chance for small faces: full-range detector, then the mesh on a crop.
        for x0, y0, x1, y1 in _full_range_boxes(small, device):
            cx, cy, side = (x0 + x1) / 2 / scale, (y0 + y1) / 2 / scale, max(x1 - x0, y1 - y0) / scale
            half = side * 1.2
            h, w = rgb.shape[:2]
            cx0, cy0 = int(max(0, cx - half)), int(max(0, cy - half))
            cx1, cy1 = int(min(w, cx + half)), int(min(h, cy + half))
            crop = rgb[cy0:cy1, cx0:cx1]
            crop_small, cscale = _downscaled(crop, 640)
            for lm in _mesh(crop_small, 1, device):
                lm = lm / cscale
                lm[:, 0] += cx0
                lm[:, 1] += cy0
                faces.append(lm)
        return [f.astype(np.float32) for f in faces]
    return [(f / scale).astype(np.float32) for f in faces]


def estimate_yaw_deg(lm: np.ndarray) -> float:
    """Rough head yaw from the nose tip's position between the cheeks (0 = frontal)."""
    nose, right_cheek, left_cheek = lm[1, 0], lm[234, 0], lm[454, 0]
    width = left_cheek - right_cheek
    if width <= 0:
        return 90.0
    rel = (nose - right_cheek) / width  # 0.5 when frontal
    return float(np.degrees(np.arcsin(np.clip((rel - 0.5) * 2.0, -1.0, 1.0))))


def analyze_face(rgb: np.ndarray, max_faces: int = 5, device: str | None = None) -> FaceModel:
    """Find the largest face and its landmarks, or raise :class:`NoFaceFound`.

    ``device`` picks where the models run (see :mod:`facetalk.devices`).
    """
    faces = _find_faces(rgb, max_faces, device)
    if not faces:
        raise NoFaceFound("no face was found in the portrait")
    warnings: list[str] = []

    def area(lm: np.ndarray) -> float:
        span = lm[:468, :2].max(axis=0) - lm[:468, :2].min(axis=0)
        return float(span[0] * span[1])

    faces.sort(key=area, reverse=True)
    if len(faces) > 1:
        warnings.append(f"{len(faces)} faces found; animating the largest one")
    lm = faces[0]
    width = float(lm[:468, 0].max() - lm[:468, 0].min())
    if width < MIN_FACE_PX:
        raise NoFaceFound(
            f"the face is only {width:.0f} pixels wide; at least {MIN_FACE_PX} are needed")
    yaw = estimate_yaw_deg(lm)
    if abs(yaw) > MAX_YAW_DEG:
        raise NoFaceFound(f"the face is turned too far to the side (about {abs(yaw):.0f} degrees)")
    if abs(yaw) > 25:
        warnings.append(f"the face is turned about {abs(yaw):.0f} degrees; results are best "
                        "with a frontal face")
    return FaceModel(image=rgb, landmarks=refine_inner_lips(rgb, lm), warnings=warnings)


def _lip_features(rgb: np.ndarray) -> np.ndarray:
    """(redness, brightness) per pixel: lips are redder than teeth, even teeth in shadow."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    redness = (r - g) / (r + g + b + 1.0)
    return np.stack([8.0 * redness, (0.299 * r + 0.587 * g + 0.114 * b) / 255.0], axis=-1)


#: How far into the lip the refined contour is placed, in portrait pixels.
EDGE_BIAS_PX = 0.9
#: Largest move of an inner-lip landmark by the refinement, in inter-ocular distances.
MAX_LIP_SHIFT = 0.035


def refine_inner_lips(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Move the inner-lip landmarks of an open mouth onto the lip edges in the picture.

    The landmark model often puts the inner lip contour a little inside the lip or a
    little on the teeth. The renderer cuts the mouth open along that contour, so an
    error shows as a strip of lip travelling with the teeth (or of teeth with the lip).
    Along the line through each upper/lower pair we classify pixels as lip-like or
    interior-like (nearer to the lips' mean colour or to the opening's) and snap each
    landmark to the first lip pixel met when walking out from the middle of the opening.
    """
    from . import landmarks as L

    out = lm.copy()
    r_eye = lm[list(L.R_EYE_UP + L.R_EYE_LO), :2].mean(axis=0)
    l_eye = lm[list(L.L_EYE_UP + L.L_EYE_LO), :2].mean(axis=0)
    iod = float(np.linalg.norm(l_eye - r_eye))
    if iod <= 0:
        return out
    ex = (l_eye - r_eye) / iod
    ey = np.array([-ex[1], ex[0]])
    ups, los = L.MOUTH_INNER_UP[1:-1], L.MOUTH_INNER_LO[1:-1]
    gaps = np.array([(lm[lo, :2] - lm[up, :2]) @ ey for up, lo in zip(ups, los, strict=True)])
    if np.median(gaps) < 0.03 * iod:
        return out  # closed mouth: nothing to separate
    # Mean lip colour: between the outer and inner lip contours.
    lips = np.zeros(rgb.shape[:2], np.uint8)
    outer = lm[list(L.MOUTH_OUTER_UP) + list(L.MOUTH_OUTER_LO[::-1]), :2]
    inner = lm[list(L.MOUTH_INNER_UP) + list(L.MOUTH_INNER_LO[::-1]), :2]
    cv2.fillPoly(lips, [np.round(outer).astype(np.int32)], 1)
    cv2.fillPoly(lips, [np.round(inner).astype(np.int32)], 0)
    if lips.sum() < 8:
        return out
    lip_c = _lip_features(rgb[lips > 0].astype(np.float32)).mean(axis=0)
    margin = MAX_LIP_SHIFT * iod
    n = 48
    t = np.linspace(0.0, 1.0, n)
    lines, spans = [], []
    for up, lo in zip(ups, los, strict=True):
        a = lm[up, :2] - ey * margin
        b = lm[lo, :2] + ey * margin
        lines.append(a[None, :] + t[:, None] * (b - a)[None, :])
        spans.append(float(np.linalg.norm(b - a)))
    pts = np.array(lines, np.float32)  # (pairs, n, 2)
    cols = _lip_features(cv2.remap(rgb, pts[..., 0], pts[..., 1], cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE).astype(np.float32))
    # Interior colour: the middle of each opening, where the landmarks agree it is open.
    mid = []
    for k in range(len(ups)):
        lo_t = margin / spans[k]
        hi_t = 1.0 - lo_t
        core = (t > lo_t + 0.3 * (hi_t - lo_t)) & (t < hi_t - 0.3 * (hi_t - lo_t))
        mid.append(cols[k, core])
    mid_c = np.concatenate(mid).mean(axis=0) if mid else lip_c
    lipness = np.linalg.norm(cols - mid_c, axis=2) - np.linalg.norm(cols - lip_c, axis=2)
    new_up, new_lo = [], []
    for k in range(len(ups)):
        s = np.convolve(lipness[k], np.ones(3) / 3, mode="same")
        centre = n // 2
        i = centre
        while i > 0 and s[i] <= 0:
            i -= 1
        j = centre
        while j < n - 1 and s[j] <= 0:
            j += 1
        # Land just inside the lip (edge pixels are half teeth, half lip): closed lips
        # then meet on lip colour, with no rim of teeth along the seam.
        new_up.append(pts[k, min(i + 1, centre)] - EDGE_BIAS_PX * ey)
        new_lo.append(pts[k, max(j - 1, centre)] + EDGE_BIAS_PX * ey)
    shift_up = np.array(new_up) - lm[list(ups), :2]
    shift_lo = np.array(new_lo) - lm[list(los), :2]
    # Smooth the shifts along the contour and cap them: a lip edge is a smooth curve.
    for shifts, ids in ((shift_up, ups), (shift_lo, los)):
        along = shifts @ ey
        along = np.convolve(np.pad(along, 1, mode="edge"), np.ones(3) / 3, mode="valid")
        along = np.clip(along, -margin, margin)
        out[list(ids), :2] = lm[list(ids), :2] + along[:, None] * ey[None, :]
    return out
