"""Service errors and the one table that maps every typed error to an HTTP status.

They extend the engine's FacetalkError so a response body is always the same
``{error, detail, hint}`` whether the engine or the service refused the request.
"""

from __future__ import annotations

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
    "Expired",
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
    "http_status",
]
