"""facetalk: one portrait + one speech recording -> a talking, lip-synced MP4, offline on a CPU.

The public surface is small on purpose::

    from facetalk import generate, GenerationOptions
    result = generate("face.jpg", "speech.wav", GenerationOptions(min_resolution=768),
                      output="talk.mp4")
    print(result.summary())

Heavy modules (ONNX Runtime, PyAV, numba) load only when a render starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    Cancelled,
    FacetalkError,
    InvalidInput,
    LimitExceeded,
    NoFaceFound,
    RenderError,
    UnsupportedMedia,
)
from .options import PRESETS, GenerationOptions
from .settings import Limits

if TYPE_CHECKING:
    from .pipeline import GenerationResult, Progress, generate

__all__ = [
    "PRESETS",
    "Cancelled",
    "FacetalkError",
    "GenerationOptions",
    "GenerationResult",
    "InvalidInput",
    "LimitExceeded",
    "Limits",
    "NoFaceFound",
    "Progress",
    "RenderError",
    "UnsupportedMedia",
    "__version__",
    "generate",
]


def __getattr__(name: str) -> Any:
    # The pipeline pulls in PyAV, OpenCV and numba; import it on first use only.
    if name in ("generate", "GenerationResult", "Progress"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'facetalk' has no attribute {name!r}")
