"""Named index sets of the 478-point Face Mesh and its triangle list.

"Right"/"left" are the subject's: the subject's right eye is on the image's left.
Contours run from one corner to the other so that upper and lower contours of the
same feature pair up index by index.
"""

from __future__ import annotations

import functools

import numpy as np

MOUTH_INNER_UP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
MOUTH_INNER_LO = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_OUTER_UP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
MOUTH_OUTER_LO = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
R_EYE_UP = (33, 246, 161, 160, 159, 158, 157, 173, 133)
R_EYE_LO = (33, 7, 163, 144, 145, 153, 154, 155, 133)
L_EYE_UP = (263, 466, 388, 387, 386, 385, 384, 398, 362)
L_EYE_LO = (263, 249, 390, 373, 374, 380, 381, 382, 362)
# Rings above the upper lid margin: just above the lashes, and halfway to the brow.
R_LID_CREASE = (247, 30, 29, 27, 28, 56, 190)
R_LID_UPPER = (113, 225, 224, 223, 222, 221, 189)
L_LID_CREASE = (467, 260, 259, 257, 258, 286, 414)
L_LID_UPPER = (342, 445, 444, 443, 442, 441, 413)
R_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
L_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
R_IRIS = (468, 469, 470, 471, 472)
L_IRIS = (473, 474, 475, 476, 477)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379,
             378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127,
             162, 21, 54, 103, 67, 109)
NOSE_TIP = 1
NOSE_BASE = (2, 98, 327, 164)
CHIN = 152
FOREHEAD = 10


@functools.lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """The (852, 3) triangles of the 468-vertex face mesh.

    Shipped as data (``face/models/face_mesh_triangles.txt``, written by
    ``tools/export_onnx.py`` from mediapipe's tessellation edge list), so no mediapipe
    is needed at run time. The mesh has holes at the mouth and both eyes, which is
    what the renderer wants.
    """
    from importlib import resources

    text = (resources.files("facetalk") / "face" / "models" / "face_mesh_triangles.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return np.array(rows, dtype=np.int32).reshape(-1, 3)
