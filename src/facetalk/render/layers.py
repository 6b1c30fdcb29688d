"""The mouth and eye layers, composited in one compiled pass per frame.

Inside the mouth (or an eye) three layers meet:

* skin: the warped portrait (lips, lids), already in the frame;
* interior: what the portrait itself shows in its opening (its real teeth, its
  eyeballs), carried by the head motion only -- so teeth never stretch with the jaw
  and a closing lid slides over the iris instead of squashing it;
* cavity (mouth only): where the mouth opens wider than in the portrait, a synthesized
  dark mouth with a tongue hint (and an upper-teeth band if the portrait shows no
  teeth), coloured from the portrait's own lips and skin.

The opening is described per pixel column by its upper and lower contour (the
densified inner lip or lid margin), so coverage is computed analytically: edges are
antialiased exactly, without rasterizing masks or blurring them. Lips darken a little
where they curl into the synthesized dark, which reads as depth rather than a cut-out.
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
def _smooth01(v: float) -> float:  # pragma: no cover - compiled
    t = _clamp01(v)
    return t * t * (3.0 - 2.0 * t)


@njit(cache=True, nogil=True, inline="always")
def _tongue(t: float, s: float, tongue_on: float) -> float:  # pragma: no cover - compiled
    """Tongue coverage low in a wide opening (t: 0 top .. 1 bottom, s: -1 .. 1 across)."""
    ta = 0.0
    if tongue_on > 0.0:
        q = 1.0 - (s / 0.7) ** 2
        ta = _smooth01((t - 0.6) / 0.35) * (q if q > 0.0 else 0.0) * 0.8 * tongue_on
    return ta


@njit(cache=True, nogil=True, inline="always")
def _teeth(tb: float, s: float, synth_teeth: float) -> tuple[float, float]:  # pragma: no cover
    """Synthetic upper teeth's coverage and shade at band position ``tb`` (0 = the lip)."""
    tooth_a = 0.0
    tooth_shade = 0.0
    if synth_teeth > 0.0 and tb >= -0.5:
        # Upper teeth just under the lip: in the lip's shadow at the top, fading
        # into the dark below and towards the corners; never a flat bright bar.
        edge = 1.0 - abs(s) ** 2.2
        edge = edge ** 0.8 if edge > 0.0 else 0.0
        tooth_a = _smooth01(_clamp01(1.0 - tb) * 2.0) * edge * 0.9
        lip_shadow = 0.45 + 0.55 * _smooth01(tb * 2.5 + 0.2)
        tooth_shade = lip_shadow * (0.8 - 0.15 * _clamp01(tb)) * (0.5 + 0.5 * edge)
    return tooth_a, tooth_shade


@njit(cache=True, nogil=True)
def composite_opening(out: np.ndarray, inner_img: np.ndarray, y_up: np.ndarray,
                      y_lo: np.ndarray, own_up: np.ndarray, own_lo: np.ndarray,
                      own_grow: float, params: np.ndarray, lip: np.ndarray,
                      teeth: np.ndarray, mode: int) -> None:  # pragma: no cover
    """Composite an opening into ``out`` (a uint8 RGB box, modified in place).

    ``inner_img``: the interior layer (the portrait under head motion only), same box.
    ``y_up``/``y_lo``: per box column, the opening's upper and lower edge (box pixel
    rows; lo <= up means closed). ``own_up``/``own_lo``: where the portrait's own
    interior (teeth) lies in that layer, ``own_grow`` pixels added upwards.
    ``params``: centre x (box column), half width, pixels per IOD, tongue amount, rim
    strength, synthetic-teeth flag. ``mode`` 0 = mouth (with cavity), 1 = eye.
    """
    bh, bw = out.shape[0], out.shape[1]
    xc, half, ppi = params[0], params[1], params[2]
    tongue_on, rim_k, synth_teeth = params[3], params[4], params[5]
    near_w = max(1.0, 0.017 * ppi)
    rim_w = max(1.0, 0.025 * ppi)
    band_max = 0.075 * ppi
    for x in range(bw):
        yu = y_up[x]
        yl = y_lo[x]
        open_h = yl - yu
        if open_h <= 0.02:
            continue
        s = (x - xc) / half
        s = -1.0 if s < -1.0 else (1.0 if s > 1.0 else s)
        ou = own_up[x] - own_grow
        ol = own_lo[x] + 1.0
        # Is the dark next to the lips synthesized (shade the lips) or the portrait's own?
        # Judged one pixel inside the opening (or at its middle when it is thinner).
        yt = min(yu + 1.0, 0.5 * (yu + yl))
        yb = max(yl - 1.0, 0.5 * (yu + yl))
        own_near_top = _clamp01(yt - ou + 0.5) * _clamp01(ol - yt + 0.5)
        own_near_bot = _clamp01(yb - ou + 0.5) * _clamp01(ol - yb + 0.5)
        y_start = max(0, int(yu - 4.0 * rim_w) - 1)
        y_end = min(bh - 1, int(yl + 4.0 * rim_w) + 1)
        for y in range(y_start, y_end + 1):
            a = _clamp01(y - yu + 0.5) * _clamp01(yl - y + 0.5)
            rim = 0.0
            if mode == 0 and rim_k > 0.0:
                if y < yu:
                    rim = np.exp(-(yu - y) / rim_w) * (1.0 - own_near_top)
                elif y > yl:
                    rim = np.exp(-(y - yl) / rim_w) * (1.0 - own_near_bot)
                rim *= _clamp01(open_h)  # a hairline opening casts no shadow
            if a <= 0.0 and rim < 0.004:
                continue
            shade = 1.0 - rim_k * rim * (1.0 - a)
            if a <= 0.0:
                for c in range(3):
                    out[y, x, c] = np.uint8(min(255.0, out[y, x, c] * shade + 0.5))
                continue
            if mode == 1:
                for c in range(3):
                    v = a * inner_img[y, x, c] + (1.0 - a) * out[y, x, c]
                    out[y, x, c] = np.uint8(min(255.0, max(0.0, v + 0.5)))
                continue
            tm = _clamp01(y - ou + 0.5) * _clamp01(ol - y + 0.5)
            t = _clamp01((y - yu) / open_h)
            # Cavity: deep red-brown, darker at the corners and the back, lighter just
            # inside the lips; a tongue low in a wide opening; optional teeth band.
            back = 1.0 - 0.3 * np.exp(-0.5 * ((t - 0.4) / 0.25) ** 2)
            side = 1.0 - 0.4 * s * s
            dy = min(y - yu, yl - y)
            near = np.exp(-(dy if dy > 0.0 else 0.0) / near_w)
            ta = _tongue(t, s, tongue_on)
            band = min(band_max, 0.45 * open_h)
            tb = (y - yu) / max(band, 1e-3)
            tooth_a, tooth_shade = _teeth(tb, s, synth_teeth)
            for c in range(3):
                base = (0.24 if c == 0 else 0.17) * lip[c] * back * side + 0.16 * lip[c] * near
                tongue_c = (0.46 if c == 0 else 0.3) * lip[c]
                cav = base * (1.0 - ta) + tongue_c * ta
                cav = cav * (1.0 - tooth_a) + teeth[c] * tooth_shade * tooth_a
                inner = cav
                if tm > 0.0:
                    inner = tm * inner_img[y, x, c] + (1.0 - tm) * cav
                v = a * inner + (1.0 - a) * out[y, x, c] * shade
                out[y, x, c] = np.uint8(min(255.0, max(0.0, v + 0.5)))
