"""The Celery + Redis queue end to end: real redis-server, real ``facetalk serve --queue``,
real ``facetalk worker`` processes, real ``kill -9``, all on loopback and started here.

- 12 jobs on two workers, one worker killed (every process of it) while it renders:
  every job succeeds exactly once, the killed worker's job re-runs on the other.
- Redis crashes (``kill -9``, AOF with fsync on every write) and restarts mid-run, with
  jobs submitted while it is down: no accepted job is lost.
- Cancel reaches the worker rendering the job: it stops within 2 s.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from facetalk.service.celery.state import EVENTS
from facetalk.service.celery.tasks import HEARTBEAT_S
from facetalk.service.jobs.storage import Storage
from helpers.queue import RedisServer, WorkerProcess
from helpers.service import Server, decode_mp4, submit, wait_for, wait_gone

pytestmark = pytest.mark.slow

#: 200 frames of 256 px video from ~1.5 s of speech (an idle tail): one to two seconds
#: of rendering, long enough to be caught mid-render. The API mirrors progress every
#: 0.5 s, so a job is only chosen as the victim while half of it is still to render.
FRAMES = 200
JOB = {"min_resolution": "256", "inference_steps": "5", "duration": str(FRAMES // 25)}
LONG = {"duration": "60", "min_resolution": "512", "inference_steps": "25"}


def start_workers(server: RedisServer, storage: Path, names: list[str]) -> list[WorkerProcess]:
    """Workers on the shared folder (prepared here: the API may start after them)."""
    Storage(storage).prepare()
    workers = [WorkerProcess(server.url, storage, name).start() for name in names]
    for w in workers:
        w.wait_ready(server.client())
    return workers


def stream_outcomes(server: RedisServer) -> Counter[tuple[str, str]]:
    """(job, final state) -> how many times a worker recorded it, from Redis's event stream."""
    return Counter((f["job"], f["kind"]) for _, f in server.client().xrange("facetalk:events")
                   if f["kind"] in ("succeeded", "failed", "cancelled"))


def audit_lines(storage: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in (storage / "audit.log").read_text().splitlines()]


def catch_mid_render(server: RedisServer, timeout: float = 120.0) -> tuple[str, dict[str, Any]]:
    """(worker, {"id", "frames_done"}) of a job caught in the first half of its frames.

    The workers' progress events in Redis are the freshest source (the API mirrors them
    every 0.5 s, heartbeats name current jobs every 2 s)."""
    client = redis.Redis.from_url(server.url)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        latest: dict[bytes, dict[bytes, bytes]] = {}
        for _, event in client.xrevrange(EVENTS, count=500):  # newest first
            latest.setdefault(event[b"job"], event)
        for job_id, event in latest.items():
            if event[b"kind"] != b"progress":
                continue
            done = int(json.loads(event[b"data"])["done"])
            if 0 < done <= FRAMES // 2:
                return event[b"worker"].decode(), {"id": job_id.decode(), "frames_done": done}
        time.sleep(0.01)
    raise AssertionError(f"no render caught in its first half within {timeout} s")


def wait_listed(http: httpx.Client, pred: Any, timeout: float) -> dict[str, dict[str, Any]]:
    """GET /v1/workers until ``pred(workers by name)`` holds; the last listing either way."""
    end = time.monotonic() + timeout
    while True:
        listed = {w["name"]: w for w in http.get("/v1/workers").json()["workers"]}
        if pred(listed) or time.monotonic() > end:
            return listed
        time.sleep(0.2)


def assert_clean_outputs(http: httpx.Client, storage: Path, jobs: dict[str, dict[str, Any]]) -> None:
    """Every job's MP4 decodes completely; no half-written file is left anywhere."""
    for job_id, job in jobs.items():
        assert job["status"] == "succeeded", job
        info = decode_mp4(http.get(job["links"]["video"]).content)
        assert info["frames"] == job["result"]["frames"] == FRAMES
        assert info["audio"] and info["metadata"].get("ai_generated") == "true"
        names = sorted(p.name for p in (storage / "jobs" / job_id).iterdir())
        assert names == ["audio", "output.mp4", "portrait"], names


