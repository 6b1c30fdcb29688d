"""The job table in SQLite (WAL mode): every job's state, durable across crashes.

Why SQLite: it ships with Python, needs no server, survives ``kill -9`` (WAL with
``synchronous=FULL`` loses no committed transaction, even on power loss), and one
box's job rate is far below what it handles. Every state change goes through one
method here that also emits exactly one audit event, so nothing changes state silently.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL = (SUCCEEDED, FAILED, CANCELLED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT,
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER NOT NULL DEFAULT 0,
    eta_s REAL,
    video_seconds REAL NOT NULL,
    timeout_s REAL NOT NULL,
    options TEXT NOT NULL,
    inputs TEXT NOT NULL,
    result TEXT,
    error TEXT,
    client TEXT,
    inputs_deleted_at REAL,
    output_deleted_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at);
"""


@dataclass
class Job:
    """One row of the job table, decoded."""

    seq: int
    id: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    cancel_requested: bool
    progress: float
    stage: str | None
    frames_done: int
    frames_total: int
    eta_s: float | None
    video_seconds: float
    timeout_s: float
    options: dict[str, Any]
    inputs: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    client: str | None
    inputs_deleted_at: float | None
    output_deleted_at: float | None
    #: Jobs ahead of this one (queued only; filled in by the store on read).
    queue_position: int | None = field(default=None)

    @property
    def final(self) -> bool:
        """True once the job will not change state any more."""
        return self.status in FINAL


@dataclass(frozen=True)
class NewJob:
    """What a submission stores: validated options and facts about the inputs."""

    id: str
    options: dict[str, Any]
    inputs: dict[str, Any]
    video_seconds: float
    timeout_s: float
    client: str | None


StateListener = Callable[[Job, str | None, dict[str, Any]], None]


