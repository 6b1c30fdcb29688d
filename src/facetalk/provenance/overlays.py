"""Per-frame overlays applied after rendering, before encoding (visible label, watermark).

Each overlay is built once per render and then applied to every frame in place, so
its per-frame cost is a blend of a small precomputed patch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..face.framing import Framing
from ..options import GenerationOptions
from .label import make_label
from .watermark import WatermarkOverlay


class Overlay(Protocol):
    """Something drawn into every frame (in place)."""

    def apply(self, frame: np.ndarray, index: int) -> None:
        """Modify RGB ``frame`` (H, W, 3 uint8) of frame number ``index`` in place."""

    def apply_i420(self, frame: np.ndarray, index: int) -> None:
        """Modify I420 ``frame`` (H * 3 // 2, W uint8) of frame ``index`` in place."""


class _Label:
    def __init__(self, text: str, framing: Framing, position: str) -> None:
        self.size = (framing.out_w, framing.out_h)
        self.patch = make_label(text, framing.out_w, framing.out_h, position)

    def apply(self, frame: np.ndarray, index: int) -> None:
        self.patch.apply(frame)

    def apply_i420(self, frame: np.ndarray, index: int) -> None:
        self.patch.apply_i420(frame, *self.size)


def build_overlays(options: GenerationOptions, framing: Framing, render_id: str,
                   quiet: tuple[float, float, float, float] | None = None) -> list[Overlay]:
    """The overlays ``options`` ask for, in drawing order.

    The watermark comes last so that it covers the whole picture, label included;
    ``quiet`` (output px, the mouth's region) is where it is embedded faintly.
    """
    overlays: list[Overlay] = []
    if options.label:
        overlays.append(_Label(options.label, framing, options.label_position))
    if options.watermark:
        overlays.append(WatermarkOverlay(framing.out_w, framing.out_h, render_id, options.fps,
                                         quiet=quiet))
    return overlays
