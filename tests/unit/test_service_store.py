"""The service's pieces without HTTP or processes: settings and the SQLite job store."""


from __future__ import annotations

import threading
from pathlib import Path

import pytest

from facetalk.errors import InvalidInput
from facetalk.service.jobs.store import FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore, NewJob
from facetalk.service.settings import ServiceSettings, parse_duration


# -- settings ------------------------------------------------------------------------------
def test_parse_duration_units() -> None:
    assert parse_duration("90", "x") == 90
    assert parse_duration("1.5m", "x") == 90
    assert parse_duration("24h", "x") == 86400
    assert parse_duration("7d", "x") == 7 * 86400
    assert parse_duration("250ms", "x") == pytest.approx(0.25)
    assert parse_duration(0, "x") == 0
    for bad in ("soon", "-5", "5 weeks", ""):
        with pytest.raises(InvalidInput):
            parse_duration(bad, "x")


def test_settings_precedence_cli_over_env_over_default(tmp_path: Path) -> None:
    env = {"FACETALK_PORT": "9001", "FACETALK_WORKERS": "3", "FACETALK_RETENTION": "2h",
           "FACETALK_API_KEYS": "key-one-123, key-two-456", "FACETALK_MAX_INPUT_BYTES": "1000"}
    s = ServiceSettings.load({"port": 9002, "storage": tmp_path}, env)
    assert s.port == 9002 and s.workers == 3 and s.retention == 7200
    assert s.api_keys == ("key-one-123", "key-two-456")
    assert s.limits.max_input_bytes == 1000  # the engine's own limits, from the same env
    assert s.host == "127.0.0.1"  # loopback unless told otherwise
    d = ServiceSettings.load({}, {})
    assert d.job_timeout is None and d.max_queued == 50 and d.retention == 86400


def test_settings_refuse_nonsense() -> None:
    for bad in ({"workers": 0}, {"port": 70000}, {"max_queued": 0}, {"api_keys": ("short",)},
                {"job_timeout": "-1"}, {"workers": "many"}):
        with pytest.raises(InvalidInput):
            ServiceSettings.load(bad, {})


def test_auto_timeout_grows_with_length_and_pixels() -> None:
    s = ServiceSettings()
    assert s.timeout_for(10, 512) < s.timeout_for(60, 512) < s.timeout_for(60, 1024)
    assert ServiceSettings(job_timeout=5).timeout_for(600, 2048) == 5


# -- the job store --------------------------------------------------------------------------
def _new(i: int) -> NewJob:
    return NewJob(id=f"{i:032x}", options={"min_resolution": 256}, inputs={}, video_seconds=1.0,
                  timeout_s=60.0, client="127.0.0.1")


def test_store_bounded_under_concurrent_inserts(tmp_path: Path) -> None:
    """20 threads race to insert 100 jobs into a queue of 30: exactly 30 get in."""
    store = JobStore(tmp_path / "jobs.db")
    accepted, refused = [], []
    lock = threading.Lock()

    def run(k: int) -> None:
        for i in range(5):
            try:
                store.insert(_new(k * 100 + i), max_queued=30)
                with lock:
                    accepted.append(1)
            except OverflowError:
                with lock:
                    refused.append(1)
        store.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 30 and len(refused) == 70
    assert store.counts()[QUEUED] == 30


def test_store_fifo_attempts_and_audit(tmp_path: Path) -> None:
    events: list[tuple[str, str | None, str]] = []
    store = JobStore(tmp_path / "jobs.db", on_change=lambda j, prev, _: events.append(
        (j.id, prev, j.status)))
    for i in range(3):
        store.insert(_new(i), 10)
    assert store.get(_new(2).id).queue_position == 2
    first = store.claim_next()
    assert first is not None and first.id == _new(0).id and first.attempts == 1
    assert store.get(_new(2).id).queue_position == 1
    store.requeue(first.id, reason="crash")
    again = store.claim_next()
    assert again is not None and again.id == first.id and again.attempts == 2
    done = store.finish(again.id, SUCCEEDED, result={"frames": 7})
    assert done is not None and done.frames_done == 7 and done.progress == 1.0
    assert store.finish(again.id, FAILED) is None  # a final job never changes again
    assert [e[2] for e in events] == [QUEUED, QUEUED, QUEUED, RUNNING, QUEUED, RUNNING, SUCCEEDED]
    assert store.delete(again.id) and store.get(again.id) is None
    assert not store.delete(_new(1).id)  # queued: not deletable, only cancellable


def test_store_finish_drops_inputs_in_the_same_transaction(tmp_path: Path) -> None:
    """Retention 0: readers see either (running, inputs kept) or (final, inputs deleted)."""
    store = JobStore(tmp_path / "jobs.db")
    store.insert(_new(0), 10)
    job = store.claim_next()
    assert job is not None
    seen: list[tuple[str, float | None]] = []

    def drop() -> None:  # a second connection reads while the files are being deleted
        other = JobStore(tmp_path / "jobs.db")
        mid = other.get(job.id)
        assert mid is not None
        seen.append((mid.status, mid.inputs_deleted_at))
        other.close()

    done = store.finish(job.id, SUCCEEDED, result={"frames": 3}, drop_inputs=drop)
    assert seen == [(RUNNING, None)]
    assert done is not None and done.status == SUCCEEDED and done.inputs_deleted_at is not None
    called: list[int] = []
    assert store.finish(job.id, FAILED, drop_inputs=lambda: called.append(1)) is None
    assert called == []  # a job that does not move keeps its files