class JobStore:
    """Thread-safe access to the job table (one SQLite connection per thread)."""

    def __init__(self, path: Path, on_change: StateListener | None = None) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._listeners: list[StateListener] = [on_change] if on_change else []
        self._conn().executescript(SCHEMA)  # idempotent; executescript commits by itself

    def add_listener(self, fn: StateListener) -> None:
        """Call ``fn(job, previous_status, extra)`` after every state change."""
        self._listeners.append(fn)

    # -- connection handling ------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                 check_same_thread=True)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: writers queue up instead of failing mid-way."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def ping(self) -> bool:
        """True when the database answers (readiness)."""
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    # -- reads ----------------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job, with its queue position when queued."""
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = _decode(row)
        if job.status == QUEUED:
            job.queue_position = self._conn().execute(
                "SELECT COUNT(*) FROM jobs WHERE status = ? AND seq < ?",
                (QUEUED, job.seq)).fetchone()[0]
        return job

    def page(self, limit: int, before_seq: int | None = None,
             status: str | None = None) -> list[Job]:
        """Newest first, ``limit`` jobs older than ``before_seq`` (keyset paging)."""
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        jobs = [_decode(r) for r in self._conn().execute(sql, args).fetchall()]
        queued = [j for j in jobs if j.status == QUEUED]
        if queued:
            order = [r[0] for r in self._conn().execute(
                "SELECT seq FROM jobs WHERE status = ? ORDER BY seq", (QUEUED,)).fetchall()]
            index = {seq: i for i, seq in enumerate(order)}
            for j in queued:
                j.queue_position = index.get(j.seq)
        return jobs

    def counts(self) -> dict[str, int]:
        """Number of jobs in each state (every state present, zeros included)."""
        out = dict.fromkeys(STATES, 0)
        for status, n in self._conn().execute(
                "SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall():
            out[status] = n
        return out

    def queued_ahead(self) -> list[tuple[float, int]]:
        """(video_seconds, min_resolution) of every queued job, in order (for ETAs)."""
        rows = self._conn().execute(
            "SELECT video_seconds, options FROM jobs WHERE status = ? ORDER BY seq",
            (QUEUED,)).fetchall()
        return [(r[0], int(json.loads(r[1]).get("min_resolution", 512))) for r in rows]

    # -- transitions ----------------------------------------------------------------------
    def insert(self, new: NewJob, max_queued: int) -> Job:
        """Add a queued job; raise ``OverflowError`` (carrying the depth) when the queue is full.

        The count and the insert share one IMMEDIATE transaction, so concurrent
        submissions can never push the queue past ``max_queued``.
        """
        now = time.time()
        with self._tx() as db:
            queued = db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?",
                                (QUEUED,)).fetchone()[0]
            if queued >= max_queued:
                raise OverflowError(queued)
            db.execute(
                "INSERT INTO jobs (id, status, created_at, video_seconds, timeout_s, options,"
                " inputs, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (new.id, QUEUED, now, new.video_seconds, new.timeout_s,
                 json.dumps(new.options), json.dumps(new.inputs), new.client))
        job = self._must_get(new.id)
        self._emit(job, None, {})
        return job

    def claim_next(self) -> Job | None:
        """Move the oldest queued job to running (one more attempt) and return it."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = ? ORDER BY seq LIMIT 1",
                             (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1,"
                " progress = 0, stage = 'starting', frames_done = 0, frames_total = 0,"
                " eta_s = NULL WHERE id = ?", (RUNNING, now, row[0]))
        job = self._must_get(row[0])
        self._emit(job, QUEUED, {})
        return job

    def set_progress(self, job_id: str, fraction: float, stage: str, frames_done: int,
                     frames_total: int, eta_s: float | None) -> None:
        """Record progress of a running job (not a state change: not audited)."""
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, stage = ?, frames_done = ?, frames_total = ?,"
                " eta_s = ? WHERE id = ? AND status = ?",
                (fraction, stage, frames_done, frames_total, eta_s, job_id, RUNNING))

    def finish(self, job_id: str, status: str, *, result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None, expect: tuple[str, ...] = (RUNNING,),
               drop_inputs: Callable[[], None] | None = None) -> Job | None:
        """Move a job from one of ``expect`` to a final state; None if it was not there.

        ``drop_inputs`` (retention 0) deletes the uploads inside the same transaction that
        records the final state and ``inputs_deleted_at``: no reader ever sees a finished job
        whose inputs are still on disk or still reported as kept.
        """
        assert status in FINAL
        now = time.time()
        marks = ",".join("?" * len(expect))
        frames = int(result["frames"]) if result and "frames" in result else None
        with self._tx() as db:
            prev = db.execute(f"SELECT status FROM jobs WHERE id = ? AND status IN ({marks})",
                              (job_id, *expect)).fetchone()
            if prev is None:
                return None
            if drop_inputs is not None:
                drop_inputs()
            db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, result = ?, error = ?,"
                " progress = CASE WHEN ? = 'succeeded' THEN 1.0 ELSE progress END,"
                " frames_done = COALESCE(?, frames_done), frames_total = COALESCE(?, frames_total),"
                " stage = ?, eta_s = NULL,"
                " inputs_deleted_at = CASE WHEN ? THEN COALESCE(inputs_deleted_at, ?)"
                " ELSE inputs_deleted_at END WHERE id = ?",
                (status, now, json.dumps(result) if result is not None else None,
                 json.dumps(error) if error is not None else None, status, frames, frames,
                 status, drop_inputs is not None, now, job_id))
        job = self._must_get(job_id)
        self._emit(job, prev[0], {})
        return job

    def requeue(self, job_id: str, *, refund_attempt: bool = False, reason: str = "") -> Job | None:
        """Put a running job back at its place in the queue (crash, shutdown)."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, started_at = NULL, progress = 0, stage = NULL,"
                " frames_done = 0, frames_total = 0, eta_s = NULL,"
                " attempts = attempts - ? WHERE id = ? AND status = ?",
                (QUEUED, 1 if refund_attempt else 0, job_id, RUNNING))
            if cur.rowcount == 0:
                return None
        job = self._must_get(job_id)
        self._emit(job, RUNNING, {"reason": reason} if reason else {})
        return job

    def request_cancel(self, job_id: str) -> None:
        """Flag a running job for cancellation (survives a restart)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def mark_deleted(self, job_id: str, *, inputs: bool = False, output: bool = False) -> None:
        """Record that retention removed the inputs and/or the output."""
        now = time.time()
        with self._tx() as db:
            if inputs:
                db.execute("UPDATE jobs SET inputs_deleted_at = ? WHERE id = ? AND"
                           " inputs_deleted_at IS NULL", (now, job_id))
            if output:
                db.execute("UPDATE jobs SET output_deleted_at = ? WHERE id = ? AND"
                           " output_deleted_at IS NULL", (now, job_id))

    def delete(self, job_id: str) -> bool:
        """Remove a final job's row; False when it is not final (or not there)."""
        marks = ",".join("?" * len(FINAL))
        with self._tx() as db:
            cur = db.execute(f"DELETE FROM jobs WHERE id = ? AND status IN ({marks})",
                             (job_id, *FINAL))
            return cur.rowcount > 0

    def running(self) -> list[Job]:
        """Jobs marked running (after a crash: the ones that were interrupted)."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE status = ? ORDER BY seq",
                                    (RUNNING,)).fetchall()
        return [_decode(r) for r in rows]

    def finished_before(self, ts: float, *, inputs: bool = False, output: bool = False,
                        limit: int = 500) -> list[str]:
        """Ids of final jobs that ended before ``ts`` and still have inputs/output."""
        col = "inputs_deleted_at" if inputs else "output_deleted_at"
        assert inputs != output
        marks = ",".join("?" * len(FINAL))
        rows = self._conn().execute(
            f"SELECT id FROM jobs WHERE status IN ({marks}) AND finished_at < ? AND"
            f" {col} IS NULL ORDER BY finished_at LIMIT ?", (*FINAL, ts, limit)).fetchall()
        return [r[0] for r in rows]

    def purge_rows(self, before: float) -> int:
        """Forget final jobs that ended before ``before`` (their files are long gone)."""
        marks = ",".join("?" * len(FINAL))
        with self._tx() as db:
            cur = db.execute(f"DELETE FROM jobs WHERE status IN ({marks}) AND finished_at < ?",
                             (*FINAL, before))
            return cur.rowcount

    # -- helpers --------------------------------------------------------------------------
    def _must_get(self, job_id: str) -> Job:
        job = self.get(job_id)
        assert job is not None
        return job

    def _emit(self, job: Job, previous: str | None, extra: dict[str, Any]) -> None:
        for fn in self._listeners:
            fn(job, previous, extra)


def _decode(row: sqlite3.Row) -> Job:
    d = dict(row)
    for key in ("options", "inputs", "result", "error"):
        d[key] = json.loads(d[key]) if d[key] is not None else None
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)
