"""Exact backward maps for a piecewise-affine warp, by rasterizing destination triangles.

For every output pixel inside a destination triangle, the barycentric coordinates of
the pixel centre give its exact source position on the matching source triangle. No
fixed-point inversion (which fails where the lips part) and no coarse grid (which
blurs). Triangles are drawn in order, later ones over earlier ones, and each pixel
records the kind of the triangle that won it.

Compiled with numba (cached to disk after the first run); the inner loop steps edge
functions incrementally, so a 1024x1024 region costs a few milliseconds.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=False)
def _raster(dst: np.ndarray, src: np.ndarray, kinds: np.ndarray, map_x: np.ndarray,
            map_y: np.ndarray, label: np.ndarray, only_kind: int) -> None:  # pragma: no cover
    h, w = map_x.shape
    for t in range(dst.shape[0]):
        k = kinds[t]
        if only_kind >= 0 and k != only_kind:
            continue
        x0, y0 = dst[t, 0, 0], dst[t, 0, 1]
        x1, y1 = dst[t, 1, 0], dst[t, 1, 1]
        x2, y2 = dst[t, 2, 0], dst[t, 2, 1]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-9:
            continue
        xmin = max(int(np.ceil(min(x0, min(x1, x2)) - 1e-4)), 0)
        xmax = min(int(np.floor(max(x0, max(x1, x2)) + 1e-4)), w - 1)
        ymin = max(int(np.ceil(min(y0, min(y1, y2)) - 1e-4)), 0)
        ymax = min(int(np.floor(max(y0, max(y1, y2)) + 1e-4)), h - 1)
        if xmin > xmax or ymin > ymax:
            continue
        inv = 1.0 / area
        # Barycentric weight of vertex i is an affine function of (x, y):
        #   b_i = a_i * x + c_i * y + d_i
        a0 = (y1 - y2) * inv
        c0 = (x2 - x1) * inv
        d0 = (x1 * y2 - x2 * y1) * inv
        a1 = (y2 - y0) * inv
        c1 = (x0 - x2) * inv
        d1 = (x2 * y0 - x0 * y2) * inv
        sx0, sy0 = src[t, 0, 0], src[t, 0, 1]
        sx1, sy1 = src[t, 1, 0], src[t, 1, 1]
        sx2, sy2 = src[t, 2, 0], src[t, 2, 1]
        # Source position is affine in (x, y) too: s = b0*s0 + b1*s1 + (1-b0-b1)*s2.
        mx_a = a0 * (sx0 - sx2) + a1 * (sx1 - sx2)
        mx_c = c0 * (sx0 - sx2) + c1 * (sx1 - sx2)
        mx_d = d0 * (sx0 - sx2) + d1 * (sx1 - sx2) + sx2
        my_a = a0 * (sy0 - sy2) + a1 * (sy1 - sy2)
        my_c = c0 * (sy0 - sy2) + c1 * (sy1 - sy2)
        my_d = d0 * (sy0 - sy2) + d1 * (sy1 - sy2) + sy2
        eps = -1e-6
        for y in range(ymin, ymax + 1):
            b0 = a0 * xmin + c0 * y + d0
            b1 = a1 * xmin + c1 * y + d1
            for x in range(xmin, xmax + 1):
                if b0 >= eps and b1 >= eps and 1.0 - b0 - b1 >= eps:
                    map_x[y, x] = mx_a * x + mx_c * y + mx_d
                    map_y[y, x] = my_a * x + my_c * y + my_d
                    label[y, x] = k
                b0 += a0
                b1 += a1


def rasterize(dst_xy: np.ndarray, src_xy: np.ndarray, tris: np.ndarray, kinds: np.ndarray,
              map_x: np.ndarray, map_y: np.ndarray, label: np.ndarray,
              only_kind: int = -1) -> None:
    """Draw triangles ``tris`` (vertex indices) into the maps, in order.

    ``dst_xy`` are vertex positions in the maps' pixel grid (pixel centres at integers),
    ``src_xy`` the matching source positions written into ``map_x``/``map_y``.
    Pixels not covered keep their values. ``only_kind`` restricts to one triangle kind.
    """
    dst = np.ascontiguousarray(dst_xy[tris], dtype=np.float64)
    src = np.ascontiguousarray(src_xy[tris], dtype=np.float64)
    _raster(dst, src, np.ascontiguousarray(kinds, dtype=np.uint8), map_x, map_y, label,
            int(only_kind))
