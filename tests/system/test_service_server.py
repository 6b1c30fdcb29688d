"""The real ``facetalk serve`` process: end to end over HTTP, kill -9 crash safety, clean stop.

Every server here is started on a free loopback port by the test and stopped by it;
the tests check that no process (server or render worker) is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from helpers.service import TINY, Server, decode_mp4, submit, wait_for, wait_gone

pytestmark = pytest.mark.slow

#: Several seconds of rendering on this box, so the test can act while it renders.
LONGISH = {"duration": "12", "min_resolution": "512", "inference_steps": "25"}


def test_real_server_renders_and_serves_decodable_mp4s(
        tmp_path: Path, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    server = Server(tmp_path / "data", "--workers", "1")
    with server, server.client() as http:
        ids = [submit(http, portrait_bytes, speech_bytes, **TINY, seed=str(i)).json()["id"]
               for i in range(2)]
        for job_id in ids:
            job = wait_for(http, job_id)
            assert job["status"] == "succeeded", job
            video = http.get(job["links"]["video"])
            assert video.status_code == 200
            info = decode_mp4(video.content)
            assert info["frames"] == job["result"]["frames"] > 20
            assert (info["width"], info["height"]) == (256, 256) and info["audio"]
            assert info["metadata"].get("ai_generated") == "true"
        tree = server.tree()
        workers = http.get("/readyz").json()["worker_pids"]
        assert len(workers) == 1 and set(workers) < set(tree)
        assert len(tree) == 4  # the server, one render process, two upload validators
    # Uvicorn shuts down gracefully, then re-raises SIGTERM: exit status -15 is its clean exit.
    assert server.proc is not None and server.proc.returncode in (0, -signal.SIGTERM)
    assert "facetalk service stopped" in server.log()
    assert wait_gone(tree, 5.0) == []
    assert '"to": "succeeded"' in (tmp_path / "data" / "audit.log").read_text()


def test_kill_9_mid_render_loses_nothing(tmp_path: Path, portrait_bytes: bytes,
                                         speech_bytes: bytes) -> None:
    """1 worker, 3 jobs, kill -9 the server while job 1 renders, restart: all 3 succeed."""
    storage = tmp_path / "data"
    first = Server(storage, "--workers", "1")
    with first.client() as http:
        first.start()
        j1 = submit(http, portrait_bytes, speech_bytes, **LONGISH).json()["id"]
        j2 = submit(http, portrait_bytes, speech_bytes, **TINY, seed="2").json()["id"]
        j3 = submit(http, portrait_bytes, speech_bytes, **TINY, seed="3").json()["id"]
        running = wait_for(http, j1, ("running",), pred=lambda j: j["frames_done"] > 0)
        assert 0 < running["progress"] < 0.9
        orphans = first.kill9()
    t_kill = time.monotonic()
    # The render process notices its parent is gone at the next frame and exits.
    assert orphans and wait_gone(orphans, 10.0) == []
    orphans_s = time.monotonic() - t_kill

    second = Server(storage, "--workers", "1", port=first.port)
    with second, second.client() as http:
        assert not list((storage / "jobs" / j1).glob("*.partial"))
        jobs = {j: wait_for(http, j, timeout=180) for j in (j1, j2, j3)}
        for job in jobs.values():
            assert job["status"] == "succeeded", job
            info = decode_mp4(http.get(job["links"]["video"]).content)
            assert info["frames"] == job["result"]["frames"]
        assert jobs[j1]["attempts"] == 2  # interrupted once, re-run once
        assert jobs[j2]["attempts"] == jobs[j3]["attempts"] == 1
        assert jobs[j1]["result"]["frames"] == 300
        print(f"\ncrash: kill -9 at job 1 progress {running['progress']:.2f} "
              f"({running['frames_done']}/{running['frames_total']} frames); "
              f"{len(orphans)} child processes exited {orphans_s:.2f} s later; after restart "
              f"all 3 succeeded ({', '.join(str(jobs[j]['attempts']) for j in (j1, j2, j3))} "
              f"attempts) {time.monotonic() - t_kill:.1f} s after the kill")
    audit = [json.loads(ln) for ln in (storage / "audit.log").read_text().splitlines()]
    j1_moves = [(a["from"], a["to"]) for a in audit if a["job"] == j1]
    assert j1_moves == [(None, "queued"), ("queued", "running"), ("running", "queued"),
                        ("queued", "running"), ("running", "succeeded")]
    assert any(a.get("reason") == "server restarted" for a in audit if a["job"] == j1)


def test_sigterm_requeues_the_running_job_without_using_an_attempt(
        tmp_path: Path, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    storage = tmp_path / "data"
    first = Server(storage, "--workers", "1")
    with first.client() as http:
        first.start()
        job_id = submit(http, portrait_bytes, speech_bytes, **LONGISH).json()["id"]
        wait_for(http, job_id, ("running",), pred=lambda j: j["frames_done"] > 0)
        tree = first.tree()
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(20) in (0, -signal.SIGTERM)
        assert "facetalk service stopped" in first.log()
    assert wait_gone(tree, 5.0) == []
    second = Server(storage, "--workers", "1", port=first.port)
    with second, second.client() as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running") and job["attempts"] <= 1
        job = wait_for(http, job_id, timeout=180)
        assert job["status"] == "succeeded" and job["attempts"] == 1


def test_serve_refuses_bad_settings_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "facetalk.cli", "serve", "--workers", "0",
                           "--storage", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "FACETALK_DEBUG": ""})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: workers must be at least 1")
    assert "Traceback" not in proc.stderr
