"""Load test on loopback: 200 submissions from 20 concurrent clients against
``--max-queued 50``, with /healthz probed and the server's memory sampled throughout.

Bounded in count (200 requests) and time (every wait has a timeout); it prints the
measured figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from facetalk.measure.procs import rss_bytes
from helpers.service import Server

pytestmark = pytest.mark.slow

CLIENTS = 20
PER_CLIENT = 10
MAX_QUEUED = 50
#: A tiny render (half a second of 256 px video), so the accepted jobs finish in a minute.
JOB = {"min_resolution": "256", "inference_steps": "5", "duration": "0.5"}

#: GET the URL every 5 ms until a line arrives on stdin; print latencies (ms) as JSON.
PROBE = """
import json, sys, threading, time, httpx
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
ms, errors = [], []
with httpx.Client(timeout=10.0) as http:
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            if http.get(sys.argv[1]).status_code != 200:
                errors.append("status")
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
        ms.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.005)
print(json.dumps({"ms": ms, "errors": errors}))
"""


def test_burst_of_200_submissions(tmp_path: Path, astronaut_path: Path, short_speech: Path) -> None:
    portrait, audio = astronaut_path.read_bytes(), short_speech.read_bytes()
    server = Server(tmp_path / "data", "--workers", "1", "--max-queued", str(MAX_QUEUED))
    with server:
        baseline_rss = rss_bytes(server.tree())
        results: list[tuple[int, str | None, str | None]] = []
        lock = threading.Lock()
        burst_over = threading.Event()
        peak_rss = [baseline_rss]

        def client() -> None:
            with httpx.Client(base_url=server.base, timeout=60.0) as http:
                for _ in range(PER_CLIENT):
                    try:
                        r = http.post("/v1/jobs", data=JOB, files={
                            "portrait": ("p.png", portrait, "image/png"),
                            "audio": ("a.wav", audio, "audio/wav")})
                    except httpx.HTTPError as exc:  # counted, and fails the test below
                        with lock:
                            results.append((-1, type(exc).__name__, None))
                        continue
                    job_id = r.json().get("id") if r.status_code == 202 else None
                    with lock:
                        results.append((r.status_code, job_id, r.headers.get("retry-after")))

        # /healthz is probed from its own process, so the 20 client threads of this
        # one (and their GIL) do not add their own delays to the server's latency.
        probe = subprocess.Popen([sys.executable, "-c", PROBE, server.base + "/healthz"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)

        def sample() -> None:
            while not burst_over.is_set():
                peak_rss[0] = max(peak_rss[0], rss_bytes(server.tree()))
                time.sleep(0.05)

        helpers = [threading.Thread(target=sample)]
        clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in helpers:
            t.start()
        t0 = time.monotonic()
        for t in clients:
            t.start()
        for t in clients:
            t.join(300)
        burst_s = time.monotonic() - t0
        burst_over.set()
        for t in helpers:
            t.join(30)
        out, _ = probe.communicate("stop\n", timeout=30)
        probed = json.loads(out)
        health_ms, health_errors = probed["ms"], probed["errors"]

        codes = [c for c, _, _ in results]
        accepted = [j for c, j, _ in results if c == 202]
        refused = [ra for c, _, ra in results if c == 429]
        ms = sorted(health_ms)
        p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]
        print(f"\nload: {len(results)} submissions from {CLIENTS} clients in {burst_s:.1f} s: "
              f"{len(accepted)} accepted (202), {len(refused)} refused (429), "
              f"others: {[r for r in results if r[0] not in (202, 429)]}")
        print(f"load: /healthz during the burst: n={len(ms)} p50={p50:.1f} ms "
              f"p90={ms[int(0.9 * len(ms))]:.1f} ms p99={p99:.1f} ms max={ms[-1]:.1f} ms "
              f"errors={health_errors}")
        print(f"load: RSS server+workers: {baseline_rss / 1e6:.0f} MB idle, "
              f"{peak_rss[0] / 1e6:.0f} MB peak")
        assert len(results) == CLIENTS * PER_CLIENT
        assert set(codes) <= {202, 429}, sorted(set(codes))
        assert len(accepted) >= MAX_QUEUED and refused, (len(accepted), len(refused))
        assert all(ra and int(ra) >= 1 for ra in refused)  # every 429 says when to retry
        assert not health_errors
        assert p99 < 200, f"/healthz p99 {p99:.1f} ms"
        # Bounded: uploads stream to disk and at most two are decoded at a time.
        assert peak_rss[0] < baseline_rss + 600e6, f"peak RSS {peak_rss[0] / 1e6:.0f} MB"

        # Every accepted job finishes, and finishes well.
        end = time.monotonic() + 300
        with server.client() as http:
            while time.monotonic() < end:
                counts = http.get("/v1/jobs").json()["counts"]
                if counts["queued"] == 0 and counts["running"] == 0:
                    break
                time.sleep(0.5)
            drain_s = time.monotonic() - t0
            states = {j: http.get(f"/v1/jobs/{j}").json()["status"] for j in accepted}
            metrics = http.get("/metrics").text
        print(f"load: all accepted jobs ended {drain_s:.1f} s after the burst began: "
              f"{sorted(set(states.values()))}")
        assert set(states.values()) == {"succeeded"}, states
        assert not list((server.storage / "tmp").iterdir())  # no upload left behind
        refused_metric = sum(float(ln.split()[-1]) for ln in metrics.splitlines()
                             if ln.startswith("facetalk_jobs_refused_total"))
        assert refused_metric == len(refused)
