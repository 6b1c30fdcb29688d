"""The mouth interior as anatomy: upper teeth on the skull, lower teeth and tongue on the jaw.

Built once per portrait, in the working image's pixel space (so synthesized pixels are
sampled exactly like the photo's own: same scale, same resampling, same softness):

* ``upper``: the upper teeth, RGBA. The portrait's own teeth where it shows them, cut at
  their own lower (incisal) edge so no lip travels with them; otherwise teeth drawn one
  by one (apparent widths falling off towards the corners, interproximal lines and
  embrasures, a translucent incisal edge, per-tooth shading), coloured relative to the
  whites of the eyes.
* ``jaw``: the lower teeth in front of the tongue, RGBA, carried by the jaw.
* ``grain``: the photo's own noise, fixed to the head so synthesized pixels do not
  look clean and do not shimmer; and a soft mottle that keeps the cavity from being
  one smooth colour.

The cavity behind them depends on the opening of each frame and is shaded per pixel
by the compositing kernel (see :func:`facetalk.render.layers.composite_mouth`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..face import landmarks as L
from .rig import Rig

#: Inter-ocular distance of an adult, in millimetres: tooth sizes are given in mm.
IOD_MM = 63.0
#: Upper teeth, centre outwards: apparent width (mm, foreshortened by the arch), crown
#: height below the gum (mm), incisal edge raised above the centrals' (mm), brightness.
UPPER_TEETH = ((8.6, 10.5, 0.0, 1.0), (5.6, 9.0, 0.9, 0.88), (4.6, 10.0, 0.6, 0.74),
               (3.4, 8.0, 1.3, 0.6), (2.7, 7.0, 2.0, 0.48), (2.6, 6.0, 2.8, 0.38))
#: Lower teeth likewise (narrower incisors, a flatter edge).
LOWER_TEETH = ((5.3, 9.0, 0.0, 1.0), (5.0, 9.0, 0.1, 0.95), (4.5, 10.0, -0.2, 0.86),
               (3.2, 8.0, 0.5, 0.72), (2.6, 7.5, 1.0, 0.6), (2.6, 7.0, 1.6, 0.48))
#: Central upper incisal edge below the closed lip line (IOD).
UPPER_SHOW = 0.058
#: The portrait's own upper teeth are used when they show at least this much below the
#: upper lip (mm). Where the search finds none (a bright mouth that is not teeth, teeth
#: too faint to trace) the opening would have no upper teeth at all: they are drawn.
#: (Drawing them for slivers up to 4 mm as well was judged no more real: round 8.)
MIN_OWN_TEETH_MM = 1.0
#: Vertical overlap of the upper incisors over the lower ones (mm).
OVERBITE_MM = 1.6
#: The tongue's top (its dorsum, seen from the front) rises this far above the lower
#: incisors' edge in the middle (mm).
TONGUE_ABOVE_MM = 7.0


@dataclass(frozen=True)
class MouthSprites:
    """The mouth's layers for one portrait, in working-image pixels from ``origin``."""

    upper: np.ndarray  # (h, w, 4) float32 RGBA, straight alpha; colour 0..255
    jaw: np.ndarray  # (h, w, 4) float32 RGBA: lower teeth over the tongue
    grain: np.ndarray  # (h, w, 2) float32: fine noise (colour units), the cavity's mottle
    origin: np.ndarray  # (2,) work px of sprite pixel (0, 0)
    cavity: np.ndarray  # (3,) float64 colour of the cavity's lit part
    own_teeth: bool  # upper teeth are the portrait's own
    #: (n, 2) per inner lower-lip vertex of the rig, portrait px: how far below it the
    #: portrait's own lower teeth reach (zero where none, and for a closed mouth). The landmarks often put the
    #: inner lip under a row of lower teeth, which would then ride on the lip as a white
    #: rim; the opening is taken down to the lip's true edge instead.
    lower_band: np.ndarray
    #: (n, 2) likewise per inner upper-lip vertex: up to the top of the portrait's own
    #: upper teeth where the landmarks put the lip line across them.
    upper_band: np.ndarray
    #: (2, 2) portrait px, from the opening's left and right corner outwards: how far the
    #: photo's dark mouth corners (a smile's buccal corridor) reach beyond the landmarks'
    #: corners, so the opening takes them in instead of the lips carrying dark blots.
    corner_reach: np.ndarray


