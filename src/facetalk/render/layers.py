"""The mouth and eye layers, composited in one compiled pass per frame.

Inside the mouth, back to front: the cavity (never black: dark red-brown from the
portrait's own lips, darker deep inside and towards the corners, lighter as the mouth
opens wider), the jaw's layer (tongue and lower teeth, carried by the jaw), the upper
teeth (on the skull: the portrait's own, or drawn tooth by tooth; see interior.py);
then the lips' shadows (the upper lip's underside, the lower lip's wet inner edge), all
clipped by the lips.

Inside an eye: the eyeball under head motion only, so a closing lid slides over the
iris instead of squashing it; as the lid closes, what it covers becomes lid skin (the
photo's own, stretched from just above) with a lash line, so a closed eye reads as
closed.

Each opening is described per pixel column by its upper and lower contour (the
densified inner lip or lid margin), so coverage is computed analytically with the
photo's own edge width, without rasterizing masks or blurring them.
"""

from __future__ import annotations

import numpy as np

from .._jit import configure_cache

configure_cache()
from numba import njit  # noqa: E402 - after the cache folder is chosen


@njit(cache=True, nogil=True, inline="always")
def _clamp01(v: float) -> float:  # pragma: no cover - compiled
    return 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)


@njit(cache=True, nogil=True, inline="always")
def _slope_factor(ys: np.ndarray, x: int) -> float:  # pragma: no cover - compiled
    """sqrt(1 + slope^2) of a per-column contour at column ``x`` (capped at 6): how much
    taller than the edge width a vertical coverage ramp must be to match the distance
    to a sloping contour."""
    n = ys.shape[0]
    a = ys[x - 1] if x > 0 else ys[x]
    b = ys[x + 1] if x + 1 < n else ys[x]
    if not (np.isfinite(a) and np.isfinite(b)):
        return 1.0
    m = 0.5 * (b - a) if (x > 0 and x + 1 < n) else b - a
    return min(np.sqrt(1.0 + m * m), 6.0)


@njit(cache=True, nogil=True, inline="always")
def _sample4(img: np.ndarray, x: float, y: float, out: np.ndarray) -> None:  # pragma: no cover
    """Bilinear RGBA read of a float32 (h, w, 4) layer; transparent outside."""
    h, w = img.shape[0], img.shape[1]
    x0 = int(np.floor(x))
    y0 = int(np.floor(y))
    fx = x - x0
    fy = y - y0
    for c in range(4):
        out[c] = 0.0
    for dy in range(2):
        yy = y0 + dy
        if yy < 0 or yy >= h:
            continue
        wy = fy if dy else 1.0 - fy
        for dx in range(2):
            xx = x0 + dx
            if xx < 0 or xx >= w:
                continue
            wgt = wy * (fx if dx else 1.0 - fx)
            a = img[yy, xx, 3] * wgt
            for c in range(3):
                out[c] += img[yy, xx, c] * a
            out[3] += a
    if out[3] > 1e-6:
        for c in range(3):
            out[c] /= out[3]


@njit(cache=True, nogil=True, inline="always")
def _interior_at(x: int, y: int, yu: float, yl: float, s: float, aff: np.ndarray,
                 origin: np.ndarray, jaw_shift: np.ndarray, upper: np.ndarray, jaw: np.ndarray,
                 grain: np.ndarray, cavity: np.ndarray, lift: float, own: float, ppi: float,
                 rim_w: float, shadow_w: float, su: np.ndarray, sj: np.ndarray, sa: np.ndarray,
                 col3: np.ndarray) -> None:  # pragma: no cover - compiled
    """The mouth interior's colour at box pixel (x, y) of an opening from ``yu`` to ``yl``
    (``s``: -1..1 across the mouth), into ``col3``: cavity, jaw and upper-teeth layers,
    their shadows and the photo's grain (see :func:`composite_mouth`)."""
    t = _clamp01((y - yu) / (yl - yu))
    wx = aff[0, 0] * x + aff[0, 1] * y + aff[0, 2] - origin[0]
    wy = aff[1, 0] * x + aff[1, 1] * y + aff[1, 2] - origin[1]
    # Cavity: dark red-brown, darkest deep under the upper teeth, lighter towards
    # the tongue and the lips, darker towards the corners (the buccal corridor).
    depth = 0.55 + 0.45 * t * t
    side = 1.0 - 0.5 * s * s
    dy = min(y - yu, yl - y)
    near = np.exp(-(dy if dy > 0.0 else 0.0) / rim_w)
    gi = int(wy + 0.5)
    gj = int(wx + 0.5)
    g = 0.0
    mottle = 1.0
    if 0 <= gi < grain.shape[0] and 0 <= gj < grain.shape[1]:
        g = grain[gi, gj, 0]
        mottle = 1.0 + grain[gi, gj, 1]
    _sample4(jaw, wx - jaw_shift[0], wy - jaw_shift[1], sj)
    _sample4(upper, wx, wy, su)
    # The upper teeth shade what lies just below them.
    _sample4(upper, wx, wy - 0.025 * ppi, sa)
    tooth_shadow = 1.0 - 0.35 * sa[3] * (1.0 - su[3])
    lip_shadow = 1.0 - 0.5 * np.exp(-(y - yu if y > yu else 0.0) / shadow_w)
    low_shadow = 1.0 - 0.2 * np.exp(-(yl - y if y < yl else 0.0) / rim_w)
    synth = 1.0 - own * su[3]
    for c in range(3):
        cav = cavity[c] * lift * depth * side * mottle * (1.0 + 0.5 * near)
        col = cav * (1.0 - sj[3]) + sj[c] * tooth_shadow * (0.7 + 0.3 * lift) * sj[3]
        col = col * (1.0 - su[3]) + su[c] * su[3]
        col = col * lip_shadow * low_shadow + g * synth
        # However shadows and grain stack up, depth stays dark red-brown, not black.
        col3[c] = max(col, 0.5 * cavity[c])


