"""Invisible watermark: a keyed spread-spectrum luma pattern, modulated in time.

Why this scheme and not ``invisible-watermark``: that library needs ``opencv-python``
(clashes with our ``opencv-contrib-python``) and ``torch``, and its DWT-DCT method reads
fixed block positions of one picture, so a crop or a rescale loses it. Why *this* one
(measured on real 384-px renders while designing it): a pattern that stays the same in
every frame hides behind the portrait itself (which is still, too) and did not survive
H.264 at CRF 35; the same pattern with its sign swinging once a second is separated from
the still picture by demodulation and came through CRF 35, 360p, crops and excerpts.

* **Pattern.** A 256x256 *tile* built in the 2D Fourier domain from coefficients with
  periods of 10-40 tile units: ~18 % of them form a fixed *sync* template, the rest
  carry the coded payload (each coded bit sets the sign of three coefficients). The tile
  repeats over the frame, anchored at its top-left pixel, scaled by an integer *unit*
  (1 px below 1080 px short side, more above) so a 360p copy still resolves it.
* **Time.** Frame ``i`` gets ``m(i) * pattern`` with ``m`` of period one second: +1 for
  nearly half of it, -1 for the other half, 0 for one frame at each change of sign (see
  SHARPNESS). Any excerpt of one second or more contains whole periods; the detector
  does not need to know where it starts.
* **Strength.** Luma only (the same delta on R, G and B), scaled by local texture
  measured once on the first frame (a quarter strength on flat skin and background,
  where a re-encode keeps least of it, more on skin pores, wrinkles and hair, where it
  keeps most, see MASK_DETAIL; weaker around the lip line, see QUIET), randomly rounded
  to integers and capped at RMS 2.4 levels, so every frame keeps PSNR >= 40 dB. Per
  frame the cost is two saturating adds of precomputed uint8 planes.
* **Payload.** 64 bits (generator id 8, version 4+4+4, day number 16, render id prefix
  28) + CRC-16, protected by the standard K=7 rate-1/3 convolutional code (octal
  133/171/165) and decoded with a soft-decision list Viterbi decoder whose 16 best
  paths are offered to the CRC.
* **Detection.** Sum the luma of the frames weighted by cos and sin of the modulation
  (after removing the mean, so the still picture cancels), high-pass, divide by the
  local temporal spread of the luma (moving parts carry noise) and by the square root of
  the texture mask (texture keeps more noise than mark), fold modulo the tile
  (any crop becomes a circular shift), whiten per frequency ring, find shift and phase
  by correlation with the sync template, then read the bits there -- from that
  demodulated spectrum and from the first frame's own spectrum (a re-encoder's key
  frame keeps the mark that its later frames lose; see ``_still_spectrum``), combined
  by their SNR on the sync coefficients, in one read. A result counts
  only if the CRC and the generator id check out: noise passes both with probability
  ~2^-24 per path (~2^-20 per read of 16 paths), so videos facetalk did not make are
  not reported.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .._version import __version__

#: Tile side in pattern units; the pattern repeats with this period.
TILE = 256
#: Frequency band in cycles per unit (periods of 40 down to 10 units).
BAND = (1.0 / 40.0, 1.0 / 10.0)
#: Least share of the pattern's energy spent on the sync template (the rest carries bits).
SYNC_SHARE = 0.15
#: Fixed key of the pattern; changing it makes older videos unreadable.
KEY = 0x46_54_57_4D  # "FTWM"
#: Generator id stored in the payload: facetalk.
GENERATOR_ID = 0x46
GENERATOR_NAME = "facetalk"
#: Day numbers count from here.
EPOCH = _dt.date(2020, 1, 1)
RENDER_ID_HEX = 7  # hex digits of the render id carried (28 bits)

_INFO_BITS = 8 + 12 + 16 + 4 * RENDER_ID_HEX
_CRC_BITS = 16
_K = 7  # constraint length of the convolutional code
_POLYS = (0o133, 0o171, 0o165)
_CODED_BITS = (_INFO_BITS + _CRC_BITS + _K - 1) * len(_POLYS)

#: RMS of the luma change at full modulation where the texture mask is 1, in 8-bit
#: levels, and the cap on a frame's overall RMS that keeps its PSNR >= 40 dB.
STRENGTH = 3.0
MAX_RMS = 2.4
#: Peak of the pattern in units of its RMS.
PEAK = 3.5
#: Weakest relative strength (on flat areas) of the texture mask.
MASK_FLOOR = 0.25
#: The texture mask is the local detail RMS (levels) over MASK_DETAIL, clipped to
#: [MASK_FLOOR, MASK_CAP]. Why 3.5 and 2.0 (were 5 and 1.6): a CRF 35 re-encode keeps the
#: mark's sign swings roughly in proportion to their square (x264's dead zone), and best,
#: per unit of amplitude, on mid texture (skin pores, wrinkles, hair), worst on flat areas;
#: so the frame's PSNR budget goes to texture, flat areas keep the same faint dither, and
#: MAX_RMS still caps every frame. On 35 two-second 512 px clips (7 portraits) this took
#: the found rate after CRF 35 from 30 to 35 (with a square wave; see SHARPNESS).
MASK_DETAIL = 3.5
MASK_CAP = 2.0
#: Relative strength inside the quiet region (around the lip line): where viewers look
#: and lip trackers measure. At full strength the sign-swinging pattern on the textured
#: lips moved a re-tracked 384 px mouth's inner-lip gap by up to 0.05 IOD in a pause
#: (the threshold for "open"); at half strength by up to 0.032 (0.022 at a quarter, but
#: the lips' texture also carries the mark through strong compression: a CRF 35
#: 'veryfast' re-encode of a 384 px clip kept it in 3 of 4 trials at full strength, 2 of
#: 4 at a half, 1 of 4 at a quarter). 0.35 since MASK_DETAIL went from 5 to 3.5: the
#: same amplitude on the lips as the measured half strength.
QUIET = 0.35
#: Period of the temporal modulation in seconds, and its number of amplitude levels.
PERIOD_S = 1.0
#: Wave = clip(SHARPNESS * cos), quantized: higher means shorter ramps, longer flat tops.
#: x264 at CRF 35 quantizes a ramp's small steps away but codes more of a larger one; a
#: square wave, though, swaps the whole pattern in one frame (steps up to 20 levels, 99th
#: percentile 12, twice a second on textured skin: a flicker where the head is still).
#: Sharpness 4 with 3 levels passes through 0 for one frame (steps up to 10, 99th
#: percentile 6; the old 5-level ramps: 6 and 3). After CRF 35, with this version's mask
#: and reader, on 7 portraits x 2, 5 and 10 s x random ids: 168 of 168 found (the old
#: ramps 166 of 168, the square wave 288 of 288 with the measuring tool).
SHARPNESS = 4.0
LEVELS = 3
#: Frequency-ring groups whose surviving signal weights the bit read-out.
RING_GROUPS = 6
#: Paths the list decoder hands to the CRC (each adds 2^-24 to the false-positive odds).
LIST_SIZE = 16
#: Sync correlation (z-score) below which no payload read is attempted.
SYNC_Z_MIN = 5.0


# -- payload ------------------------------------------------------------------------
@dataclass(frozen=True)
class Payload:
    """What the watermark says: who made the video, which version, which render, when."""

    generator: str
    version: str
    render_id: str  # the first RENDER_ID_HEX hex digits of the render id
    date: str  # ISO date (UTC) of the render

    def to_dict(self) -> dict[str, str]:
        """JSON-able form (the shape ``facetalk verify --json`` prints)."""
        return {"generator": self.generator, "version": self.version,
                "render_id": self.render_id, "date": self.date}


def _version_triple(version: str) -> tuple[int, int, int]:
    parts = []
    for piece in (version.split(".") + ["0", "0", "0"])[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(min(15, int(digits)))
    return parts[0], parts[1], parts[2]


def _render_bits(render_id: str) -> int:
    text = render_id.lower()
    if len(text) < RENDER_ID_HEX or any(ch not in "0123456789abcdef" for ch in text[:RENDER_ID_HEX]):
        text = hashlib.sha256(render_id.encode()).hexdigest()
    return int(text[:RENDER_ID_HEX], 16)


def payload_bits(render_id: str, version: str = __version__,
                 day: _dt.date | None = None) -> np.ndarray:
    """The information bits plus CRC-16 (uint8 0/1) for one render."""
    day = day or _dt.datetime.now(_dt.UTC).date()
    major, minor, patch = _version_triple(version)
    days = min(max((day - EPOCH).days, 0), 0xFFFF)
    value = GENERATOR_ID
    for width, part in ((4, major), (4, minor), (4, patch), (16, days),
                        (4 * RENDER_ID_HEX, _render_bits(render_id))):
        value = (value << width) | part
    data = value.to_bytes((_INFO_BITS + 7) // 8, "big")
    crc = binascii.crc_hqx(data, 0xFFFF)
    value = (value << _CRC_BITS) | crc
    n = _INFO_BITS + _CRC_BITS
    return np.array([(value >> (n - 1 - i)) & 1 for i in range(n)], np.uint8)


def parse_bits(bits: np.ndarray) -> Payload | None:
    """The payload in ``bits`` if its CRC and generator id are right, else None."""
    n = _INFO_BITS + _CRC_BITS
    if len(bits) != n:
        return None
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    info, crc = value >> _CRC_BITS, value & 0xFFFF
    if binascii.crc_hqx(info.to_bytes((_INFO_BITS + 7) // 8, "big"), 0xFFFF) != crc:
        return None
    rid = info & ((1 << (4 * RENDER_ID_HEX)) - 1)
    info >>= 4 * RENDER_ID_HEX
    days = info & 0xFFFF
    info >>= 16
    patch, minor, major = info & 15, (info >> 4) & 15, (info >> 8) & 15
    generator = info >> 12
    if generator != GENERATOR_ID:
        return None
    return Payload(generator=GENERATOR_NAME, version=f"{major}.{minor}.{patch}",
                   render_id=f"{rid:0{RENDER_ID_HEX}x}",
                   date=(EPOCH + _dt.timedelta(days=days)).isoformat())


# -- convolutional code ---------------------------------------------------------------
def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    for shift in (4, 2, 1):
        x ^= x >> shift
    return x & 1


@functools.cache
def _trellis() -> tuple[np.ndarray, np.ndarray]:
    """For each next state and each of its two predecessors: the predecessor and the
    expected output symbols (+1 for a 0 bit, -1 for a 1 bit)."""
    n_states = 1 << (_K - 1)
    nxt = np.arange(n_states)
    bit = nxt >> (_K - 2)  # the newest input bit sits on top of the state
    prev = np.stack([((nxt << 1) & (n_states - 1)) | x for x in (0, 1)], axis=1)
    reg = (bit[:, None] << (_K - 1)) | prev  # 7-bit register: input + previous state
    outs = np.stack([_parity(reg & g) for g in _POLYS], axis=-1)
    return prev, (1 - 2 * outs).astype(np.float64)


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Rate-1/3 convolutional code with a zero tail (uint8 0/1 in, 0/1 out)."""
    state = 0
    out = []
    for b in list(bits) + [0] * (_K - 1):
        reg = (int(b) << (_K - 1)) | state
        out.extend(bin(reg & g).count("1") & 1 for g in _POLYS)
        state = reg >> 1
    return np.array(out, np.uint8)


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Maximum-likelihood bits from soft symbols (positive = 0 bit), zero-tailed code."""
    prev, sym = _trellis()
    r = len(_POLYS)
    steps = len(soft) // r
    y = soft[:steps * r].reshape(steps, r)
    n_states = prev.shape[0]
    metric = np.full(n_states, -np.inf)
    metric[0] = 0.0
    choice = np.zeros((steps, n_states), np.uint8)
    for t in range(steps):
        cand = metric[prev] + sym @ y[t]  # (states, 2)
        pick = np.argmax(cand, axis=1)
        choice[t] = pick
        metric = cand[np.arange(n_states), pick]
    state = 0
    bits = np.zeros(steps, np.uint8)
    for t in range(steps - 1, -1, -1):
        bits[t] = state >> (_K - 2)
        state = prev[state, choice[t, state]]
    return bits[:steps - (_K - 1)]


def list_viterbi_decode(soft: np.ndarray, size: int = 8) -> list[np.ndarray]:
    """The ``size`` most likely bit sequences, best first (a list Viterbi decoder).

    Why: after a harsh re-encode the plain decoder's best path is often one short error
    event away from the truth; the CRC can pick the right one among the next few paths,
    which is worth about 1 dB. Each state keeps its ``size`` best partial paths.
    """
    prev, sym = _trellis()
    r = len(_POLYS)
    steps = len(soft) // r
    y = soft[:steps * r].reshape(steps, r)
    n_states = prev.shape[0]
    metric = np.full((n_states, size), -np.inf)
    metric[0, 0] = 0.0
    from_state = np.zeros((steps, n_states, size), np.int16)
    from_rank = np.zeros((steps, n_states, size), np.int16)
    for t in range(steps):
        branch = sym @ y[t]  # (states, 2)
        cand = (metric[prev] + branch[:, :, None]).reshape(n_states, 2 * size)
        order = np.argsort(-cand, axis=1, kind="stable")[:, :size]
        metric = np.take_along_axis(cand, order, axis=1)
        which, rank = np.divmod(order, size)
        from_state[t] = np.take_along_axis(prev, which, axis=1)
        from_rank[t] = rank
    paths = []
    for k in range(size):
        if not np.isfinite(metric[0, k]):
            break
        state, rank = 0, k
        bits = np.zeros(steps, np.uint8)
        for t in range(steps - 1, -1, -1):
            bits[t] = state >> (_K - 2)
            state, rank = int(from_state[t, state, rank]), int(from_rank[t, state, rank])
        paths.append(bits[:steps - (_K - 1)])
    return paths


# -- the pattern ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """Which tile Fourier coefficients are the sync and which carry which coded bit."""

    sync: tuple[np.ndarray, np.ndarray]  # (row, col) indices into the rfft2 grid
    sync_phase: np.ndarray  # unit complex
    bits: tuple[np.ndarray, np.ndarray]  # (n_coded, per_bit) each
    bits_phase: np.ndarray
    scale: float  # makes a tile's RMS 1


@functools.cache
def _layout() -> _Layout:
    fy = np.fft.fftfreq(TILE)[:, None] * np.ones((1, TILE // 2 + 1))
    fx = np.fft.rfftfreq(TILE)[None, :] * np.ones((TILE, 1))
    radius = np.hypot(fy, fx)
    # Skip the kx = 0 and Nyquist columns: their coefficients must be self-conjugate.
    ok = (radius >= BAND[0]) & (radius <= BAND[1]) & (fx > 0) & (fx < 0.5)
    rows, cols = np.nonzero(ok)
    rng = np.random.default_rng(KEY)
    order = rng.permutation(len(rows))
    rows, cols = rows[order], cols[order]
    # Every coefficient in the band is used: each coded bit gets the same whole number of
    # them, the sync template at least SYNC_SHARE of them and the remainder.
    per_bit = int(len(rows) * (1.0 - SYNC_SHARE)) // _CODED_BITS
    n_bit = _CODED_BITS * per_bit
    n_sync = len(rows) - n_bit
    if per_bit < 1 or n_sync < 100:
        raise ValueError("watermark tile too small for the payload")
    rows, cols = rows[:n_bit + n_sync], cols[:n_bit + n_sync]
    phase = np.exp(2j * np.pi * rng.random(len(rows)))
    spec = np.zeros((TILE, TILE // 2 + 1), complex)
    spec[rows, cols] = phase
    rms = float(np.sqrt(np.mean(np.fft.irfft2(spec, s=(TILE, TILE)) ** 2)))
    shape = (_CODED_BITS, per_bit)
    return _Layout(sync=(rows[n_bit:], cols[n_bit:]), sync_phase=phase[n_bit:],
                   bits=(rows[:n_bit].reshape(shape), cols[:n_bit].reshape(shape)),
                   bits_phase=phase[:n_bit].reshape(shape), scale=1.0 / rms)


def make_tile(coded: np.ndarray) -> np.ndarray:
    """The (TILE, TILE) float32 pattern (RMS 1) for coded bits ``coded`` (0/1)."""
    lay = _layout()
    spec = np.zeros((TILE, TILE // 2 + 1), complex)
    spec[lay.sync] = lay.sync_phase
    spec[lay.bits] = (1.0 - 2.0 * coded.astype(np.float64))[:, None] * lay.bits_phase
    tile = np.fft.irfft2(spec, s=(TILE, TILE)) * lay.scale
    # The rare peaks of a random-phase sum reach 4-5x its RMS; limiting them keeps a flat
    # area's dither within 3 levels whatever the payload, at a negligible cost in energy.
    return np.clip(tile, -PEAK, PEAK).astype(np.float32)


def unit_for(width: int, height: int) -> int:
    """Pixels per pattern unit for a frame size: the finest period (10 units) must still
    be resolved after a downscale to 360p."""
    return max(1, int(min(width, height) / 720.0 + 0.5))


def period_frames(fps: float) -> int:
    """Frames per cycle of the temporal modulation (one second, at least 8 frames)."""
    return max(8, int(round(fps * PERIOD_S)))


def modulation(index: int, period: int) -> float:
    """Pattern sign for frame ``index``: clip(SHARPNESS * cos) quantized to LEVELS steps
    between -1 and 1 (with the defaults +1 or -1, and 0 for one frame at each flip)."""
    c = float(np.clip(SHARPNESS * np.cos(2.0 * np.pi * index / period), -1.0, 1.0))
    steps = (LEVELS - 1) // 2
    return round(c * steps) / steps


def tile_frame(tile: np.ndarray, width: int, height: int, unit: int) -> np.ndarray:
    """Repeat ``tile`` over a ``width`` x ``height`` frame, ``unit`` pixels per tile cell,
    anchored at the top-left pixel (so a crop becomes a shift of the folded tile)."""
    reps_y = -(-(height // unit + 2) // TILE)
    reps_x = -(-(width // unit + 2) // TILE)
    big = np.tile(tile, (reps_y, reps_x))
    if unit > 1:
        # Pad cyclically so the cubic interpolation sees the wrap-around, then cut the
        # exact u-times scale (pixel centres: x_unit = (x + 0.5) / u - 0.5).
        big = np.pad(big, ((0, 1), (0, 1)), mode="wrap")
        h_u, w_u = big.shape
        up = cv2.resize(big, (w_u * unit, h_u * unit), interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(up[:height, :width])
    return np.ascontiguousarray(big[:height, :width])


def texture_mask(rgb: np.ndarray, unit: int) -> np.ndarray:
    """Relative embedding strength per pixel: low on flat areas, higher on texture."""
    return _texture(luma709(rgb), unit)


def _texture(gray: np.ndarray, unit: int) -> np.ndarray:
    detail = gray - cv2.GaussianBlur(gray, (0, 0), 1.5 * unit)
    activity = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), 6.0 * unit))
    return np.clip(activity / MASK_DETAIL, MASK_FLOOR, MASK_CAP)


def quiet_mask(width: int, height: int, box: tuple[float, float, float, float]
               ) -> np.ndarray:
    """1 far from ``box``, QUIET inside it, rising smoothly over half its smaller side."""
    x0, y0, x1, y1 = box
    ramp = max(2.0, 0.5 * min(x1 - x0, y1 - y0))
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)[:, None]
    dx = np.maximum(np.maximum(x0 - xs, xs - x1), 0.0)
    dy = np.maximum(np.maximum(y0 - ys, ys - y1), 0.0)
    t = np.clip(np.sqrt(dx * dx + dy * dy) / ramp, 0.0, 1.0)
    return (QUIET + (1.0 - QUIET) * t * t * (3.0 - 2.0 * t)).astype(np.float32)


def luma709(rgb: np.ndarray) -> np.ndarray:
    """BT.709 luma of an RGB uint8 frame (what the encoder stores), float32 0..255."""
    f = rgb.astype(np.float32)
    return 0.2126 * f[..., 0] + 0.7152 * f[..., 1] + 0.0722 * f[..., 2]


class WatermarkOverlay:
    """The per-render watermark: prepared on the first frame, then two adds per frame.

    ``apply`` adds ``modulation(index) * pattern``; the pattern for each of the few
    modulation levels is precomputed as a pair of uint8 planes (positive and negative
    part), and a negative level swaps the pair, so a frame costs two saturating adds.
    """

    def __init__(self, width: int, height: int, render_id: str, fps: float,
                 day: _dt.date | None = None, strength: float = STRENGTH,
                 quiet: tuple[float, float, float, float] | None = None) -> None:
        self.width, self.height = width, height
        self.quiet = quiet  # (x0, y0, x1, y1) output px embedded at QUIET strength
        self.unit = unit_for(width, height)
        self.period = period_frames(fps)
        self._tile = make_tile(conv_encode(payload_bits(render_id, day=day)))
        self._strength = strength
        self._seed = _render_bits(render_id)
        self._planes: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self.rms = 0.0  # RMS of the integer delta at full modulation (set on first frame)

    def pattern(self, frame: np.ndarray) -> np.ndarray:
        """The float luma delta at full modulation, fitted to RGB ``frame``'s texture."""
        return self._pattern(luma709(frame))

    def _pattern(self, gray: np.ndarray) -> np.ndarray:
        delta = tile_frame(self._tile, self.width, self.height, self.unit)
        delta *= self._strength * _texture(gray, self.unit)
        if self.quiet is not None:
            delta *= quiet_mask(self.width, self.height, self.quiet)
        rms = float(np.sqrt(np.mean(delta * delta)))
        if rms > MAX_RMS:  # a busy picture: keep PSNR >= 40 dB
            delta *= MAX_RMS / rms
        return delta

    def _prepare(self, delta: np.ndarray, channels: int) -> None:
        """Quantize ``delta`` per modulation level into (positive, negative) uint8 planes."""
        rng = np.random.default_rng(self._seed)
        steps = (LEVELS - 1) // 2
        for k in range(1, steps + 1):
            level = k / steps
            # Random rounding keeps sub-level amplitudes on average instead of dropping them.
            q = np.floor(level * delta + rng.random(delta.shape, np.float32)).astype(np.int16)
            if k == steps:
                self.rms = float(np.sqrt(np.mean(q.astype(np.float32) ** 2)))
            planes = []
            for part in (q, -q):
                plane = np.clip(part, 0, 255).astype(np.uint8)
                if channels > 1:
                    plane = np.repeat(plane[..., None], channels, axis=2)
                planes.append(np.ascontiguousarray(plane))
            self._planes[level] = (planes[0], planes[1])

    def _add(self, target: np.ndarray, index: int) -> None:
        c = modulation(index, self.period)
        if c == 0.0:
            return
        pos, neg = self._planes[abs(c)]
        if c < 0:
            pos, neg = neg, pos
        cv2.add(target, pos, dst=target)
        cv2.subtract(target, neg, dst=target)

    def apply(self, frame: np.ndarray, index: int) -> None:
        """Add the watermark to RGB ``frame`` (H, W, 3 uint8) of frame ``index`` in place.

        The same delta on R, G and B is a pure luma change; one overlay serves either
        RGB frames or I420 frames (:meth:`apply_i420`), not both.
        """
        if not self._planes:
            self._prepare(self.pattern(frame), 3)
        self._add(frame, index)

    def apply_i420(self, frame: np.ndarray, index: int) -> None:
        """Add the watermark to an I420 frame (H * 3 // 2, W) in place: luma plane only.

        Adding d to R, G and B raises limited-range luma by d * 219 / 255 and leaves
        chroma alone, so the luma plane gets exactly that: the encoded video carries
        the same mark as from :meth:`apply`, for a third of the additions.
        """
        luma = frame[:self.height]
        if not self._planes:
            gray = (luma.astype(np.float32) - 16.0) * np.float32(255.0 / 219.0)
            self._prepare(self._pattern(gray) * np.float32(219.0 / 255.0), 1)
        self._add(luma, index)


