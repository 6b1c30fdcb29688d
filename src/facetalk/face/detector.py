"""BlazeFace face detection on ONNX Runtime, with MediaPipe's pre- and post-processing.

The picture is letterboxed into the model's square input (zero border, values in
[-1, 1]), the model scores a fixed grid of SSD anchors, boxes and six keypoints
(eyes, nose tip, mouth, ears) are decoded relative to their anchors, and overlapping
boxes are merged by score-weighted non-maximum suppression. Numbers (anchor
layout, scales, thresholds) are those of MediaPipe's face detection graphs, so the
boxes match mediapipe 0.10.21's (checked by ``tools/export_onnx.py`` and the tests).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MODELS = Path(__file__).parent / "models"


@dataclass(frozen=True)
class DetectorSpec:
    """One detector model and how its output grid is laid out."""

    file: str
    size: int  # square input, pixels
    strides: tuple[int, ...]  # one entry per anchor layer; equal strides share a grid
    anchors_per_layer: int  # anchors per grid cell contributed by each layer
    min_score: float  # default detection threshold


#: Short range: faces within ~2 m of the camera (portraits, selfies). Face Mesh uses it.
SHORT = DetectorSpec("face_detection_short_range.onnx", 128, (8, 16, 16, 16), 2, 0.5)
#: Full range: faces down to ~2 % of the picture; our second chance for small faces.
#: Its threshold is 0.6: mediapipe 0.10.21's FaceDetection(model_selection=1) keeps
#: the full-range graph's own 0.6 whatever min_detection_confidence says (measured).
FULL = DetectorSpec("face_detection_full_range.onnx", 192, (4,), 1, 0.6)

#: Boxes overlapping more than this (intersection over union) are merged.
NMS_IOU = 0.3
#: Raw scores are clipped to this before the sigmoid (as MediaPipe does).
SCORE_CLIP = 100.0


@dataclass(frozen=True)
class Detection:
    """A face found by the detector, in the pixel coordinates of the searched picture."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2): right eye, left eye, nose tip, mouth, right ear, left ear
    score: float


@functools.lru_cache(maxsize=4)
def anchors(spec: DetectorSpec) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], in the order the model emits its boxes.

    Consecutive layers with the same stride share one grid; each cell then holds the
    anchors of all of them. All anchors have unit size (MediaPipe's fixed_anchor_size).
    """
    out = []
    i = 0
    while i < len(spec.strides):
        j = i
        while j < len(spec.strides) and spec.strides[j] == spec.strides[i]:
            j += 1
        per_cell = spec.anchors_per_layer * (j - i)
        n = -(-spec.size // spec.strides[i])
        ys, xs = np.mgrid[0:n, 0:n]
        centres = np.stack([(xs.ravel() + 0.5) / n, (ys.ravel() + 0.5) / n], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def letterbox_matrix(width: int, height: int, size: int) -> tuple[np.ndarray, float, float, float]:
    """Perspective matrix picture -> model input, as MediaPipe's OpenCV converter builds it.

    The picture's centred square of side max(width, height) maps onto the input's
    corners. Returns the matrix and the square's origin (x0, y0) and side.
    """
    side = float(max(width, height))
    return crop_matrix(width / 2.0, height / 2.0, side, side, 0.0, size), \
        width / 2.0 - side / 2.0, height / 2.0 - side / 2.0, side


def crop_matrix(cx: float, cy: float, w: float, h: float, rotation: float, size: int) -> np.ndarray:
    """3x3 matrix taking a rotated rectangle (centre, size in pixels, radians) to size x size.

    Built from the rectangle's corners exactly as MediaPipe's ImageToTensor does
    (cv2.boxPoints, then a perspective fit), so crops agree to the last bit.
    """
    src = cv2.boxPoints(((cx, cy), (w, h), float(np.degrees(rotation)))).astype(np.float32)
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    return cv2.getPerspectiveTransform(src, dst)


def _weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray
                  ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Merge overlapping detections: each cluster becomes its score-weighted mean.

    The best-scoring remaining detection seeds a cluster of everything overlapping it
    by more than :data:`NMS_IOU`; the cluster's box and keypoints are averaged with
    the scores as weights, and it keeps the seed's score.
    """
    order = list(np.argsort(-scores, kind="stable"))
    out = []
    while order:
        seed = boxes[order[0]]
        rest = boxes[order]
        ix0 = np.maximum(seed[0], rest[:, 0])
        iy0 = np.maximum(seed[1], rest[:, 1])
        ix1 = np.minimum(seed[2], rest[:, 2])
        iy1 = np.minimum(seed[3], rest[:, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        area = (rest[:, 2] - rest[:, 0]) * (rest[:, 3] - rest[:, 1])
        seed_area = (seed[2] - seed[0]) * (seed[3] - seed[1])
        iou = np.where(inter > 0, inter / np.maximum(area + seed_area - inter, 1e-12), 0.0)
        members = [order[k] for k in range(len(order)) if iou[k] > NMS_IOU]
        if not members:  # a degenerate seed box overlaps nothing, not even itself
            members = [order[0]]
        w = scores[members][:, None]
        box = (boxes[members] * w).sum(axis=0) / w.sum()
        kp = (kps[members] * w[:, :, None]).sum(axis=0) / w.sum()
        out.append((box, kp, float(scores[order[0]])))
        taken = set(members)
        order = [k for k in order if k not in taken]
    return out


def detect_faces(rgb: np.ndarray, spec: DetectorSpec = SHORT, min_score: float | None = None,
                 device: str | None = None) -> list[Detection]:
    """All faces in an RGB uint8 picture, best first (merged by weighted NMS).

    ``min_score`` defaults to the model's own threshold (:attr:`DetectorSpec.min_score`).
    """
    from ..devices import session

    min_score = spec.min_score if min_score is None else min_score
    h, w = rgb.shape[:2]
    m, x0, y0, side = letterbox_matrix(w, h, spec.size)
    crop = cv2.warpPerspective(np.ascontiguousarray(rgb), m, (spec.size, spec.size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x = (crop.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))[None]
    sess = session(MODELS / spec.file, device)
    raw_boxes, raw_scores = sess.run(None, {sess.get_inputs()[0].name: x})
    raw_boxes, raw_scores = raw_boxes[0], raw_scores[0, :, 0]
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return []
    anc = anchors(spec)[keep]
    r = raw_boxes[keep].astype(np.float64) / spec.size  # offsets in units of the input side
    cx, cy = r[:, 0] + anc[:, 0], r[:, 1] + anc[:, 1]
    bw, bh = r[:, 2], r[:, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    kps = r[:, 4:16].reshape(-1, 6, 2) + anc[:, None, :]
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, kps, sc = boxes[valid], kps[valid], scores[keep][valid].astype(np.float64)
    found = []
    for box, kp, score in _weighted_nms(boxes, kps, sc):
        # Model input [0, 1] -> picture pixels: the letterboxed square.
        px = box * side + np.array([x0, y0, x0, y0])
        found.append(Detection(box=tuple(float(v) for v in px), keypoints=kp * side + np.array([x0, y0]),
                               score=score))
    return found
