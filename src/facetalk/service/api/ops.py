"""Operations: ``/healthz``, ``/readyz``, ``/metrics`` and ``GET /v1/workers`` (either backend).

The embedded queue lists its local render processes; the Celery queue lists every
worker machine process that sent a heartbeat in the last hour (``alive`` false once
it stops), with the jobs it is rendering and its lifetime counters. Throughput per
worker is ``rate(facetalk_worker_jobs_total{outcome="succeeded"}[5m])`` in Prometheus
(or ``facetalk_worker_frames_total`` for frames).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.concurrency import run_in_threadpool

from .metrics import CONTENT_TYPE

router = APIRouter(tags=["ops"])


def _workers(queue: Any) -> list[dict[str, Any]]:
    fn = getattr(queue, "workers", None)
    return list(fn()) if fn is not None else []


@router.get("/v1/workers", summary="Render workers: heartbeat, current job, counters")
async def list_workers(request: Request) -> dict[str, Any]:
    """Every render worker with its heartbeat, the jobs it is rendering and what it did."""
    queue = request.app.state.queue
    workers = await run_in_threadpool(_workers, queue)
    now = time.time()
    for w in workers:
        hb = w.get("last_heartbeat")
        w["heartbeat_age_s"] = round(now - hb, 3) if hb else None
        started = w.get("started_at")
        up = now - started if started else 0.0
        done = int(w.get("jobs", {}).get("succeeded", 0))
        w["jobs_per_minute"] = round(done * 60.0 / up, 3) if up > 0 else 0.0
    return {"backend": "celery" if request.app.state.settings.queue else "embedded",
            "workers": workers, "alive": sum(1 for w in workers if w.get("alive"))}


class WorkerCollector:
    """Per-worker series, read from the queue at scrape time."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration time

    def collect(self) -> Iterator[Metric]:
        workers = _workers(self.queue)
        up = GaugeMetricFamily("facetalk_worker_up", "1 while the worker heartbeats.",
                               labels=["worker"])
        busy = GaugeMetricFamily("facetalk_worker_busy", "Jobs the worker is rendering now.",
                                 labels=["worker"])
        slots = GaugeMetricFamily("facetalk_worker_concurrency", "Renders the worker runs at once.",
                                  labels=["worker"])
        jobs = CounterMetricFamily("facetalk_worker_jobs", "Jobs the worker ended, by outcome "
                                   "(rate() of succeeded = throughput).", labels=["worker", "outcome"])
        frames = CounterMetricFamily("facetalk_worker_frames", "Frames in the worker's successful "
                                     "renders.", labels=["worker"])
        seconds = CounterMetricFamily("facetalk_worker_render_seconds", "Wall seconds of the "
                                      "worker's successful renders.", labels=["worker"])
        age = GaugeMetricFamily("facetalk_worker_heartbeat_age_seconds",
                                "Seconds since the worker's last heartbeat.", labels=["worker"])
        now = time.time()
        for w in workers:
            name = str(w["name"])
            up.add_metric([name], 1.0 if w.get("alive") else 0.0)
            busy.add_metric([name], float(w.get("busy", 0)))
            slots.add_metric([name], float(w.get("concurrency", 0)))
            for outcome, n in (w.get("jobs") or {}).items():
                jobs.add_metric([name, outcome], float(n))
            frames.add_metric([name], float(w.get("frames", 0)))
            seconds.add_metric([name], float(w.get("render_seconds", 0.0)))
            if w.get("last_heartbeat"):
                age.add_metric([name], max(0.0, now - float(w["last_heartbeat"])))
        yield from (up, busy, slots, jobs, frames, seconds, age)


@router.get("/healthz", summary="Liveness (no API key needed)")
async def healthz() -> dict[str, str]:
    """The process answers. Deliberately does no I/O: it must stay fast under load."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database, storage, workers (details need the key)")
async def readyz(request: Request) -> JSONResponse:
    """503 until a render process is up, or when the database or disk is not usable.

    With API keys configured, a request without a valid key (a readiness probe) gets the
    status alone: worker pids, host names and disk figures are for the operator.
    """
    queue, settings = request.app.state.queue, request.app.state.settings
    health = await run_in_threadpool(queue.health)
    free = queue.storage.free_bytes()
    disk_ok = free >= settings.min_free_disk_mb * 1024 * 1024
    counts = await run_in_threadpool(queue.counts)
    ok = bool(health.get("ready")) and disk_ok
    body = {"status": "ready" if ok else "not ready", **health, "disk_free_bytes": free,
            "disk_ok": disk_ok, "queue_depth": counts["queued"],
            "queue_capacity": settings.max_queued}
    if settings.api_keys and not getattr(request.state, "api_key_ok", False):
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}}}}, summary="Prometheus metrics")
async def prometheus(request: Request) -> Response:
    """Jobs by state, queue depth, render seconds, frames per second."""
    text = await run_in_threadpool(request.app.state.metrics.render)
    return Response(text, media_type=CONTENT_TYPE)

