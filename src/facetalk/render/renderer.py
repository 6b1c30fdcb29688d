"""Frames from a still portrait and per-frame controls.

One resampling step per pixel: output pixel -> (framing) -> (inverse face warp) ->
portrait pixel. The exact backward map is rasterized from the deformed mesh (see
raster.py); the mouth and eye openings are then composited from their own layers (see
layers.py). Pixels outside the moving region are a copy of a precomputed still frame,
bit for bit.

Two outputs share everything up to the resampling: ``frame()`` gives RGB (live mode's
JPEGs, tests) and ``frame_i420()`` writes the encoder's own format (YUV 4:2:0) directly.
The latter reads luma at full and chroma at half resolution from planes converted once
at setup, so a frame costs 1.5 samples per pixel instead of 3 plus a colour conversion;
the mouth and eyes, composited in RGB, are converted patch by patch (with OpenCV 4,
whose one-channel remap is slow, it renders RGB and converts: see PLANAR).

Speed: the portrait region is resampled once, at setup, to the scale the output needs
(an area filter when shrinking, Lanczos when enlarging; 1.5x supersampled in the quality
tier), so the per-frame cost follows the output's size, not the portrait's. Per frame,
the content is then band-limited near output scale and a bilinear read keeps its
sharpness at a fraction of the cost of a bicubic or Lanczos one (see working_scale).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..face import landmarks as L
from ..face.analysis import FaceModel
from ..face.framing import Framing
from ..motion.controls import CONTROLS
from ..motion.kernels import warm_up as warm_up_motion
from .interior import OPEN_GAP, MouthSprites, build_mouth
from .layers import composite_eye, composite_mouth
from .raster import rasterize_tris, triangles
from .rig import Rig
from .rig import warm_up as warm_up_rig

#: Margin of portrait kept around the frame so head motion never samples past an edge.
WORK_MARGIN = 0.25
#: Enlargement (output px per portrait px) from which the fast tier's working image is
#: pre-upscaled.
PREFILTER_FROM = 2.0
#: The quality tier's working image, in pixels per output pixel (per axis), by how much
#: the framing enlarges the portrait: below 1 (a large photo), from 1 to PREFILTER_FROM,
#: and beyond; every band is read bilinearly. Measured on the face (Laplacian variance
#: against the portrait resized to the output, see measure.bench.sharpness_ratio), each is
#: the smallest that keeps the sharpness of the Lanczos/bicubic reads from the portrait it
#: replaces: phone portrait at 512 (scale 0.57): 0.97 from 1.5x vs 0.90 before (1.25x:
#: 0.62, 1x: 0.51); at 768 (0.86): 1.61 vs 0.76. Between 1 and 2 no supersampling would
#: do (phone portrait at 1024, scale 1.15: 0.52 from 1x, 0.76 from 1.5x, 0.98 from 2x vs
#: 1.24 before): the portrait's finest detail is at output pixel scale there, so the
#: working image is pre-emphasized instead (see EMPHASIS). The bundled portrait (scale
#: 3.4 and 6.9) keeps 1x, as before.
SUPERSAMPLE = (1.5, 1.0, 1.0)
#: Pre-emphasis of the working image where the quality tier enlarges the portrait less
#: than PREFILTER_FROM: the separable kernel [-e, 1 + 2e, -e], applied once, offsets the
#: average softening of the per-frame bilinear read (whose response at a random sub-pixel
#: offset falls off towards the pixel scale). Measured on the encoded output (phone
#: portrait at 1024, 10 s, face of the first frame): 1.01 at 0.12, 1.15 at 0.14, 1.31 at
#: 0.16, against 1.07 for the Lanczos read it replaces at a fraction of its cost.
EMPHASIS = 0.14
BLINK = CONTROLS.index("blink_r")
#: The smooth part of the backward map is rasterized on a grid this many times sparser.
COARSE = 2
#: Whether frame_i420 reads the Y, U and V planes (1.5 samples per pixel) or reads RGB and
#: converts. OpenCV 5's remap is vectorized for one channel; OpenCV 4's is not (measured
#: at 1024x1024: one-channel remap 2.3 ms on 5.x vs 6.1 ms on 4.11, where RGB + conversion
#: is the faster way). A property of the installed library, so a render's pixels never
#: depend on timing.
PLANAR = int(cv2.__version__.split(".")[0]) >= 5
#: A backward map (output px -> working-image px) as its x and y planes, float32 each.
_Map = tuple[np.ndarray, np.ndarray]


@dataclass
class Renderer:
    """Everything precomputed for one portrait + framing; ``frame()`` renders one frame."""

    rig: Rig
    framing: Framing
    work: np.ndarray  # portrait region at (about) output scale, uint8 RGB
    work_affine: tuple[float, float, float, float]  # work = (img * k) + offset, per axis
    src_work: np.ndarray  # (N, 2) rig vertices in work coordinates
    src_tri: np.ndarray  # (T, 3, 2) float64, their triangles' corners (gathered once)
    base: np.ndarray  # (H, W, 2) float32 identity map, output -> work
    still: np.ndarray  # (H, W, 3) uint8, the frame with no motion
    planes: tuple[np.ndarray, np.ndarray, np.ndarray]  # work as Y, U, V (BT.601, limited)
    still_i420: np.ndarray  # (H * 3 // 2, W) uint8, the still frame as the encoder takes it
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 of the moving region (output px)
    interp: int
    portrait_open: bool  # the portrait shows its own mouth interior (kept while at rest)
    portrait_teeth: bool  # ...and its upper teeth in it (reused when opening)
    lip_rgb: np.ndarray
    mouth: MouthSprites  # the mouth interior's layers (see interior.py)
    lid_rgb: tuple[np.ndarray, np.ndarray]  # upper-lid skin colour (right, left eye)
    lash_rgb: np.ndarray
    px_per_iod: float
    gain: np.ndarray  # per-control multiplier adapting the motion to this portrait
    mouth_fit: np.ndarray  # vertex ids whose motion defines the teeth layer's transform
    eye_fit: tuple[np.ndarray, np.ndarray]
    coarse: int  # the smooth part of the map is rasterized every COARSE-th pixel
    coarse_base: np.ndarray  # (2, h, w) identity map on that coarse grid (x plane, y plane)
    timings: dict[str, float] = field(default_factory=dict)
    _buf: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_out(self, img_xy: np.ndarray) -> np.ndarray:
        """Portrait coordinates to output pixels."""
        return self.framing.to_output(img_xy)

    def mouth_region(self) -> tuple[float, float, float, float]:
        """Output-px box around the lip line (x0, y0, x1, y1), where the watermark is faint.

        The inner lip line at rest, widened to the lips' edges and down by part of the
        jaw's travel. Kept tight: the lips' texture also carries much of the mark through
        strong compression (measured: a box down to the chin, at a tenth of the
        strength, lost it in 4 of 4 CRF 35 'veryfast' re-encodes of a 384 px clip).
        """
        rig = self.rig
        lips = self.to_out(rig.src[np.concatenate([rig.mouth_up, rig.mouth_lo])])
        k = self.px_per_iod
        return (float(lips[:, 0].min() - 0.1 * k), float(lips[:, 1].min() - 0.12 * k),
                float(lips[:, 0].max() + 0.1 * k), float(lips[:, 1].max() + 0.2 * k))

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
    def _warp(self, controls: np.ndarray, pose: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Map,
                         list[tuple[int, tuple[int, int, int, int]]]]:
        """Motion and backward map of one frame, shared by both outputs.

        Returns the gained controls, deformed and head-only vertices (output px), the
        map over the ROI (x and y planes, see _maps) and the patches around the features
        whose pixels are composited, as (feature, box): the mouth (-1) always, a closing eye
        (0 or 1); boxes in ROI px, even-aligned.
        """
        t0 = time.perf_counter()
        rig = self.rig
        controls = controls * self.gain
        x0, y0, x1, y1 = self.roi
        dst_img, head_img = rig.deform_pair(controls, pose)
        dst, head = self.to_out(dst_img), self.to_out(head_img)
        t0 = self._tick("motion", t0)
        # Each frame's triangles are gathered once and drawn into the grid and the boxes.
        dst_tri = triangles(dst, rig.tris)
        mx, my = self._maps(dst_tri, (x0, y0, x1, y1))
        shape = mx.shape
        # Where the map is discontinuous (the lip seam, closing lids) it must be exact:
        # rasterize those boxes again at full resolution.
        lips = np.concatenate([dst[rig.mouth_up], dst[rig.mouth_lo]]) - (x0, y0)
        seams = [(-1, self._box(lips, 0.12 * self.px_per_iod + 4, shape),
                  self._box(lips, 4 * self._rim() + 2, shape))]
        for eye in (0, 1):
            if controls[BLINK + eye] > 0.02:
                lids = np.concatenate([dst[rig.eye_up[eye]], dst[rig.eye_lo[eye]]]) - (x0, y0)
                own = np.concatenate([head[rig.eye_up[eye]], head[rig.eye_lo[eye]]]) - (x0, y0)
                seams.append((eye, self._box(lids, 0.05 * self.px_per_iod + 4, shape),
                              self._box(own, self._eye_margin(), shape)))
        patches = []
        for feature, box, drawn in seams:
            if box is None:
                continue
            bx0, by0, bx1, by1 = box
            rasterize_tris(dst_tri, self.src_tri, rig.kinds, mx[by0:by1, bx0:bx1],
                           my[by0:by1, bx0:bx1], None, (x0 + bx0, y0 + by0))
            patches.append((feature, _even_union(box, drawn, shape)))
        self._tick("warp", t0)
        return controls, dst, head, (mx, my), patches

    def frame(self, controls: np.ndarray, pose: np.ndarray, out: np.ndarray | None = None
              ) -> np.ndarray:
        """Render one RGB frame for ``controls`` (see motion.controls.CONTROLS) and head ``pose``."""
        x0, y0, x1, y1 = self.roi
        h, w = self.still.shape[:2]
        if out is None:
            out = np.empty_like(self.still)
        full = (x0, y0, x1, y1) == (0, 0, w, h)
        if not full:
            np.copyto(out, self.still)
        if x1 <= x0 or y1 <= y0:
            return out
        controls, dst, head, (mx, my), _ = self._warp(controls, pose)
        t0 = time.perf_counter()
        colour = out if full else self._buffer("col", (*mx.shape, 3), np.uint8)
        cv2.remap(self.work, mx, my, self.interp, dst=colour, borderMode=cv2.BORDER_REPLICATE)
        t0 = self._tick("resample", t0)
        self._features(colour, controls, dst, head, (x0, y0))
        if not full:
            out[y0:y1, x0:x1] = colour
        self._tick("mouth+eyes", t0)
        return out

    def frame_i420(self, controls: np.ndarray, pose: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Render one frame straight into ``out``, a (H * 3 // 2, W) I420 buffer.

        Luma is read at full and chroma at half resolution from planes converted once;
        the mouth and eye patches are composited in RGB and converted on their own
        (with OpenCV 4: the RGB frame, converted; see PLANAR).
        """
        if not PLANAR:
            rgb = self.frame(controls, pose, out=self._buffer("rgb", self.still.shape, np.uint8))
            t0 = time.perf_counter()
            cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420, dst=out)
            self._tick("colour conversion", t0)
            return out
        x0, y0, x1, y1 = self.roi
        h, w = self.still.shape[:2]
        y_plane, u_plane, v_plane = i420_planes(out, w, h)
        if (x0, y0, x1, y1) != (0, 0, w, h):
            np.copyto(out, self.still_i420)
        if x1 <= x0 or y1 <= y0:
            return out
        controls, dst, head, (mx, my), patches = self._warp(controls, pose)
        t0 = time.perf_counter()
        py, pu, pv = self.planes
        border = cv2.BORDER_REPLICATE
        cv2.remap(py, mx, my, self.interp, dst=y_plane[y0:y1, x0:x1], borderMode=border)
        cmx, cmy = self._chroma_map(mx, my)
        cx0, cy0, cx1, cy1 = x0 // 2, y0 // 2, x1 // 2, y1 // 2
        cv2.remap(pu, cmx, cmy, self.interp, dst=u_plane[cy0:cy1, cx0:cx1], borderMode=border)
        cv2.remap(pv, cmx, cmy, self.interp, dst=v_plane[cy0:cy1, cx0:cx1], borderMode=border)
        t0 = self._tick("resample", t0)
        for feature, (px0, py0, px1, py1) in patches:
            ph, pw = py1 - py0, px1 - px0
            rgb = self._scratch("patch", (ph * pw, 3), np.uint8).reshape(ph, pw, 3)
            cv2.remap(self.work, mx[py0:py1, px0:px1], my[py0:py1, px0:px1], self.interp,
                      dst=rgb, borderMode=border)
            offset = (x0 + px0, y0 + py0)
            if feature < 0:
                self._mouth(rgb, dst, head, offset)
            else:
                self._eye(rgb, dst, head, offset, feature, float(controls[BLINK + feature]))
            yuv = self._scratch("patch_yuv", (ph * 3 // 2, pw), np.uint8)
            cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420, dst=yuv)
            sy, su, sv = i420_planes(yuv, pw, ph)
            ax, ay = x0 + px0, y0 + py0
            y_plane[ay:ay + ph, ax:ax + pw] = sy
            u_plane[ay // 2:(ay + ph) // 2, ax // 2:(ax + pw) // 2] = su
            v_plane[ay // 2:(ay + ph) // 2, ax // 2:(ax + pw) // 2] = sv
        self._tick("mouth+eyes", t0)
        return out

    def _chroma_map(self, mx: np.ndarray, my: np.ndarray) -> _Map:
        """The map at the chroma samples of the ROI (see :func:`chroma_map`).

        With an even coarse factor the chroma grid is the coarse grid upsampled by
        ``c / 2``, starting ``c / 2`` cells in: no pass over the full-resolution map. The
        boxes rasterized again at full resolution are not in it; their chroma comes from
        the feature patches, which cover them.
        """
        h, w = mx.shape
        cmap = self._buffer("cmap", (2, h // 2, w // 2), np.float32)
        c = self.coarse
        if c % 2:
            return chroma_map(mx, my, (cmap[0], cmap[1]))
        f = c // 2
        grid = self._buf["cm"]
        if f > 1:
            up = self._buffer("cup", (2, grid.shape[1] * f, grid.shape[2] * f), np.float32)
            for k in (0, 1):
                cv2.resize(grid[k], (up.shape[2], up.shape[1]), dst=up[k],
                           interpolation=cv2.INTER_LINEAR)
            grid = up
        for k in (0, 1):
            view = grid[k, f:f + h // 2, f:f + w // 2]
            cv2.addWeighted(view, 0.5, view, 0.0, -0.25, dst=cmap[k])  # (x - 0.5) / 2, one pass
        return cmap[0], cmap[1]

    def _features(self, colour: np.ndarray, controls: np.ndarray, dst: np.ndarray,
                  head: np.ndarray, offset: tuple[int, int]) -> None:
        """Composite the mouth and any closing eye into ``colour`` (its origin: ``offset``)."""
        self._mouth(colour, dst, head, offset)
        for eye in (0, 1):
            if controls[BLINK + eye] > 0.02:
                self._eye(colour, dst, head, offset, eye, float(controls[BLINK + eye]))

    def _rim(self) -> float:
        """Width of the lips' inner rim (px), which the mouth layer shades."""
        return max(1.0, 0.025 * self.px_per_iod)

    def _maps(self, dst_tri: np.ndarray, roi: tuple[int, int, int, int]) -> _Map:
        """Backward map over the ROI as its x and y planes ((h, w) each), rasterized on a
        grid COARSE times sparser.

        Away from the lip seam and the lids the map is piecewise affine with gentle
        kinks, so rasterizing every COARSE-th pixel and interpolating linearly is exact
        inside triangles and off by a tiny fraction of a pixel at their edges. The grid
        extends one cell past the ROI so interpolation never clamps at its border. Two
        planes rather than one two-channel array: OpenCV enlarges two one-channel planes
        in about half the time of one two-channel array (0.14 vs 0.25 ms at 512 px), and
        remap reads them as fast.
        """
        x0, y0, x1, y1 = roi
        c = self.coarse
        shape = (y1 - y0, x1 - x0)
        if c == 1:
            m = self._buffer("m2", (2, *shape), np.float32)
            np.copyto(m[0], self.base[y0:y1, x0:x1, 0])
            np.copyto(m[1], self.base[y0:y1, x0:x1, 1])
            rasterize_tris(dst_tri, self.src_tri, self.rig.kinds, m[0], m[1], None, (x0, y0))
            return m[0], m[1]
        cshape = self.coarse_base.shape
        cm = self._buffer("cm", cshape, np.float32)
        np.copyto(cm, self.coarse_base)
        # Coarse cell (i, j) has its centre at output (x0 - c + c*i + (c-1)/2, ...).
        origin = (x0 - c + (c - 1) / 2.0, y0 - c + (c - 1) / 2.0)
        rasterize_tris(dst_tri, self.src_tri, self.rig.kinds, cm[0], cm[1], None, origin, 1.0 / c)
        big = self._buffer("um", (2, cshape[1] * c, cshape[2] * c), np.float32)
        for k in (0, 1):
            cv2.resize(cm[k], (big.shape[2], big.shape[1]), dst=big[k],
                       interpolation=cv2.INTER_LINEAR)
        return big[0, c:c + shape[0], c:c + shape[1]], big[1, c:c + shape[0], c:c + shape[1]]

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

    def _eye_margin(self) -> float:
        """Margin (px) around an eye's resting contour that its compositing may touch: the
        lid skin painted over a closing eye is read from just above the resting lid."""
        return 3.0 + 0.03 * self.px_per_iod

    def _head_affine(self, head: np.ndarray, ids: np.ndarray, box: tuple[int, int, int, int],
                     offset: tuple[int, int]) -> np.ndarray:
        """(2, 3) map from ``box`` pixels to working-image pixels under head motion only.

        Around one feature the head-only warp is an affine map to within a fraction of
        a pixel; fitting it to that feature's vertices is far cheaper than
        rasterizing a second mesh.
        """
        d = head[ids] - (box[0] + offset[0], box[1] + offset[1])
        a = np.concatenate([d, np.ones((len(ids), 1))], axis=1)
        # Least squares by the normal equations: a 3x3 solve, a tenth of lstsq's cost.
        m = np.linalg.solve(a.T @ a, a.T @ self.src_work[ids])
        return np.ascontiguousarray(m.T)

    def _layer(self, head: np.ndarray, ids: np.ndarray, box: tuple[int, int, int, int],
               offset: tuple[int, int]) -> np.ndarray:
        """The portrait under head motion only, resampled into ``box``."""
        return cv2.warpAffine(self.work, self._head_affine(head, ids, box, offset),
                              (box[2] - box[0], box[3] - box[1]),
                              flags=self.interp | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)

    def _edge_width(self) -> float:
        """The photo's own edge width in output px (most of a portrait pixel, at least one)."""
        return max(1.0, min(0.7 * self.framing.scale, 3.0))

    def _mouth(self, colour: np.ndarray, dst: np.ndarray, head: np.ndarray,
               offset: tuple[int, int]) -> None:
        rig = self.rig
        up = dst[rig.mouth_up] - offset
        lo = dst[rig.mouth_lo] - offset
        gap = lo[:, 1] - up[:, 1]
        if gap.max() <= 0.02:
            return  # closed: nothing to composite
        box = self._box(np.concatenate([up, lo]), 4 * self._rim() + 2, colour.shape)
        if box is None:
            return
        bx0, by0, bx1, by1 = box
        xs = np.arange(bx0, bx1, dtype=np.float64)
        aff = self._head_affine(head, self.mouth_fit, box, offset)
        own_up_pts = head[rig.mouth_up] - offset
        own_lo_pts = head[rig.mouth_lo] - offset
        m = self.mouth
        if self.portrait_open:
            kx, ky = self.work_affine[0], self.work_affine[1]
            lin = aff[:, :2]

            def to_box(v: np.ndarray) -> np.ndarray:
                """Offsets in portrait px -> box px."""
                return np.linalg.solve(lin, (v * (kx, ky)).T).T

            # The opening reaches to the lips' true edges, past the portrait's own lower
            # teeth and the top of its upper teeth where the landmarks put the lip lines
            # across them (MouthSprites.lower_band, upper_band)...
            lo_band, up_band = to_box(m.lower_band), to_box(m.upper_band)
            lo, own_lo_pts = lo + lo_band, own_lo_pts + lo_band
            up, own_up_pts = up + up_band, own_up_pts + up_band
            # ...and sideways to the ends of the photo's dark corners: one more point, where
            # the upper and lower contours meet, beyond each corner.
            reach = to_box(m.corner_reach)
            up, lo = _with_corners(up, lo, reach)
            own_up_pts, own_lo_pts = _with_corners(own_up_pts, own_lo_pts, reach)
        y_up, y_lo = self._columns(up, lo, xs)
        if self.portrait_open:
            own_up, own_lo = self._columns(own_up_pts, own_lo_pts, xs)
        else:
            own_up = np.full_like(xs, np.inf)
            own_lo = np.full_like(xs, -np.inf)
        # The lower teeth and tongue ride on the jaw: the incisors, nearer its hinge, move
        # about 0.8 as far as the chin (the lips move further: they also part on their own).
        jaw = aff[:, :2] @ (0.8 * (dst[L.CHIN] - head[L.CHIN]))
        left, right = min(up[:, 0].min(), lo[:, 0].min()), max(up[:, 0].max(), lo[:, 0].max())
        open_max = float(np.max(np.where(np.isfinite(y_lo - y_up), y_lo - y_up, 0.0)))
        openness = float(np.clip(open_max / (0.2 * self.px_per_iod), 0.0, 1.0))
        # The photo's own opening is kept while the mouth opens no wider than it anywhere
        # (one figure for the whole mouth: per column it would cut visible seams).
        wider = np.where(np.isfinite(own_lo - own_up), (y_lo - y_up) - np.maximum(own_lo - own_up, 0),
                         0.0)
        still = 1.0 - float(np.clip(np.nanmax(wider, initial=0.0) / max(1.0, 0.02 * self.px_per_iod),
                                    0.0, 1.0))
        params = np.array([(left + right) / 2 - bx0, max((right - left) / 2, 1.0),
                           self.px_per_iod, openness, self._edge_width(),
                           1.0 if m.own_teeth else 0.0, still, left - bx0, right - bx0])
        composite_mouth(colour[by0:by1, bx0:bx1], y_up - by0, y_lo - by0, own_up - by0,
                        own_lo - by0, aff, jaw, m.upper, m.jaw, m.grain, m.origin,
                        params, m.cavity, self.lip_rgb)

    def _eye(self, colour: np.ndarray, dst: np.ndarray, head: np.ndarray,
             offset: tuple[int, int], eye: int, closure: float) -> None:
        rig = self.rig
        up = dst[rig.eye_up[eye]] - offset
        lo = dst[rig.eye_lo[eye]] - offset
        rest = head[rig.eye_up[eye]] - offset
        box = self._box(np.concatenate([rest, head[rig.eye_lo[eye]] - offset]),
                        self._eye_margin(), colour.shape)
        if box is None:
            return
        bx0, by0, bx1, by1 = box
        xs = np.arange(bx0, bx1, dtype=np.float64)
        y_up, y_lo = self._columns(up, lo, xs)
        o = np.argsort(rest[:, 0])
        rest_up = np.interp(xs, rest[o, 0], rest[o, 1], left=np.nan, right=np.nan)
        inner = self._layer(head, self.eye_fit[eye], box, offset)
        params = np.array([self.px_per_iod, self._edge_width(), closure])
        composite_eye(colour[by0:by1, bx0:bx1], inner, y_up - by0, y_lo - by0, rest_up - by0,
                      self.lid_rgb[eye], self.lash_rgb, params)


def i420_planes(buf: np.ndarray, width: int, height: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of a contiguous (H * 3 // 2, W) I420 buffer."""
    flat = buf.reshape(-1)
    n, q = width * height, (width // 2) * (height // 2)
    return (flat[:n].reshape(height, width), flat[n:n + q].reshape(height // 2, width // 2),
            flat[n + q:n + 2 * q].reshape(height // 2, width // 2))


def chroma_map(mx: np.ndarray, my: np.ndarray, out: _Map | None = None) -> _Map:
    """The luma map (x and y planes) at the chroma samples' centres, in chroma-plane
    coordinates.

    A chroma sample covers 2x2 pixels, so its map is the mean of theirs (exact where the
    map is affine); work luma coordinate x is chroma coordinate (x - 0.5) / 2.
    """
    h, w = mx.shape
    if out is None:
        out = (np.empty((h // 2, w // 2), np.float32), np.empty((h // 2, w // 2), np.float32))
    for src, dst in zip((mx, my), out, strict=True):
        cv2.resize(src, (w // 2, h // 2), dst=dst, interpolation=cv2.INTER_AREA)
        np.subtract(dst, 0.5, out=dst)
        np.multiply(dst, 0.5, out=dst)
    return out


def _even_union(a: tuple[int, int, int, int], b: tuple[int, int, int, int] | None,
                shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The smallest box holding ``a`` and ``b`` with even corners (4:2:0 chroma), clipped."""
    x0, y0, x1, y1 = a
    if b is not None:
        x0, y0, x1, y1 = min(x0, b[0]), min(y0, b[1]), max(x1, b[2]), max(y1, b[3])
    return (x0 // 2 * 2, y0 // 2 * 2, min(-(-x1 // 2) * 2, shape[1] // 2 * 2),
            min(-(-y1 // 2) * 2, shape[0] // 2 * 2))


# ----------------------------------------------------------------------------------
# setup


def warm_up() -> None:
    """Load the compiled kernels (numba's on-disk cache) with tiny inputs.

    Run in a background thread while the face is being analysed, so the first frame
    does not wait for it.
    """
    tri = triangles(np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]]), np.array([[0, 1, 2]]))
    m2 = np.zeros((2, 6, 6), np.float32)  # the renderer's map planes, whole and boxes in them
    rasterize_tris(tri, tri, np.ones(1, np.uint8), m2[0], m2[1], None)
    rasterize_tris(tri, tri, np.ones(1, np.uint8), m2[0, 1:5, 1:5], m2[1, 1:5, 1:5], None)
    warm_up_rig()
    warm_up_motion()  # the live driver's loops, planned for every frame
    # The compositing kernels with the renderer's own argument types (float64 columns and
    # parameters, float32 layers, uint8 boxes that are strided views of a frame).
    frame = np.zeros((6, 6, 3), np.uint8)
    cols = np.zeros(4)
    layer = np.zeros((4, 4, 4), np.float32)
    composite_mouth(frame[1:5, 1:5], cols, cols + 2.0, cols, cols, np.zeros((2, 3)),
                    np.zeros(2), layer, layer, np.zeros((4, 4, 2), np.float32), np.zeros(2),
                    np.ones(9), np.ones(3), np.ones(3))
    composite_eye(frame[1:5, 1:5], np.zeros((4, 4, 3), np.uint8), cols, cols + 2.0, cols,
                  np.ones(3), np.ones(3), np.ones(3))


def _with_corners(up: np.ndarray, lo: np.ndarray, reach: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The opening's contours, each with a point beyond its left and right corner (``reach``:
    (2, 2) offsets from the leftmost and rightmost point of the two contours)."""
    both = np.concatenate([up, lo])
    ends = np.stack([both[np.argmin(both[:, 0])] + reach[0], both[np.argmax(both[:, 0])] + reach[1]])
    return np.concatenate([up, ends]), np.concatenate([lo, ends])


def _mean_in(img: np.ndarray, mask: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    if mask.sum() < 4:
        return fallback
    return img[mask > 0].reshape(-1, 3).astype(np.float32).mean(axis=0)


_Affine = tuple[float, float, int, int]  # kx, ky, rx0, ry0: work = (img - r0 + 0.5) * k - 0.5


def _to_work(xy: np.ndarray, affine: _Affine) -> np.ndarray:
    """Portrait coordinates to working-image coordinates (pixel centres kept aligned)."""
    kx, ky, rx0, ry0 = affine
    return np.stack([(xy[..., 0] - rx0 + 0.5) * kx - 0.5,
                     (xy[..., 1] - ry0 + 0.5) * ky - 0.5], axis=-1)


def working_scale(scale: float, quality: bool) -> float:
    """Working-image pixels per portrait pixel for a framing of ``scale`` (output px per
    portrait px): what the per-frame reads need, whatever the portrait's resolution.

    The fast tier works at output scale (shrunk with an area filter; enlarged with Lanczos
    from PREFILTER_FROM on), the quality tier at SUPERSAMPLE times output scale; both read
    it bilinearly per frame, instead of the quality tier's former Lanczos/bicubic reads
    from the portrait: a 12 MP photo then costs per frame what a small one does.
    """
    if scale >= PREFILTER_FROM:
        k = scale
    elif quality:
        k = scale * SUPERSAMPLE[0 if scale < 1.0 else 1]
    else:
        k = min(scale, 1.0)
    return 1.0 if abs(k - 1.0) < 0.02 else k


def _working_image(img: np.ndarray, framing: Framing, quality: bool
                   ) -> tuple[np.ndarray, _Affine, int]:
    """The framed region plus margin, resampled once to the working scale (area filter when
    shrinking, Lanczos when enlarging; pre-emphasized, see EMPHASIS), its affine from the
    portrait, and the per-frame interpolation (bilinear)."""
    ih, iw = img.shape[:2]
    fx0, fy0 = framing.to_image(np.array([-0.5, -0.5]))
    fx1, fy1 = framing.to_image(np.array([framing.out_w - 0.5, framing.out_h - 0.5]))
    mx, my = (fx1 - fx0) * WORK_MARGIN, (fy1 - fy0) * WORK_MARGIN
    rx0, ry0 = int(max(np.floor(fx0 - mx), 0)), int(max(np.floor(fy0 - my), 0))
    rx1, ry1 = int(min(np.ceil(fx1 + mx), iw)), int(min(np.ceil(fy1 + my), ih))
    region = img[ry0:ry1, rx0:rx1]
    k = working_scale(framing.scale, quality)
    if k != 1.0:
        ww, wh = max(1, round(region.shape[1] * k)), max(1, round(region.shape[0] * k))
        filt = cv2.INTER_AREA if k < 1.0 else cv2.INTER_LANCZOS4
        work = cv2.resize(region, (ww, wh), interpolation=filt)
        kx, ky = ww / region.shape[1], wh / region.shape[0]
    else:
        work = np.ascontiguousarray(region)
        kx = ky = 1.0
    if quality and k > 1.0 and framing.scale < PREFILTER_FROM:
        # (Not at 1:1, k == 1: the portrait's own pixels are then the output's, bit for bit.)
        kern = np.array([-EMPHASIS, 1.0 + 2.0 * EMPHASIS, -EMPHASIS], np.float32)
        work = cv2.sepFilter2D(work, -1, kern, kern, borderType=cv2.BORDER_REPLICATE)
    return work, (kx, ky, rx0, ry0), cv2.INTER_LINEAR


def _still_frames(work: np.ndarray, base: np.ndarray, interp: int, framing: Framing
                  ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The still frame in RGB; the encoder's planes of the working image (padded to even
    size: 4:2:0); and the still frame read from them as frame_i420 reads every frame."""
    still = cv2.remap(work, base, None, interp, borderMode=cv2.BORDER_REPLICATE)
    even = cv2.copyMakeBorder(work, 0, work.shape[0] % 2, 0, work.shape[1] % 2,
                              cv2.BORDER_REPLICATE)
    planes = tuple(np.ascontiguousarray(p) for p in i420_planes(
        cv2.cvtColor(even, cv2.COLOR_RGB2YUV_I420), even.shape[1], even.shape[0]))
    still_i420 = np.empty((framing.out_h * 3 // 2, framing.out_w), np.uint8)
    sy, su, sv = i420_planes(still_i420, framing.out_w, framing.out_h)
    cv2.remap(planes[0], base, None, interp, dst=sy, borderMode=cv2.BORDER_REPLICATE)
    cbx, cby = chroma_map(np.ascontiguousarray(base[..., 0]), np.ascontiguousarray(base[..., 1]))
    cv2.remap(planes[1], cbx, cby, interp, dst=su, borderMode=cv2.BORDER_REPLICATE)
    cv2.remap(planes[2], cbx, cby, interp, dst=sv, borderMode=cv2.BORDER_REPLICATE)
    return still, (planes[0], planes[1], planes[2]), still_i420


def _moving_region(rig: Rig, framing: Framing, quality: bool, affine: _Affine
                   ) -> tuple[tuple[int, int, int, int], int, np.ndarray]:
    """The moving region (even corners, so its chroma samples are whole), the coarse grid's
    step, and the identity map on that grid (one extra cell on every side of the region),
    as its x and y planes."""
    ring = framing.to_output(rig.src[rig.outer_ring])
    x0 = int(np.clip(np.floor(ring[:, 0].min()), 0, framing.out_w)) // 2 * 2
    y0 = int(np.clip(np.floor(ring[:, 1].min()), 0, framing.out_h)) // 2 * 2
    x1 = min(-(-int(np.clip(np.ceil(ring[:, 0].max()) + 1, 0, framing.out_w)) // 2) * 2,
             framing.out_w)
    y1 = min(-(-int(np.clip(np.ceil(ring[:, 1].max()) + 1, 0, framing.out_h)) // 2) * 2,
             framing.out_h)
    coarse = (COARSE if quality else 2 * COARSE) if min(framing.out_w, framing.out_h) >= 384 else 1
    nx = -(-(x1 - x0) // coarse) + 2
    ny = -(-(y1 - y0) // coarse) + 2
    cgx = x0 - coarse + (coarse - 1) / 2.0 + coarse * np.arange(nx, dtype=np.float64)
    cgy = y0 - coarse + (coarse - 1) / 2.0 + coarse * np.arange(ny, dtype=np.float64)
    coarse_base = _to_work(framing.to_image(np.stack(np.meshgrid(cgx, cgy), axis=-1)), affine)
    return (x0, y0, x1, y1), coarse, np.ascontiguousarray(
        coarse_base.astype(np.float32).transpose(2, 0, 1))


def _face_crop(face: FaceModel) -> tuple[FaceModel, np.ndarray]:
    """The face's neighbourhood (its landmark box and half its size around it) and the
    integer offset of that crop: the colour and grain measurements read only pixels near
    landmarks, so on the crop they give the same figures as on the whole portrait,
    without full-size masks and filters over a large photo."""
    x0, y0, x1, y1 = face.box
    m = 0.5 * face.size + 16
    h, w = face.image.shape[:2]
    cx0, cy0 = int(max(np.floor(x0 - m), 0)), int(max(np.floor(y0 - m), 0))
    cx1, cy1 = int(min(np.ceil(x1 + m), w)), int(min(np.ceil(y1 + m), h))
    offset = np.array([cx0, cy0], np.float32)
    lm = face.landmarks.copy()
    lm[:, :2] -= offset
    return FaceModel(image=face.image[cy0:cy1, cx0:cx1], landmarks=lm), offset


def _portrait_colours(face: FaceModel, rig: Rig, offset: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, bool, bool]:
    """Lip and skin colours sampled from the portrait itself (``face``: a crop of it at
    ``offset``), and whether the portrait shows its own mouth interior (and teeth in it)."""
    img, lm = face.image, face.landmarks
    lip_mask = np.zeros(img.shape[:2], np.uint8)
    outer = lm[list(L.MOUTH_OUTER_UP) + list(L.MOUTH_OUTER_LO[::-1]), :2]
    inner = rig.src[np.concatenate([rig.mouth_up, rig.mouth_lo[::-1]])] - offset
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
    portrait_open = rig.source_gap > OPEN_GAP
    portrait_teeth = False
    if portrait_open and len(interior_px) > 8:
        lum = interior_px.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        skin_lum = float(skin_rgb @ np.array([0.299, 0.587, 0.114]))
        portrait_teeth = bool(np.percentile(lum, 80) > 0.85 * skin_lum)
    return lip_rgb, skin_rgb, portrait_open, portrait_teeth


def _lid_colours(face: FaceModel, rig: Rig, skin_rgb: np.ndarray
                 ) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Each upper lid's skin colour (between the crease and the brow) and a lash colour."""
    img, lm = face.image, face.landmarks
    lids = []
    for upper in (L.R_LID_UPPER, L.L_LID_UPPER):
        mask = np.zeros(img.shape[:2], np.uint8)
        r = max(1, int(0.025 * rig.frame.iod))
        for idx in upper[1:-1]:
            cv2.circle(mask, (int(lm[idx, 0]), int(lm[idx, 1])), r, 1, -1)
        lids.append(_mean_in(img, mask, skin_rgb).astype(np.float64))
    lash = (lids[0] + lids[1]) / 2 * np.array([0.26, 0.2, 0.18])
    return (lids[0], lids[1]), lash


def make_renderer(face: FaceModel, rig: Rig, framing: Framing, quality: bool) -> Renderer:
    """Precompute the working image, still frame, moving region and colours.

    ``quality`` selects the tier: a 1.5x supersampled working image (see working_scale)
    and the smooth part of the warp map on a 2x sparser grid (4x in the fast tier).
    """
    work, affine, interp = _working_image(face.image, framing, quality)
    gx = np.arange(framing.out_w, dtype=np.float64)
    gy = np.arange(framing.out_h, dtype=np.float64)
    grid = framing.to_image(np.stack(np.meshgrid(gx, gy), axis=-1))
    base = np.ascontiguousarray(_to_work(grid, affine).astype(np.float32))
    still, planes, still_i420 = _still_frames(work, base, interp, framing)
    roi, coarse, coarse_base = _moving_region(rig, framing, quality, affine)
    crop, offset = _face_crop(face)
    lip_rgb, skin_rgb, portrait_open, portrait_teeth = _portrait_colours(crop, rig, offset)
    gain = np.ones(len(CONTROLS), np.float32)
    if portrait_teeth:
        # The upper lip already sits on the teeth; raising it would bare a strip of gum.
        gain[CONTROLS.index("lip_up")] = 0.15
    mouth_fit = np.unique(np.concatenate([
        rig.mouth_up, rig.mouth_lo, np.array(L.MOUTH_OUTER_UP + L.MOUTH_OUTER_LO)]))
    eye_fit = tuple(np.unique(np.concatenate([u, lo])) for u, lo in zip(rig.eye_up, rig.eye_lo,
                                                                        strict=True))
    src_work = _to_work(rig.src, affine)
    # The landmarks and picture it is given only locate colour and grain samples: the crop.
    mouth = build_mouth(work, lambda xy: _to_work(xy, affine), crop.landmarks, rig, lip_rgb,
                        skin_rgb, crop.image, portrait_teeth)
    lids, lash = _lid_colours(crop, rig, skin_rgb)
    kx, ky, rx0, ry0 = affine
    return Renderer(
        rig=rig, framing=framing, work=work, work_affine=(kx, ky, float(rx0), float(ry0)),
        src_work=src_work, src_tri=triangles(src_work, rig.tris), base=base, still=still,
        planes=planes, still_i420=still_i420, roi=roi, interp=interp,
        portrait_open=portrait_open, portrait_teeth=portrait_teeth,
        lip_rgb=lip_rgb.astype(np.float64), mouth=mouth,
        lid_rgb=lids, lash_rgb=lash,
        px_per_iod=rig.frame.iod * framing.scale, gain=gain, mouth_fit=mouth_fit,
        eye_fit=(eye_fit[0], eye_fit[1]), coarse=coarse, coarse_base=coarse_base)
