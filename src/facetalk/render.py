"""Frames from a still portrait and per-frame controls.

One resampling step per pixel: output pixel -> (framing) -> (inverse face warp) ->
portrait pixel, read with a sharp kernel. Pixels outside the moving region are a copy
of a precomputed still frame, bit for bit.

Three layers meet inside the mouth and eyes:

* skin: the warped portrait (lips, lids);
* interior: what the portrait itself shows between the lips/lids (its real teeth, its
  eyeballs), carried rigidly by the head only -- so teeth never stretch with the jaw
  and a closing lid slides over the iris instead of squashing it;
* cavity: where the mouth opens wider than in the portrait, a synthesized dark mouth
  with a tongue hint (and an upper-teeth band if the portrait shows no teeth),
  coloured from the portrait's own lips and skin.

The skin/interior boundary is the densified inner lip (lid) contour, antialiased by a
small blur of the coverage mask, and the lips are shaded slightly where they meet the
cavity so the opening reads as depth, not as a cut-out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import landmarks as L
from .face import FaceModel
from .framing import Framing
from .raster import rasterize
from .rig import CONTROLS, EYE_L, EYE_R, MOUTH, Rig

#: Margin of portrait kept around the frame so head motion never samples past an edge.
WORK_MARGIN = 0.25


@dataclass
class Renderer:
    """Everything precomputed for one portrait + framing; ``frame()`` renders one frame."""

    rig: Rig
    framing: Framing
    work: np.ndarray  # portrait region at (at most) output scale, uint8 RGB
    work_to: tuple[float, float, float, float]  # image->work: (kx, ky, ox, oy)
    src_work: np.ndarray  # (N, 2) float64 rig vertices in work coordinates
    base_x: np.ndarray  # (H, W) float32 identity map, output -> work
    base_y: np.ndarray
    still: np.ndarray  # (H, W, 3) uint8 the frame with no motion
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 of the moving region (output px)
    interp: int
    supersample: int
    portrait_open: bool  # the portrait shows its own mouth interior (reused when opening)
    portrait_teeth: bool  # ...and that interior shows teeth
    lip_rgb: np.ndarray
    skin_rgb: np.ndarray
    teeth_rgb: np.ndarray
    px_per_iod: float
    gain: np.ndarray  # per-control multiplier adapting the motion to this portrait

    # -- coordinates ---------------------------------------------------------------
    def to_out(self, img_xy: np.ndarray) -> np.ndarray:
        """Portrait coordinates to output pixels."""
        return self.framing.to_output(img_xy)

    # -- one frame -------------------------------------------------------------------
    def frame(self, controls: np.ndarray, pose: np.ndarray, out: np.ndarray | None = None
              ) -> np.ndarray:
        """Render one RGB frame for ``controls`` (see rig.CONTROLS) and head ``pose``."""
        rig = self.rig
        controls = controls * self.gain
        if out is None:
            out = self.still.copy()
        else:
            np.copyto(out, self.still)
        x0, y0, x1, y1 = self.roi
        if x1 <= x0 or y1 <= y0:
            return out
        dst = self.to_out(rig.deform(controls, pose))
        head = self.to_out(rig.deform(controls, pose, local=False))
        map_x = self.base_x[y0:y1, x0:x1].copy()
        map_y = self.base_y[y0:y1, x0:x1].copy()
        label = np.zeros(map_x.shape, np.uint8)
        rasterize(dst - (x0, y0), self.src_work, rig.tris, rig.kinds, map_x, map_y, label)
        colour = cv2.remap(self.work, map_x, map_y, self.interp,
                           borderMode=cv2.BORDER_REPLICATE)
        self._mouth(colour, dst, head, (x0, y0), map_x, map_y, label)
        for eye, kind in ((0, EYE_R), (1, EYE_L)):
            if controls[8 + eye] > 0.02:
                self._eye(colour, dst, head, (x0, y0), eye, kind, map_x, map_y, label)
        out[y0:y1, x0:x1] = colour
        return out

    # -- mouth -----------------------------------------------------------------------
    def _box(self, pts: np.ndarray, margin: float, shape: tuple[int, ...]
             ) -> tuple[int, int, int, int] | None:
        bx0 = int(max(np.floor(pts[:, 0].min() - margin), 0))
        by0 = int(max(np.floor(pts[:, 1].min() - margin), 0))
        bx1 = int(min(np.ceil(pts[:, 0].max() + margin) + 1, shape[1]))
        by1 = int(min(np.ceil(pts[:, 1].max() + margin) + 1, shape[0]))
        if bx1 <= bx0 or by1 <= by0:
            return None
        return bx0, by0, bx1, by1

    def _layer_maps(self, dst: np.ndarray, head: np.ndarray, box: tuple[int, int, int, int],
                    offset: tuple[int, int], ss: int,
                    map_x: np.ndarray, map_y: np.ndarray, label: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                               np.ndarray, np.ndarray]:
        """Skin and interior maps for a small box, at ``ss`` times the output density."""
        bx0, by0, bx1, by1 = box
        rig = self.rig
        if ss == 1:
            sx = map_x[by0:by1, bx0:bx1]
            sy = map_y[by0:by1, bx0:bx1]
            slab = label[by0:by1, bx0:bx1]
        else:
            # Pixel centres of the finer grid, in output coordinates.
            gx = (np.arange((bx1 - bx0) * ss) + 0.5) / ss - 0.5 + bx0 + offset[0]
            gy = (np.arange((by1 - by0) * ss) + 0.5) / ss - 0.5 + by0 + offset[1]
            sx, sy = self._identity(gx, gy)
            slab = np.zeros(sx.shape, np.uint8)
            shift = np.array([bx0 + offset[0], by0 + offset[1]], float)
            rasterize((dst - shift + 0.5) * ss - 0.5, self.src_work, rig.tris, rig.kinds,
                      sx, sy, slab)
        # Head-only map: where each pixel would come from if only the head moved. The
        # layers that ride on the skull (teeth, eyeballs) are read through it.
        ix, iy = sx.copy(), sy.copy()
        ilab = np.zeros(ix.shape, np.uint8)
        shift = np.array([bx0 + offset[0], by0 + offset[1]], float)
        rasterize((head - shift + 0.5) * ss - 0.5, self.src_work, rig.tris, rig.kinds,
                  ix, iy, ilab)
        return sx, sy, slab, ix, iy, ilab

    def _identity(self, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Identity (still-frame) map at arbitrary output coordinates."""
        img = self.framing.to_image(np.stack(np.meshgrid(gx, gy), axis=-1))
        kx, ky, ox, oy = self.work_to
        mx = ((img[..., 0] - ox + 0.5) * kx - 0.5).astype(np.float32)
        my = ((img[..., 1] - oy + 0.5) * ky - 0.5).astype(np.float32)
        return mx, my

    def _mouth(self, colour: np.ndarray, dst: np.ndarray, head: np.ndarray,
               offset: tuple[int, int], map_x: np.ndarray, map_y: np.ndarray,
               label: np.ndarray) -> None:
        rig = self.rig
        lips = np.concatenate([dst[rig.mouth_up], dst[rig.mouth_lo]]) - offset
        box = self._box(lips, 0.12 * self.px_per_iod + 3, colour.shape)
        if box is None or not np.any(label[box[1]:box[3], box[0]:box[2]] == MOUTH):
            return
        ss = self.supersample
        sx, sy, slab, ix, iy, ilab = self._layer_maps(
            dst, head, box, offset, ss, map_x, map_y, label)
        bx0, by0, bx1, by1 = box
        if ss == 1:
            skin = colour[by0:by1, bx0:bx1].astype(np.float32)
        else:
            skin = cv2.remap(self.work, sx, sy, self.interp,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        inner = cv2.remap(self.work, ix, iy, self.interp,
                          borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        tmask = self._own_interior(ilab, ss)
        shift = np.array([bx0 + offset[0], by0 + offset[1]], float)
        up = (dst[rig.mouth_up] - shift + 0.5) * ss - 0.5
        lo = (dst[rig.mouth_lo] - shift + 0.5) * ss - 0.5
        cavity = self._cavity(skin.shape[:2], up, lo, ss)
        interior = tmask[..., None] * inner + (1.0 - tmask[..., None]) * cavity
        hole = (slab == MOUTH).astype(np.float32)
        alpha = cv2.GaussianBlur(hole, (0, 0), 0.55 * ss)
        # Lips darken a little where they curl into the (synthesized) dark of the mouth;
        # next to the portrait's own teeth they keep the portrait's own shading.
        cav = hole * (1.0 - tmask)
        shade_sigma = max(1.0, 0.025 * self.px_per_iod * ss)
        rim = np.clip(cv2.GaussianBlur(cav, (0, 0), shade_sigma) - hole, 0.0, 1.0)
        skin *= (1.0 - 0.45 * rim)[..., None]
        result = alpha[..., None] * interior + (1.0 - alpha[..., None]) * skin
        if ss > 1:
            size = (bx1 - bx0, by1 - by0)
            result = cv2.resize(result, size, interpolation=cv2.INTER_AREA)
            # Use the supersampled pixels only around the opening and fade to the
            # single-sampled frame well inside the box, so the box never shows as a seam.
            near = cv2.resize(np.maximum(hole, rim), size, interpolation=cv2.INTER_AREA)
            w = np.clip(cv2.GaussianBlur(near, (0, 0), 0.04 * self.px_per_iod + 1) * 4, 0, 1)
            result = w[..., None] * result + (1 - w[..., None]) * colour[by0:by1, bx0:bx1]
        colour[by0:by1, bx0:bx1] = np.clip(result + 0.5, 0, 255).astype(np.uint8)

    def _own_interior(self, ilab: np.ndarray, ss: int) -> np.ndarray:
        """Where the portrait's own mouth interior (its teeth) shows, as a soft mask.

        ``ilab`` marks pixels whose head-only source lies inside the portrait's opening.
        Grown by an output pixel all round and a little more upwards (the teeth must reach the
        upper lip, with no synthesized dark seeping in along the lip line), so at rest
        every pixel of the opening is the portrait's own; not grown downwards, where
        the lower lip would come along with the teeth as a pink band.
        """
        if not self.portrait_open:
            return np.zeros(ilab.shape, np.float32)
        inside = (ilab == MOUTH).astype(np.uint8)
        inside = cv2.dilate(inside, np.ones((2 * ss + 1, 2 * ss + 1), np.uint8))
        g = max(1, int(round(0.015 * self.px_per_iod * ss)))
        inside = cv2.dilate(inside, np.ones((g + 1, 2 * g + 1), np.uint8), anchor=(g, 0))
        return cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 0.7 * ss)

    def _cavity(self, shape: tuple[int, int], up: np.ndarray, lo: np.ndarray, ss: int
                ) -> np.ndarray:
        """Synthesized mouth interior for the opening between contours ``up`` and ``lo``."""
        h, w = shape
        xs = np.arange(w, dtype=np.float32)
        ys = np.arange(h, dtype=np.float32)[:, None]
        ou = np.argsort(up[:, 0])
        ol = np.argsort(lo[:, 0])
        y_up = np.interp(xs, up[ou, 0], up[ou, 1])
        y_lo = np.interp(xs, lo[ol, 0], lo[ol, 1])
        left, right = min(up[:, 0].min(), lo[:, 0].min()), max(up[:, 0].max(), lo[:, 0].max())
        centre, half = (left + right) / 2, max((right - left) / 2, 1.0)
        s = np.clip((xs - centre) / half, -1.0, 1.0)
        open_h = np.maximum(y_lo - y_up, 1e-3)
        t = np.clip((ys - y_up) / open_h, 0.0, 1.0)
        lip = self.lip_rgb
        # Deep red-brown shadow, darker towards the corners and the back of the mouth,
        # lighter just inside the lips (wet inner lip catching light).
        base = lip * np.array([0.24, 0.17, 0.17], np.float32)
        near_lip = np.exp(-np.minimum(ys - y_up, y_lo - ys).clip(0) / (2.5 * ss))
        back = 1.0 - 0.3 * np.exp(-0.5 * ((t - 0.4) / 0.25) ** 2)
        img = base[None, None, :] * (back * (1.0 - 0.4 * (s * s))[None, :])[..., None]
        img = img + (lip * 0.16) * near_lip[..., None]
        # Tongue: muted red low in the opening, visible once the mouth is open wide.
        max_open = float(open_h.max())
        tongue_on = np.clip((max_open / (0.1 * self.px_per_iod * ss)) - 0.5, 0.0, 1.0)
        if tongue_on > 0:
            ta = _smooth01((t - 0.6) / 0.35) * np.clip(1.0 - (s / 0.7) ** 2, 0, 1)[None, :]
            ta *= 0.8 * tongue_on
            tongue = lip * np.array([0.46, 0.3, 0.3], np.float32)
            img = img * (1 - ta[..., None]) + tongue[None, None, :] * ta[..., None]
        if not self.portrait_teeth:
            band = np.minimum(0.075 * self.px_per_iod * ss, 0.45 * open_h)
            tb = (ys - y_up) / np.maximum(band, 1e-3)
            ta = np.clip(1.0 - tb, 0.0, 1.0) * (tb >= -0.5)
            ta = _smooth01(ta * 2.5)
            edge = np.clip(1.0 - np.abs(s) ** 2.5, 0.0, 1.0) ** 0.7
            shade = (0.78 + 0.22 * np.clip(1.0 - tb, 0, 1)) * (0.45 + 0.55 * edge)[None, :]
            tooth = self.teeth_rgb[None, None, :] * shade[..., None]
            a = (ta * edge[None, :])[..., None]
            img = img * (1 - a) + tooth * a
        return img.astype(np.float32)

    # -- eyes ------------------------------------------------------------------------
    def _eye(self, colour: np.ndarray, dst: np.ndarray, head: np.ndarray,
             offset: tuple[int, int], eye: int, kind: int, map_x: np.ndarray,
             map_y: np.ndarray, label: np.ndarray) -> None:
        rig = self.rig
        pts = np.concatenate([head[rig.eye_up[eye]], head[rig.eye_lo[eye]]]) - offset
        box = self._box(pts, 0.06 * self.px_per_iod + 2, colour.shape)
        if box is None:
            return
        bx0, by0, bx1, by1 = box
        _, _, slab, ix, iy, _ = self._layer_maps(
            dst, head, box, offset, 1, map_x, map_y, label)
        hole = (slab == kind).astype(np.float32)
        alpha = cv2.GaussianBlur(hole, (0, 0), 0.6)[..., None]
        skin = colour[by0:by1, bx0:bx1].astype(np.float32)
        ball = cv2.remap(self.work, ix, iy, self.interp,
                         borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        result = alpha * ball + (1.0 - alpha) * skin
        colour[by0:by1, bx0:bx1] = np.clip(result + 0.5, 0, 255).astype(np.uint8)


def _smooth01(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ----------------------------------------------------------------------------------
# setup


def _mean_in(img: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    if mask.sum() < 4:
        return fallback
    return img[mask > 0].reshape(-1, 3).astype(np.float32).mean(axis=0)


def make_renderer(face: FaceModel, rig: Rig, framing: Framing, quality: bool) -> Renderer:
    """Precompute the working image, still frame, moving region and colours."""
    img = face.image
    ih, iw = img.shape[:2]
    # Working image: the framed region plus margin, downscaled (area filter) when the
    # output is smaller than the portrait so the per-frame kernel never aliases.
    fx0, fy0 = framing.to_image(np.array([-0.5, -0.5]))
    fx1, fy1 = framing.to_image(np.array([framing.out_w - 0.5, framing.out_h - 0.5]))
    mx, my = (fx1 - fx0) * WORK_MARGIN, (fy1 - fy0) * WORK_MARGIN
    rx0, ry0 = int(max(np.floor(fx0 - mx), 0)), int(max(np.floor(fy0 - my), 0))
    rx1, ry1 = int(min(np.ceil(fx1 + mx), iw)), int(min(np.ceil(fy1 + my), ih))
    region = img[ry0:ry1, rx0:rx1]
    k = min(1.0, framing.scale)
    if k < 1.0:
        ww, wh = max(1, round(region.shape[1] * k)), max(1, round(region.shape[0] * k))
        work = cv2.resize(region, (ww, wh), interpolation=cv2.INTER_AREA)
        kx, ky = ww / region.shape[1], wh / region.shape[0]
    else:
        work = np.ascontiguousarray(region)
        kx = ky = 1.0
    work_to = (kx, ky, float(rx0), float(ry0))

    def to_work(xy: np.ndarray) -> np.ndarray:
        return np.stack([(xy[..., 0] - rx0 + 0.5) * kx - 0.5,
                         (xy[..., 1] - ry0 + 0.5) * ky - 0.5], axis=-1)

    upsample = framing.scale / k
    if not quality:
        interp = cv2.INTER_LINEAR
    elif upsample >= 1.5:
        interp = cv2.INTER_CUBIC
    else:
        interp = cv2.INTER_LANCZOS4
    gx = np.arange(framing.out_w, dtype=np.float64)
    gy = np.arange(framing.out_h, dtype=np.float64)
    grid = framing.to_image(np.stack(np.meshgrid(gx, gy), axis=-1))
    base = to_work(grid).astype(np.float32)
    base_x, base_y = np.ascontiguousarray(base[..., 0]), np.ascontiguousarray(base[..., 1])
    still = cv2.remap(work, base_x, base_y, interp, borderMode=cv2.BORDER_REPLICATE)

    ring = framing.to_output(rig.src[rig.outer_ring])
    x0 = int(np.clip(np.floor(ring[:, 0].min()), 0, framing.out_w))
    y0 = int(np.clip(np.floor(ring[:, 1].min()), 0, framing.out_h))
    x1 = int(np.clip(np.ceil(ring[:, 0].max()) + 1, 0, framing.out_w))
    y1 = int(np.clip(np.ceil(ring[:, 1].max()) + 1, 0, framing.out_h))

    src_work = to_work(rig.src)
    # Colours sampled from the portrait itself.
    lm = face.landmarks
    wimg = work
    lip_mask = np.zeros(wimg.shape[:2], np.uint8)
    outer = to_work(lm[list(L.MOUTH_OUTER_UP) + list(L.MOUTH_OUTER_LO[::-1]), :2])
    inner = to_work(rig.src[np.concatenate([rig.mouth_up, rig.mouth_lo[::-1]])])
    cv2.fillPoly(lip_mask, [np.round(outer).astype(np.int32)], 1)
    cv2.fillPoly(lip_mask, [np.round(inner).astype(np.int32)], 0)
    lip_rgb = _mean_in(wimg, lip_mask, np.array([150.0, 80.0, 80.0], np.float32))
    skin_mask = np.zeros(wimg.shape[:2], np.uint8)
    for idx in (50, 280, 101, 330):  # cheeks
        c = to_work(lm[idx, :2])
        r = max(2, int(0.06 * rig.frame.iod * kx))
        cv2.circle(skin_mask, (int(c[0]), int(c[1])), r, 1, -1)
    skin_rgb = _mean_in(wimg, skin_mask, np.array([190.0, 150.0, 130.0], np.float32))
    interior = np.zeros(wimg.shape[:2], np.uint8)
    cv2.fillPoly(interior, [np.round(inner * 8).astype(np.int32)], 1, shift=3)
    interior_px = wimg[interior > 0]
    portrait_teeth = False
    if rig.source_gap > 0.03 and len(interior_px) > 8:
        lum = interior_px.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        bright = np.percentile(lum, 80)
        skin_lum = float(skin_rgb @ np.array([0.299, 0.587, 0.114]))
        portrait_teeth = bool(bright > 0.85 * skin_lum)
    teeth_rgb = 0.82 * np.array([236.0, 232.0, 222.0]) + 0.18 * skin_rgb
    gain = np.ones(len(CONTROLS), np.float32)
    if portrait_teeth:
        # The upper lip already sits on the teeth; raising it would bare a strip of gum.
        gain[CONTROLS.index("lip_up")] = 0.15
    return Renderer(
        rig=rig, framing=framing, work=work, work_to=work_to, src_work=src_work,
        base_x=base_x, base_y=base_y, still=still, roi=(x0, y0, x1, y1), interp=interp,
        supersample=2 if quality else 1, portrait_open=rig.source_gap > 0.03,
        portrait_teeth=portrait_teeth, lip_rgb=lip_rgb.astype(np.float32),
        skin_rgb=skin_rgb.astype(np.float32), teeth_rgb=teeth_rgb.astype(np.float32),
        px_per_iod=rig.frame.iod * framing.scale, gain=gain)
