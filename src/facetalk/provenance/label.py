"""The optional visible label ("AI生成 / AI-generated") burnt into a frame corner.

Drawn once into a small RGBA patch with Pillow, then alpha-blended into each frame.
CJK text needs a CJK font on the system (Noto CJK, WenQuanYi, Droid Sans Fallback);
without one, a label with CJK characters is refused with an install hint rather than
drawn as empty boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InvalidInput
from ..options import LABEL_POSITIONS

_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)


def _needs_cjk(text: str) -> bool:
    return any(ord(ch) > 0x2E7F for ch in text)


def _font(text: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if _needs_cjk(text):
        for path in _CJK_FONTS:
            if Path(path).is_file():
                return ImageFont.truetype(path, size)
        raise InvalidInput(
            "the label contains CJK characters but no CJK font is installed",
            hint="Install one (Debian: apt-get install fonts-wqy-microhei) or use a Latin label.")
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class LabelOverlay:
    """A pre-rendered label patch and where it goes."""

    x: int
    y: int
    rgb: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w, 1) float32

    def apply(self, frame: np.ndarray) -> None:
        """Blend the label into ``frame`` in place."""
        h, w = self.alpha.shape[:2]
        region = frame[self.y:self.y + h, self.x:self.x + w].astype(np.float32)
        region += self.alpha * (self.rgb - region)
        frame[self.y:self.y + h, self.x:self.x + w] = (region + 0.5).astype(np.uint8)

    @cached_property
    def _i420(self) -> tuple[int, int, list[tuple[np.ndarray, np.ndarray]]]:
        """The patch on even bounds (4:2:0) as (plane value, alpha) for Y, U and V."""
        h, w = self.alpha.shape[:2]
        x0, y0 = self.x // 2 * 2, self.y // 2 * 2
        pw, ph = -(-(self.x + w - x0) // 2) * 2, -(-(self.y + h - y0) // 2) * 2
        rgb = np.zeros((ph, pw, 3), np.float32)
        alpha = np.zeros((ph, pw), np.float32)
        rgb[self.y - y0:self.y - y0 + h, self.x - x0:self.x - x0 + w] = self.rgb
        alpha[self.y - y0:self.y - y0 + h, self.x - x0:self.x - x0 + w] = self.alpha[..., 0]
        yuv = cv2.cvtColor(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2YUV_I420)
        flat = yuv.reshape(-1).astype(np.float32)
        n, q = pw * ph, (pw // 2) * (ph // 2)
        half = cv2.resize(alpha, (pw // 2, ph // 2), interpolation=cv2.INTER_AREA)
        planes = [(flat[:n].reshape(ph, pw), alpha),
                  (flat[n:n + q].reshape(ph // 2, pw // 2), half),
                  (flat[n + q:].reshape(ph // 2, pw // 2), half)]
        return x0, y0, planes

    def apply_i420(self, frame: np.ndarray, width: int, height: int) -> None:
        """Blend the label into an I420 frame (H * 3 // 2, W) in place, plane by plane."""
        x0, y0, planes = self._i420
        flat = frame.reshape(-1)
        n, q = width * height, (width // 2) * (height // 2)
        targets = [(flat[:n].reshape(height, width), 1),
                   (flat[n:n + q].reshape(height // 2, width // 2), 2),
                   (flat[n + q:n + 2 * q].reshape(height // 2, width // 2), 2)]
        for (plane, sub), (value, alpha) in zip(targets, planes, strict=True):
            ph, pw = alpha.shape
            view = plane[y0 // sub:y0 // sub + ph, x0 // sub:x0 // sub + pw]
            region = view.astype(np.float32)
            region += alpha * (value - region)
            view[...] = (region + 0.5).astype(np.uint8)


#: Corners a label can sit in (the first is the default).
POSITIONS: tuple[str, ...] = LABEL_POSITIONS


def make_label(text: str, width: int, height: int, position: str = POSITIONS[0]) -> LabelOverlay:
    """A label in one corner (see POSITIONS), sized to the frame (white on a dark pill)."""
    if position not in POSITIONS:
        raise InvalidInput(f"label position must be one of {', '.join(POSITIONS)}, got {position!r}")
    size = max(12, int(min(width, height) * 0.035))
    font = _font(text, size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    pad = max(4, size // 3)
    w = min(width, x1 - x0 + 2 * pad)
    h = min(height, y1 - y0 + 2 * pad)
    box = Image.new("L", (w, h), 0)
    ImageDraw.Draw(box).rounded_rectangle((0, 0, w - 1, h - 1), radius=pad, fill=150)
    ink = Image.new("L", (w, h), 0)
    ImageDraw.Draw(ink).text((pad - x0, pad - y0), text, font=font, fill=255)
    box_a = np.asarray(box, np.float32)[..., None] / 255.0
    ink_a = np.asarray(ink, np.float32)[..., None] / 255.0
    alpha = box_a + ink_a * (1.0 - box_a)
    rgb = np.broadcast_to((255.0 * ink_a) / np.maximum(alpha, 1e-6), (h, w, 3)).astype(np.float32)
    margin = max(4, int(min(width, height) * 0.02))
    x = max(0, width - w - margin) if position.endswith("right") else min(margin, width - w)
    y = max(0, height - h - margin) if position.startswith("bottom") else min(margin, height - h)
    return LabelOverlay(x=x, y=y,
                        rgb=np.ascontiguousarray(rgb), alpha=np.ascontiguousarray(alpha))
