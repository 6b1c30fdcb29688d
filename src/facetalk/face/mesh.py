"""The 478-point face mesh on ONNX Runtime: rotated face crop, landmarks, tracking.

Like MediaPipe's Face Mesh graph: a detection (or the previous frame's landmarks)
gives a square region rotated so the eyes lie level, 1.5 times the face; that region
is resampled to the model's 192x192 input; the model's landmarks (already merged
with its lip, eye and iris refinements inside the ONNX graph) are projected back to
the picture, and a face-presence score below the threshold drops them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .detector import MODELS, SHORT, Detection, crop_matrix, detect_faces

MESH_FILE = "face_landmark_with_attention.onnx"
MESH_SIZE = 192
#: The region around a face is this many times its detected (or landmark) extent.
ROI_SCALE = 1.5
#: Landmarks whose rotation defines "eyes level" when tracking: outer eye corners.
TRACK_ROTATION = (33, 263)


@dataclass(frozen=True)
class Roi:
    """A square region of the picture, rotated (radians, clockwise on screen)."""

    cx: float
    cy: float
    size: float
    rotation: float


def _normalize_radians(a: float) -> float:
    return a - 2 * math.pi * math.floor((a + math.pi) / (2 * math.pi))


def _roi(x0: float, y0: float, x1: float, y1: float, start: np.ndarray, end: np.ndarray) -> Roi:
    """Square region around a box, rotated so that ``start -> end`` points along +x."""
    rotation = _normalize_radians(-math.atan2(-(float(end[1]) - float(start[1])),
                                              float(end[0]) - float(start[0])))
    side = max(x1 - x0, y1 - y0) * ROI_SCALE
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, side, rotation)


def roi_from_detection(det: Detection) -> Roi:
    """The landmark model's region for a detected face (rotation from the two eyes)."""
    return _roi(*det.box, det.keypoints[0], det.keypoints[1])


def roi_from_landmarks(lm: np.ndarray) -> Roi:
    """The next frame's region from this frame's landmarks (tracking)."""
    x0, y0 = lm[:, :2].min(axis=0)
    x1, y1 = lm[:, :2].max(axis=0)
    return _roi(float(x0), float(y0), float(x1), float(y1), lm[TRACK_ROTATION[0]], lm[TRACK_ROTATION[1]])


def landmarks_in_roi(rgb: np.ndarray, roi: Roi, device: str | None = None) -> tuple[np.ndarray, float]:
    """(478, 3) landmarks in picture pixels (z in pixels, + = away) and the presence score."""
    from ..devices import session

    m = crop_matrix(roi.cx, roi.cy, roi.size, roi.size, roi.rotation, MESH_SIZE)
    crop = cv2.warpPerspective(np.ascontiguousarray(rgb), m, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    x = (crop.astype(np.float32) * np.float32(1.0 / 255.0))[None]
    sess = session(MODELS / MESH_FILE, device)
    raw, flag = sess.run(None, {sess.get_inputs()[0].name: x})
    raw = raw[0].astype(np.float64) / MESH_SIZE  # crop units, [0, 1]
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    dx, dy = raw[:, 0] - 0.5, raw[:, 1] - 0.5
    out = np.empty((raw.shape[0], 3), np.float32)
    out[:, 0] = roi.cx + (c * dx - s * dy) * roi.size
    out[:, 1] = roi.cy + (s * dx + c * dy) * roi.size
    out[:, 2] = raw[:, 2] * roi.size
    score = 1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[0], -100.0, 100.0))))
    return out, score


class FaceMesh:
    """Face Mesh over one picture (``static=True``) or the frames of a video.

    In video mode, a face found in one frame is looked for in the next one inside the
    region its landmarks give, without running the detector (as MediaPipe's tracking
    mode does); the detector runs again when the face is lost. Unlike MediaPipe, a
    lost face is searched for again in the same frame rather than the next one.
    """

    def __init__(self, max_faces: int = 1, static: bool = True, min_detection: float = 0.5,
                 min_presence: float = 0.5, device: str | None = None) -> None:
        self.max_faces = max_faces
        self.static = static
        self.min_detection = min_detection
        self.min_presence = min_presence
        self.device = device
        self._tracked: list[Roi] = []

    def _detect(self, rgb: np.ndarray) -> list[Roi]:
        dets = detect_faces(rgb, SHORT, self.min_detection, self.device)[:self.max_faces]
        return [roi_from_detection(d) for d in dets]

    def _run(self, rgb: np.ndarray, rois: list[Roi]) -> tuple[list[np.ndarray], list[Roi]]:
        faces, nxt = [], []
        for roi in rois:
            lm, score = landmarks_in_roi(rgb, roi, self.device)
            if score < self.min_presence:
                continue
            faces.append(lm)
            nxt.append(roi_from_landmarks(lm))
        return faces, nxt

    def process(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Landmarks, (478, 3) float32 in pixels, of each face found (at most ``max_faces``)."""
        if self.static or not self._tracked:
            faces, nxt = self._run(rgb, self._detect(rgb))
        else:
            faces, nxt = self._run(rgb, self._tracked)
            if not faces:
                faces, nxt = self._run(rgb, self._detect(rgb))
        if not self.static:
            self._tracked = nxt
        return faces

    def reset(self) -> None:
        """Forget the tracked faces (the next frame runs the detector)."""
        self._tracked = []
