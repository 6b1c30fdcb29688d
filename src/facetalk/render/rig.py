"""The face rig: a triangle mesh over the portrait and how each control moves its vertices.

Built once per portrait from the 478 landmarks:

* the 852 triangles of the face mesh (holes at the mouth and eyes),
* the inner lip and eyelid contours densified with Catmull-Rom points, so lip and lid
  edges stay smooth curves at any output size instead of polygons,
* "interior" triangles filling the mouth and eye openings (rendered from their own
  layers, never stretched: see renderer.py),
* rings of anchor points outside the face oval, over which head motion fades to zero,
  so the background stays put and there is no seam.

Each control (jaw, lips, blink...) is a per-vertex displacement field. Fields are
prescribed on a few landmark sets and filled in everywhere else by harmonic
interpolation on the mesh graph: smooth, no fold-overs, and it respects the mouth
and eye openings because the two lips (and the two lids) are not connected by an edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._jit import configure_cache
from ..face import landmarks as L
from ..motion.controls import CONTROLS

configure_cache()
from numba import njit  # noqa: E402 - after the cache folder is chosen

# Triangle kinds, also the labels the rasterizer writes.
SKIN, MOUTH, EYE_R, EYE_L = 1, 2, 3, 4

RING_SCALES = (1.12, 1.32, 1.62, 2.05)
RING_HEAD_WEIGHT = (0.95, 0.7, 0.3, 0.0)
DENSIFY = 3  # points inserted per contour segment

# Amplitudes at control = 1, in inter-ocular distances (IOD).
JAW_DROP = 0.26
LIP_UP = 0.05
LIP_DOWN = 0.07
CLOSE_UPPER_SHARE = 0.4  # of the portrait's lip gap, closed by the upper lip
# Rounding draws the corners in by ROUND_IN and pouts the lips (upper up, lower down, by
# ROUND_BULGE at the centre). With 0.14 and 0.025 rounded vowels came out only 7 %
# narrower than spread ones (voices set, tune speakers, re-tracked: 0.93). The stronger
# pout parts rounded lips a little more, as on a real o; with 0.025 the re-tracked opening
# followed loudness slightly less (tune speakers mean r 0.816 against 0.821, eSpeak 0.876
# against 0.878).
ROUND_IN = 0.2
ROUND_BULGE = 0.04
SPREAD_OUT = 0.1
#: In an opening, the upper lip's inner edge drops with the corners as side**UPPER_ARCH
#: (side: 0 at the centre, 1 at a corner). With 4 it stayed level almost to the corners
#: and the opening of a rounded vowel came out as a box with straight sides.
UPPER_ARCH = 2.0
#: Rounding lifts the upper lip's inner edge by this share of the pout (the outer edge by
#: all of it). At 0.8 a rounded open vowel bared most of the upper incisors' crowns: the
#: widest frames of closed-mouth portraits showed two tall teeth filling the opening.
ROUND_UP_INNER = 0.3
#: ...and draws each corner in by at most this share of the mouth's half-width: a fixed
#: ROUND_IN squeezed a small mouth (mouth 0.7 IOD wide) to 42 % of its width.
ROUND_IN_SHARE = 0.38
PRESS = 0.02
BROW_UP = 0.09
BLINK_MEET = 0.2  # lids meet at this fraction of the opening, from the lower lid


@dataclass(frozen=True)
class FaceFrame:
    """Face-aligned axes: x from the subject's right eye to the left, y down, unit IOD."""

    origin: np.ndarray  # mouth centre, image px
    ex: np.ndarray
    ey: np.ndarray
    iod: float

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        """Image pixels to face units (u along the eyes, v down, in IODs)."""
        d = pts[..., :2] - self.origin
        return np.stack([d @ self.ex, d @ self.ey], axis=-1) / self.iod

    def vec(self, uv: np.ndarray) -> np.ndarray:
        """Face-unit displacement vectors to image pixels."""
        return (uv[..., :1] * self.ex + uv[..., 1:2] * self.ey) * self.iod