def _sclera_rgb(img: np.ndarray, lm: np.ndarray) -> np.ndarray | None:
    """Mean colour of the whites of the eyes (bright, unsaturated pixels in the eye openings)."""
    mask = np.zeros(img.shape[:2], np.uint8)
    for up, lo in ((L.R_EYE_UP, L.R_EYE_LO), (L.L_EYE_UP, L.L_EYE_LO)):
        poly = lm[list(up) + list(lo[::-1]), :2]
        cv2.fillPoly(mask, [np.round(poly * 8).astype(np.int32)], 1, shift=3)
    for iris in (L.R_IRIS, L.L_IRIS):
        c = lm[iris[0], :2]
        r = np.linalg.norm(lm[iris[1], :2] - c) * 1.15
        cv2.circle(mask, (int(round(c[0])), int(round(c[1]))), max(1, int(round(r))), 0, -1)
    px = img[mask > 0].astype(np.float32)
    if len(px) < 12:
        return None
    # The whites: the brightest third of the least saturated pixels (not lid, not iris).
    sat = (px.max(axis=1) - px.min(axis=1)) / (px.max(axis=1) + 1.0)
    lum = px @ np.array([0.299, 0.587, 0.114], np.float32)
    pale = px[(sat < 0.3) & (lum >= np.percentile(lum, 50))]
    if len(pale) < 6:
        return None
    return pale.mean(axis=0)


def photo_grain(img: np.ndarray, lm: np.ndarray, iod: float) -> float:
    """Standard deviation of the photo's fine-scale noise on the cheeks (colour units)."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    hp = gray - cv2.GaussianBlur(gray, (0, 0), 1.2)
    vals = []
    r = max(3, int(0.07 * iod))
    for idx in (50, 280, 101, 330, 36, 266):
        x, y = int(lm[idx, 0]), int(lm[idx, 1])
        patch = hp[max(0, y - r):y + r, max(0, x - r):x + r]
        if patch.size:
            vals.append(1.4826 * np.median(np.abs(patch - np.median(patch))))
    return float(np.clip(np.median(vals) if vals else 1.5, 0.6, 6.0))


def _chroma(skin: np.ndarray) -> float:
    """0..1: how colourful the photo is, judged by its skin (0 for black and white)."""
    lum = float(skin @ np.array([0.299, 0.587, 0.114]))
    return float(np.clip(np.linalg.norm(skin - lum) / 35.0, 0.0, 1.0))


def _with_chroma(rgb: np.ndarray, chroma: float) -> np.ndarray:
    """``rgb`` with its colour scaled by ``chroma`` (its luma kept)."""
    lum = float(rgb @ np.array([0.299, 0.587, 0.114]))
    return lum + (rgb - lum) * chroma


def _smooth01(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _tooth_row(u: np.ndarray, v: np.ndarray, mm: float, teeth: tuple[tuple[float, ...], ...],
               edge_v: float, down: bool, px_mm: float, gaps: float = 0.32
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coverage, shade and translucency of a row of teeth on a (u, v) grid (mm, face axes).

    ``edge_v`` is the incisal edge of the centrals (mm); ``down`` is True for upper teeth
    (crowns hang down from the gum to the edge), False for lower teeth (they rise to it).
    """
    alpha = np.zeros_like(u)
    shade = np.zeros_like(u)
    clear = np.zeros_like(u)
    # No two teeth quite alike: a little brightness per tooth, fixed for the portrait.
    rng = np.random.default_rng(len(teeth) + int(down))
    vary = 1.0 + 0.06 * rng.standard_normal(len(teeth))
    # ...nor quite level: each edge a little higher or lower, a little tilted (mm).
    jitter = 0.25 * rng.standard_normal(len(teeth))
    tilt = 0.2 * rng.standard_normal(len(teeth))
    au = np.abs(u)
    aa = 0.5 / px_mm  # half a pixel, in mm: antialiased edges
    x0 = 0.0
    for k, (width, height, lift, bright) in enumerate(teeth):
        x1 = x0 + width
        xc = 0.5 * (x0 + x1)
        hw = 0.5 * width
        rel = (au - xc) / hw  # -1..1 across this tooth (towards the centre .. the corner)
        edge = edge_v - lift - jitter[k] - tilt[k] * rel if down else edge_v + lift + jitter[k]
        # Along the tooth: 0 at the incisal edge, 1 at the gum.
        depth = (edge - v) / height if down else (v - edge) / height
        # Rounded incisal corners (more rounded on laterals and canines; canines pointed).
        corner_r = (0.24, 0.4, 0.0, 0.35, 0.35, 0.4)[k] if k < 6 else 0.35
        if k == 2:  # canine: a shallow point
            tip = 0.9 * (np.abs(rel) ** 1.4)
            edge_off = tip
        else:
            c = np.clip(np.abs(rel) - (1.0 - corner_r), 0.0, None) / max(corner_r, 1e-3)
            edge_off = corner_r * hw * (1.0 - np.sqrt(np.clip(1.0 - c * c, 0.0, 1.0)))
        d_edge = depth * height - edge_off  # mm inside from the (rounded) incisal edge
        # Neighbours touch (overlap by a pixel): only the gap lines below separate them.
        inside_x = _smooth01((hw + 2 * aa - np.abs(au - xc)) / (2 * aa) + 0.5)
        inside_y = _smooth01(d_edge / (2 * aa) + 0.5) * _smooth01((height - depth * height) / 0.6)
        a = inside_x * inside_y
        # Convex labial surface: lit in the middle, turning darker towards its sides (what
        # tells teeth apart at a distance); the cervical third a little darker and warmer;
        # a soft highlight on the front teeth.
        across = 1.0 - 0.16 * rel * rel - 0.14 * np.abs(rel) ** 4
        along = 1.0 - 0.16 * _smooth01((depth - 0.45) / 0.55)
        hi = 0.07 * np.exp(-((rel + 0.15) ** 2) / 0.08 - ((depth - 0.45) ** 2) / 0.05) * (k < 2)
        s = bright * vary[k] * (across * along + hi)
        # Translucent incisal edge (about 1 mm).
        tr = np.clip(1.0 - d_edge / 1.1, 0.0, 1.0) * (k < 3)
        take = a > alpha
        alpha = np.where(take, a, alpha)
        shade = np.where(take, s, shade)
        clear = np.where(take, tr, clear)
        x0 = x1
    # Interproximal lines: a dark line between neighbours (the midline between the
    # central incisors included), widening into an embrasure at the incisal edge.
    x0 = 0.0
    for width, _, _, _ in ((0.0, 0, 0, 0), *teeth[:-1]):
        x0 += width
        d = np.abs(au - x0)
        line = np.exp(-((d / max(0.25, 0.6 / px_mm)) ** 2))
        shade *= 1.0 - gaps * line
    return alpha, shade, clear


