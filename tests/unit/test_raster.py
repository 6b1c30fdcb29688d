"""The scanline rasterizer against a brute-force barycentric reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import Delaunay

from facetalk.render.raster import rasterize


def reference(dst: np.ndarray, src: np.ndarray, tris: np.ndarray, shape: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: barycentric test against every triangle, later triangles win."""
    h, w = shape
    mx = np.full(shape, -1.0)
    my = np.full(shape, -1.0)
    cover = np.zeros(shape, bool)
    ys, xs = np.mgrid[0:h, 0:w]
    p = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
    for t in tris:
        a, b, c = dst[t]
        m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
        if abs(np.linalg.det(m)) < 1e-9:
            continue
        uv = np.linalg.solve(m, (p - a).T).T
        l1, l2 = uv[:, 0], uv[:, 1]
        l0 = 1 - l1 - l2
        inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        s = src[t]
        val = l0[:, None] * s[0] + l1[:, None] * s[1] + l2[:, None] * s[2]
        idx = np.nonzero(inside)[0]
        mx.reshape(-1)[idx] = val[idx, 0]
        my.reshape(-1)[idx] = val[idx, 1]
        cover.reshape(-1)[idx] = True
    return mx, my, cover


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_on_a_random_mesh(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (48, 64)
    pts = rng.uniform([-4, -4], [68, 52], size=(40, 2))
    pts = np.concatenate([pts, [[-5, -5], [70, -5], [-5, 55], [70, 55]]])
    tris = Delaunay(pts).simplices.astype(np.int32)
    src = pts * 1.7 + rng.normal(0, 2, pts.shape)  # any affine-per-triangle target
    mx = np.full(shape, -1.0, np.float32)
    my = np.full(shape, -1.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    rasterize(pts, src, tris, np.ones(len(tris), np.uint8), mx, my, lab)
    rx, ry, cover = reference(pts, src, tris, shape)
    assert cover.all() and (lab == 1).all()  # a mesh over the grid leaves no cracks
    # Shared edges may be owned by either neighbour; both give the same position there.
    assert np.abs(mx - rx).max() < 1e-3 and np.abs(my - ry).max() < 1e-3


def test_flat_and_degenerate_triangles_and_order() -> None:
    shape = (20, 20)
    dst = np.array([[2, 2], [15, 2], [2, 15], [15, 15], [8, 8]], float)
    src = dst * 2.0
    tris = np.array([[0, 1, 2], [1, 3, 2], [0, 4, 4]], np.int32)  # flat top, flat bottom, degenerate
    mx = np.zeros(shape, np.float32)
    my = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.uint8)
    rasterize(dst, src, tris, np.array([1, 2, 3], np.uint8), mx, my, lab)
    assert lab[2, 2:15].tolist() == [1] * 13  # the flat top row is covered...
    assert lab[2, 15] == 2  # ...up to the vertex it shares with the later triangle
    assert lab[15, 3:16].tolist() == [2] * 13  # the flat bottom row, by the later triangle
    assert not (lab == 3).any()
    inside = lab > 0
    ys, xs = np.nonzero(inside)
    assert np.allclose(mx[inside], 2 * xs) and np.allclose(my[inside], 2 * ys)
    assert lab[0, 0] == 0 and mx[0, 0] == 0  # uncovered pixels keep their values
