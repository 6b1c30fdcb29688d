"""The FastAPI app: routes under /v1, health, metrics, and one error shape for everything.

Why FastAPI on Uvicorn: OpenAPI docs at /docs for free, async streaming (uploads,
SSE, Range downloads) without threads per connection, and both are widely deployed,
MIT/BSD licensed and maintained. Every route is thin: it validates, asks the queue,
and turns the job record into JSON.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._version import __version__
from ...errors import FacetalkError, InvalidInput
from ..errors import BadRequest, Expired, InsufficientStorage, JobNotFound, NotReady, QueueFull, http_status
from ..helpers.validator import ValidatorPool
from ..jobs.queue import JobQueue, open_queue
from ..jobs.storage import new_job_id, valid_job_id
from ..jobs.store import SUCCEEDED, Job, NewJob
from ..logs import AuditTrail, log
from ..settings import ServiceSettings
from .auth import ApiKeyMiddleware
from .live import live_router
from .metrics import CONTENT_TYPE, Metrics
from .ops import install_workers_api
from .schemas import ErrorOut, JobOut, JobPage, submit_request_body
from .uploads import options_from_form, receive_form
from .web import install as install_web_page

_log = logging.getLogger("facetalk.service")

#: Upload validator processes (each decode can hold a 32-megapixel frame in memory).
VALIDATION_SLOTS = 2
#: How long DELETE waits for a running render to stop before answering 202.
CANCEL_WAIT_S = 2.0
SSE_POLL_S = 0.25
SSE_HEARTBEAT_S = 15.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in {
        401: "Missing or wrong API key", 404: "No such job", 409: "Not ready",
        410: "Deleted by retention", 413: "Over a size, pixel or duration limit",
        415: "Not media facetalk can decode", 422: "Invalid option or input",
        429: "Queue full (see Retry-After)", 507: "Storage disk nearly full"}.items()}


def create_app(settings: ServiceSettings | None = None, queue: JobQueue | None = None) -> FastAPI:
    """Build the service. The queue (embedded by default) starts with the app's lifespan."""
    settings = settings or ServiceSettings.load()
    if queue is None:
        queue = open_queue(settings)  # embedded, or Celery when settings.queue is a redis:// URL
    audit = AuditTrail(settings.storage / "audit.log")
    metrics = Metrics(queue, settings.max_queued)
    queue.add_listener(audit)
    queue.add_listener(metrics.on_change)
    limiter = anyio.CapacityLimiter(VALIDATION_SLOTS)
    validators = ValidatorPool(VALIDATION_SLOTS, settings.limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(validators.start)
        await run_in_threadpool(queue.start)
        log(_log, logging.INFO, "facetalk service started", version=__version__,
            workers=settings.workers, storage=str(settings.storage),
            max_queued=settings.max_queued, retention_s=settings.retention,
            api_keys=len(settings.api_keys))
        try:
            yield
        finally:
            await run_in_threadpool(queue.stop)
            await run_in_threadpool(validators.stop)
            audit.close()
            log(_log, logging.INFO, "facetalk service stopped")

    app = FastAPI(
        title="facetalk", version=__version__, lifespan=lifespan,
        description="One portrait + one speech recording -> a lip-synced talking MP4, "
                    "rendered on this machine. Submit a job, follow it, download the video.")
    app.state.settings, app.state.queue, app.state.metrics = settings, queue, metrics
    app.state.validators = validators
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(SecurityHeadersMiddleware)
    _install_error_handlers(app)
    install_web_page(app)  # the page at / and its /v1/options, /v1/analyze (after the middleware)
    install_workers_api(app)  # GET /v1/workers and the per-worker metrics
    # Live mode: avatars, WS /v1/stream, /v1/say and the /live page.
    app.include_router(live_router(settings.storage, settings.api_keys,
                                   settings.limits.max_input_bytes))

    def view(job: Job) -> dict[str, Any]:
        return job_view(job, queue, settings)

    def find(job_id: str) -> Job:
        job = queue.get(job_id) if valid_job_id(job_id) else None
        if job is None:
            raise JobNotFound(f"no job {job_id[:64]!r}")
        return job

    @app.post("/v1/jobs", status_code=202, response_model=JobOut, tags=["jobs"],
              openapi_extra=submit_request_body(), responses=_ERRORS,
              summary="Submit a portrait and a recording")
    async def submit(request: Request) -> JSONResponse:
        """Queue a render. Files are validated by decoding them before anything is queued."""
        try:
            job = await _submit(request)
        except FacetalkError as exc:
            metrics.refused.labels(exc.code).inc()
            raise
        metrics.submitted.inc()
        url = f"/v1/jobs/{job.id}"
        doc = await run_in_threadpool(view, job)  # the ETA reads the queue
        return JSONResponse(doc, status_code=202, headers={"Location": url})

    async def _submit(request: Request) -> Job:
        if queue.is_full():
            # Refuse before reading the body: a full queue costs the client nothing.
            raise QueueFull(f"the queue is full ({settings.max_queued} jobs waiting)",
                            retry_after=queue.retry_after())
        if queue.storage.free_bytes() < settings.min_free_disk_mb * 1024 * 1024:
            raise InsufficientStorage("the server's storage disk is nearly full")
        try:
            form = await receive_form(request.headers.get("content-type"), request.stream(),
                                      queue.storage.new_upload, settings.limits)
        except ClientDisconnect:
            # Not a server error: the client went away mid-upload (its temp files are gone).
            raise BadRequest("the upload was interrupted by the client") from None
        try:
            options = options_from_form(form.fields)
            for name in ("portrait", "audio"):
                if name not in form.files:
                    raise InvalidInput(f"the {name} file is missing",
                                       hint=f"Send it as a file part named '{name}' "
                                            f"(curl -F {name}=@file ...).")
            facts = await anyio.to_thread.run_sync(
                validators.inspect, form.files["portrait"].path, form.files["audio"].path,
                limiter=limiter)
            inputs = {name: {"sha256": up.sha256, "bytes": up.size, **facts[name]}
                      for name, up in form.files.items()}
            video_seconds = (options.duration if options.duration is not None
                             else facts["audio"]["duration_s"])
            job_id = new_job_id()
            queue.storage.adopt(job_id, {n: u.path for n, u in form.files.items()})
            new = NewJob(id=job_id, options=options.to_dict(), inputs=inputs,
                         video_seconds=video_seconds,
                         timeout_s=settings.timeout_for(video_seconds, options.min_resolution),
                         client=request.client.host if request.client else None)
            try:
                return await run_in_threadpool(queue.submit, new)
            except BaseException:
                queue.storage.delete_job(job_id)
                raise
        finally:
            form.discard()

    @app.get("/v1/jobs", response_model=JobPage, tags=["jobs"], responses=_ERRORS,
             summary="List jobs, newest first")
    async def list_jobs(
        limit: int = Query(20, ge=1, le=100, description="Jobs per page."),
        cursor: int | None = Query(None, ge=1, description="From the previous page's `next`."),
        status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = Query(
            None, description="Only jobs in this state."),
    ) -> dict[str, Any]:
        """Keyset paging: stable while new jobs arrive."""
        jobs = await run_in_threadpool(queue.page, limit + 1, cursor, status)
        more = len(jobs) > limit
        jobs = jobs[:limit]
        nxt = None
        if more:
            nxt = f"/v1/jobs?limit={limit}&cursor={jobs[-1].seq}"
            nxt += f"&status={status}" if status else ""
        counts = await run_in_threadpool(queue.counts)
        return {"jobs": [view(j) for j in jobs], "next": nxt, "counts": counts}

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, tags=["jobs"], responses=_ERRORS,
             summary="Status, progress, timings, result or error")
    async def get_job(job_id: str) -> dict[str, Any]:
        """The job document."""
        return await run_in_threadpool(lambda: view(find(job_id)))

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], responses={
        **_ERRORS, 200: {"model": JobOut, "description": "Cancelled"},
        202: {"model": JobOut, "description": "Cancel requested, render still stopping"},
        204: {"description": "Finished job deleted with its files"}},
        summary="Cancel a queued/running job, or delete a finished one")
    async def delete_job(job_id: str) -> Response:
        """Cancel (queued/running) or delete (finished, with its files)."""
        job = await run_in_threadpool(find, job_id)
        if job.final:
            if await run_in_threadpool(queue.delete, job_id):
                return Response(status_code=204)
            job = await run_in_threadpool(find, job_id)
        job = await run_in_threadpool(queue.cancel, job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while not job.final and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            job = await run_in_threadpool(find, job_id)
        return JSONResponse(view(job), status_code=200 if job.final else 202)

    @app.get("/v1/jobs/{job_id}/video", tags=["jobs"], response_class=FileResponse,
             responses={**_ERRORS, 200: {"content": {"video/mp4": {}}, "description": "The MP4"},
                        206: {"content": {"video/mp4": {}}, "description": "A byte range"}},
             summary="Download the MP4 (HTTP Range supported)")
    async def get_video(job_id: str) -> FileResponse:
        """The finished MP4; browsers seek with Range requests."""
        job = await run_in_threadpool(find, job_id)
        if job.output_deleted_at is not None:
            raise Expired("the video was deleted by the retention policy")
        if job.status != SUCCEEDED:
            raise NotReady(f"the job is {job.status}; there is no video")
        path = queue.storage.output_path(job_id)
        if not path.is_file():
            raise Expired("the video file is gone")
        return FileResponse(path, media_type="video/mp4",
                            filename=f"facetalk-{job_id}.mp4", content_disposition_type="inline",
                            headers={"Cache-Control": "private, no-cache"})

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], responses={
        **_ERRORS, 200: {"content": {"text/event-stream": {}},
                         "description": "`progress` events, then one `end` event with the job"}},
        summary="Progress as Server-Sent Events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        """``event: progress`` on every change, ``event: end`` (the full job) when final."""
        await run_in_threadpool(find, job_id)

        async def stream() -> AsyncIterator[str]:
            last: dict[str, Any] | None = None
            last_sent = time.monotonic()
            n = 0
            yield "retry: 2000\n\n"
            while True:
                job = await run_in_threadpool(queue.get, job_id)
                if job is None:
                    yield _sse("end", {"id": job_id, "status": "deleted"}, n)
                    return
                doc = view(job)
                if job.final:
                    yield _sse("end", doc, n)
                    return
                state = {k: doc[k] for k in ("status", "progress", "stage", "frames_done",
                                             "frames_total", "eta_s", "queue_position")}
                if state != last:
                    n += 1
                    last, last_sent = state, time.monotonic()
                    yield _sse("progress", {"id": job_id, **state}, n)
                elif time.monotonic() - last_sent > SSE_HEARTBEAT_S:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(SSE_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    verify_slot = anyio.CapacityLimiter(1)  # decoding a video is a render-sized job

    @app.post("/v1/verify", tags=["provenance"], responses=_ERRORS,
              summary="Read a video's AI-generated labels (metadata and watermark)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "required": ["video"],
                                                     "properties": {"video": {
                                                         "type": "string",
                                                         "format": "binary"}}}}}}})
    async def verify(request: Request) -> dict[str, Any]:
        """Upload ``video`` (any container PyAV reads); the answer is what ``facetalk verify
        --json`` prints: ``{"watermark": {"found", "payload", "confidence", ...},
        "metadata": {...}}``. Videos facetalk did not make read as not found. The upload
        is deleted when the answer is sent."""
        from ...provenance.verify import verify_report

        try:
            form = await receive_form(request.headers.get("content-type"), request.stream(),
                                      queue.storage.new_upload, settings.limits,
                                      file_parts=("video",))
        except ClientDisconnect:
            raise BadRequest("the upload was interrupted by the client") from None
        try:
            if set(form.files) != {"video"} or form.fields:
                raise InvalidInput("send one file part named 'video' and nothing else",
                                   hint="curl -F video=@clip.mp4 .../v1/verify")
            path = form.files["video"].path
            return await anyio.to_thread.run_sync(verify_report, path, limiter=verify_slot)
        finally:
            form.discard()

    @app.get("/healthz", tags=["ops"], summary="Liveness (no API key needed)")
    async def healthz() -> dict[str, str]:
        """The process answers. Deliberately does no I/O: it must stay fast under load."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: database, storage, workers")
    async def readyz() -> JSONResponse:
        """503 until a render process is up, or when the database or disk is not usable."""
        health = await run_in_threadpool(queue.health)
        free = queue.storage.free_bytes()
        disk_ok = free >= settings.min_free_disk_mb * 1024 * 1024
        counts = await run_in_threadpool(queue.counts)
        ok = bool(health.get("ready")) and disk_ok
        body = {"status": "ready" if ok else "not ready", **health, "disk_free_bytes": free,
                "disk_ok": disk_ok, "queue_depth": counts["queued"],
                "queue_capacity": settings.max_queued}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}}}}, summary="Prometheus metrics")
    async def prometheus() -> Response:
        """Jobs by state, queue depth, render seconds, frames per second."""
        text = await run_in_threadpool(metrics.render)
        return Response(text, media_type=CONTENT_TYPE)

    return app


