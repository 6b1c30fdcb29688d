"""The live driver: the offline model's pieces on a sliding window of raw features, with
running levels; frame *n* is planned once audio reaches n/fps + LOOKAHEAD_S."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from ..options import GenerationOptions
from .blinks import BlinkScheduler
from .features import RAW_FIELDS, RawFeatures, _levels, _levels_sorted, derive
from .filters import LOOKAHEAD_S, ema_alpha
from .head import HeadStyle, head_and_brows
from .mouth import bright_span, bright_span_sorted, mouth_curves, strong_f2
from .plan import frame_controls


class _SortedWindow:
    """The last ``size`` values in arrival order, and the same values sorted: percentiles
    of a live voice are read for every frame, while only a few values change between
    frames (bisecting them in costs far less than partitioning thousands again)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: list[float] = []
        self.sorted: list[float] = []
        self.nans = 0  # NaN values held: they cannot be kept in order

    def __len__(self) -> int:
        return len(self.values)

    def extend(self, values: list[float]) -> None:
        """Add values; drop the oldest beyond ``size``."""
        self.values.extend(values)
        for v in values:
            if v != v:
                self.nans += 1
            else:
                bisect.insort(self.sorted, v)
        drop = max(0, len(self.values) - self.size)
        for v in self.values[:drop]:
            if v != v:
                self.nans -= 1
            else:
                del self.sorted[bisect.bisect_left(self.sorted, v)]
        del self.values[:drop]


class _RunningStats:
    """Levels and brightness span of a live voice, from what has been heard so far."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._db = _SortedWindow(int(8 * rate))  # the last 8 s
        self._bright = _SortedWindow(3000)

    @property
    def db(self) -> list[float]:
        """Levels heard (dB), oldest first."""
        return self._db.values

    @property
    def bright(self) -> list[float]:
        """Trusted brightness values, oldest first."""
        return self._bright.values

    def add(self, db: np.ndarray, bright: np.ndarray) -> None:
        """Add the levels and trusted brightness values of newly settled hops."""
        self._db.extend(db.tolist())
        self._bright.extend(bright.tolist())

    def levels(self) -> tuple[float, float]:
        """Noise floor and speech peak (dB) so far."""
        if len(self._db) >= int(1.5 * self.rate):
            if self._db.nans:
                return _levels(np.array(self._db.values))
            return _levels_sorted(self._db.sorted)
        # Too little heard yet: assume speech peaks a little under the loudest so far.
        peak = max(max(self._db.values, default=-50.0) - 3.0, -50.0)
        return peak - 45.0, peak

    def bright_span(self) -> tuple[float, float]:
        """The brightness span so far (see :func:`bright_span`)."""
        if self._bright.nans:
            return bright_span(np.asarray(self._bright.values))
        return bright_span_sorted(self._bright.sorted)


class _Series:
    """A per-hop series that grows at the end and is trimmed at the front, held in one
    buffer: the live driver reads its window as a view for every frame instead of
    concatenating (or converting from a list) the whole window each time."""

    def __init__(self) -> None:
        self.buf: np.ndarray | None = None
        self.lo = 0
        self.hi = 0

    def __len__(self) -> int:
        return self.hi - self.lo

    def extend(self, values: np.ndarray) -> None:
        """Append ``values`` (the dtype np.concatenate would give, as before)."""
        if self.buf is None:
            self.buf = np.empty(max(1024, 2 * len(values)), values.dtype)
        elif np.result_type(self.buf, values) != self.buf.dtype:
            self.buf = self.buf.astype(np.result_type(self.buf, values))
        if self.hi + len(values) > len(self.buf):
            held = self.buf[self.lo:self.hi]
            buf = np.empty(max(len(self.buf), 2 * (len(held) + len(values))), self.buf.dtype)
            buf[:len(held)] = held
            self.buf, self.lo, self.hi = buf, 0, len(held)
        self.buf[self.hi:self.hi + len(values)] = values
        self.hi += len(values)

    def drop(self, count: int) -> None:
        """Forget the first ``count`` values (all of them if there are fewer)."""
        self.lo = min(self.lo + count, self.hi)

    def view(self) -> np.ndarray:
        """The values held (a view: valid until the next extend)."""
        return np.zeros(0) if self.buf is None else self.buf[self.lo:self.hi]


@dataclass(frozen=True)
class StreamFrame:
    """One frame's motion from the streaming driver."""

    index: int
    time: float  # seconds on the audio timeline
    controls: np.ndarray
    pose: np.ndarray


