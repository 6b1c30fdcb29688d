"""Prometheus metrics (prometheus-client, Apache-2.0: the reference client library).

A registry per app (not the global one) so several apps in one process, as in the
tests, never collide. Job counts and queue depth are read from the store at scrape
time, so they are right even just after a restart; render time and speed are
observed when a job succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from ..jobs.queue import JobQueue
from ..jobs.store import SUCCEEDED, Job

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _QueueCollector:
    """Jobs by state, queue depth and capacity, workers: fresh at every scrape."""

    def __init__(self, queue: JobQueue, capacity: int) -> None:
        self.queue = queue
        self.capacity = capacity

    def describe(self) -> list[Metric]:
        return []  # no scrape at registration time

    def collect(self) -> Iterator[Metric]:
        counts = self.queue.counts()
        jobs = GaugeMetricFamily("facetalk_jobs", "Jobs in the store by state.", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily("facetalk_queue_depth", "Jobs waiting for a worker.",
                                value=counts.get("queued", 0))
        yield GaugeMetricFamily("facetalk_queue_capacity", "Most jobs that may wait (--max-queued).",
                                value=self.capacity)
        health = self.queue.health()
        yield GaugeMetricFamily("facetalk_workers", "Render processes configured.",
                                value=health.get("workers", 0))
        yield GaugeMetricFamily("facetalk_workers_ready", "Render processes alive and ready.",
                                value=health.get("workers_ready", 0))
        yield GaugeMetricFamily("facetalk_workers_busy", "Render processes running a job.",
                                value=health.get("workers_busy", 0))


class Metrics:
    """The app's metrics; ``on_change`` is registered as a queue state listener."""

    def __init__(self, queue: JobQueue, capacity: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.submitted = Counter("facetalk_jobs_submitted", "Jobs accepted (202).", registry=r)
        self.refused = Counter("facetalk_jobs_refused", "Submissions refused, by error code.",
                               ["reason"], registry=r)
        self.transitions = Counter("facetalk_job_transitions", "Job state changes, by new state.",
                                   ["state"], registry=r)
        self.render_seconds = Histogram(
            "facetalk_render_seconds", "Wall time of successful renders.", registry=r,
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600))
        self.render_fps = Histogram(
            "facetalk_render_frames_per_second", "Frames per wall second of successful renders.",
            registry=r, buckets=(1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 400))
        self.frames = Counter("facetalk_frames_rendered", "Frames in successful renders.",
                              registry=r)
        r.register(_QueueCollector(queue, capacity))  # type: ignore[arg-type]

    def on_change(self, job: Job, previous: str | None, extra: dict[str, Any]) -> None:
        """Count the transition; observe time and speed of a success."""
        self.transitions.labels(job.status).inc()
        if job.status == SUCCEEDED and job.result:
            wall = float(job.result.get("wall_s", 0.0))
            frames = int(job.result.get("frames", 0))
            self.render_seconds.observe(wall)
            self.frames.inc(frames)
            if wall > 0:
                self.render_fps.observe(frames / wall)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
