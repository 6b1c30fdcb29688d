"""What the server and its helper processes send each other: small frozen dataclasses.

They live here, in a module no helper runs as ``__main__``, so both sides unpickle the
same classes (a class defined in the child's ``__main__`` would be a different one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ready:
    """First message of every helper: it has imported what it needs."""

    pid: int


@dataclass(frozen=True)
class Inspect:
    """Validator request: fully decode a job's two uploads."""

    portrait: str
    audio: str


@dataclass(frozen=True)
class Verify:
    """Validator request: read a video's provenance labels (``POST /v1/verify``)."""

    path: str


@dataclass(frozen=True)
class Analyze:
    """Analyzer request: one file for the web page (``kind`` is portrait or audio)."""

    kind: str
    path: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """A helper's answer to one request."""

    value: dict[str, Any]


@dataclass(frozen=True)
class Refusal:
    """The engine's typed error for one request (re-raised in the server)."""

    code: str
    message: str
    hint: str | None
