"""Face detection and the 478-point face mesh on ONNX Runtime.

The models are MediaPipe's (Apache-2.0; see ``models/NOTICE``): the BlazeFace
short- and full-range detectors and the Face Mesh model with attention (lips, eyes
and irises refined: 478 points), converted to ONNX by ``tools/export_onnx.py`` and
checked there against mediapipe 0.10.21. This package reproduces the pre- and
post-processing of MediaPipe's Face Mesh graph (letterboxed detection, SSD anchor
decoding, weighted non-maximum suppression, the rotated face crop, projection back to
the picture, and tracking from the previous frame's landmarks) in NumPy and OpenCV,
so neither mediapipe nor TensorFlow is needed at run time.
"""

from __future__ import annotations

from .detector import Detection, detect_faces
from .mesh import FaceMesh, Roi, landmarks_in_roi, roi_from_detection, roi_from_landmarks

__all__ = ["Detection", "FaceMesh", "Roi", "detect_faces", "landmarks_in_roi", "roi_from_detection",
           "roi_from_landmarks"]
