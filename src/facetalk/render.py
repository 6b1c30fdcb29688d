"""Frames from a still portrait and per-frame controls.

One resampling step per pixel: output pixel -> (framing) -> (inverse face warp) ->
portrait pixel. The exact backward map is rasterized from the deformed mesh (see
raster.py); the mouth and eye openings are then composited from their own layers (see
layers.py). Pixels outside the moving region are a copy of a precomputed still frame,
bit for bit.

Speed: the portrait region is resampled once, at setup, to the output's scale (a
Lanczos upscale when the face is enlarged). Per frame, the content is then band-limited
at output scale, so a bilinear read keeps its sharpness at a fraction of the cost of a
bicubic one; where the output is not larger than the portrait, the quality tier reads
with bicubic/Lanczos kernels instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from . import landmarks as L
from .face import FaceModel
from .framing import Framing
from .layers import composite_opening
from .raster import rasterize
from .rig import CONTROLS, Rig

#: Margin of portrait kept around the frame so head motion never samples past an edge.
WORK_MARGIN = 0.25
#: Enlargement (output px per portrait px) from which the working image is pre-upscaled
#: and read bilinearly per frame.
PREFILTER_FROM = 2.0
BLINK = CONTROLS.index("blink_r")
#: The smooth part of the backward map is rasterized on a grid this many times sparser.
COARSE = 2


@dataclass
class Renderer:
    """Everything precomputed for one portrait + framing; ``frame()`` renders one frame."""

    rig: Rig
    framing: Framing
    work: np.ndarray  # portrait region at (about) output scale, uint8 RGB
    work_affine: tuple[float, float, float, float]  # work = (img * k) + offset, per axis
    src_work: np.ndarray  # (N, 2) rig vertices in work coordinates
    base_x: np.ndarray  # (H, W) float32 identity map, output -> work
    base_y: np.ndarray
    still: np.ndarray  # (H, W, 3) uint8, the frame with no motion
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 of the moving region (output px)
    interp: int
    portrait_open: bool  # the portrait shows its own mouth interior (reused when opening)
    portrait_teeth: bool  # ...and that interior shows teeth
    lip_rgb: np.ndarray
    teeth_rgb: np.ndarray
    px_per_iod: float
    gain: np.ndarray  # per-control multiplier adapting the motion to this portrait
    mouth_fit: np.ndarray  # vertex ids whose motion defines the teeth layer's transform
    eye_fit: tuple[np.ndarray, np.ndarray]
    coarse: int  # the smooth part of the map is rasterized every COARSE-th pixel
    coarse_base: tuple[np.ndarray, np.ndarray]  # identity map on that coarse grid
    timings: dict[str, float] = field(default_factory=dict)
    _buf: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_out(self, img_xy: np.ndarray) -> np.ndarray:
        """Portrait coordinates to output pixels."""
        return self.framing.to_output(img_xy)

    def _tick(self, name: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + t1 - t0
        return t1

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        buf = self._buf.get(name)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype)
            self._buf[name] = buf
        return buf

    def _scratch(self, name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
        """A C-contiguous scratch array of a size that changes every frame (the mouth and
        eye boxes), carved from one flat buffer that only grows: keying buffers by their
        size kept one per size ever seen and grew memory with the video's length."""
        n = shape[0] * shape[1]
        flat = self._buf.get(name)
        if flat is None or flat.size < n:
            flat = np.empty(max(n, 2 * (0 if flat is None else flat.size)), dtype)
            self._buf[name] = flat
        return flat[:n].reshape(shape)

    # -- one frame -------------------------------------------------------------------
    def frame(self, controls: np.ndarray, pose: np.ndarray, out: np.ndarray | None = None
              ) -> np.ndarray:
        """Render one RGB frame for ``controls`` (see rig.CONTROLS) and head ``pose``."""
        t0 = time.perf_counter()
        rig = self.rig
        controls = controls * self.gain
        x0, y0, x1, y1 = self.roi
        h, w = self.still.shape[:2]
        if out is None:
            out = np.empty_like(self.still)
        full = (x0, y0, x1, y1) == (0, 0, w, h)
        if not full:
            np.copyto(out, self.still)
        if x1 <= x0 or y1 <= y0:
            return out
        dst_img, head_img = rig.deform_pair(controls, pose)
        dst, head = self.to_out(dst_img), self.to_out(head_img)
        t0 = self._tick("motion", t0)
        map_x, map_y = self._maps(dst, (x0, y0, x1, y1))
        # Where the map is discontinuous (the lip seam, closing lids) it must be exact:
        # rasterize those boxes again at full resolution.
        boxes = [self._box(np.concatenate([dst[rig.mouth_up], dst[rig.mouth_lo]]) - (x0, y0),
                           0.12 * self.px_per_iod + 4, map_x.shape)]
        for eye in (0, 1):
            if controls[BLINK + eye] > 0.02:
                boxes.append(self._box(np.concatenate([dst[rig.eye_up[eye]],
                                                       dst[rig.eye_lo[eye]]]) - (x0, y0),
                                       0.05 * self.px_per_iod + 4, map_x.shape))
        for box in boxes:
            if box is None:
                continue
            bx0, by0, bx1, by1 = box
            bh, bw = by1 - by0, bx1 - bx0
            label = self._scratch("boxlab", (bh, bw), np.uint8)
            rasterize(dst - (x0 + bx0, y0 + by0), self.src_work, rig.tris, rig.kinds,
                      map_x[by0:by1, bx0:bx1], map_y[by0:by1, bx0:bx1], label)
        t0 = self._tick("warp", t0)
        colour = out if full else self._buffer("col", (*map_x.shape, 3), np.uint8)
        cv2.remap(self.work, map_x, map_y, self.interp, dst=colour,
                  borderMode=cv2.BORDER_REPLICATE)
        t0 = self._tick("resample", t0)
        self._mouth(colour, dst, head, (x0, y0))
        for eye in (0, 1):
            if controls[BLINK + eye] > 0.02:
                self._eye(colour, dst, head, (x0, y0), eye)
        if not full:
            out[y0:y1, x0:x1] = colour
        self._tick("mouth+eyes", t0)
        return out

    def _maps(self, dst: np.ndarray, roi: tuple[int, int, int, int]
              ) -> tuple[np.ndarray, np.ndarray]:
        """Backward maps over the ROI, rasterized on a grid COARSE times sparser.

        Away from the lip seam and the lids the map is piecewise affine with gentle
        kinks, so rasterizing every COARSE-th pixel and interpolating linearly is exact
        inside triangles and off by a tiny fraction of a pixel at their edges. The grid
        extends one cell past the ROI so interpolation never clamps at its border.
        """
        x0, y0, x1, y1 = roi
        c = self.coarse
        shape = (y1 - y0, x1 - x0)
        map_x = self._buffer("mx", shape, np.float32)
        map_y = self._buffer("my", shape, np.float32)
        if c == 1:
            np.copyto(map_x, self.base_x[y0:y1, x0:x1])
            np.copyto(map_y, self.base_y[y0:y1, x0:x1])
            label = self._buffer("lab", shape, np.uint8)
            rasterize(dst - (x0, y0), self.src_work, self.rig.tris, self.rig.kinds,
                      map_x, map_y, label)
            return map_x, map_y
        cx, cy = self.coarse_base
        cshape = cx.shape
        mx = self._buffer("cmx", cshape, np.float32)
        my = self._buffer("cmy", cshape, np.float32)
        np.copyto(mx, cx)
        np.copyto(my, cy)
        label = self._buffer("clab", cshape, np.uint8)
        # Coarse cell (i, j) has its centre at output (x0 - c + c*i + (c-1)/2, ...).
        origin = np.array([x0 - c + (c - 1) / 2.0, y0 - c + (c - 1) / 2.0])
        rasterize((dst - origin) / c, self.src_work, self.rig.tris, self.rig.kinds,
                  mx, my, label)
        big = (cshape[1] * c, cshape[0] * c)
        ux = self._buffer("ux", (big[1], big[0]), np.float32)
        uy = self._buffer("uy", (big[1], big[0]), np.float32)
        cv2.resize(mx, big, dst=ux, interpolation=cv2.INTER_LINEAR)
        cv2.resize(my, big, dst=uy, interpolation=cv2.INTER_LINEAR)
        np.copyto(map_x, ux[c:c + shape[0], c:c + shape[1]])
        np.copyto(map_y, uy[c:c + shape[0], c:c + shape[1]])
        return map_x, map_y

    # -- openings --------------------------------------------------------------------
    @staticmethod
    def _box(pts: np.ndarray, margin: float, shape: tuple[int, ...]
             ) -> tuple[int, int, int, int] | None:
        bx0 = int(max(np.floor(pts[:, 0].min() - margin), 0))
        by0 = int(max(np.floor(pts[:, 1].min() - margin), 0))
        bx1 = int(min(np.ceil(pts[:, 0].max() + margin) + 1, shape[1]))
        by1 = int(min(np.ceil(pts[:, 1].max() + margin) + 1, shape[0]))
        if bx1 <= bx0 or by1 <= by0:
            return None
        return bx0, by0, bx1, by1

    @staticmethod
    def _columns(up: np.ndarray, lo: np.ndarray, xs: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Upper/lower edge of an opening at each column ``xs`` (closed outside it)."""
        ou = np.argsort(up[:, 0])
        ol = np.argsort(lo[:, 0])
        y_up = np.interp(xs, up[ou, 0], up[ou, 1], left=np.inf, right=np.inf)
        y_lo = np.interp(xs, lo[ol, 0], lo[ol, 1], left=-np.inf, right=-np.inf)
        return y_up, y_lo

    def _layer(self, head: np.ndarray, ids: np.ndarray, box: tuple[int, int, int, int],
               offset: tuple[int, int]) -> np.ndarray:
        """The portrait under head motion only, resampled into ``box``.

        Around one feature the head-only warp is an affine map to within a fraction of
        a pixel; fitting it to that feature's vertices is far cheaper than
        rasterizing a second mesh.
        """
        bx0, by0, bx1, by1 = box
        d = head[ids] - (bx0 + offset[0], by0 + offset[1])
        a = np.concatenate([d, np.ones((len(ids), 1))], axis=1)
        m, *_ = np.linalg.lstsq(a, self.src_work[ids], rcond=None)
        return cv2.warpAffine(self.work, np.ascontiguousarray(m.T), (bx1 - bx0, by1 - by0),
                              flags=self.interp | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def _mouth(self, colour: np.ndarray, dst: np.ndarray, head: np.ndarray,
               offset: tuple[int, int]) -> None:
        rig = self.rig
        up = dst[rig.mouth_up] - offset
        lo = dst[rig.mouth_lo] - offset
        gap = lo[:, 1] - up[:, 1]
        if gap.max() <= 0.02:
            return  # closed: nothing to composite
        rim_w = max(1.0, 0.025 * self.px_per_iod)
        box = self._box(np.concatenate([up, lo]), 4 * rim_w + 2, colour.shape)
        if box is None:
            return
        bx0, by0, bx1, by1 = box
        xs = np.arange(bx0, bx1, dtype=np.float64)
        y_up, y_lo = self._columns(up, lo, xs)
        if self.portrait_open:
            own_up, own_lo = self._columns(head[rig.mouth_up] - offset,
                                           head[rig.mouth_lo] - offset, xs)
        else:
            own_up = np.full_like(xs, np.inf)
            own_lo = np.full_like(xs, -np.inf)
        inner = self._layer(head, self.mouth_fit, box, offset)
        left, right = min(up[:, 0].min(), lo[:, 0].min()), max(up[:, 0].max(), lo[:, 0].max())
        open_max = float(np.max(np.where(np.isfinite(y_lo - y_up), y_lo - y_up, 0.0)))
        tongue = float(np.clip(open_max / (0.1 * self.px_per_iod) - 0.5, 0.0, 1.0))
        params = np.array([(left + right) / 2 - bx0, max((right - left) / 2, 1.0),
                           self.px_per_iod, tongue, 0.45, 0.0 if self.portrait_teeth else 1.0])
        grow = max(1.0, 0.015 * self.px_per_iod)
        composite_opening(colour[by0:by1, bx0:bx1], inner, y_up - by0, y_lo - by0,
                          own_up - by0, own_lo - by0, grow, params, self.lip_rgb,
                          self.teeth_rgb, 0)

    def _eye(self, colour: np.ndarray, dst: np.ndarray, head: np.ndarray,
             offset: tuple[int, int], eye: int) -> None:
        rig = self.rig
        up = dst[rig.eye_up[eye]] - offset
        lo = dst[rig.eye_lo[eye]] - offset
        pts = np.concatenate([head[rig.eye_up[eye]], head[rig.eye_lo[eye]]]) - offset
        box = self._box(pts, 3.0, colour.shape)
        if box is None:
            return
        bx0, by0, bx1, by1 = box
        xs = np.arange(bx0, bx1, dtype=np.float64)
        y_up, y_lo = self._columns(up, lo, xs)
        inner = self._layer(head, self.eye_fit[eye], box, offset)
        nothing = np.zeros_like(xs)
        params = np.array([0.0, 1.0, self.px_per_iod, 0.0, 0.0, 0.0])
        composite_opening(colour[by0:by1, bx0:bx1], inner, y_up - by0, y_lo - by0,
                          nothing, nothing, 0.0, params, self.lip_rgb, self.teeth_rgb, 1)


# ----------------------------------------------------------------------------------
# setup


def warm_up() -> None:
    """Load the compiled kernels (numba's on-disk cache) with tiny inputs.

    Run in a background thread while the face is being analysed, so the first frame
    does not wait for it.
    """
    dst = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    tri, kind = np.array([[0, 1, 2]], np.int32), np.ones(1, np.uint8)
    mx, my, lab = np.zeros((6, 6), np.float32), np.zeros((6, 6), np.float32), np.zeros((6, 6), np.uint8)
    rasterize(dst, dst, tri, kind, mx, my, lab)  # whole buffers...
    rasterize(dst, dst, tri, kind, mx[1:5, 1:5], my[1:5, 1:5], lab[1:5, 1:5])  # ...and boxes in them
    frame = np.zeros((6, 6, 3), np.uint8)
    cols = np.zeros(4)
    composite_opening(frame[1:5, 1:5], np.zeros((4, 4, 3), np.uint8), cols, cols + 2.0, cols,
                      cols, 1.0, np.ones(6), np.ones(3), np.ones(3), 0)


def _mean_in(img: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    if mask.sum() < 4:
        return fallback
    return img[mask > 0].reshape(-1, 3).astype(np.float32).mean(axis=0)


def make_renderer(face: FaceModel, rig: Rig, framing: Framing, quality: bool) -> Renderer:
    """Precompute the working image, still frame, moving region and colours.

    ``quality`` selects the tier: bicubic/Lanczos reads where the face is not enlarged
    (where it is, the prefiltered working image is read bilinearly in both tiers) and
    the smooth part of the warp map on a 2x sparser grid (4x in the fast tier).
    """
    img = face.image
    ih, iw = img.shape[:2]
    # Working image: the framed region plus margin, resampled once to output scale
    # (area filter when shrinking, Lanczos when enlarging by PREFILTER_FROM or more).
    fx0, fy0 = framing.to_image(np.array([-0.5, -0.5]))
    fx1, fy1 = framing.to_image(np.array([framing.out_w - 0.5, framing.out_h - 0.5]))
    mx, my = (fx1 - fx0) * WORK_MARGIN, (fy1 - fy0) * WORK_MARGIN
    rx0, ry0 = int(max(np.floor(fx0 - mx), 0)), int(max(np.floor(fy0 - my), 0))
    rx1, ry1 = int(min(np.ceil(fx1 + mx), iw)), int(min(np.ceil(fy1 + my), ih))
    region = img[ry0:ry1, rx0:rx1]
    scale = framing.scale
    if scale < 1.0 or scale >= PREFILTER_FROM:
        ww, wh = max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale))
        filt = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LANCZOS4
        work = cv2.resize(region, (ww, wh), interpolation=filt)
        kx, ky = ww / region.shape[1], wh / region.shape[0]
    else:
        work = np.ascontiguousarray(region)
        kx = ky = 1.0
    upsample = scale / min(kx, ky)  # per-frame enlargement left to the kernel
    if not quality or upsample >= PREFILTER_FROM or kx > 1.0:
        interp = cv2.INTER_LINEAR
    elif upsample >= 1.25:
        interp = cv2.INTER_CUBIC
    else:
        interp = cv2.INTER_LANCZOS4

    def to_work(xy: np.ndarray) -> np.ndarray:
        return np.stack([(xy[..., 0] - rx0 + 0.5) * kx - 0.5,
                         (xy[..., 1] - ry0 + 0.5) * ky - 0.5], axis=-1)

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
    coarse = (COARSE if quality else 2 * COARSE) if min(framing.out_w, framing.out_h) >= 384 else 1
    # Identity map on the coarse grid (one extra cell on every side of the ROI).
    nx = -(-(x1 - x0) // coarse) + 2
    ny = -(-(y1 - y0) // coarse) + 2
    cgx = x0 - coarse + (coarse - 1) / 2.0 + coarse * np.arange(nx, dtype=np.float64)
    cgy = y0 - coarse + (coarse - 1) / 2.0 + coarse * np.arange(ny, dtype=np.float64)
    cbase = to_work(framing.to_image(np.stack(np.meshgrid(cgx, cgy), axis=-1))).astype(np.float32)

    # Colours sampled from the portrait itself.
    lm = face.landmarks
    lip_mask = np.zeros(img.shape[:2], np.uint8)
    outer = lm[list(L.MOUTH_OUTER_UP) + list(L.MOUTH_OUTER_LO[::-1]), :2]
    inner = rig.src[np.concatenate([rig.mouth_up, rig.mouth_lo[::-1]])]
    cv2.fillPoly(lip_mask, [np.round(outer * 8).astype(np.int32)], 1, shift=3)
    cv2.fillPoly(lip_mask, [np.round(inner * 8).astype(np.int32)], 0, shift=3)
    lip_rgb = _mean_in(img, lip_mask, np.array([150.0, 80.0, 80.0], np.float32))
    skin_mask = np.zeros(img.shape[:2], np.uint8)
    for idx in (50, 280, 101, 330):  # cheeks
        r = max(2, int(0.06 * rig.frame.iod))
        cv2.circle(skin_mask, (int(lm[idx, 0]), int(lm[idx, 1])), r, 1, -1)
    skin_rgb = _mean_in(img, skin_mask, np.array([190.0, 150.0, 130.0], np.float32))
    interior = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(interior, [np.round(inner * 8).astype(np.int32)], 1, shift=3)
    interior_px = img[interior > 0]
    portrait_open = rig.source_gap > 0.03
    portrait_teeth = False
    if portrait_open and len(interior_px) > 8:
        lum = interior_px.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        skin_lum = float(skin_rgb @ np.array([0.299, 0.587, 0.114]))
        portrait_teeth = bool(np.percentile(lum, 80) > 0.85 * skin_lum)
    # Synthetic teeth take the warmth of the portrait's own light (its skin).
    teeth_rgb = 0.6 * np.array([232.0, 226.0, 212.0]) + 0.4 * skin_rgb
    gain = np.ones(len(CONTROLS), np.float32)
    if portrait_teeth:
        # The upper lip already sits on the teeth; raising it would bare a strip of gum.
        gain[CONTROLS.index("lip_up")] = 0.15
    mouth_fit = np.unique(np.concatenate([
        rig.mouth_up, rig.mouth_lo, np.array(L.MOUTH_OUTER_UP + L.MOUTH_OUTER_LO)]))
    eye_fit = tuple(np.unique(np.concatenate([u, lo])) for u, lo in zip(rig.eye_up, rig.eye_lo,
                                                                        strict=True))
    return Renderer(
        rig=rig, framing=framing, work=work, work_affine=(kx, ky, float(rx0), float(ry0)),
        src_work=to_work(rig.src), base_x=base_x, base_y=base_y, still=still,
        roi=(x0, y0, x1, y1), interp=interp, portrait_open=portrait_open,
        portrait_teeth=portrait_teeth, lip_rgb=lip_rgb.astype(np.float64),
        teeth_rgb=teeth_rgb.astype(np.float64),
        px_per_iod=rig.frame.iod * framing.scale, gain=gain, mouth_fit=mouth_fit,
        eye_fit=(eye_fit[0], eye_fit[1]), coarse=coarse,
        coarse_base=(np.ascontiguousarray(cbase[..., 0]), np.ascontiguousarray(cbase[..., 1])))