@njit(cache=True, nogil=True)
def composite_mouth(out: np.ndarray, y_up: np.ndarray, y_lo: np.ndarray, own_up: np.ndarray,
                    own_lo: np.ndarray, aff: np.ndarray,
                    jaw_shift: np.ndarray, upper: np.ndarray, jaw: np.ndarray,
                    grain: np.ndarray, origin: np.ndarray, params: np.ndarray,
                    cavity: np.ndarray, lip: np.ndarray) -> None:  # pragma: no cover
    """Composite the mouth interior into ``out`` (a uint8 RGB box, in place).

    ``y_up``/``y_lo``: per box column, the opening's upper and lower edge (box rows).
    ``own_up``/``own_lo``: where the portrait's own opening lies under head motion (inf
    and -inf where it has none): while the mouth is open no wider than in the photo, the
    photo's own pixels (already in ``out``) stay there, so a still mouth is the portrait;
    they give way to the layers below as it opens wider.
    ``aff`` (2, 3): box pixel -> working-image pixel under head motion only (the skull);
    ``jaw_shift``: the jaw's displacement in working-image pixels. ``upper``/``jaw``: the
    RGBA layers of :mod:`facetalk.render.interior` from ``origin``; ``grain``: the photo's
    noise and the cavity's mottle.
    ``params``: centre x (box column), half width, output px per IOD, openness 0..1,
    edge width (px), own-teeth flag, how much the mouth still looks as in the photo
    (1 at rest, 0 once it opens a little wider than the photo's own opening), and the
    opening's left and right ends (box columns, fractional).
    Layers, back to front: cavity, jaw (tongue and lower teeth), upper teeth; then the
    lips' shadows, all clipped by the lips.
    """
    bh, bw = out.shape[0], out.shape[1]
    xc, half, ppi = params[0], params[1], params[2]
    openness, edge_w, own, still = params[3], params[4], params[5], params[6]
    x_left, x_right = params[7], params[8]
    rim_w = max(1.0, 0.02 * ppi)
    shadow_w = max(1.0, 0.03 * ppi)
    thin_h = max(1.5, 0.035 * ppi)
    lift = 0.35 + 0.65 * openness  # more light gets in as the mouth opens
    su = np.empty(4)
    sj = np.empty(4)
    sa = np.empty(4)
    col3 = np.empty(3)
    lip_dark = np.empty(3)
    for c in range(3):
        lip_dark[c] = 0.5 * lip[c]

    for x in range(bw):
        yu = y_up[x]
        yl = y_lo[x]
        open_h = yl - yu
        if open_h <= 0.02:
            continue
        # Coverage falls off with the distance to the contour, not the height above it:
        # where a contour runs steeply (the sides of a wide-open mouth) the vertical ramp
        # widens with the slope, so steep edges are as soft as level ones, not stair-stepped.
        ew_u = edge_w * _slope_factor(y_up, x)
        ew_l = edge_w * _slope_factor(y_lo, x)
        # ...and the columns at the opening's two ends are only partly inside it.
        ends = _clamp01((x - x_left) / edge_w + 0.5) * _clamp01((x_right - x) / edge_w + 0.5)
        s = (x - xc) / half
        s = -1.0 if s < -1.0 else (1.0 if s > 1.0 else s)
        thin = _clamp01(open_h / thin_h)
        ou = own_up[x]
        ol = own_lo[x]
        rest = still if (np.isfinite(ou) and np.isfinite(ol)) else 0.0
        y_start = max(0, int(yu - max(4.0 * rim_w, 0.5 * ew_u)) - 1)
        y_end = min(bh - 1, int(yl + max(4.0 * rim_w, 0.5 * ew_l)) + 1)
        for y in range(y_start, y_end + 1):
            a = _clamp01((y - yu) / ew_u + 0.5) * _clamp01((yl - y) / ew_l + 0.5) * ends
            # The lips around the opening: the upper lip's underside in shadow, the lower
            # lip's inner, wet surface catching the light from above.
            lip_k = 1.0
            if y < yu + 0.5:
                lip_k = 1.0 - 0.22 * np.exp(-(yu - y) / rim_w) * thin * (1.0 - rest)
            elif y > yl - 0.5:
                lip_k = 1.0 + 0.10 * np.exp(-(y - yl) / rim_w) * thin * openness * (1.0 - rest)
            if a <= 0.0:
                if lip_k != 1.0:
                    for c in range(3):
                        v = out[y, x, c] * lip_k
                        out[y, x, c] = np.uint8(min(255.0, max(0.0, v + 0.5)))
                continue
            _interior_at(x, y, yu, yl, s, aff, origin, jaw_shift, upper, jaw, grain, cavity,
                         lift, own, ppi, rim_w, shadow_w, su, sj, sa, col3)
            keep = 0.0
            if rest > 0.0:  # the photo's own opening, wherever it has any coverage
                keep = rest * _clamp01((y - ou) / edge_w + 1.5) * _clamp01((ol - y) / edge_w + 1.5)
            for c in range(3):
                # A hairline opening shows lip in shadow, not a dark slit.
                col = col3[c] * thin + lip_dark[c] * (1.0 - thin)
                v = a * col + (1.0 - a) * out[y, x, c] * lip_k
                if keep > 0.0:
                    v = keep * out[y, x, c] + (1.0 - keep) * v
                out[y, x, c] = np.uint8(min(255.0, max(0.0, v + 0.5)))


