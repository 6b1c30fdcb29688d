"""The HTTP API in-process (FastAPI TestClient) with real render worker processes.

Every test runs against both queue backends: ``embedded`` (render processes of the
server) and ``celery`` (a real redis-server and real ``facetalk worker`` processes; see
``test_queue_support.celery_client``). Covers the job lifecycle, the job document,
Range downloads decoded with PyAV, SSE, paging, cancel within a second, timeouts, a
killed worker, retention, metrics, audit, API keys, the error shape of a 500, and the
schema/dataclass agreement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facetalk.options import GenerationOptions, field_info
from facetalk.service.api import create_app
from facetalk.service.settings import ServiceSettings
from helpers.queue import celery_client
from helpers.service import TINY, LocalClient, alive, decode_mp4, submit, wait_for, wait_gone

#: Long enough to still be rendering when the test acts (60 s of 512 px video).
LONG = {"duration": "60", "min_resolution": "512", "inference_steps": "25"}


MakeClient = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture(scope="module", params=["embedded", "celery"])
def backend(request: pytest.FixtureRequest) -> str:
    """The queue backend every test of this module runs against."""
    return str(request.param)


@pytest.fixture(scope="module")
def make_client(backend: str) -> MakeClient:
    """``make_client(tmp, **settings)``: an app with one render worker on ``backend``."""

    @contextmanager
    def make(tmp: Path, **settings: Any) -> Iterator[TestClient]:
        if backend == "celery":
            with celery_client(tmp, **settings) as client:
                yield client
            return
        s = ServiceSettings(storage=tmp, workers=1, **settings)
        with LocalClient(create_app(s), raise_server_exceptions=False) as client:
            yield client

    return make


def wait_ready(client: TestClient, timeout: float = 60.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.get("/readyz")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"not ready: {r.json()}")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, make_client: MakeClient) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("api")) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def done_job(api: TestClient, portrait_bytes: bytes, speech_bytes: bytes) -> dict[str, Any]:
    r = submit(api, portrait_bytes, speech_bytes, **TINY, seed="7")
    assert r.status_code == 202, r.text
    return wait_for(api, r.json()["id"])


def test_submit_returns_202_with_id_and_urls(api: TestClient, portrait_bytes: bytes,
                                            speech_bytes: bytes) -> None:
    r = submit(api, portrait_bytes, speech_bytes, **TINY)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running", "succeeded")
    assert r.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert job["links"]["video"].endswith("/video") and job["links"]["events"].endswith("/events")
    wait_for(api, job["id"])


def test_job_document_after_success(done_job: dict[str, Any], portrait_bytes: bytes,
                                    speech_bytes: bytes) -> None:
    job = done_job
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0 and job["attempts"] == 1 and job["error"] is None
    assert job["inputs"]["portrait"]["sha256"] == hashlib.sha256(portrait_bytes).hexdigest()
    assert job["inputs"]["audio"]["sha256"] == hashlib.sha256(speech_bytes).hexdigest()
    assert job["inputs"]["portrait"]["bytes"] == len(portrait_bytes)
    assert job["inputs"]["portrait"]["width"] == 512
    assert 0.5 < job["inputs"]["audio"]["duration_s"] < 3
    assert job["options"] == GenerationOptions(min_resolution=256, inference_steps=5,
                                               seed=7).to_dict()
    assert {"decode", "face", "render"} <= set(job["timings"])
    assert all(v >= 0 for v in job["timings"].values())
    assert isinstance(job["warnings"], list) and job["render_id"]
    assert isinstance(job["sync_offset_ms"], float)
    assert job["result"]["frames"] == job["frames_done"] == job["frames_total"] > 0
    assert job["expires_at"] and job["finished_at"] >= job["started_at"] >= job["created_at"]


def test_video_download_decodes_and_supports_range(api: TestClient, done_job: dict[str, Any]) -> None:
    url = done_job["links"]["video"]
    full = api.get(url)
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    info = decode_mp4(full.content)
    assert info["frames"] == done_job["result"]["frames"]
    assert (info["width"], info["height"]) == (256, 256) and info["audio"]
    assert len(full.content) == done_job["result"]["bytes"]
    part = api.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{len(full.content)}"
    assert part.content == full.content[100:1100]
    tail = api.get(url, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == full.content[-500:]
    bad = api.get(url, headers={"Range": f"bytes={len(full.content) + 10}-"})
    assert bad.status_code == 416


def test_events_stream_progress_then_end(api: TestClient, portrait_bytes: bytes,
                                         speech_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Polled often enough to see a running stage even when the render is quick (warm
    # caches finish 10 s at 384 px in about the default poll's few intervals).
    from facetalk.service.api import jobs as jobs_api
    monkeypatch.setattr(jobs_api, "SSE_POLL_S", 0.02)
    job = submit(api, portrait_bytes, speech_bytes, duration="10", min_resolution="384").json()
    events: list[tuple[str, dict[str, Any]]] = []
    with api.stream("GET", job["links"]["events"]) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                events.append((name, json.loads(line[6:])))
                if name == "end":
                    break
    names = [n for n, _ in events]
    assert names[-1] == "end" and events[-1][1]["status"] == "succeeded"
    progress = [d["progress"] for n, d in events if n == "progress"]
    assert progress and progress == sorted(progress)  # never goes backwards
    assert any(d["status"] == "running" and 0 < d["progress"] < 1 for n, d in events
               if n == "progress"), events


def test_listing_pages_newest_first(api: TestClient, done_job: dict[str, Any]) -> None:
    first = api.get("/v1/jobs", params={"limit": 1}).json()
    assert len(first["jobs"]) == 1 and first["next"]
    second = api.get(first["next"]).json()
    assert second["jobs"][0]["id"] != first["jobs"][0]["id"]
    assert sum(first["counts"].values()) >= 2
    only = api.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()
    assert only["jobs"] and all(j["status"] == "succeeded" for j in only["jobs"])
    assert api.get("/v1/jobs", params={"limit": 0}).status_code == 422
    assert api.get("/v1/jobs", params={"status": "exploded"}).json()["error"] == "invalid_input"


def test_openapi_form_agrees_with_the_dataclass(api: TestClient) -> None:
    """The documented form fields are exactly the GenerationOptions fields, with their
    types, ranges, choices and defaults (plus the files, preset and options)."""
    spec = api.get("/openapi.json").json()
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    props = body["schema"]["properties"]
    fields = {f.name for f in dataclasses.fields(GenerationOptions)}
    assert set(props) == fields | {"portrait", "audio", "preset", "options"}
    assert body["schema"]["required"] == ["portrait", "audio"]
    types = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
    for info in field_info():
        p = props[info["name"]]
        assert p["type"] == types[info["type"]], info["name"]
        assert p.get("default") == info["default"], info["name"]
        assert p.get("minimum") == info["min"] and p.get("maximum") == info["max"], info["name"]
        assert p.get("enum") == (list(info["choices"]) if info["choices"] else None)
        assert p["description"] == info["help"]
    # The response model's options are generated from the same fields.
    out = spec["components"]["schemas"]["GenerationOptions"]["properties"]
    assert set(out) == fields


#: Values that keep the render tiny; every other field gets a generic non-default value.
CHEAP = {"duration": 0.6, "min_resolution": 258, "inference_steps": 3, "fps": 12}


def _non_defaults() -> dict[str, Any]:
    """A valid, non-default value for every option field (new fields included)."""
    values: dict[str, Any] = {}
    for info in field_info():
        name, default, lo, hi = info["name"], info["default"], info["min"], info["max"]
        if name in CHEAP:
            values[name] = CHEAP[name]
        elif info["choices"]:
            values[name] = next(c for c in info["choices"] if c != default)
        elif info["type"] == "bool":
            values[name] = not default
        elif info["type"] == "str":
            values[name] = "AI-generated"
        elif info["type"] == "int":
            values[name] = default + 1 if hi is None or default + 1 <= hi else default - 1
        else:
            base = default if default is not None else (lo or 0.0)
            top = hi if hi is not None else base + 2.0
            values[name] = round((base + top) / 2, 3)
        assert values[name] != default, name
    return values


def test_every_option_is_accepted_as_form_fields_and_as_json(
        api: TestClient, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    values = _non_defaults()
    expected = GenerationOptions(**values).to_dict()
    as_form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}
    r1 = submit(api, portrait_bytes, speech_bytes, **as_form)
    r2 = submit(api, portrait_bytes, speech_bytes, options=json.dumps(values))
    assert r1.status_code == 202, r1.text
    assert r2.status_code == 202, r2.text
    assert r1.json()["options"] == expected == r2.json()["options"]
    done = wait_for(api, r1.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["result"]["fps"] == 12 and done["result"]["frames"] == round(0.6 * 12)
    wait_for(api, r2.json()["id"])


def test_preset_and_json_options_combine(api: TestClient, portrait_bytes: bytes,
                                         speech_bytes: bytes) -> None:
    r = submit(api, portrait_bytes, speech_bytes, preset="fast",
               options=json.dumps({"min_resolution": 256, "duration": 0.4}))
    assert r.status_code == 202, r.text
    assert r.json()["options"]["inference_steps"] == 10  # from the preset
    assert r.json()["options"]["min_resolution"] == 256  # explicit value wins
    clash = submit(api, portrait_bytes, speech_bytes, fps="30", options='{"fps": 25}')
    assert clash.status_code == 422 and "both" in clash.json()["detail"]
    wait_for(api, r.json()["id"])


def test_a_portrait_without_a_face_fails_with_code_message_and_hint(
        api: TestClient, speech_bytes: bytes) -> None:
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 255, (320, 320, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pattern).save(buf, "PNG")
    r = submit(api, buf.getvalue(), speech_bytes, **TINY)
    assert r.status_code == 202, r.text  # it decodes: the face is looked for by the render
    job = wait_for(api, r.json()["id"])
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"]["error"] == "no_face_found"
    assert job["error"]["detail"] and "frontal" in job["error"]["hint"]
    assert api.get(job["links"]["video"]).status_code == 409


def test_cancel_running_job_stops_within_a_second(api: TestClient, portrait_bytes: bytes,
                                                  speech_bytes: bytes) -> None:
    pids = api.app.state.queue.worker_pids()
    job = submit(api, portrait_bytes, speech_bytes, **LONG).json()
    wait_for(api, job["id"], ("running",), pred=lambda j: j["frames_done"] > 0)
    t0 = time.monotonic()
    r = api.delete(f"/v1/jobs/{job['id']}")
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert elapsed < 1.0, f"cancel took {elapsed:.2f} s"
    # The engine stopped on its cancel flag: the same worker lives on, no output was left.
    assert api.app.state.queue.worker_pids() == pids
    job_dir = api.app.state.queue.storage.job_dir(job["id"])
    assert not [p.name for p in job_dir.iterdir() if p.name.endswith((".mp4", ".partial"))]
    assert api.get(job["links"]["video"]).status_code == 409
    # A cancelled job can then be deleted with its files.
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert not job_dir.exists() and api.get(job["links"]["self"]).status_code == 404


def test_cancel_queued_job(api: TestClient, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    blocker = submit(api, portrait_bytes, speech_bytes, **LONG).json()
    waiting = submit(api, portrait_bytes, speech_bytes, **TINY).json()
    assert api.get(waiting["links"]["self"]).json()["status"] == "queued"
    r = api.delete(waiting["links"]["self"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["attempts"] == 0
    api.delete(blocker["links"]["self"])
    assert wait_for(api, blocker["id"])["status"] == "cancelled"


def test_metrics_and_readiness(api: TestClient, done_job: dict[str, Any]) -> None:
    ready = api.get("/readyz").json()
    assert ready["status"] == "ready" and ready["workers_ready"] == 1
    text = api.get("/metrics").text
    counts = api.get("/v1/jobs").json()["counts"]
    assert f'facetalk_jobs{{state="succeeded"}} {float(counts["succeeded"])}' in text
    assert "facetalk_queue_depth " in text and "facetalk_queue_capacity 50.0" in text
    for name in ("facetalk_render_seconds_count", "facetalk_render_frames_per_second_bucket",
                 "facetalk_frames_rendered_total", "facetalk_jobs_submitted_total"):
        assert name in text
    line = next(ln for ln in text.splitlines() if ln.startswith("facetalk_render_seconds_count"))
    assert float(line.split()[1]) >= 1


def test_audit_log_has_one_line_per_state_change(api: TestClient, done_job: dict[str, Any]) -> None:
    path = api.app.state.settings.storage / "audit.log"
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    mine = [ln for ln in lines if ln["job"] == done_job["id"]]
    assert [(ln["from"], ln["to"]) for ln in mine] == [
        (None, "queued"), ("queued", "running"), ("running", "succeeded")]
    last = mine[-1]
    assert last["inputs"] == {k: done_job["inputs"][k]["sha256"] for k in ("portrait", "audio")}
    assert last["options"] == done_job["options"] and last["client"]
    assert last["timings"] == done_job["timings"]
    assert "face.png" not in path.read_text() and "speech.wav" not in path.read_text()


def test_filenames_are_never_paths(api: TestClient, portrait_bytes: bytes, speech_bytes: bytes,
                                   tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    evil = f"../../../../../../..{target}"
    r = api.post("/v1/jobs", files={"portrait": (evil, portrait_bytes, "image/png"),
                                    "audio": ("/etc/passwd", speech_bytes, "audio/wav")},
                 data=TINY)
    assert r.status_code == 202, r.text
    job = wait_for(api, r.json()["id"])
    assert job["status"] == "succeeded"
    assert not target.exists()
    names = sorted(p.name for p in api.app.state.queue.storage.job_dir(job["id"]).iterdir())
    assert names == ["audio", "output.mp4", "portrait"]
    mode = os.stat(api.app.state.queue.storage.input_path(job["id"], "portrait")).st_mode
    assert mode & 0o777 == 0o600  # private and not executable


def test_internal_error_has_an_id_that_matches_a_log_line(
        api: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("database on fire /secret/path")

    monkeypatch.setattr(api.app.state.queue, "page", broken)
    with caplog.at_level(logging.ERROR, logger="facetalk.service"):
        r = api.get("/v1/jobs")
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error" and body["error_id"] in body["detail"]
    assert "Traceback" not in r.text and "secret" not in r.text
    logged = [rec for rec in caplog.records if getattr(rec, "fields", {}).get("error_id")
              == body["error_id"]]
    assert logged and logged[0].exc_info is not None


def test_unknown_route_and_method_are_json(api: TestClient) -> None:
    r = api.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = api.put("/v1/jobs")
    assert r.status_code == 405 and set(r.json()) == {"error", "detail", "hint"}
    assert api.get("/v1/jobs/../../etc/passwd").status_code == 404
    assert api.get("/v1/jobs/0123456789abcdef0123456789abcdef").json()["error"] == "not_found"


# -- settings that need their own app ------------------------------------------------------
def test_job_timeout_kills_the_render_and_the_box_recovers(
        tmp_path: Path, make_client: MakeClient, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    # The limit covers every job, the next one too: its fresh render process loads the
    # face models and kernels first (over 3 s on a busy 2-core box, where a 3 s limit
    # failed it), so the limit is 8 s and the stuck job is far longer (about 40 s).
    with make_client(tmp_path, job_timeout=8.0) as api:
        wait_ready(api)
        before = api.app.state.queue.worker_pids()
        stuck = submit(api, portrait_bytes, speech_bytes, **{**LONG, "duration": "300"}).json()
        after = submit(api, portrait_bytes, speech_bytes, **TINY).json()
        job = wait_for(api, stuck["id"], timeout=30)
        assert job["status"] == "failed" and job["error"]["error"] == "job_timeout"
        assert "8 s" in job["error"]["detail"] and job["error"]["hint"]
        assert wait_gone(before, 5.0) == []  # the stuck process was killed
        assert wait_for(api, after["id"], timeout=60)["status"] == "succeeded"
        # A fresh worker took over. Celery workers report their pool in a heartbeat every
        # 2 s, so the API may learn of the new process a little after the next job ended.
        end = time.monotonic() + 10.0
        while api.app.state.queue.worker_pids() in (before, []) and time.monotonic() < end:
            time.sleep(0.1)
        now = api.app.state.queue.worker_pids()
        assert now and not set(now) & set(before)


def test_killed_worker_requeues_the_job_which_then_succeeds(
        tmp_path: Path, make_client: MakeClient, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    with make_client(tmp_path) as api:
        wait_ready(api)
        job = submit(api, portrait_bytes, speech_bytes, **TINY, duration="20").json()
        wait_for(api, job["id"], ("running",), pred=lambda j: j["frames_done"] > 0)
        [pid] = api.app.state.queue.worker_pids()
        os.kill(pid, signal.SIGKILL)
        done = wait_for(api, job["id"], timeout=90)
        assert done["status"] == "succeeded" and done["attempts"] == 2
        assert not alive(pid)
        assert decode_mp4(api.get(done["links"]["video"]).content)["frames"] == 500


def test_attempt_limit_fails_the_job(tmp_path: Path, make_client: MakeClient, portrait_bytes: bytes,
                                     speech_bytes: bytes) -> None:
    with make_client(tmp_path, max_attempts=1) as api:
        wait_ready(api)
        job = submit(api, portrait_bytes, speech_bytes, **LONG).json()
        wait_for(api, job["id"], ("running",), pred=lambda j: j["frames_done"] > 0)
        os.kill(api.app.state.queue.worker_pids()[0], signal.SIGKILL)
        done = wait_for(api, job["id"], timeout=30)
        assert done["status"] == "failed" and done["error"]["error"] == "worker_crashed"


def test_retention_zero_deletes_inputs_when_the_job_ends(
        tmp_path: Path, make_client: MakeClient, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    with make_client(tmp_path, retention=0) as api:
        wait_ready(api)
        job = wait_for(api, submit(api, portrait_bytes, speech_bytes, **TINY).json()["id"])
        assert job["status"] == "succeeded" and job["inputs_deleted"]
        storage = api.app.state.queue.storage
        assert sorted(p.name for p in storage.job_dir(job["id"]).iterdir()) == ["output.mp4"]
        assert api.get(job["links"]["video"]).status_code == 200  # the video stays a while


def test_retention_deletes_outputs_and_video_is_gone(
        tmp_path: Path, make_client: MakeClient, portrait_bytes: bytes, speech_bytes: bytes) -> None:
    with make_client(tmp_path, retention=1.0) as api:
        wait_ready(api)
        job = wait_for(api, submit(api, portrait_bytes, speech_bytes, **TINY).json()["id"])
        assert job["status"] == "succeeded"
        job = wait_for(api, job["id"], timeout=10, pred=lambda j: j["output_deleted"])
        assert not api.app.state.queue.storage.job_dir(job["id"]).exists()
        r = api.get(job["links"]["video"])
        assert r.status_code == 410 and r.json()["error"] == "expired"


def test_api_keys_guard_every_route_but_healthz(tmp_path: Path, make_client: MakeClient) -> None:
    key, other = "k3y-" + "a" * 20, "k3y-" + "b" * 20
    with make_client(tmp_path, api_keys=(key, other)) as api:
        assert api.get("/healthz").status_code == 200
        for path in ("/v1/jobs", "/v1/workers", "/metrics", "/docs", "/openapi.json",
                     "/v1/jobs/0123456789abcdef0123456789abcdef"):
            r = api.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"]
            assert api.get(path, headers={"Authorization": "Bearer wrong-key-123"}).status_code == 401
        # /readyz answers a probe without a key, but only its status: no pids, no host names.
        assert wait_ready(api)
        bare = api.get("/readyz")
        assert bare.status_code == 200 and bare.json() == {"status": "ready"}, bare.text
        assert api.get("/readyz", headers={"X-API-Key": "wrong-key-123"}).json() == {"status": "ready"}
        full = api.get("/readyz", headers={"X-API-Key": key}).json()
        assert full["status"] == "ready" and "worker_pids" in full and "disk_free_bytes" in full
        assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert api.get("/v1/jobs", headers={"X-API-Key": other}).status_code == 200
        assert api.post("/v1/jobs", files={"portrait": ("a", b"x")}).status_code == 401