class SecurityHeadersMiddleware:
    """``nosniff`` and ``no-store`` unless a route says otherwise (pure ASGI: no overhead
    per body chunk, unlike Starlette's BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def job_view(job: Job, queue: JobQueue, settings: ServiceSettings) -> dict[str, Any]:
    """The public JSON document of a job."""
    result = job.result or {}
    expires = None
    if job.finished_at is not None and job.output_deleted_at is None:
        expires = _iso(job.finished_at + settings.output_retention)
    base = f"/v1/jobs/{job.id}"
    return {
        "id": job.id, "status": job.status, "progress": round(job.progress, 4),
        "stage": job.stage, "frames_done": job.frames_done, "frames_total": job.frames_total,
        "eta_s": _round(queue.eta(job)), "queue_position": job.queue_position,
        "attempts": job.attempts, "max_attempts": settings.max_attempts,
        "cancel_requested": job.cancel_requested,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "options": job.options, "inputs": job.inputs, "result": job.result,
        "timings": result.get("timings", {}), "warnings": result.get("warnings", []),
        "render_id": result.get("render_id"), "sync_offset_ms": result.get("sync_offset_ms"),
        "error": job.error, "inputs_deleted": job.inputs_deleted_at is not None,
        "output_deleted": job.output_deleted_at is not None, "expires_at": expires,
        "links": {"self": base, "video": f"{base}/video", "events": f"{base}/events"},
    }


def _sse(event: str, data: dict[str, Any], n: int) -> str:
    return f"id: {n}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="milliseconds")


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _error_response(exc: FacetalkError, status: int | None = None) -> JSONResponse:
    headers = {"X-Content-Type-Options": "nosniff"}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(exc.to_dict(), status_code=status or http_status(exc), headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
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
                                            hint="See /docs for the parameters."), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        hint = "See /docs for the routes." if exc.status_code in (404, 405) else ""
        body = {"error": code, "detail": str(exc.detail), "hint": hint}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        _log.error("unhandled error", exc_info=exc, extra={"fields": {
            "error_id": error_id, "path": request.url.path, "method": request.method}})
        return JSONResponse({"error": "internal_error",
                             "detail": f"internal server error (error id {error_id})",
                             "hint": "Report the error id to the operator; it matches a log line.",
                             "error_id": error_id}, status_code=500)