# -- detection ------------------------------------------------------------------------
@dataclass
class Detection:
    """Result of looking for the watermark in a run of frames."""

    found: bool
    payload: Payload | None = None
    confidence: float = 0.0  # 2 * (share of coded bits read right) - 1; 0 when not found
    sync_z: float = 0.0  # sync peak height over the correlation's spread (about 4.5 on noise)
    unit: int = 0
    shift: tuple[float, float] = (0.0, 0.0)
    frames: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"found", "payload", "confidence"}`` plus the numbers behind them."""
        return {"found": self.found,
                "payload": self.payload.to_dict() if self.payload else {},
                "confidence": round(self.confidence, 3),
                "sync_z": round(self.sync_z, 2), "unit": self.unit, "frames": self.frames}


class Demodulator:
    """Accumulates frames' luma into the mean and the in-phase/quadrature sums at the
    modulation period, so a video of any length is read in constant memory."""

    def __init__(self, period: int) -> None:
        self.period = period
        self.n = 0
        self._sum: np.ndarray | None = None
        self._i: np.ndarray | None = None
        self._q: np.ndarray | None = None
        self._sq: np.ndarray | None = None
        self._ci = 0.0
        self._cq = 0.0
        self.first: np.ndarray | None = None  # the first frame's luma (see detect)

    def add(self, luma: np.ndarray) -> None:
        """Add one frame's luma (H, W) (any real dtype; the size must not change)."""
        y = np.asarray(luma, np.float32)
        angle = 2.0 * np.pi * self.n / self.period
        ci, cq = float(np.cos(angle)), float(np.sin(angle))
        if self._sum is None:
            self.first = y.copy()
            self._sum = np.zeros(y.shape, np.float64)
            self._i = np.zeros(y.shape, np.float64)
            self._q = np.zeros(y.shape, np.float64)
            self._sq = np.zeros(y.shape, np.float64)
        assert self._i is not None and self._q is not None and self._sq is not None
        self._sum += y
        self._sq += np.square(y, dtype=np.float64)
        self._i += ci * y
        self._q += cq * y
        self._ci += ci
        self._cq += cq
        self.n += 1

    def images(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean luma, and the I/Q sums with the mean taken out (a still picture cancels)."""
        if self._sum is None or self._i is None or self._q is None:
            raise ValueError("no frames")
        mean = self._sum / self.n
        i = self._i - self._ci * mean
        q = self._q - self._cq * mean
        return mean.astype(np.float32), i.astype(np.float32), q.astype(np.float32)

    def variance(self) -> np.ndarray:
        """Per-pixel variance of the luma over time: where the picture moves (the face,
        the head), the I/Q images carry the motion as noise."""
        if self._sum is None or self._sq is None:
            raise ValueError("no frames")
        mean = self._sum / self.n
        return np.maximum(self._sq / self.n - mean * mean, 0.0).astype(np.float32)


def _fold(residual: np.ndarray) -> np.ndarray:
    h, w = residual.shape
    ph, pw = -(-h // TILE) * TILE, -(-w // TILE) * TILE
    padded = np.zeros((ph, pw), np.float32)
    padded[:h, :w] = residual
    return padded.reshape(ph // TILE, TILE, pw // TILE, TILE).sum(axis=(0, 2))


def _at_unit(luma: np.ndarray, unit: int) -> np.ndarray:
    if unit == 1:
        return luma
    h, w = luma.shape[0] // unit, luma.shape[1] // unit
    return cv2.resize(luma[:h * unit, :w * unit], (w, h), interpolation=cv2.INTER_AREA)


def _highpass(y: np.ndarray) -> np.ndarray:
    return y - cv2.GaussianBlur(y, (0, 0), 0.25 / BAND[0])


@functools.cache
def _rings() -> np.ndarray:
    fy = np.fft.fftfreq(TILE)[:, None]
    fx = np.fft.rfftfreq(TILE)[None, :]
    return np.rint(np.hypot(fy, fx) * TILE).astype(np.int32)


def _ring_rms(power: np.ndarray) -> np.ndarray:
    rings = _rings()
    total = np.bincount(rings.ravel(), power.ravel(), minlength=rings.max() + 1)
    count = np.bincount(rings.ravel(), minlength=rings.max() + 1)
    return np.maximum(np.sqrt(total / np.maximum(count, 1)), 1e-9)[rings]


def _peak(surface: np.ndarray) -> tuple[float, float, float]:
    """Sub-pixel (row, col) of the maximum of a periodic surface, and its z-score."""
    idx = int(np.argmax(surface))
    r, c = divmod(idx, surface.shape[1])
    z = float((surface[r, c] - surface.mean()) / (surface.std() + 1e-12))

    def refine(a: float, b: float, m: float) -> float:
        den = a - 2 * m + b
        return 0.0 if den >= 0 else float(np.clip(0.5 * (a - b) / den, -0.5, 0.5))

    n, m = surface.shape
    dr = refine(surface[(r - 1) % n, c], surface[(r + 1) % n, c], surface[r, c])
    dc = refine(surface[r, (c - 1) % m], surface[r, (c + 1) % m], surface[r, c])
    return r + dr, c + dc, z


def _aligned(spec: np.ndarray, rows: np.ndarray, cols: np.ndarray, phase: np.ndarray,
             shift: tuple[float, float]) -> np.ndarray:
    """Real part of coefficients (rows, cols) against their key phase, at ``shift``."""
    fy = np.fft.fftfreq(TILE)[rows]
    fx = np.fft.rfftfreq(TILE)[cols]
    ramp = np.exp(-2j * np.pi * (fy * shift[0] + fx * shift[1]))
    return np.real(spec[rows, cols] * np.conj(phase) * ramp)


def _read_bits(spec: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """Soft value per coded bit (positive = 0) with the tile shifted by ``shift`` units.

    Each coefficient is weighted by how much signal its frequency ring still carries,
    measured on the (known) sync coefficients: a re-encode or a blur removes the finer
    rings first, and weighting by the surviving amplitude is the matched combination.
    """
    lay = _layout()
    rings = _rings()
    sync = _aligned(spec, *lay.sync, lay.sync_phase, shift)
    groups = np.linspace(rings[lay.sync].min(), rings[lay.sync].max() + 1, RING_GROUPS + 1)
    g_sync = np.clip(np.searchsorted(groups, rings[lay.sync], side="right") - 1, 0, RING_GROUPS - 1)
    amp = np.array([sync[g_sync == g].mean() if np.any(g_sync == g) else 0.0
                    for g in range(RING_GROUPS)])
    amp = np.maximum(amp, 0.05 * max(float(amp.max()), 1e-9))
    rows, cols = lay.bits
    g_bits = np.clip(np.searchsorted(groups, rings[rows, cols], side="right") - 1, 0, RING_GROUPS - 1)
    return (_aligned(spec, rows, cols, lay.bits_phase, shift) * amp[g_bits]).sum(axis=1)


def _spectra(variance: np.ndarray, i_img: np.ndarray, q_img: np.ndarray, unit: int,
             mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whitened tile spectra of the I and Q images at ``unit``: high-passed, divided by
    the local temporal spread of the luma (moving areas carry the motion as noise; this
    beat dividing by the still picture's contrast by ~10 % in bit SNR after CRF 35) and
    by the square root of the picture's texture mask (a re-encode leaves more noise than
    mark on texture: ~4 % more bit SNR after CRF 35), folded, and divided by each
    frequency ring's RMS."""
    spread = np.sqrt(cv2.GaussianBlur(_at_unit(variance, unit), (0, 0), 0.5 / BAND[0])) + 1.0
    if mean is not None:
        spread *= np.sqrt(_texture(_at_unit(mean, unit), 1))
    si = np.fft.rfft2(_fold(_highpass(_at_unit(i_img, unit)) / spread))
    sq = np.fft.rfft2(_fold(_highpass(_at_unit(q_img, unit)) / spread))
    norm = _ring_rms(np.abs(si) ** 2 + np.abs(sq) ** 2)
    return si / norm, sq / norm


def _still_spectrum(first: np.ndarray, unit: int) -> np.ndarray:
    """Whitened tile spectrum of one frame (the first), the picture itself as the noise.

    Why: a re-encoder codes its first frame as a key frame at a fine quantizer, mark
    included, while the later frames' small sign swings are mostly quantized away (at CRF
    35 'veryfast' the first frame alone read a 512 px render's payload more often than
    not). Demodulation cancels that still part of the mark with the picture; read here
    against the picture's own texture (weighted by its local activity^-1.5) it is a second,
    nearly independent look at the same bits.
    """
    hp = _highpass(_at_unit(first, unit))
    activity = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), 0.5 / BAND[0])) + 1.0
    spec = np.fft.rfft2(_fold(hp * activity ** -1.5))
    return spec / _ring_rms(np.abs(spec) ** 2)


