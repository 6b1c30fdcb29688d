"""One error shape for everything: ``{error, detail, hint}``, and never a stack trace."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import FacetalkError, InvalidInput
from ..errors import BadRequest, QueueFull, RequestTimeout, http_status, public_error

_log = logging.getLogger("facetalk.service")


def _error_response(exc: FacetalkError, status: int | None = None) -> JSONResponse:
    headers = {"X-Content-Type-Options": "nosniff"}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, RequestTimeout):
        headers["Connection"] = "close"  # the rest of a stalled body is never read: free the socket now
    return JSONResponse(public_error(exc.to_dict()), status_code=status or http_status(exc),
                        headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{error, detail, hint}``; no stack trace ever does."""

    @app.exception_handler(FacetalkError)
    async def facetalk_error(_: Request, exc: FacetalkError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()[:5])
        return _error_response(InvalidInput(f"invalid request: {problems}",
                                            hint="See /openapi.json for the parameters."), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        hint = "See /openapi.json for the routes." if exc.status_code in (404, 405) else ""
        body = {"error": code, "detail": str(exc.detail), "hint": hint}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RecursionError)
    async def too_deep(_: Request, exc: RecursionError) -> JSONResponse:
        # Only a request body nested thousands deep (JSON) recurses this far here.
        return _error_response(BadRequest("the request is nested too deeply",
                                          hint="Send flat JSON objects."))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        _log.error("unhandled error", exc_info=exc, extra={"fields": {
            "error_id": error_id, "path": request.url.path, "method": request.method}})
        return JSONResponse({"error": "internal_error",
                             "detail": f"internal server error (error id {error_id})",
                             "hint": "Report the error id to the operator; it matches a log line.",
                             "error_id": error_id}, status_code=500)

