"""The render process: receives one job at a time over a pipe and runs ``generate()``.

It imports only the engine (never the web stack) and lives as long as the server, so
the engine's imports and JIT warm-up are paid once. The parent can stop a render in
two ways, from gentle to certain: send a ``Cancel`` down the pipe (looked for before
every frame; the messages are in ``jobs.messages``), or SIGKILL the process (a stuck
render, a timeout). If the server dies, the next cancel check sees the parent gone and
the render stops: no orphan keeps burning the CPU or writing files after a ``kill -9``
of the server.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ...errors import Cancelled, FacetalkError
from ...options import GenerationOptions
from ...settings import Limits
from .. import logs
from ..helpers.process import announce_ready, child_channel
from .messages import (
    Cancel,
    JobReport,
    ProgressReport,
    RenderCancelled,
    Rendered,
    RenderFailed,
    RenderJob,
    Stop,
)

if TYPE_CHECKING:
    from ...pipeline import Progress

_log = logging.getLogger("facetalk.worker")

#: CPU priority of render processes relative to the server (higher = yields more).
WORKER_NICENESS = 10

#: Seconds between progress messages (the server stores them; 4 Hz is plenty for a UI).
PROGRESS_INTERVAL = 0.25


def worker_main(conn: Connection, parent_pid: int, limits: dict[str, Any], log_level: str) -> None:
    """Serve render requests on ``conn`` until told to stop or the parent is gone."""
    # Ctrl-C on the terminal reaches the whole process group; the server decides what
    # to do with running jobs, so the worker ignores SIGINT and waits to be told.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Renders are batch work: on a 2-core box they must not starve the HTTP front end
    # (health checks, uploads, downloads), so they yield the CPU to it.
    os.nice(WORKER_NICENESS)
    logs.configure(log_level)
    from ...pipeline import generate  # the heavy import, once per process

    engine_limits = Limits(**limits)
    try:
        announce_ready(conn)
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                return  # the server is gone
            if isinstance(msg, Stop):
                return
            if not isinstance(msg, RenderJob):
                continue  # e.g. a cancel for a job that already ended
            conn.send(_run(generate, msg, engine_limits, parent_pid, conn))
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return  # the server went away while we were talking to it


def main(argv: list[str] | None = None) -> None:
    """``python -m facetalk.service.jobs.render FD CONFIG_JSON``: started by the server only.

    A fresh interpreter (not multiprocessing's spawn) so the server's own ``__main__``
    is never re-imported, whatever script embeds the app.
    """
    conn, config = child_channel(argv)
    try:
        worker_main(conn, int(config["parent_pid"]), config["limits"], config["log_level"])
    finally:
        conn.close()


def _run(generate: Any, job: RenderJob, limits: Limits, parent_pid: int,
         conn: Connection) -> JobReport:
    job_id = job.job_id
    cancelled = False

    def stop_requested() -> bool:
        # Checked by the engine before every frame: a non-blocking look at the pipe for a
        # Cancel of this job (or a Stop), and whether the server (our parent) still exists.
        nonlocal cancelled
        while not cancelled and conn.poll():
            msg = conn.recv()
            cancelled = (isinstance(msg, Cancel) and msg.job_id == job_id) or isinstance(msg, Stop)
        return cancelled or os.getppid() != parent_pid

    last = 0.0

    def on_progress(p: Progress) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL or p.fraction >= 1.0:
            last = now
            conn.send(ProgressReport(job_id, p.fraction, p.stage, p.frames_done,
                                     p.frames_total, p.eta_s))

    try:
        opts = GenerationOptions.from_mapping(job.options)
        result = generate(job.portrait, job.audio, opts, on_progress, output=job.output,
                          limits=limits, cancel=stop_requested)
    except Cancelled:
        return RenderCancelled(job_id)
    except FacetalkError as exc:
        return RenderFailed(job_id, exc.to_dict(), None)
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        _log.exception("render crashed", extra={"fields": {"job": job_id, "error_id": error_id}})
        return RenderFailed(job_id, {
            "error": "internal_error",
            "detail": f"the render failed with an internal error (error id {error_id})",
            "hint": "This is a bug in facetalk; report the error id to the operator."},
            error_id)
    return Rendered(job_id, result_document(result))


def result_document(result: Any) -> dict[str, Any]:
    """The job record's ``result`` from a GenerationResult (both queue backends use it)."""
    return {
        "render_id": result.render_id,
        "duration": result.duration,
        "frames": result.frames,
        "width": result.width,
        "height": result.height,
        "fps": result.fps,
        "audio_duration": result.audio_duration,
        "timings": result.timings,
        "wall_s": result.wall_s,
        "frames_per_second": result.frames / max(result.wall_s, 1e-9),
        "warnings": result.warnings,
        "sync_offset_ms": result.sync_offset_ms,
        "stats": result.stats,
        "bytes": os.path.getsize(result.path),
    }


if __name__ == "__main__":
    main()