def _combined(parts: list[np.ndarray], shift: tuple[float, float]) -> np.ndarray:
    """Sum of whitened spectra, each weighted by its sync read's mean / variance at
    ``shift`` (maximal-ratio combining: a look that carries more mark counts more, one
    that carries none counts nothing, and a negative mean flips a sign-swapped look)."""
    lay = _layout()
    out = np.zeros_like(parts[0])
    for spec in parts:
        sync = _aligned(spec, *lay.sync, lay.sync_phase, shift)
        out += spec * (float(sync.mean()) / max(float(sync.var()), 1e-12))
    return out


def detect(demod: Demodulator, units: Iterable[int] | None = None) -> Detection:
    """Look for the watermark in the frames fed to ``demod``."""
    mean, i_img, q_img = demod.images()
    variance = demod.variance()
    h, w = mean.shape
    lay = _layout()
    sync_spec = np.zeros((TILE, TILE // 2 + 1), complex)
    sync_spec[lay.sync] = lay.sync_phase
    candidates = list(units) if units is not None else [
        u for u in range(1, 7) if min(h, w) / u >= 64]
    best = Detection(found=False, frames=demod.n)
    tried: list[dict[str, float]] = []
    for unit in candidates:
        si, sq = _spectra(variance, i_img, q_img, unit, mean)
        surf_i = np.fft.irfft2(np.conj(si) * sync_spec, s=(TILE, TILE))
        surf_q = np.fft.irfft2(np.conj(sq) * sync_spec, s=(TILE, TILE))
        r, c, z = _peak(np.hypot(surf_i, surf_q))
        tried.append({"unit": unit, "sync_z": round(z, 2)})
        if not best.found and z > best.sync_z:
            best = Detection(found=False, sync_z=z, unit=unit, shift=(r, c), frames=demod.n)
        if z < SYNC_Z_MIN:
            continue
        ri, ci = int(round(r)) % TILE, int(round(c)) % TILE
        phi = float(np.arctan2(surf_q[ri, ci], surf_i[ri, ci]))
        parts = [np.cos(phi) * si + np.sin(phi) * sq]
        if demod.first is not None:
            parts.append(_still_spectrum(demod.first, unit))
        soft = _read_bits(_combined(parts, (r, c)), (r, c))
        for bits in list_viterbi_decode(soft, LIST_SIZE):
            payload = parse_bits(bits)
            if payload is not None:
                break
        else:
            continue
        agree = float(np.mean((soft > 0) == (conv_encode(bits) == 0)))
        det = Detection(found=True, payload=payload, confidence=max(0.0, 2 * agree - 1),
                        sync_z=z, unit=unit, shift=(r, c), frames=demod.n)
        if not best.found or det.sync_z > best.sync_z:
            best = det
    best.details = {"tried": tried}
    return best
