"""One pass from a coarse backward map to output pixels: map upsampling fused with the read.

The renderer rasterizes the smooth part of its backward map on a grid ``c`` times
sparser than the output. Upsampling that grid to full-resolution float maps and then
calling ``cv2.remap`` writes and reads two full-size float images per frame (at 1024²
that is 16 MB of traffic and about half of the frame's time). Here each output row
interpolates one row of the coarse map, and every pixel reads the working image
bilinearly at once: the full-resolution map never exists.

The map is upsampled exactly as ``cv2.resize(..., INTER_LINEAR)`` would (pixel-centre
aligned, clamped at the grid's edges), so boxes that the renderer rasterizes again at
full resolution (the lip seam, closing lids) line up with what this pass drew around
them. Reads outside the working image replicate its border, as ``BORDER_REPLICATE``.
Compiled with numba, cached on disk, and free of the GIL so the encoder thread runs
alongside.
"""

from __future__ import annotations

import numpy as np

from ._jit import configure_cache

configure_cache()
from numba import njit  # noqa: E402 - after the cache folder is chosen


@njit(cache=True, nogil=True, fastmath=True)
def _coarse_axis(n: int, c: int, first: int, size: int
                 ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Coarse index and weight for fine positions ``first .. first + n - 1``."""
    idx = np.empty(n, np.int64)
    wgt = np.empty(n, np.float32)
    for i in range(n):
        f = (first + i + 0.5) / c - 0.5
        if f <= 0.0:
            idx[i], wgt[i] = 0, 0.0
        elif f >= size - 1:
            idx[i], wgt[i] = size - 2, 1.0
        else:
            k = int(f)
            idx[i], wgt[i] = k, f - k
    return idx, wgt


@njit(cache=True, nogil=True, fastmath=True)
def _remap(work: np.ndarray, cmx: np.ndarray, cmy: np.ndarray, c: int, fx0: int, fy0: int,
           out: np.ndarray) -> None:  # pragma: no cover - compiled
    h, w = out.shape[0], out.shape[1]
    wh, ww = work.shape[0], work.shape[1]
    ch = out.shape[2]
    cw = cmx.shape[1]
    kx, ax = _coarse_axis(w, c, fx0, cw)
    ky, ay = _coarse_axis(h, c, fy0, cmx.shape[0])
    rowx = np.empty(cw, np.float32)
    rowy = np.empty(cw, np.float32)
    for j in range(h):
        r, b = ky[j], ay[j]
        for q in range(cw):
            rowx[q] = cmx[r, q] + (cmx[r + 1, q] - cmx[r, q]) * b
            rowy[q] = cmy[r, q] + (cmy[r + 1, q] - cmy[r, q]) * b
        for i in range(w):
            k, a = kx[i], ax[i]
            sx = rowx[k] + (rowx[k + 1] - rowx[k]) * a
            sy = rowy[k] + (rowy[k + 1] - rowy[k]) * a
            x0 = int(np.floor(sx))
            y0 = int(np.floor(sy))
            u = np.float32(sx - x0)
            v = np.float32(sy - y0)
            if x0 >= 0 and y0 >= 0 and x0 + 1 < ww and y0 + 1 < wh:
                xa, xb, ya, yb = x0, x0 + 1, y0, y0 + 1
            else:
                xa = min(max(x0, 0), ww - 1)
                xb = min(max(x0 + 1, 0), ww - 1)
                ya = min(max(y0, 0), wh - 1)
                yb = min(max(y0 + 1, 0), wh - 1)
            one = np.float32(1.0)
            w00 = (one - u) * (one - v)
            w01 = u * (one - v)
            w10 = (one - u) * v
            w11 = u * v
            for p in range(ch):
                val = (w00 * np.float32(work[ya, xa, p]) + w01 * np.float32(work[ya, xb, p])
                       + w10 * np.float32(work[yb, xa, p]) + w11 * np.float32(work[yb, xb, p]))
                out[j, i, p] = np.uint8(val + np.float32(0.5))


@njit(cache=True, nogil=True, fastmath=True)
def _upsample(cmx: np.ndarray, cmy: np.ndarray, c: int, fx0: int, fy0: int,
              map_x: np.ndarray, map_y: np.ndarray) -> None:  # pragma: no cover - compiled
    h, w = map_x.shape
    kx, ax = _coarse_axis(w, c, fx0, cmx.shape[1])
    ky, ay = _coarse_axis(h, c, fy0, cmx.shape[0])
    for j in range(h):
        r, b = ky[j], ay[j]
        for i in range(w):
            k, a = kx[i], ax[i]
            # Rows first, then columns: the same order of operations as _remap.
            xl = cmx[r, k] + (cmx[r + 1, k] - cmx[r, k]) * b
            xr = cmx[r, k + 1] + (cmx[r + 1, k + 1] - cmx[r, k + 1]) * b
            yl = cmy[r, k] + (cmy[r + 1, k] - cmy[r, k]) * b
            yr = cmy[r, k + 1] + (cmy[r + 1, k + 1] - cmy[r, k + 1]) * b
            map_x[j, i] = xl + (xr - xl) * a
            map_y[j, i] = yl + (yr - yl) * a


def remap_coarse(work: np.ndarray, cmx: np.ndarray, cmy: np.ndarray, c: int,
                 origin: tuple[int, int], out: np.ndarray) -> None:
    """Fill ``out`` (H, W, C uint8) by reading ``work`` bilinearly through the coarse map.

    ``cmx``/``cmy`` (float32) hold the map every ``c`` output pixels; ``origin`` is the
    position of ``out[0, 0]`` on the fine grid the coarse one was made for (fine pixel
    ``f`` sits at coarse coordinate ``(f + 0.5) / c - 0.5``).
    """
    _remap(work, cmx, cmy, c, origin[0], origin[1], out)


def upsample_coarse(cmx: np.ndarray, cmy: np.ndarray, c: int, origin: tuple[int, int],
                    map_x: np.ndarray, map_y: np.ndarray) -> None:
    """The full-resolution map over one box, exactly as :func:`remap_coarse` reads it."""
    _upsample(cmx, cmy, c, origin[0], origin[1], map_x, map_y)