@njit(cache=True, nogil=True)
def composite_eye(out: np.ndarray, inner_img: np.ndarray, y_up: np.ndarray, y_lo: np.ndarray,
                  rest_up: np.ndarray, lid: np.ndarray, lash: np.ndarray,
                  params: np.ndarray) -> None:  # pragma: no cover - compiled
    """Composite a (closing) eye into ``out`` (a uint8 RGB box, in place).

    Inside the opening (``y_up`` .. ``y_lo`` per column) the eyeball under head motion
    (``inner_img``) shows; the lid slides over it. The part of the eye the lid now covers
    (from its resting margin ``rest_up`` down to its margin now) and the photo's dark lash
    band that slid down with it are repainted as lid skin (``lid``, shaded darker towards
    the lashes) with a soft lash line (``lash``) at the margin, so a closed eye reads as
    closed, not as a dark slit. ``params``: px per IOD, edge width, closure 0..1.
    """
    bh, bw = out.shape[0], out.shape[1]
    ppi, edge_w, closure = params[0], params[1], params[2]
    lash_w = max(0.7, 0.009 * ppi)
    band_max = 0.055 * ppi
    for x in range(bw):
        yu = y_up[x]
        yl = y_lo[x]
        if not (np.isfinite(yu) and np.isfinite(yl)):
            continue
        moved = yu - rest_up[x] if np.isfinite(rest_up[x]) else 0.0
        band = min(0.9 * moved, band_max) if moved > 0.0 else 0.0
        top = yu - band
        y_start = max(0, int(top - 2.0 * lash_w) - 1)
        y_end = min(bh - 1, int(yl + edge_w) + 1)
        # The column as warped, before anything is painted (the lid's skin is read from it).
        col = np.empty((bh, 3))
        for y in range(bh):
            for c in range(3):
                col[y, c] = out[y, x, c]
        for y in range(y_start, y_end + 1):
            a = _clamp01((y - yu) / edge_w + 0.5) * _clamp01((yl - y) / edge_w + 0.5)
            w = 0.0
            src = 0
            shade = 1.0
            if band > 0.3 and y <= yu + 0.5:
                # What the lid now covers, and the dark lash band of the photo that slid
                # down with it, become the lid's skin: the skin just above, stretched over
                # it (the photo's own texture), a little darker towards the lashes.
                w = _clamp01((y - top) / max(2.0, 0.35 * band)) * (1.0 - a)
                src = int(min(max(top - 1.0 - 0.5 * (y - top), 0.0), bh - 1.0))
                shade = 1.0 - 0.12 * _clamp01((y - top) / max(band, 1.0))
            k = 0.0
            if closure > 0.0:
                d = (yu - y) / lash_w
                k = np.exp(-d * d) * closure * (1.0 - a)
            for c in range(3):
                v = col[y, c]
                if a > 0.0:
                    v = a * inner_img[y, x, c] + (1.0 - a) * v
                if w > 0.0:
                    v = v * (1.0 - w) + (0.85 * col[src, c] + 0.15 * lid[c]) * shade * w
                if k > 0.0:
                    v = v * (1.0 - 0.6 * k) + lash[c] * 0.6 * k
                out[y, x, c] = np.uint8(min(255.0, max(0.0, v + 0.5)))