class MotionStream:
    """The streaming driver: the same motion model, fed live raw features.

    Frame *n* (time n/fps) is planned once audio reaches n/fps + LOOKAHEAD_S:
    the same curves as offline are computed on a sliding window of the last few
    seconds with running levels; blinks and head motion continue through silence.
    """

    HISTORY_S = 3.0

    def __init__(self, options: GenerationOptions, rate: float = 100.0) -> None:
        rng = np.random.default_rng(options.seed)
        self.options = options
        self.rate = rate
        self.style = HeadStyle.draw(rng)
        self.blinks = BlinkScheduler(rng, rate) if options.blink else None
        self.stats = _RunningStats(rate)
        self._raw: dict[str, _Series] | None = None  # per raw field, from hop raw_start on
        self._raw_rate, self._raw_sr = rate, 0  # of the first raw features pushed
        self.raw_start = 0  # hop index of self.raw's first hop
        self.final = 0  # hops whose voice activity is settled (>= LOOKAHEAD_S old)
        # Per settled hop, from hop self.raw_start on (trimmed with the raw history).
        self._blink_curve = _Series()
        self._activity = _Series()
        self._act = 0.0
        self.next_frame = 0
        # Mouth later only: a negative offset would need more look-ahead than we have.
        self.offset_s = max(0.0, (options.sync_offset_ms or 0.0) / 1000.0)

    @property
    def lookahead_s(self) -> float:
        """Audio needed beyond a frame's time before it can be planned."""
        return LOOKAHEAD_S

    @property
    def raw(self) -> RawFeatures | None:
        """The raw features of the history held (from hop raw_start on)."""
        if self._raw is None:
            return None
        return RawFeatures(self._raw_rate, *(self._raw[k].view() for k in RAW_FIELDS), self._raw_sr)

    def push(self, raw: RawFeatures) -> list[StreamFrame]:
        """Add newly completed hops; return the frames that can now be planned."""
        if raw.n:
            if self._raw is None:
                self._raw = {k: _Series() for k in RAW_FIELDS}
                self._raw_rate, self._raw_sr = raw.rate, raw.sr
            for k in RAW_FIELDS:
                self._raw[k].extend(getattr(raw, k))
        if self._raw is None:
            return []
        end_hop = self.raw_start + len(self._raw["db"])  # hops known
        out: list[StreamFrame] = []
        fps = self.options.fps
        while (self.next_frame / fps + self.lookahead_s) * self.rate <= end_hop - 1:
            out.append(self._plan(self.next_frame, end_hop))
            self.next_frame += 1
        keep_from = int((self.next_frame / fps - self.HISTORY_S) * self.rate) - self.raw_start
        if keep_from > 0:
            for series in (*self._raw.values(), self._blink_curve, self._activity):
                series.drop(keep_from)
            self.raw_start += keep_from
        return out

    def _plan(self, index: int, end_hop: int) -> StreamFrame:
        raw = self.raw
        assert raw is not None
        fps, rate = self.options.fps, self.rate
        t = index / fps
        feat = derive(raw, *self.stats.levels())
        # Settle hops that are now LOOKAHEAD_S behind the newest: their activity is final.
        settle_to = end_hop - int(round(LOOKAHEAD_S * rate))
        act_alpha = ema_alpha(0.5, rate)  # the same activity curve as plan_motion's
        strong = strong_f2(feat)
        trusted = strong | (feat.voiced & (feat.loud > 0.4))  # as mouth.bright_range
        first = max(self.final, self.raw_start)  # hops before the window are gone
        if settle_to > first:
            settled = slice(first - self.raw_start, settle_to - self.raw_start)
            activity, blink = [], []
            for speaking in feat.vad[settled].tolist():
                self._act += act_alpha * (float(speaking) - self._act)
                activity.append(self._act)
                blink.append(self.blinks.step(speaking) if self.blinks else 0.0)
            self._activity.extend(np.array(activity))
            self._blink_curve.extend(np.array(blink))
            # Nothing reads the running stats before the next frame: added at once.
            self.stats.add(feat.db[settled], feat.bright[settled][trusted[settled]])
        self.final = max(self.final, settle_to)
        # No F2 span: the lips no longer use it (see mouth_curves).
        mouth = mouth_curves(feat, self.options.dynamic_scale, self.options.smooth_motion,
                             lookahead_s=LOOKAHEAD_S, bright_span=self.stats.bright_span())
        t0 = self.raw_start / rate
        act = self._activity.view()[:feat.n]
        act = np.concatenate([act, np.full(feat.n - len(act), self._act)])
        # The frame reads pose and brow at t - t0 only (interpolated between two hops): the
        # head is computed over a few hops around it (each the same as over all of them).
        at = (t - t0) * rate
        span = (int(at) - 2, int(at) + 4) if 0.0 <= at <= feat.n - 1 else None
        pose, brow = head_and_brows(feat, t0, self.style, self.options.motion_scale, act, span)
        blink = self._blink_curve.view()[:feat.n]
        blink = np.concatenate([blink, np.zeros(feat.n - len(blink))])
        controls, frame_pose = frame_controls(mouth, brow, blink, pose, rate,
                                              np.array([t - t0]), self.offset_s, fps, 0.0)
        return StreamFrame(index, t, controls[0], frame_pose[0])