#: Teeth reflect about this much more than typical skin, per channel: teeth are a warm
#: off-white, skin is redder, so the skin's colour carries the photo's light onto them.
TEETH_OVER_SKIN = np.array([1.37, 1.79, 1.76])


def _teeth_colour(img: np.ndarray, lm: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Teeth colour under this photo's light: the skin's colour times how teeth reflect
    relative to skin, as bright as the whites of the eyes where they can be seen and
    always brighter than the skin (eye whites in shadow or behind glasses read dark and
    often bluish: only their brightness is used)."""
    weights = np.array([0.299, 0.587, 0.114])
    hue = np.maximum(skin, 1.0) * TEETH_OVER_SKIN
    # ...but never bluer than a warm white, whatever the skin (pale, cool-lit, made up).
    hue[1] = min(hue[1], 0.95 * hue[0])
    hue[2] = min(hue[2], 0.88 * hue[1])
    sclera = _sclera_rgb(img, lm)
    skin_lum = float(skin @ weights)
    lum = 1.15 * skin_lum + 12.0
    if sclera is not None:
        lum = max(lum, 0.92 * float(sclera @ weights))
    # Teeth inside a speaking mouth are lit less than the face: never far above the skin.
    lum = min(lum, 1.3 * skin_lum + 20.0, 225.0)
    return np.clip(hue / float(hue @ weights) * lum, 0, 255)


@dataclass(frozen=True)
class _Grid:
    """The layers' pixel grid in working-image px, and each pixel in face axes (mm)."""

    x0: int
    y0: int
    u_mm: np.ndarray  # (h, w) along the eyes, from the mouth centre
    v_mm: np.ndarray  # (h, w) downwards
    px_mm: float  # working-image px per mm
    ppi: float  # working-image px per IOD
    half_w_mm: float  # half the mouth's width at rest
    v_up0: float  # the upper inner lip at rest, in the middle (mm)
    v_lo0: float  # the lower inner lip likewise

    @property
    def shape(self) -> tuple[int, int]:
        return self.u_mm.shape  # type: ignore[return-value]


def _mouth_grid(to_work: Callable[[np.ndarray], np.ndarray], rig: Rig) -> _Grid:
    """A box around the mouth with room for the jaw to drop and the teeth above, in face
    axes: the teeth are laid out along the face, whatever its tilt in the picture."""
    frame = rig.frame
    o = to_work(frame.origin[None, :])[0]
    # Work px per portrait px (the working image is an axis-aligned rescale).
    k = float(np.linalg.norm(to_work(frame.origin[None, :] + frame.ex[None, :])[0] - o))
    ppi = frame.iod * k
    px_mm = ppi / IOD_MM
    ex, ey = frame.ex, frame.ey
    src_w = to_work(rig.src)
    up_pts, lo_pts = src_w[rig.mouth_up], src_w[rig.mouth_lo]
    half_w = float(np.max(np.abs((np.concatenate([up_pts, lo_pts]) - o) @ ex)))
    span = max(half_w * 1.25, 0.3 * ppi)
    x0 = int(np.floor(o[0] - span * 1.1 - 0.15 * ppi))
    x1 = int(np.ceil(o[0] + span * 1.1 + 0.15 * ppi))
    y0 = int(np.floor(o[1] - 0.22 * ppi - abs(ex[1]) * span))
    y1 = int(np.ceil(o[1] + 0.45 * ppi + abs(ex[1]) * span))
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
    d = np.stack([gx - o[0], gy - o[1]], axis=-1)
    axes = np.stack([ex, ey], 1)
    up_uv = (up_pts - o) @ axes / px_mm
    lo_uv = (lo_pts - o) @ axes / px_mm
    ou, ol = np.argsort(up_uv[:, 0]), np.argsort(lo_uv[:, 0])
    return _Grid(x0=x0, y0=y0, u_mm=(d @ ex) / px_mm, v_mm=(d @ ey) / px_mm, px_mm=px_mm,
                 ppi=ppi, half_w_mm=half_w / px_mm,
                 v_up0=float(np.interp(0.0, up_uv[ou, 0], up_uv[ou, 1])),
                 v_lo0=float(np.interp(0.0, lo_uv[ol, 0], lo_uv[ol, 1])))


def _grain_layers(rng: np.random.Generator, shape: tuple[int, int], grain_sd: float,
                  px_mm: float) -> np.ndarray:
    """(h, w, 2): the photo's fine noise, and the cavity's soft mottle."""
    h, w = shape
    grain = np.empty((h, w, 2), np.float32)
    fine = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), (0, 0), 0.5)
    grain[..., 0] = fine * (grain_sd / max(float(fine.std()), 1e-6))
    # The cavity is not one smooth colour: folds and shadows of cheeks, palate and throat
    # as a soft mottle of about +-20 % in brightness, a few millimetres across.
    coarse = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), (0, 0),
                              max(1.0, 1.6 * px_mm))
    grain[..., 1] = coarse * (0.2 / max(float(coarse.std()), 1e-6))
    return grain


