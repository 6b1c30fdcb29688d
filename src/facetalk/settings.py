"""Runtime limits, separate from GenerationOptions (they are the operator's, not the user's).

Read from the environment so a service operator can tighten them without code:
``FACETALK_MAX_IMAGE_PIXELS``, ``FACETALK_MAX_AUDIO_SECONDS``, ``FACETALK_MAX_INPUT_BYTES``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from .errors import InvalidInput

#: The longest audio a render accepts by default (seconds); also the ceiling of
#: ``GenerationOptions.duration``, so a video cannot be asked to run longer than the
#: longest recording the box takes.
MAX_AUDIO_SECONDS = 1800.0


def megabytes(n: int | float) -> str:
    """A byte count as the README writes it: binary megabytes, ``200 MB`` for the default
    209,715,200-byte limit (decimal rounding would print ``210 MB`` and disagree)."""
    return f"{n / (1024 * 1024):.0f} MB"


@dataclass(frozen=True)
class Limits:
    """Hard limits that protect a shared box from oversized inputs."""

    #: Largest portrait accepted, in pixels (checked from the header, before decoding).
    max_image_pixels: int = 32_000_000
    #: Longest audio accepted, in seconds (checked from the container before decoding
    #: when it states a duration, otherwise while decoding).
    max_audio_seconds: float = MAX_AUDIO_SECONDS
    #: Largest input file accepted, in bytes.
    max_input_bytes: int = 200 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """Defaults overridden by ``FACETALK_<FIELD>`` environment variables."""
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for f in fields(cls):
            raw = env.get(f"FACETALK_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
            except ValueError:
                raise InvalidInput(
                    f"FACETALK_{f.name.upper()} must be a number, got {raw!r}") from None
            if values[f.name] <= 0:
                raise InvalidInput(f"FACETALK_{f.name.upper()} must be positive")
        return cls(**values)  # type: ignore[arg-type]
