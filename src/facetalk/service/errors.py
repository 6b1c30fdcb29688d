"""Service errors and the one table that maps every typed error to an HTTP status.

They extend the engine's FacetalkError so a response body is always the same
``{error, detail, hint}`` whether the engine or the service refused the request.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import (
    Cancelled,
    FacetalkError,
    InvalidInput,
    LimitExceeded,
    NoFaceFound,
    RenderError,
    UnsupportedMedia,
)


class ServiceError(FacetalkError):
    """A refusal by the service itself (not about the media)."""

    code = "service_error"
    status = 400


class QueueFull(ServiceError):
    """The bounded queue is full; the client should retry later."""

    code = "queue_full"
    status = 429
    default_hint = "The render queue is full; retry after the number of seconds in Retry-After."

    def __init__(self, message: str, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class JobNotFound(ServiceError):
    """No job with that id (never existed, deleted, or purged after retention)."""

    code = "not_found"
    status = 404
    default_hint = "Check the job id; finished jobs are removed after the retention period."


class NotReady(ServiceError):
    """The job has no video (yet): it is queued, running, failed or cancelled."""

    code = "not_ready"
    status = 409
    default_hint = "Wait until the job's status is 'succeeded' (poll it or follow /events)."


class Expired(ServiceError):
    """The job's files were deleted by the retention policy."""

    code = "expired"
    status = 410
    default_hint = "Outputs are deleted after the retention period; submit the job again."


class Unauthorized(ServiceError):
    """Missing or wrong API key."""

    code = "unauthorized"
    status = 401
    default_hint = "Send a valid key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."


class InsufficientStorage(ServiceError):
    """The storage disk is nearly full; refusing new work protects finished results."""

    code = "insufficient_storage"
    status = 507
    default_hint = "Free disk space on the server or lower --retention."


class RequestTimeout(ServiceError):
    """An upload stopped sending: its connection and disk space go back to the others."""

    code = "request_timeout"
    status = 408
    default_hint = "The upload stalled; check the network and send it again."


class BadRequest(ServiceError):
    """The HTTP request itself is malformed (not the media, not an option)."""

    code = "bad_request"
    status = 400


class HostNotAllowed(ServiceError):
    """The request's Host is not a name this service answers to (DNS rebinding guard)."""

    code = "host_not_allowed"
    status = 400
    default_hint = ("Use the address the service is bound to (127.0.0.1, localhost); a proxy "
                    "or a public name must be listed in FACETALK_ALLOWED_HOSTS.")


class CrossOrigin(ServiceError):
    """A browser sent a state-changing request or opened a WebSocket from another site."""

    code = "cross_origin"
    status = 403
    default_hint = ("Only the service's own pages may submit from a browser; a proxy's public "
                    "name must be listed in FACETALK_ALLOWED_HOSTS.")


class UnsupportedContentType(ServiceError):
    """The request body is not multipart/form-data."""

    code = "unsupported_content_type"
    status = 415
    default_hint = ("POST multipart/form-data with 'portrait' and 'audio' file parts, e.g. "
                    "curl -F portrait=@face.jpg -F audio=@speech.wav ...")


class JobTimeout(ServiceError):
    """A render ran longer than its time limit and was killed."""

    code = "job_timeout"
    status = 500
    default_hint = ("The render was stopped by the server's --job-timeout; use shorter audio "
                    "or a lower min_resolution, or ask the operator to raise the limit.")


class WorkerCrashed(ServiceError):
    """The render process died repeatedly on this job."""

    code = "worker_crashed"
    status = 500
    default_hint = "The render process died on every attempt; please report it with the inputs."


#: An absolute file path of two or more parts (``/tmp/x/y``, ``/var/lib/facetalk/tmp/ab12``),
#: not preceded by a word, a dot, a colon or a slash (so URLs and ``a/b`` are left alone).
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"<>]+/)+[^\s/'\"<>,;)]*")
#: The service's own routes, which hints may name.
_ROUTE_PREFIXES = ("/v1/", "/web/")


def hide_paths(text: str) -> str:
    """``text`` with every server file path replaced by ``[server path]``.

    Why: engine and decoder messages name the file they failed on, and for an upload that
    is the storage's temp path; a client must not learn the server's layout from an error.
    """
    return _SERVER_PATH.sub(
        lambda m: m.group(0) if m.group(0).startswith(_ROUTE_PREFIXES) else "[server path]", text)


def public_error(doc: dict[str, Any]) -> dict[str, Any]:
    """An ``{error, detail, hint}`` document as a client may see it (no server paths)."""
    return {k: hide_paths(v) if isinstance(v, str) and k in ("detail", "hint") else v
            for k, v in doc.items()}


def http_status(exc: FacetalkError) -> int:
    """The HTTP status for a typed error (checked most specific first)."""
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, LimitExceeded):
        return 413
    if isinstance(exc, (UnsupportedMedia,)):
        return 415
    if isinstance(exc, (NoFaceFound, InvalidInput)):
        return 422
    if isinstance(exc, Cancelled):
        return 409
    if isinstance(exc, RenderError):
        return 500
    return 500


__all__ = [
    "BadRequest",
    "CrossOrigin",
    "Expired",
    "HostNotAllowed",
    "InsufficientStorage",
    "JobNotFound",
    "JobTimeout",
    "NotReady",
    "QueueFull",
    "RequestTimeout",
    "ServiceError",
    "Unauthorized",
    "UnsupportedContentType",
    "WorkerCrashed",
    "hide_paths",
    "http_status",
    "public_error",
]
