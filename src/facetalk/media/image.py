"""Portrait decoding: any common picture to an upright RGB array, or a clear error.

Pillow reads the header lazily, so the pixel limit is enforced before a single pixel is
decoded (a 40-megapixel upload costs nothing to refuse).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidInput, LimitExceeded, UnsupportedMedia
from ..settings import Limits, megabytes

Source = str | os.PathLike[str] | bytes

#: Smallest short side accepted: the landmark model needs a face of ~64 px anyway.
MIN_IMAGE_SIDE = 64


def open_source(src: Source, limits: Limits, what: str) -> io.BufferedIOBase | io.BytesIO:
    """A binary stream for a path or bytes, after the size limit check."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise UnsupportedMedia(f"the {what} is empty (0 bytes)")
        if len(data) > limits.max_input_bytes:
            raise LimitExceeded(_too_big(what, len(data), limits))
        return io.BytesIO(data)
    path = Path(src)
    if not path.is_file():
        raise InvalidInput(f"{what} file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise UnsupportedMedia(f"the {what} file is empty (0 bytes): {path}")
    if size > limits.max_input_bytes:
        raise LimitExceeded(_too_big(what, size, limits))
    return open(path, "rb")


def _too_big(what: str, size: int, limits: Limits) -> str:
    return (f"the {what} is {megabytes(size)}; the limit is "
            f"{megabytes(limits.max_input_bytes)} (FACETALK_MAX_INPUT_BYTES)")


def load_portrait(src: Source, limits: Limits | None = None) -> np.ndarray:
    """Decode a portrait to an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Grayscale, palette, CMYK and 16-bit inputs are converted; transparency is
    composited over white (a transparent background is not black in a video).
    """
    limits = limits or Limits()
    with open_source(src, limits, "portrait") as stream:
        try:
            im = Image.open(stream)
        except UnidentifiedImageError:
            raise UnsupportedMedia("the portrait is not an image format facetalk can read") from None
        except Image.DecompressionBombError as exc:
            # Pillow refuses headers far beyond its own limit before we see the size.
            raise LimitExceeded(
                f"the portrait is far larger than the limit of {limits.max_image_pixels / 1e6:.1f} "
                f"megapixels ({exc})",
                hint="Resize the picture; 2-4 megapixels is plenty for a talking portrait.") from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise UnsupportedMedia(f"the portrait could not be read: {exc}") from None
        w, h = im.size
        if w * h > limits.max_image_pixels:
            raise LimitExceeded(
                f"the portrait is {w}x{h} ({w * h / 1e6:.1f} megapixels); the limit is "
                f"{limits.max_image_pixels / 1e6:.1f} megapixels (FACETALK_MAX_IMAGE_PIXELS)",
                hint="Resize the picture; 2-4 megapixels is plenty for a talking portrait.")
        if min(w, h) < MIN_IMAGE_SIDE:
            raise InvalidInput(
                f"the portrait is {w}x{h} pixels; at least {MIN_IMAGE_SIDE} pixels on the "
                "short side are needed", hint="Use a larger photo of the face.")
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise UnsupportedMedia(
                f"the portrait file is damaged or truncated ({exc})",
                hint="Re-export or re-download the picture and try again.") from None
    return np.ascontiguousarray(rgb)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        gray = scaled.round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if im.mode == "RGB":
        return np.asarray(im)  # one copy of the pixels; convert("RGB") would add another
    return np.asarray(im.convert("RGB"))
