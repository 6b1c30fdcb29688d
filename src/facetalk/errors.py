"""Typed errors: raised by the library, mapped to messages by the CLI and HTTP layers.

Each error carries a stable machine-readable ``code``, a one-line ``message`` and a
``hint`` telling the user what to do about it, so no caller has to parse text.
"""

from __future__ import annotations


class FacetalkError(Exception):
    """Base class of every error facetalk raises on purpose."""

    code = "facetalk_error"
    exit_code = 1
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def to_dict(self) -> dict[str, str]:
        """The error as ``{error, detail, hint}`` for JSON responses."""
        return {"error": self.code, "detail": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return self.message


class InvalidInput(FacetalkError):
    """A parameter or an input file is wrong in a way the user can fix."""

    code = "invalid_input"
    exit_code = 2


class UnsupportedMedia(InvalidInput):
    """The file is not an image / audio we can decode (or it is damaged)."""

    code = "unsupported_media"
    default_hint = "Use a JPG/PNG/WebP portrait and a WAV/MP3/M4A/OGG/FLAC recording."


class NoFaceFound(InvalidInput):
    """No usable face in the portrait."""

    code = "no_face_found"
    default_hint = (
        "Use a photo of one real person facing the camera (roughly frontal, eyes and "
        "mouth visible, face at least 64 pixels wide); cartoons, side views and heavily "
        "covered faces are not supported."
    )


class LimitExceeded(InvalidInput):
    """The input is larger than a configured limit (pixels, seconds, bytes)."""

    code = "limit_exceeded"
    exit_code = 3


class Cancelled(FacetalkError):
    """The caller asked the render to stop."""

    code = "cancelled"
    exit_code = 130


class RenderError(FacetalkError):
    """Something failed inside the engine; a bug rather than bad input."""

    code = "render_error"
    exit_code = 1
    default_hint = "This is a bug in facetalk; please report it with the inputs if you can."
