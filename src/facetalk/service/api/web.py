"""The web pages' files (served before the key check) and the two API routes the page
needs beyond the job API: the parameter schema and a light pre-flight analysis of one file.

Why the page files bypass the API key: a browser cannot send ``Authorization`` when it
navigates to a URL, so a key-protected page could never load to ask for the key.

``GET /v1/options`` hands the page ``facetalk.options.field_info()`` and the presets,
so the form is generated from the dataclass that defines the parameters and cannot
drift from what ``POST /v1/jobs`` accepts. ``POST /v1/analyze`` runs the engine's own
checks on a portrait (face found? where? what each framing would show) or a recording
(its length as the engine reads it) before anything is queued.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..._version import __version__
from ...errors import InvalidInput
from ...options import PRESETS, field_info
from ..errors import BadRequest
from ..helpers.analyzer import Analyzer
from ..web import HEADERS, PAGE_FILES, PREFIX, static_dir
from .schemas import ErrorOut
from .uploads import options_from_form, receive_form, upload_guard

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in {
        401: "Missing or wrong API key", 413: "Over a size, pixel or duration limit",
        415: "Not media facetalk can decode",
        422: "No usable face, an invalid option, or not exactly one file"}.items()}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The helper process itself starts on the first analysis (see Analyzer).
    app.state.web_analyzer = Analyzer(app.state.settings.limits)
    # One analysis at a time: the helper is one process, so more threads would only
    # sit in the thread pool waiting for it.
    app.state.web_analyzer_slot = anyio.CapacityLimiter(1)
    try:
        yield
    finally:
        await run_in_threadpool(app.state.web_analyzer.stop)


router = APIRouter(lifespan=_lifespan, tags=["web page"])


@router.get("/v1/options", responses=_ERRORS, summary="Every parameter with its range, and presets")
async def get_options(request: Request) -> dict[str, Any]:
    """The parameter schema the web form is generated from, plus the server's limits.

    ``fields`` is ``facetalk.options.field_info()``: name, type, default, min, max,
    choices, unit and a one-line help per GenerationOptions field.
    """
    settings = request.app.state.settings
    return {"version": __version__, "fields": field_info(), "presets": PRESETS,
            "limits": dataclasses.asdict(settings.limits),
            "retention_s": settings.retention}


@router.post("/v1/analyze", responses=_ERRORS,
             summary="Check a portrait (face box, framings) or a recording (length)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "portrait": {"type": "string", "format": "binary"},
                     "audio": {"type": "string", "format": "binary"},
                     "expand_ratio": {"type": "number"},
                     "min_resolution": {"type": "integer"}}}}}}})
async def analyze(request: Request) -> dict[str, Any]:
    """Send exactly one file, ``portrait`` or ``audio``, plus any options (as for a job).

    A portrait answers ``width``, ``height``, ``face.box`` [x0, y0, x1, y1], one
    rectangle per framing (``x``, ``y``, ``width``, ``height`` in picture pixels, and the
    output size), ``warnings`` and a small upright ``preview`` JPEG. No usable face is a
    422 ``no_face_found``, exactly as a job would fail. A recording answers
    ``duration_s`` and ``peaks`` (a waveform envelope). Nothing is stored.
    """
    settings = request.app.state.settings
    storage = request.app.state.queue.storage
    try:
        form = await receive_form(request.headers.get("content-type"), request.stream(),
                                  storage.new_upload, settings.limits, guard=upload_guard(request))
    except ClientDisconnect:
        raise BadRequest("the upload was interrupted by the client") from None
    try:
        options = options_from_form(form.fields)
        if len(form.files) != 1:
            raise InvalidInput("send exactly one file to analyze",
                               hint="A file part named 'portrait' or 'audio'.")
        [(kind, upload)] = form.files.items()
        analyzer: Analyzer = request.app.state.web_analyzer
        return await anyio.to_thread.run_sync(analyzer.analyze, kind, upload.path, options,
                                              limiter=request.app.state.web_analyzer_slot)
    finally:
        form.discard()


class PublicPageMiddleware:
    """Serve GET/HEAD of ``/`` and ``/web/<file>`` before the API key check; pass the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.folder = static_dir()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not (
                path == "/" or path.startswith(PREFIX)):
            await self.app(scope, receive, send)
            return
        name = "index.html" if path == "/" else path[len(PREFIX):]
        response: Response
        if name in PAGE_FILES:
            response = FileResponse(self.folder / name, media_type=PAGE_FILES[name],
                                    headers=HEADERS)
        else:
            response = JSONResponse(
                {"error": "not_found", "detail": f"no page file {name[:64]!r}",
                 "hint": "The page is at /; the API is under /v1 (see /openapi.json)."},
                status_code=404, headers={"X-Content-Type-Options": "nosniff"})
        await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Add the page and its routes to the service app (one call in ``create_app``)."""
    app.include_router(router)
    # Added last, so it is the outermost middleware: it answers before the key check.
    app.add_middleware(PublicPageMiddleware)