@dataclass
class Rig:
    """Mesh and per-control displacement fields for one portrait (image coordinates)."""

    src: np.ndarray  # (N, 2) float64 vertex positions in the portrait, all vertices
    z: np.ndarray  # (Ncore,) depth (px, + = away from camera) of core vertices
    n_core: int
    dense_idx: np.ndarray  # (Nd, 4) core indices of each densified point's spline
    dense_w: np.ndarray  # (Nd, 4) Catmull-Rom weights
    tris: np.ndarray  # (T, 3) int32, interior triangles first, then skin
    kinds: np.ndarray  # (T,) uint8
    bases: np.ndarray  # (K, Ncore, 2) displacement at control = 1, image px
    head_weight: np.ndarray  # (Ncore,)
    pivot: np.ndarray  # (3,) head rotation centre (x, y, z) in px
    frame: FaceFrame
    mouth_up: np.ndarray  # vertex indices of the densified inner upper lip, corner to corner
    mouth_lo: np.ndarray
    eye_up: tuple[np.ndarray, np.ndarray]  # densified upper lid margins (right, left)
    eye_lo: tuple[np.ndarray, np.ndarray]
    outer_ring: np.ndarray  # vertex indices of the outermost ring (motion is zero there)
    source_gap: float  # portrait's lip gap at the centre, in IOD

    def deform(self, controls: np.ndarray, pose: np.ndarray | None = None,
               local: bool = True) -> np.ndarray:
        """All vertex positions for one frame.

        ``controls`` follows CONTROLS; ``pose`` is (yaw, pitch, roll, tx, ty): radians,
        and a shift along the face axes in inter-ocular distances. With ``local=False``
        only the head pose is applied (for the layers that ride on the skull: teeth,
        eyeballs).
        """
        if not local:
            controls = np.zeros(len(self.bases))
        return self.deform_pair(controls, pose)[0]

    def deform_pair(self, controls: np.ndarray, pose: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(all vertices, all vertices under head motion only) for one frame.

        The pose is affine in the vertex position, so the local displacement is carried
        through it by its linear part instead of posing the mesh twice. Compiled: it
        runs for every frame, and as numpy calls it cost about a tenth of a 512 px
        frame's rendering.
        """
        controls = np.ascontiguousarray(controls, dtype=np.float64)
        if controls.shape != (len(self.bases),):  # the kernel does not check its bounds
            raise ValueError(f"expected {len(self.bases)} controls, got shape {controls.shape}")
        n = len(self.src)
        dst, head = np.empty((n, 2)), np.empty((n, 2))
        posed = pose is not None and bool(np.any(pose))
        shift = np.zeros(2)
        if posed:
            shift = (float(pose[3]) * self.frame.ex + float(pose[4]) * self.frame.ey) * self.frame.iod
        _pose_vertices(controls, self.bases, self.src,
                       self.z, self.pivot, np.zeros(3) if pose is None else
                       np.ascontiguousarray(pose[:3], dtype=np.float64), posed, shift,
                       self.head_weight, self.dense_idx, self.dense_w, dst, head)
        return dst, head


def warm_up() -> None:
    """Load the compiled pose kernel (numba's on-disk cache) with the renderer's types,
    so the first frame does not wait for it (see render.warm_up)."""
    one = np.ones(1)
    _pose_vertices(np.zeros(1), np.zeros((1, 1, 2)), np.zeros((1, 2)), one, np.zeros(3),
                   np.zeros(3), True, np.zeros(2), one, np.zeros((0, 4), np.int64),
                   np.zeros((0, 4)), np.zeros((1, 2)), np.zeros((1, 2)))


@njit(cache=True, nogil=True)
def _pose_vertices(controls: np.ndarray, bases: np.ndarray, src: np.ndarray, z: np.ndarray,
                   pivot: np.ndarray, angles: np.ndarray, posed: bool, shift: np.ndarray,
                   weight: np.ndarray, dense_idx: np.ndarray, dense_w: np.ndarray,
                   dst: np.ndarray, head: np.ndarray) -> None:  # pragma: no cover - compiled
    """Core vertices displaced by the controls and posed (rotation about ``pivot`` in
    3D, then ``shift``, faded by ``weight``), into ``dst``; posed only, into ``head``;
    then the spline points of both from their core points."""
    cy, sy = np.cos(angles[0]), np.sin(angles[0])  # yaw
    cp, sp = np.cos(angles[1]), np.sin(angles[1])  # pitch
    cr, sr = np.cos(angles[2]), np.sin(angles[2])  # roll
    # rot = rz @ rx @ ry
    r00, r01, r02 = cr * cy - sr * sp * sy, -sr * cp, cr * sy + sr * sp * cy
    r10, r11, r12 = sr * cy + cr * sp * sy, cr * cp, sr * sy - cr * sp * cy
    n_core, n_ctl = bases.shape[1], bases.shape[0]
    for i in range(n_core):
        dx = 0.0
        dy = 0.0
        for k in range(n_ctl):
            dx += controls[k] * bases[k, i, 0]
            dy += controls[k] * bases[k, i, 1]
        x, y = src[i, 0], src[i, 1]
        if posed:
            w = weight[i]
            px, py, pz = x - pivot[0], y - pivot[1], z[i] - pivot[2]
            mx = r00 * px + r01 * py + r02 * pz + pivot[0] + shift[0]
            my = r10 * px + r11 * py + r12 * pz + pivot[1] + shift[1]
            x, y = x + w * (mx - x), y + w * (my - y)
            dx, dy = ((1.0 - w) * dx + w * (r00 * dx + r01 * dy),
                      (1.0 - w) * dy + w * (r10 * dx + r11 * dy))
        head[i, 0], head[i, 1] = x, y
        dst[i, 0], dst[i, 1] = x + dx, y + dy
    for j in range(dense_idx.shape[0]):
        o = n_core + j
        for c in range(2):
            a = 0.0
            b = 0.0
            for k in range(4):
                a += dense_w[j, k] * dst[dense_idx[j, k], c]
                b += dense_w[j, k] * head[dense_idx[j, k], c]
            dst[o, c] = a
            head[o, c] = b


# ----------------------------------------------------------------------------------
# construction


def _catmull_rom(t: float) -> np.ndarray:
    return np.array([-0.5 * t**3 + t**2 - 0.5 * t, 1.5 * t**3 - 2.5 * t**2 + 1,
                     -1.5 * t**3 + 2 * t**2 + 0.5 * t, 0.5 * t**3 - 0.5 * t**2])


def _harmonic(n: int, edges: np.ndarray, fixed: dict[int, np.ndarray]) -> np.ndarray:
    """Values on all n vertices: ``fixed`` where given, graph-harmonic elsewhere."""
    dim = len(next(iter(fixed.values())))
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    adj = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    adj.data[:] = 1.0  # duplicate edges count once
    deg = np.asarray(adj.sum(axis=1)).ravel()
    lap = sp.diags(deg) - adj
    out = np.zeros((n, dim))
    fixed_idx = np.array(sorted(fixed), dtype=np.int64)
    for i in fixed_idx:
        out[i] = fixed[int(i)]
    free = np.setdiff1d(np.nonzero(deg > 0)[0], fixed_idx)
    if free.size:
        a = lap[free][:, free].tocsc()
        b = -lap[free][:, fixed_idx] @ out[fixed_idx]
        out[free] = spla.spsolve(a, b).reshape(len(free), dim)
    return out


def _face_frame(lm: np.ndarray) -> FaceFrame:
    """The face's own axes: x from the right to the left eye, origin between the lips."""
    r_eye = lm[list(L.R_EYE_UP + L.R_EYE_LO), :2].mean(axis=0)
    l_eye = lm[list(L.L_EYE_UP + L.L_EYE_LO), :2].mean(axis=0)
    iod = float(np.linalg.norm(l_eye - r_eye))
    ex = (l_eye - r_eye) / iod
    ey = np.array([-ex[1], ex[0]])
    mouth = (lm[13, :2] + lm[14, :2]) / 2
    return FaceFrame(origin=mouth, ex=ex, ey=ey, iod=iod)


def _core_vertices(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray],
                                              list[tuple[int, int, int]]]:
    """The 478 landmarks plus anchor rings around the face oval: positions, depths, the
    rings' vertex ids and the triangles joining each ring to the one inside it."""
    oval = np.array(L.FACE_OVAL)
    centre = lm[oval, :2].mean(axis=0)
    rings_xy, rings_z = [], []
    for s in RING_SCALES:
        rings_xy.append(centre + (lm[oval, :2] - centre) * s)
        rings_z.append(lm[oval, 2] * (1.0 - 0.2 * (s - 1.0)))
    n_lm = len(lm)
    ring_ids = [np.arange(n_lm + k * len(oval), n_lm + (k + 1) * len(oval))
                for k in range(len(RING_SCALES))]
    core_xy = np.concatenate([lm[:, :2]] + rings_xy)
    core_z = np.concatenate([lm[:, 2]] + rings_z)
    ring_tris = []
    prev = oval
    for ids in ring_ids:
        for i in range(len(oval)):
            j = (i + 1) % len(oval)
            ring_tris += [(prev[i], prev[j], ids[j]), (prev[i], ids[j], ids[i])]
        prev = ids
    return core_xy, core_z, ring_ids, ring_tris


def _densify(n_core: int) -> tuple[list[list[int]], list[np.ndarray], dict[str, list[int]],
                                   dict[tuple[int, int], list[int]]]:
    """Catmull-Rom points inserted along the lip and lid contours (DENSIFY per segment):
    their 4 support vertices and weights, each contour's vertex chain, and which new
    points replace each original contour edge."""
    dense_idx: list[list[int]] = []
    dense_w: list[np.ndarray] = []
    contours: dict[str, list[int]] = {}
    replaced: dict[tuple[int, int], list[int]] = {}
    for name, seq in (("mu", L.MOUTH_INNER_UP), ("ml", L.MOUTH_INNER_LO),
                      ("ru", L.R_EYE_UP), ("rl", L.R_EYE_LO),
                      ("lu", L.L_EYE_UP), ("ll", L.L_EYE_LO)):
        out = [seq[0]]
        for s in range(len(seq) - 1):
            p0, p1 = seq[max(s - 1, 0)], seq[s]
            p2, p3 = seq[s + 1], seq[min(s + 2, len(seq) - 1)]
            mids = []
            for k in range(1, DENSIFY + 1):
                dense_idx.append([p0, p1, p2, p3])
                dense_w.append(_catmull_rom(k / (DENSIFY + 1)))
                mids.append(n_core + len(dense_idx) - 1)
            replaced[(min(p1, p2), max(p1, p2))] = mids if p1 < p2 else mids[::-1]
            out += mids + [p2]
        contours[name] = out
    return dense_idx, dense_w, contours, replaced


def _split_on_contours(face_tris: list[tuple[int, int, int]],
                       replaced: dict[tuple[int, int], list[int]]) -> list[tuple[int, int, int]]:
    """Every face triangle that touches a densified contour edge, split into a fan."""
    tris: list[tuple[int, int, int]] = []
    for a, b, c in face_tris:
        for (p, q, r) in ((a, b, c), (b, c, a), (c, a, b)):
            key = (min(p, q), max(p, q))
            if key in replaced:
                mids = replaced[key] if p < q else replaced[key][::-1]
                chain = [p] + mids + [q]
                tris += [(r, chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
                break
        else:
            tris.append((a, b, c))
    return tris


def _strip(up: list[int], lo: list[int]) -> list[tuple[int, int, int]]:
    """Triangles filling the opening between an upper and a lower contour."""
    out = []
    for i in range(len(up) - 1):
        quad = [up[i], up[i + 1], lo[i + 1], lo[i]]
        if up[i] != lo[i]:
            out.append((quad[0], quad[1], quad[3]))
        if up[i + 1] != lo[i + 1]:
            out.append((quad[1], quad[2], quad[3]))
    return out


def build_rig(landmarks: np.ndarray) -> Rig:
    """Mesh, densified contours, anchor rings and control fields for one face."""
    lm = landmarks.astype(np.float64)
    frame = _face_frame(lm)
    ey, iod = frame.ey, frame.iod
    core_xy, core_z, ring_ids, ring_tris = _core_vertices(lm)
    n_core = len(core_xy)
    face_tris = [tuple(t) for t in L.face_triangles()]
    graph_edges = _edges(face_tris + ring_tris)
    dense_idx, dense_w, contours, replaced = _densify(n_core)
    tris = _split_on_contours(face_tris, replaced)

    interior = ([(t, MOUTH) for t in _strip(contours["mu"], contours["ml"])]
                + [(t, EYE_R) for t in _strip(contours["ru"], contours["rl"])]
                + [(t, EYE_L) for t in _strip(contours["lu"], contours["ll"])])
    skin = tris + ring_tris
    all_tris = np.array([t for t, _ in interior] + skin, dtype=np.int32)
    kinds = np.array([k for _, k in interior] + [SKIN] * len(skin), dtype=np.uint8)

    dense_idx_a = np.array(dense_idx, dtype=np.int64)
    dense_w_a = np.array(dense_w, dtype=np.float64)
    src_core = core_xy
    src_all = np.concatenate(
        [src_core, np.einsum("nk,nkc->nc", dense_w_a, src_core[dense_idx_a])])

    uv = frame.to_face(core_xy)
    bases = _control_fields(lm, uv, frame, n_core, graph_edges, ring_ids)
    head_weight = np.ones(n_core)
    for ids, w in zip(ring_ids, RING_HEAD_WEIGHT, strict=True):
        head_weight[ids] = w
    chin = lm[L.CHIN]
    face_h = float(np.linalg.norm(lm[L.CHIN, :2] - lm[L.FOREHEAD, :2]))
    pivot = np.array([chin[0], chin[1], chin[2]]) + np.concatenate(
        [ey * 0.25 * face_h, [0.6 * iod * 2.0]])
    gap = float(frame.to_face(lm[14:15, :2])[0, 1] - frame.to_face(lm[13:14, :2])[0, 1])
    return Rig(
        src=src_all, z=core_z, n_core=n_core, dense_idx=dense_idx_a, dense_w=dense_w_a,
        tris=all_tris, kinds=kinds, bases=bases, head_weight=head_weight, pivot=pivot,
        frame=frame,
        mouth_up=np.array(contours["mu"]), mouth_lo=np.array(contours["ml"]),
        eye_up=(np.array(contours["ru"]), np.array(contours["lu"])),
        eye_lo=(np.array(contours["rl"]), np.array(contours["ll"])),
        outer_ring=ring_ids[-1], source_gap=max(0.0, gap))


def _edges(tris: list[tuple[int, int, int]]) -> np.ndarray:
    e = set()
    for a, b, c in tris:
        for p, q in ((a, b), (b, c), (c, a)):
            e.add((min(p, q), max(p, q)))
    return np.array(sorted(e), dtype=np.int64)


def _smoothstep(a: float, b: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


#: The mouth corners (inner and outer), right then left.
_CORNERS = (78, 308, 61, 291)
_UP_IN, _LO_IN = L.MOUTH_INNER_UP[1:-1], L.MOUTH_INNER_LO[1:-1]
_UP_OUT, _LO_OUT = L.MOUTH_OUTER_UP[1:-1], L.MOUTH_OUTER_LO[1:-1]


def _jaw_fixed(uv: np.ndarray, half_w: float, ring_ids: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Jaw: rotation about the jaw joints, roughly a drop growing with distance below
    the joint line; the upper lip, nose and everything above stay."""
    v = uv[:, 1]
    pivot_v = -0.5
    chin_v = v[L.CHIN]
    jaw_fixed: dict[int, np.ndarray] = {}
    for i in set(L.FACE_OVAL):
        w = float(np.clip((v[i] - pivot_v) / (chin_v - pivot_v), 0, 1) ** 1.3)
        jaw_fixed[i] = np.array([0.0, w * JAW_DROP])
    for k, ids in enumerate(ring_ids):
        fade = (0.6, 0.25, 0.05, 0.0)[k]
        for j, i in enumerate(ids):
            jaw_fixed[int(i)] = jaw_fixed[L.FACE_OVAL[j]] * fade
    # The opening is a lens: the lower lip drops most at the centre, the corners about a
    # third as much, and the upper lip follows the corners right next to them, so the
    # opening tapers to the corners instead of ending in a box.
    corner_drop = 0.35
    for i in _UP_IN + _UP_OUT:
        side = min(1.0, abs(uv[i, 0]) / half_w)
        jaw_fixed[i] = np.array([0.0, corner_drop * side**UPPER_ARCH * JAW_DROP])
    for i in _LO_IN + _LO_OUT:
        side = min(1.0, abs(uv[i, 0]) / half_w)
        jaw_fixed[i] = np.array([0.0, (corner_drop + 0.5 * (1.0 - side * side)) * JAW_DROP])
    for i in _CORNERS:
        inward = -0.12 * np.sign(uv[i, 0])
        jaw_fixed[i] = np.array([inward * JAW_DROP, corner_drop * JAW_DROP])
    return jaw_fixed


def _close_fixed(uv: np.ndarray) -> dict[int, np.ndarray]:
    """Close: bring the portrait's inner lips together (a smile showing teeth closes)."""
    close: dict[int, np.ndarray] = {}
    for k, (u_i, l_i) in enumerate(zip(_UP_IN, _LO_IN, strict=True)):
        gap = (uv[l_i] - uv[u_i]) * np.array([0.0, 1.0])
        gap[1] = max(gap[1], 0.0)
        close[u_i] = CLOSE_UPPER_SHARE * gap
        close[l_i] = -(1 - CLOSE_UPPER_SHARE) * gap
        close[_UP_OUT[k]] = 0.35 * close[u_i]
        close[_LO_OUT[k]] = 0.35 * close[l_i]
    for i in _CORNERS:
        close[i] = np.zeros(2)
    return close


def _round_at(uv: np.ndarray, half_w: float, i: int) -> np.ndarray:
    side = uv[i, 0] / half_w
    bulge = ROUND_BULGE * (1 - min(1.0, side * side))
    dv = -bulge if i in L.MOUTH_OUTER_UP or i in L.MOUTH_INNER_UP[1:-1] else bulge
    if i in _CORNERS:
        dv = 0.0
    inner = ROUND_UP_INNER if i in _UP_IN else (0.8 if i in _LO_IN else 1.0)
    # A small mouth rounds by less (a fixed ROUND_IN squeezed it to a slot).
    return np.array([-min(ROUND_IN, ROUND_IN_SHARE * half_w) * side, dv * inner])


def _spread_at(uv: np.ndarray, half_w: float, i: int) -> np.ndarray:
    side = uv[i, 0] / half_w
    thin = 0.012 * (1 - min(1.0, side * side))
    dv = thin if i in _UP_OUT else (-thin if i in _LO_OUT else 0.0)
    return np.array([SPREAD_OUT * side, dv - 0.02 * side * side])


def _press_at(uv: np.ndarray, half_w: float, i: int) -> np.ndarray:
    side = uv[i, 0] / half_w
    amt = PRESS * (1 - min(1.0, side * side))
    dv = amt if i in _UP_OUT else (-amt if i in _LO_OUT else 0.0)
    return np.array([-0.01 * side, dv])


def _blink_fixed(uv: np.ndarray, upc: list[int], loc: list[int], crease: list[int],
                 upper: list[int]) -> dict[int, np.ndarray]:
    """One eye's lids meeting at BLINK_MEET of the way from the lower to the upper lid."""
    fixed = {}
    for k, (u_i, l_i) in enumerate(zip(upc[1:-1], loc[1:-1], strict=True)):
        meet = uv[l_i] + BLINK_MEET * (uv[u_i] - uv[l_i])
        fixed[u_i] = meet - uv[u_i]
        fixed[l_i] = meet - uv[l_i]
        # The lash band slides down with the lid margin instead of stretching; the
        # skin above it (towards the brow) takes up the stretch.
        fixed[crease[k]] = 0.85 * fixed[u_i]
        fixed[upper[k]] = 0.3 * fixed[u_i]
    fixed[upc[0]] = np.zeros(2)
    fixed[upc[-1]] = np.zeros(2)
    return fixed


def _control_fields(lm: np.ndarray, uv: np.ndarray, frame: FaceFrame, n: int,
                    edges: np.ndarray, ring_ids: list[np.ndarray]) -> np.ndarray:
    """(K, n, 2) image-pixel displacement of every core vertex at each control = 1."""
    up_in, lo_in, up_out, lo_out, corners = _UP_IN, _LO_IN, _UP_OUT, _LO_OUT, _CORNERS
    lips = set(L.MOUTH_INNER_UP + L.MOUTH_INNER_LO + L.MOUTH_OUTER_UP + L.MOUTH_OUTER_LO)
    eyes = set(L.R_EYE_UP + L.R_EYE_LO + L.L_EYE_UP + L.L_EYE_LO)
    brows = set(L.R_BROW + L.L_BROW)
    outer = set(int(i) for i in ring_ids[-1])
    oval = set(L.FACE_OVAL)
    nose = set(L.NOSE_BASE) | {L.NOSE_TIP}
    half_w = max(abs(uv[61, 0]), abs(uv[291, 0]), 1e-3)
    v = uv[:, 1]
    zero2 = np.zeros(2)

    def field(fixed_uv: dict[int, np.ndarray], zero: set[int]) -> np.ndarray:
        fixed = {i: zero2 for i in zero | outer}
        fixed.update({i: np.asarray(d, float) for i, d in fixed_uv.items()})
        return frame.vec(_harmonic(n, edges, fixed))

    mouth_zero = eyes | brows | nose | oval
    fields: dict[str, np.ndarray] = {}

    jaw_fixed = _jaw_fixed(uv, half_w, ring_ids)
    above = {i for i in range(n) if v[i] < -0.62 and i not in jaw_fixed}
    fields["jaw"] = field(jaw_fixed, above | eyes | brows | nose)

    bell = lambda i: 1.0 - (uv[i, 0] / half_w) ** 2  # noqa: E731  1 at the centre, 0 at corners
    fields["lip_up"] = field(
        {**{i: np.array([0.0, -LIP_UP * (0.3 + 0.7 * bell(i))]) for i in up_in},
         **{i: np.array([0.0, -0.55 * LIP_UP * (0.3 + 0.7 * bell(i))]) for i in up_out},
         **{i: np.array([0.0, -0.2 * LIP_UP]) for i in corners}},
        mouth_zero | set(lo_in) | set(lo_out))
    fields["lip_down"] = field(
        {**{i: np.array([0.0, LIP_DOWN * (0.3 + 0.7 * bell(i))]) for i in lo_in},
         **{i: np.array([0.0, 0.6 * LIP_DOWN * (0.3 + 0.7 * bell(i))]) for i in lo_out},
         **{i: np.array([0.0, 0.2 * LIP_DOWN]) for i in corners}},
        mouth_zero | set(up_in) | set(up_out))

    fields["close"] = field(_close_fixed(uv), mouth_zero)

    def lip_field(fn: object) -> np.ndarray:
        fixed = {i: fn(i) for i in lips}  # type: ignore[operator]
        return field(fixed, mouth_zero)

    fields["round"] = lip_field(lambda i: _round_at(uv, half_w, i))
    fields["spread"] = lip_field(lambda i: _spread_at(uv, half_w, i))
    fields["press"] = lip_field(lambda i: _press_at(uv, half_w, i))

    brow_fixed = {i: np.array([0.0, -BROW_UP]) for i in brows}
    for i in (10, 338, 109, 297, 67, 332, 103):
        brow_fixed[i] = np.array([0.0, -0.35 * BROW_UP])
    fields["brow"] = field(brow_fixed, eyes | lips | nose | (oval - set(brow_fixed)))

    for name, upc, loc, crease, upper, other in (
            ("blink_r", L.R_EYE_UP, L.R_EYE_LO, L.R_LID_CREASE, L.R_LID_UPPER,
             L.L_EYE_UP + L.L_EYE_LO),
            ("blink_l", L.L_EYE_UP, L.L_EYE_LO, L.L_LID_CREASE, L.L_LID_UPPER,
             L.R_EYE_UP + L.R_EYE_LO)):
        fixed = _blink_fixed(uv, upc, loc, crease, upper)
        fields[name] = field(fixed, brows | set(other) | lips | nose | oval)

    return np.stack([fields[name] for name in CONTROLS]).astype(np.float64)