def test_twelve_jobs_two_workers_one_killed_mid_render(
        tmp_path: Path, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    storage = tmp_path / "data"
    with RedisServer(tmp_path / "redis") as redis_server:
        workers = start_workers(redis_server, storage, ["alpha@test", "beta@test"])
        by_name = {w.name: w for w in workers}
        api = Server(storage, "--queue", redis_server.url)
        try:
            with api, api.client() as http:
                t0 = time.monotonic()
                ids = [submit(http, portrait_bytes, speech_bytes, **JOB, seed=str(i)).json()["id"]
                       for i in range(12)]
                # Catch a worker in the middle of rendering frames, then kill all of it.
                victim_name, victim_job = catch_mid_render(redis_server)
                victim = by_name[victim_name]
                killed = victim.kill9()
                t_kill = time.monotonic()
                assert wait_gone(killed, 5.0) == []
                survivor = next(w for w in workers if w is not victim)

                jobs = {j: wait_for(http, j, timeout=240) for j in ids}
                total_s = time.monotonic() - t0
                assert_clean_outputs(http, storage, jobs)
                moved = jobs[victim_job["id"]]
                assert moved["attempts"] == 2 and moved["result"]["worker"] == survivor.name
                recovered_s = time.monotonic() - t_kill
                # Exactly once: one recorded success per job at the source, one audit line.
                outcomes = stream_outcomes(redis_server)
                assert {k: v for k, v in outcomes.items()} == {(j, "succeeded"): 1 for j in ids}
                audit = audit_lines(storage)
                finals = Counter(a["job"] for a in audit if a["to"] == "succeeded")
                assert finals == dict.fromkeys(ids, 1)
                moves = [(a["from"], a["to"], a.get("worker")) for a in audit
                         if a["job"] == victim_job["id"]]
                assert moves == [(None, "queued", None), ("queued", "running", victim.name),
                                 ("running", "queued", None), ("queued", "running", survivor.name),
                                 ("running", "succeeded", None)]
                # The killed machine's hash lives out its TTL (the lease, at least three
                # heartbeats) and the monitor reads it every 0.5 s: the survivor may finish the
                # last jobs before then, so the listing is awaited, not read once.
                listed = wait_listed(http, lambda ws: not ws[victim.name]["alive"],
                                     timeout=3 * HEARTBEAT_S + victim.lease + 5.0)
                assert listed[survivor.name]["alive"] and not listed[victim.name]["alive"]
                assert listed[survivor.name]["jobs"]["succeeded"] >= 7
                text = http.get("/metrics").text
                assert f'facetalk_worker_up{{worker="{survivor.name}"}} 1.0' in text
                assert f'facetalk_worker_jobs_total{{outcome="succeeded",worker="{survivor.name}"}}' \
                    in text
                print(f"\ncelery: 12 jobs on 2 workers, {victim.name} killed (kill -9, "
                      f"{len(killed)} processes) at frame {victim_job['frames_done']}/{FRAMES} of a "
                      f"job; it was re-run on {survivor.name}; all 12 succeeded once, "
                      f"{recovered_s:.1f} s after the kill, {total_s:.1f} s in all")
        finally:
            for w in workers:
                w.stop()


def test_redis_restart_mid_run_loses_no_accepted_job(
        tmp_path: Path, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    storage = tmp_path / "data"
    redis_dir = tmp_path / "redis"
    redis_server = RedisServer(redis_dir).start()
    workers = start_workers(redis_server, storage, ["gamma@test", "delta@test"])
    api = Server(storage, "--queue", redis_server.url)
    try:
        with api, api.client() as http:
            before = [submit(http, portrait_bytes, speech_bytes, **JOB, seed=str(i)).json()["id"]
                      for i in range(5)]
            # Kill Redis while a render is under way (caught from the workers' own progress
            # events: a short job can finish between two polls of the API's mirror).
            catch_mid_render(redis_server)
            redis_server.kill9()
            # Accepted while Redis is down: durable in the API's database, published later.
            during = []
            for i in range(2):
                r = submit(http, portrait_bytes, speech_bytes, **JOB, seed=str(10 + i))
                assert r.status_code == 202, r.text
                during.append(r.json()["id"])
            time.sleep(1.0)
            redis_server = RedisServer(redis_dir, port=redis_server.port).start()
            ids = before + during
            jobs = {j: wait_for(http, j, timeout=240) for j in ids}
            assert_clean_outputs(http, storage, jobs)
            outcomes = stream_outcomes(redis_server)
            assert {k: v for k, v in outcomes.items() if k[0] in ids} == \
                {(j, "succeeded"): 1 for j in ids}
            assert Counter(a["job"] for a in audit_lines(storage)
                           if a["to"] == "succeeded") == dict.fromkeys(ids, 1)
            assert '"published a job accepted while the queue was down"' in api.log()
            print(f"\ncelery: Redis killed (-9) and restarted mid-run; {len(before)} jobs "
                  f"accepted before and {len(during)} while it was down all succeeded once "
                  f"(attempts {[jobs[j]['attempts'] for j in ids]})")
    finally:
        for w in workers:
            w.stop()
        redis_server.stop()


def test_cancel_reaches_the_remote_render_within_two_seconds(
        tmp_path: Path, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    storage = tmp_path / "data"
    with RedisServer(tmp_path / "redis") as redis_server:
        [worker] = start_workers(redis_server, storage, ["remote@test"])
        api = Server(storage, "--queue", redis_server.url)
        try:
            with api, api.client() as http:
                render_pids = http.get("/readyz").json()["worker_pids"]
                assert render_pids and set(render_pids) < set(worker.tree())
                assert api.proc is not None and not set(render_pids) & set(api.tree())
                job = submit(http, portrait_bytes, speech_bytes, **LONG).json()
                running = wait_for(http, job["id"], ("running",), pred=lambda j: j["frames_done"] > 0)
                t0 = time.monotonic()
                t0_wall = time.time()
                r = http.delete(f"/v1/jobs/{job['id']}")
                elapsed = time.monotonic() - t0
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "cancelled" and elapsed < 2.0, (r.json(), elapsed)
                # The render itself stopped (it recorded the cancel, from its own process).
                [event] = [(int(eid.split("-")[0]), f) for eid, f in
                           redis_server.client().xrange("facetalk:events")
                           if f["job"] == job["id"] and f["kind"] == "cancelled"]
                assert event[1]["worker"] == worker.name
                assert event[0] / 1000.0 - t0_wall < 2.0
                # Stopped by the engine's cancel flag: the same render process lives on.
                after = wait_for(http, job["id"])
                assert after["frames_done"] < running["frames_total"]
                end = time.monotonic() + 5  # /v1/workers is refreshed twice a second
                while http.get("/v1/workers").json()["workers"][0]["jobs"]["cancelled"] != 1:
                    assert time.monotonic() < end, http.get("/v1/workers").json()
                    time.sleep(0.1)
                assert http.get("/readyz").json()["worker_pids"] == render_pids
                assert not list((storage / "jobs" / job["id"]).glob("*.partial"))
                nxt = submit(http, portrait_bytes, speech_bytes, **JOB).json()
                assert wait_for(http, nxt["id"], timeout=120)["status"] == "succeeded"
                print(f"\ncelery: cancel of a remote render answered in {elapsed * 1000:.0f} ms "
                      f"(render stopped at frame {after['frames_done']}/{running['frames_total']})")
        finally:
            worker.stop()