def _drawn_upper(g: _Grid, teeth_rgb: np.ndarray, chroma: float) -> np.ndarray:
    """Upper teeth drawn tooth by tooth, hanging UPPER_SHOW below the lip at rest."""
    upper = np.zeros((*g.shape, 4), np.float32)
    edge = g.v_up0 + UPPER_SHOW * IOD_MM
    a, s, tr = _tooth_row(g.u_mm, g.v_mm, g.px_mm, UPPER_TEETH, edge, True, g.px_mm, 0.34)
    col = teeth_rgb[None, None, :] * s[..., None]
    # Translucent edge: greyer, bluer and partly see-through.
    blue = _with_chroma(np.array([0.9, 0.92, 0.97]), chroma)
    col = col * (1.0 - 0.3 * tr[..., None]) + (col * blue) * (0.3 * tr[..., None])
    upper[..., :3] = col
    upper[..., 3] = a * (1.0 - 0.25 * tr)
    return upper


def _jaw_layer(g: _Grid, rng: np.random.Generator, low_edge: float, teeth_rgb: np.ndarray,
               lip_rgb: np.ndarray, chroma: float) -> np.ndarray:
    """The tongue (a dome behind the lower incisors, lit from above, a midline groove) and
    the lower teeth in front of it, RGBA."""
    u_mm, v_mm, px_mm = g.u_mm, g.v_mm, g.px_mm
    jaw = np.zeros((*g.shape, 4), np.float32)
    t_half = 0.78 * max(g.half_w_mm, 14.0)
    t_top = low_edge - TONGUE_ABOVE_MM + 8.0 * (u_mm / t_half) ** 2
    t_in = (v_mm - t_top)  # mm below the tongue's top edge
    # The far edge recedes into the dark: it fades in over about 2 mm.
    t_a = _smooth01(t_in / 3.0) * _smooth01((t_half - np.abs(u_mm)) * px_mm / 3.0)
    tongue_rgb = _with_chroma(np.clip(lip_rgb * np.array([0.95, 0.66, 0.68])
                                      + np.array([14.0, 8.0, 10.0]), 0, 255), chroma)
    # Seen from the front the tongue's back is its top edge, deep in the mouth's shadow;
    # its front, just behind the lower teeth, catches the light coming in: dark at the
    # far edge, brightening towards the teeth, with a soft sheen on the front middle.
    light = 0.5 + 0.45 * _smooth01(t_in / 6.0)
    light += 0.12 * np.exp(-((t_in - 6.0) / 2.5) ** 2 - (u_mm / (0.45 * t_half)) ** 2)
    light *= 1.0 - 0.35 * (u_mm / t_half) ** 2  # its sides curve away
    groove = 1.0 - 0.06 * np.exp(-((u_mm / 2.0) ** 2)) * _smooth01(t_in / 3.0)
    tex = rng.normal(0.0, 1.0, g.shape).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (0, 0), max(0.7, 0.45 * px_mm))
    tex /= max(float(tex.std()), 1e-6)
    jaw[..., :3] = tongue_rgb[None, None, :] * (light * groove * (1.0 + 0.04 * tex))[..., None]
    jaw[..., 3] = t_a
    a, s, tr = _tooth_row(u_mm, v_mm, px_mm, LOWER_TEETH, low_edge, False, px_mm, 0.15)
    # In the upper lip's and teeth's shadow, and lit by light the mouth's red inside
    # reflects: darker and warmer than the upper teeth, never grey-green.
    shade_rgb = 0.62 * teeth_rgb + 0.18 * tongue_rgb
    col = shade_rgb[None, None, :] * s[..., None]
    a = a * (1.0 - 0.2 * tr)
    jaw[..., :3] = col * a[..., None] + jaw[..., :3] * (1.0 - a[..., None])
    jaw[..., 3] = a + jaw[..., 3] * (1.0 - a)
    return jaw


