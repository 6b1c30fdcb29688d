"""Where the output frame sits in the portrait: crop (square), full picture, or 9:16.

A framing is a uniform scale plus an offset: ``image = origin + out / scale`` for pixel
centres. Keeping it a similarity (no separate x/y scales) lets the renderer compose it
with the face warp into one resampling step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..options import GenerationOptions
from .analysis import FaceModel

#: Longest output side we produce (H.264 level 5.1 handles 4096 wide).
MAX_OUTPUT_SIDE = 3840


@dataclass(frozen=True)
class Framing:
    """Output size and the similarity that maps output pixels into the portrait."""

    out_w: int
    out_h: int
    scale: float  # output pixels per portrait pixel
    origin_x: float  # portrait coordinate of output pixel (0, 0)'s centre
    origin_y: float

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Output pixel coordinates to portrait pixel coordinates."""
        return np.stack([self.origin_x + pts[..., 0] / self.scale,
                         self.origin_y + pts[..., 1] / self.scale], axis=-1)

    def to_output(self, pts: np.ndarray) -> np.ndarray:
        """Portrait pixel coordinates to output pixel coordinates."""
        return np.stack([(pts[..., 0] - self.origin_x) * self.scale,
                         (pts[..., 1] - self.origin_y) * self.scale], axis=-1)


def _even(x: float) -> int:
    return max(2, int(x) // 2 * 2)


def _box(cx: float, cy: float, w: float, h: float, img_w: int, img_h: int
         ) -> tuple[float, float, float, float]:
    """A w x h box centred near (cx, cy), shrunk (keeping aspect) and shifted to fit."""
    shrink = min(1.0, img_w / w, img_h / h)
    w, h = w * shrink, h * shrink
    x0 = float(np.clip(cx - w / 2, 0, img_w - w))
    y0 = float(np.clip(cy - h / 2, 0, img_h - h))
    return x0, y0, w, h


def plan_framing(face: FaceModel, options: GenerationOptions) -> Framing:
    """The framing ``options.framing`` asks for, fitted inside the portrait."""
    img_h, img_w = face.image.shape[:2]
    short = _even(options.min_resolution)
    fx0, fy0, fx1, fy1 = face.box
    size = face.size
    cx = (fx0 + fx1) / 2
    cy = (fy0 + fy1) / 2 - 0.05 * size  # the landmark box stops at the hairline
    if options.framing == "full":
        scale = short / min(img_w, img_h)
        if max(img_w, img_h) * scale > MAX_OUTPUT_SIDE:
            scale = MAX_OUTPUT_SIDE / max(img_w, img_h)
        out_w, out_h = _even(img_w * scale), _even(img_h * scale)
        # Centre the (at most one output pixel) rounding loss.
        ox = (img_w - out_w / scale) / 2 + 0.5 / scale - 0.5
        oy = (img_h - out_h / scale) / 2 + 0.5 / scale - 0.5
        return Framing(out_w, out_h, scale, ox, oy)
    side = size * (1.0 + 2.0 * options.expand_ratio)
    if options.framing == "crop":
        x0, y0, w, h = _box(cx, cy, side, side, img_w, img_h)
        out_w = out_h = short
    else:  # vertical 9:16, face centre on the upper third line
        w = side * 1.25
        h = w * 16 / 9
        x0, y0, w, h = _box(cx, cy + h / 2 - h / 3, w, h, img_w, img_h)
        out_w, out_h = short, _even(short * 16 / 9)
    scale = out_w / w
    return Framing(out_w, out_h, scale, x0 + 0.5 / scale - 0.5, y0 + 0.5 / scale - 0.5)
