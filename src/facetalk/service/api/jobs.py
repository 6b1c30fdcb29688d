"""The job routes: submit, list, read, cancel or delete, download, follow (SSE).

Every route is thin: it validates, asks the queue (``app.state.queue``, embedded or
Celery: the routes do not know which), and turns the job record into JSON.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ...errors import FacetalkError, InvalidInput
from ..errors import (
    BadRequest,
    Expired,
    InsufficientStorage,
    JobNotFound,
    NotReady,
    QueueFull,
    public_error,
)
from ..jobs.queue import JobQueue
from ..jobs.storage import new_job_id, valid_job_id
from ..jobs.store import SUCCEEDED, Job, NewJob
from ..settings import ServiceSettings
from .schemas import ERRORS, JobOut, JobPage, submit_request_body
from .uploads import options_from_form, receive_form, upload_guard

#: How long DELETE waits for a running render to stop before answering 202.
CANCEL_WAIT_S = 2.0
SSE_POLL_S = 0.25
SSE_HEARTBEAT_S = 15.0
#: The largest job sequence number (SQLite's INTEGER); a larger cursor is a 422, not a 500.
MAX_CURSOR = 2**63 - 1

router = APIRouter(tags=["jobs"])


def _ctx(request: Request) -> tuple[JobQueue, ServiceSettings]:
    return request.app.state.queue, request.app.state.settings


def _find(queue: JobQueue, job_id: str) -> Job:
    job = queue.get(job_id) if valid_job_id(job_id) else None
    if job is None:
        raise JobNotFound(f"no job {job_id[:64]!r}")
    return job


@router.post("/v1/jobs", status_code=202, response_model=JobOut,
             openapi_extra=submit_request_body(), responses=ERRORS,
             summary="Submit a portrait and a recording")
async def submit(request: Request) -> JSONResponse:
    """Queue a render. Files are validated by decoding them before anything is queued."""
    queue, settings = _ctx(request)
    metrics = request.app.state.metrics
    try:
        job = await _submit(request)
    except FacetalkError as exc:
        metrics.refused.labels(exc.code).inc()
        raise
    metrics.submitted.inc()
    url = f"/v1/jobs/{job.id}"
    doc = await run_in_threadpool(job_view, job, queue, settings)  # the ETA reads the queue
    return JSONResponse(doc, status_code=202, headers={"Location": url})


async def _submit(request: Request) -> Job:
    queue, settings = _ctx(request)
    if queue.is_full():
        # Refuse before reading the body: a full queue costs the client nothing.
        raise QueueFull(f"the queue is full ({settings.max_queued} jobs waiting)",
                        retry_after=queue.retry_after())
    if queue.storage.free_bytes() < settings.min_free_disk_mb * 1024 * 1024:
        raise InsufficientStorage("the server's storage disk is nearly full")
    try:
        form = await receive_form(request.headers.get("content-type"), request.stream(),
                                  queue.storage.new_upload, settings.limits,
                                  guard=upload_guard(request))
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
            request.app.state.validators.inspect, form.files["portrait"].path, form.files["audio"].path,
            limiter=request.app.state.validation_slots)
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


@router.get("/v1/jobs", response_model=JobPage, responses=ERRORS,
            summary="List jobs, newest first")
async def list_jobs(
    request: Request,
    limit: int = Query(20, ge=1, le=100, description="Jobs per page."),
    cursor: int | None = Query(None, ge=1, le=MAX_CURSOR, description="From the previous page's `next`."),
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = Query(
        None, description="Only jobs in this state."),
) -> dict[str, Any]:
    """Keyset paging: stable while new jobs arrive."""
    queue, settings = _ctx(request)
    jobs = await run_in_threadpool(queue.page, limit + 1, cursor, status)
    more = len(jobs) > limit
    jobs = jobs[:limit]
    nxt = None
    if more:
        nxt = f"/v1/jobs?limit={limit}&cursor={jobs[-1].seq}"
        nxt += f"&status={status}" if status else ""
    counts = await run_in_threadpool(queue.counts)
    return {"jobs": [job_view(j, queue, settings) for j in jobs], "next": nxt, "counts": counts}


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=ERRORS,
            summary="Status, progress, timings, result or error")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """The job document."""
    queue, settings = _ctx(request)
    return await run_in_threadpool(lambda: job_view(_find(queue, job_id), queue, settings))


@router.delete("/v1/jobs/{job_id}", responses={
    **ERRORS, 200: {"model": JobOut, "description": "Cancelled"},
    202: {"model": JobOut, "description": "Cancel requested, render still stopping"},
    204: {"description": "Finished job deleted with its files"}},
    summary="Cancel a queued/running job, or delete a finished one")
async def delete_job(job_id: str, request: Request) -> Response:
    """Cancel (queued/running) or delete (finished, with its files)."""
    queue, settings = _ctx(request)
    job = await run_in_threadpool(_find, queue, job_id)
    if job.final:
        if await run_in_threadpool(queue.delete, job_id):
            return Response(status_code=204)
        job = await run_in_threadpool(_find, queue, job_id)
    job = await run_in_threadpool(queue.cancel, job_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while not job.final and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        job = await run_in_threadpool(_find, queue, job_id)
    return JSONResponse(job_view(job, queue, settings), status_code=200 if job.final else 202)


@router.get("/v1/jobs/{job_id}/video", response_class=FileResponse,
            responses={**ERRORS, 200: {"content": {"video/mp4": {}}, "description": "The MP4"},
                    206: {"content": {"video/mp4": {}}, "description": "A byte range"}},
            summary="Download the MP4 (HTTP Range supported)")
async def get_video(job_id: str, request: Request) -> FileResponse:
    """The finished MP4; browsers seek with Range requests."""
    queue = request.app.state.queue
    job = await run_in_threadpool(_find, queue, job_id)
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


@router.get("/v1/jobs/{job_id}/events", responses={
    **ERRORS, 200: {"content": {"text/event-stream": {}},
                     "description": "`progress` events, then one `end` event with the job"}},
    summary="Progress as Server-Sent Events")
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """``event: progress`` on every change, ``event: end`` (the full job) when final."""
    await run_in_threadpool(_find, request.app.state.queue, job_id)
    return StreamingResponse(_events(request, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, job_id: str) -> AsyncIterator[str]:
    """The SSE stream: polls the job (the queue may live in another process or machine)."""
    queue, settings = _ctx(request)
    last: dict[str, Any] | None = None
    last_sent = time.monotonic()
    n = 0
    yield "retry: 2000\n\n"
    while True:
        job = await run_in_threadpool(queue.get, job_id)
        if job is None:
            yield _sse("end", {"id": job_id, "status": "deleted"}, n)
            return
        doc = job_view(job, queue, settings)
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
        "error": public_error(job.error) if job.error else job.error,
        "inputs_deleted": job.inputs_deleted_at is not None,
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