#: Outer-lip landmarks where the lip meets the skin across a roughly horizontal edge
#: (the upper lip's vermilion border, the lower lip's lower edge): the photo's own
#: blur is read there.
_LIP_EDGES = (0, 37, 267, 17, 84, 314)


def photo_blur(work: np.ndarray, to_work: Callable[[np.ndarray], np.ndarray], lm: np.ndarray,
               iod_work: float) -> float:
    """The photo's blur around the mouth at working scale (Gaussian sigma, px), from the
    steepest gradient across the lips' edges relative to their contrast: synthesized
    teeth as crisp as a sharp photo's look pasted into a soft one, and the other way round."""
    h, w = work.shape[:2]
    half = max(4, int(0.06 * iod_work))
    sigmas = []
    for idx in _LIP_EDGES:
        x, y = to_work(lm[idx:idx + 1, :2])[0]
        xi, yi = int(round(x)), int(round(y))
        if not (1 <= xi < w - 1 and half <= yi < h - half):
            continue
        # Only the few columns read are converted (not the whole working image).
        patch = np.ascontiguousarray(work[yi - half:yi + half + 1, xi - 1:xi + 2])
        prof = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32).mean(axis=1)
        q = max(2, len(prof) // 4)
        contrast = abs(float(prof[:q].mean() - prof[-q:].mean()))
        grad = float(np.abs(np.diff(prof)).max())
        if contrast > 12.0 and grad > 1e-3:
            sigmas.append(contrast / (2.5066 * grad))
    # The sharpest edges tell the photo's blur; softer ones are soft lips, not focus.
    return float(np.clip(np.percentile(sigmas, 25), 0.55, 3.0)) if sigmas else 0.55


def _soften(layer: np.ndarray, sigma: float = 0.55) -> None:
    """Blur a synthesized RGBA layer (premultiplied) like the photo at this scale."""
    pm = cv2.GaussianBlur(layer[..., :3] * layer[..., 3:4], (0, 0), sigma)
    al = cv2.GaussianBlur(np.ascontiguousarray(layer[..., 3]), (0, 0), sigma)
    layer[..., :3] = pm / np.maximum(al, 1e-4)[..., None]
    layer[..., 3] = al


def build_mouth(work: np.ndarray, to_work: Callable[[np.ndarray], np.ndarray], lm: np.ndarray,
                rig: Rig, lip_rgb: np.ndarray, skin_rgb: np.ndarray, img: np.ndarray,
                own_teeth: bool, seed: int = 0) -> MouthSprites:
    """Precompute the mouth's layers for one portrait (see the module docstring).

    ``to_work`` maps portrait px to working-image px; ``rig`` is the face rig (its rest
    inner-lip contours and face axes place the teeth).
    """
    g = _mouth_grid(to_work, rig)
    # A photo in black and white (or faded) gets an interior without colour of its own.
    chroma = _chroma(skin_rgb)
    teeth_rgb = _with_chroma(_teeth_colour(img, lm, skin_rgb), chroma)
    rng = np.random.default_rng(seed)
    grain = _grain_layers(rng, g.shape, photo_grain(img, lm, rig.frame.iod), g.px_mm)
    low_edge = g.v_up0 + UPPER_SHOW * IOD_MM - OVERBITE_MM
    is_open = rig.source_gap > OPEN_GAP
    band = _teeth_band(img, rig) if is_open else np.zeros((len(rig.mouth_lo), 2))
    up_band = _teeth_band(img, rig, upper=True) if is_open else np.zeros((len(rig.mouth_up), 2))
    if own_teeth:
        # The own teeth are taken from the upper lip's true edge (above the landmarks'
        # line where that runs across the teeth).
        src = rig.src.astype(np.float64).copy()
        src[rig.mouth_up] += up_band
        upper, shown = _own_upper(work, g.x0, g.y0, *g.shape, to_work(src), rig, g.ppi)
        own_px = upper[..., 3] > 0.6
        if own_px.sum() > 10:
            teeth_rgb = np.median(upper[own_px][:, :3], axis=0)
        # No edge found (or a hairline): drawn teeth, in the colour of the portrait's own.
        own_teeth = shown / g.px_mm >= MIN_OWN_TEETH_MM
    if own_teeth:
        # The lower incisors tuck under the portrait's own upper edge.
        rows = np.where(upper[..., 3].max(axis=1) > 0.5)[0]
        if len(rows):
            low_edge = float(np.median(g.v_mm[rows[-1], :])) - OVERBITE_MM
    else:
        upper = _drawn_upper(g, teeth_rgb, chroma)
    # A portrait with its mouth open has its jaw dropped already: the lower incisors sit
    # just behind the lower lip, their tips about at its edge.
    low_edge = max(low_edge, g.v_lo0 - 0.8)
    jaw = _jaw_layer(g, rng, low_edge, teeth_rgb, lip_rgb, chroma)
    # A lip edge is softer than the photo's blur (it is not a perfect step), and teeth in
    # focus are what viewers read as real: only part of the measured width is applied on
    # top of the layers' own antialiasing.
    blur = max(0.55, 0.45 * photo_blur(work, to_work, lm, g.ppi))
    for layer in ((jaw,) if own_teeth else (upper, jaw)):
        _soften(layer, blur)
    cavity = _with_chroma(np.clip(lip_rgb * np.array([0.5, 0.26, 0.24]), 0, 255), chroma)
    reach = _corner_reach(img, rig, lip_rgb) if is_open else np.zeros((2, 2))
    return MouthSprites(upper=upper, jaw=jaw, grain=grain, origin=np.array([g.x0, g.y0], float),
                        cavity=cavity.astype(np.float64), own_teeth=own_teeth, lower_band=band,
                        upper_band=up_band, corner_reach=reach)


#: The farthest a dark mouth corner is followed beyond the landmarks' corner (IOD).
CORNER_REACH_MAX = 0.05


def _corner_reach(img: np.ndarray, rig: Rig, lip_rgb: np.ndarray) -> np.ndarray:
    """(2, 2): from the inner contour's left and right corner, the vector (portrait px)
    to where the photo's dark corner of the opening ends."""
    frame = rig.frame
    pts = np.concatenate([rig.src[rig.mouth_up], rig.src[rig.mouth_lo]]).astype(np.float64)
    along = (pts - frame.origin) @ frame.ex
    dark = 0.6 * float(lip_rgb @ np.array([0.299, 0.587, 0.114]))
    h, w = img.shape[:2]
    # Grey only around the mouth, where the rays run (not the whole picture).
    reach = CORNER_REACH_MAX * frame.iod + 2.0
    gx0, gy0 = (max(0, int(np.floor(v - reach))) for v in pts.min(axis=0))
    gx1, gy1 = (int(np.ceil(v + reach)) + 1 for v in pts.max(axis=0))
    gray = cv2.cvtColor(np.ascontiguousarray(img[gy0:gy1, gx0:gx1]), cv2.COLOR_RGB2GRAY)
    out = np.zeros((2, 2))
    for side, (i, sign) in enumerate(((int(np.argmin(along)), -1.0), (int(np.argmax(along)), 1.0))):
        p = pts[i]
        k = 0
        for k in range(int(CORNER_REACH_MAX * frame.iod / 0.5) + 1):
            q = p + sign * (k + 1) * 0.5 * frame.ex
            qx, qy = int(round(q[0])), int(round(q[1]))
            if not (0 <= qx < w and 0 <= qy < h) or gray[qy - gy0, qx - gx0] >= dark:
                break
        out[side] = sign * k * 0.5 * frame.ex
    return out


#: The portrait's own lip gap (IOD) from which it counts as showing its mouth's inside.
OPEN_GAP = 0.03
#: The deepest band of the portrait's own teeth looked for beyond the inner lower lip and
#: the inner upper lip (IOD). The face mesh often puts the inner upper lip in the middle of
#: a smile's upper teeth: their top half then rode on the upper lip as a white band when
#: the mouth opened (blind round 27: "floating white teeth band").
LOWER_BAND_MAX = 0.06
UPPER_BAND_MAX = 0.04


def _teeth_band(img: np.ndarray, rig: Rig, upper: bool = False) -> np.ndarray:
    """Per inner lower-lip vertex (``upper``: upper-lip vertex), the vector (portrait px)
    out to the edge of the portrait's own teeth where they lie beyond the landmarks' lip
    line: down to the lower teeth's lower edge, or up to the upper teeth's top."""
    frame = rig.frame
    lo = rig.src[rig.mouth_lo].astype(np.float64)
    up = rig.src[rig.mouth_up].astype(np.float64)
    line = up if upper else lo
    out_dir = -frame.ey if upper else frame.ey
    reach = UPPER_BAND_MAX if upper else LOWER_BAND_MAX
    iod = frame.iod
    step = 0.5
    n_steps = int(reach * iod / step) + 1
    h, w = img.shape[:2]
    pts = np.concatenate([lo, up])
    x0 = int(max(0, np.floor(pts[:, 0].min() - 0.05 * iod)))
    x1 = int(min(w, np.ceil(pts[:, 0].max() + 0.05 * iod)))
    y0 = int(max(0, np.floor(pts[:, 1].min() - (0.05 + (reach if upper else 0.0)) * iod)))
    y1 = int(min(h, np.ceil(pts[:, 1].max() + (0.05 + (0.0 if upper else reach)) * iod)))
    band = np.zeros((len(line), 2))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return band
    patch = img[y0:y1, x0:x1]
    # The lip's colour: the lip well beyond the band, where no teeth can be.
    beyond = line + (reach + 0.02) * iod * out_dir
    bx = np.clip(np.round(beyond[:, 0]).astype(int) - x0, 0, x1 - x0 - 1)
    by = np.clip(np.round(beyond[:, 1]).astype(int) - y0, 0, y1 - y0 - 1)
    lip = patch[by, bx].astype(np.float32).mean(axis=0)
    tn = _teethness(patch, lip)
    depth = np.zeros(len(line))
    for i, p in enumerate(line):
        k = 0
        while k < n_steps:
            q = p + (k + 1) * step * out_dir
            qx, qy = int(round(q[0])) - x0, int(round(q[1])) - y0
            if not (0 <= qx < x1 - x0 and 0 <= qy < y1 - y0) or tn[qy, qx] < 0.3:
                break
            k += 1
        # Plus most of a pixel: the teeth's blurred edge lies just past the line even
        # where it follows them well, and would ride on the lip as a pale rim.
        depth[i] = k * step + 0.8
    # One vertex alone is a highlight on the lip, not a tooth: keep runs of three; and the
    # lip's edge runs smoothly (a lone tooth past the line would otherwise cut a notch
    # into the lip).
    order = np.argsort(line[:, 0])
    d = depth[order]
    med = np.array([np.median(d[max(0, j - 1):j + 2]) for j in range(len(d))])
    d = np.minimum(d, med) - 0.8
    d = cv2.GaussianBlur(d[None, :].astype(np.float32), (0, 0), sigmaX=3.0,
                         borderType=cv2.BORDER_REPLICATE)[0]
    depth[order] = d + 0.8
    return depth[:, None] * out_dir[None, :]


def _teethness(rgb: np.ndarray, lip: np.ndarray) -> np.ndarray:
    """0..1 per pixel: how much a pixel looks like tooth rather than lip or dark cavity."""
    f = rgb.astype(np.float32)
    lum = f @ np.array([0.299, 0.587, 0.114], np.float32)
    red = (f[..., 0] - f[..., 1]) / (f.sum(axis=-1) + 1.0)
    lip_red = (lip[0] - lip[1]) / (lip.sum() + 1.0)
    lip_lum = float(lip @ np.array([0.299, 0.587, 0.114]))
    bright = _smooth01((lum - 0.85 * lip_lum) / (0.35 * lip_lum + 1.0))
    pale = _smooth01((lip_red - red) / max(0.6 * lip_red, 0.02))
    return bright * pale


def _own_upper(work: np.ndarray, bx0: int, by0: int, h: int, w: int, src_w: np.ndarray,
               rig: Rig, ppi: float) -> tuple[np.ndarray, float]:
    """The portrait's own upper teeth as an RGBA layer, cut at their own lower edge, and
    how far they show below the upper lip in the middle half of the row (px; 0 when no
    edge was found)."""
    H, W = work.shape[:2]
    ys = np.clip(np.arange(by0, by0 + h), 0, H - 1)
    xs = np.clip(np.arange(bx0, bx0 + w), 0, W - 1)
    patch = work[np.ix_(ys, xs)].astype(np.float32)
    up = src_w[rig.mouth_up] - (bx0, by0)
    lo = src_w[rig.mouth_lo] - (bx0, by0)
    cols = np.arange(w, dtype=np.float64)
    ou, ol = np.argsort(up[:, 0]), np.argsort(lo[:, 0])
    y_up = np.interp(cols, up[ou, 0], up[ou, 1], left=np.nan, right=np.nan)
    y_lo = np.interp(cols, lo[ol, 0], lo[ol, 1], left=np.nan, right=np.nan)
    lip_mask = np.zeros((h, w), np.uint8)
    poly = np.concatenate([up[ou], lo[ol][::-1]])
    cv2.fillPoly(lip_mask, [np.round(poly * 8).astype(np.int32)], 1, shift=3)
    # Lip colour: just outside the inner contour.
    ring = cv2.dilate(lip_mask, np.ones((5, 5), np.uint8)) - lip_mask
    lip = patch[ring > 0].mean(axis=0) if ring.sum() > 4 else np.array([170.0, 90.0, 90.0])
    tn = _teethness(patch, lip)
    lum = patch @ np.array([0.299, 0.587, 0.114], np.float32)
    edge = np.full(w, np.nan)
    for x in range(w):
        if not (np.isfinite(y_up[x]) and np.isfinite(y_lo[x])) or y_lo[x] - y_up[x] < 1.0:
            continue
        y0 = int(np.ceil(y_up[x]))
        y1 = int(np.floor(y_lo[x]))
        prof = tn[y0:y1 + 1, x]
        if prof.size == 0:
            continue
        # The first run of tooth from the upper lip down; its end is the incisal edge.
        hit = np.nonzero(prof > 0.5)[0]
        if len(hit) == 0 or hit[0] > 0.35 * max(1, y1 - y0) + 2:
            continue
        j = hit[0]
        run_lum = lum[y0 + j, x]
        while j + 1 < len(prof) and prof[j + 1] > 0.4:
            # Clenched teeth: the upper row ends at the dark line where the lower row
            # meets it, not at the lower row's edge.
            if j - hit[0] >= 2 and lum[y0 + j + 1, x] < 0.8 * run_lum:
                break
            j += 1
            run_lum = max(run_lum, float(lum[y0 + j, x]))
        edge[x] = y0 + j + 0.5
    ok = np.isfinite(edge)
    found = np.nonzero(ok)[0]
    if len(found) >= 3:
        # A smooth edge: close to the median of its neighbours (no lip blob below a gap
        # between teeth, no notch where a shadow ended a run early); columns between
        # teeth where the edge was not found take it from their neighbours.
        e = edge.copy()
        k = max(3, int(0.12 * ppi))
        for x in found:
            med = np.nanmedian(edge[max(0, x - k):x + k + 1])
            e[x] = min(max(edge[x], med - 1.5), med + 0.5)
        inside = np.arange(found[0], found[-1] + 1)
        e[inside] = np.interp(inside, found, e[found])
        # Incisal edges run smoothly; what is left of the per-column search's steps
        # would show as a ragged cut.
        sm = cv2.GaussianBlur(e[inside][None, :].astype(np.float32), (0, 0),
                              sigmaX=max(0.8, 0.01 * ppi), borderType=cv2.BORDER_REPLICATE)
        e[inside] = sm[0]
        edge = e
    shown = 0.0
    if len(found) >= 3:
        mid = np.arange(found[0], found[-1] + 1)
        mid = mid[len(mid) // 4: max(len(mid) // 4 + 1, 3 * len(mid) // 4)]
        gap = edge[mid] - y_up[mid]
        gap = gap[np.isfinite(gap)]
        shown = float(np.median(gap)) if gap.size else 0.0
    rows = np.arange(h, dtype=np.float64)[:, None]
    a = np.clip(edge[None, :] - rows + 0.5, 0.0, 1.0)
    # The photo's own pixels above the edge are kept as they are, gaps and shading
    # included; beyond the outermost teeth (the dark corridors at the corners of a
    # smile) the synthesized cavity shows.
    alpha = np.where(np.isfinite(a), a, 0.0).astype(np.float32)
    out = np.zeros((h, w, 4), np.float32)
    # Above the lip line, repeat the teeth's top row (hidden unless the lip rises).
    col = patch.copy()
    for x in range(w):
        if np.isfinite(y_up[x]):
            r = int(min(max(np.ceil(y_up[x]) + 1, 0), h - 1))
            col[:r, x] = patch[r, x]
    out[..., :3] = col
    out[..., 3] = alpha
    return out, shown
