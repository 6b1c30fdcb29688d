"""The node pack inside a real ComfyUI server (skipped unless FACETALK_COMFYUI_DIR names a checkout).

Set FACETALK_COMFYUI_PYTHON to the Python of ComfyUI's environment (it needs torch,
torchvision, torchaudio, ComfyUI's requirements and facetalk). FACETALK_COMFYUI_KEEP, when
set, is a folder the MP4s and a JSON summary are copied to. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from facetalk.comfyui import NODE_CLASS_MAPPINGS
from facetalk.comfyui.cli import comfyui, example_workflows
from facetalk.comfyui.convert import convert
from facetalk.errors import NoFaceFound

COMFY_DIR = os.environ.get("FACETALK_COMFYUI_DIR", "")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not COMFY_DIR, reason="FACETALK_COMFYUI_DIR is not set (a ComfyUI checkout to run against)")]

DATA = Path(__file__).parents[1] / "data" / "comfyui"
ASSETS = Path(__file__).parents[2] / "src" / "facetalk" / "assets"
CLIP_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Comfy:
    def __init__(self, url: str, out: Path, started: float) -> None:
        self.url, self.out, self.started = url, out, started
        self.first_done: float | None = None
        self.summary: dict[str, Any] = {}

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, prompt: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        status, body = self.post("/prompt", {"prompt": prompt})
        assert status == 200, body
        pid = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{pid}")
            if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
                entry = hist[pid]
                if entry["status"].get("status_str") == "success" and self.first_done is None:
                    self.first_done = time.monotonic()
                return entry
            if pid in hist and hist[pid].get("status", {}).get("status_str") == "error":
                return hist[pid]
            time.sleep(0.5)
        raise AssertionError(f"prompt {pid} did not finish in {timeout} s")

    def videos(self, entry: dict[str, Any]) -> list[Path]:
        assert entry["status"]["status_str"] == "success", entry["status"]
        files = []
        for out in entry["outputs"].values():
            for item in out.get("images", []) + out.get("gifs", []):
                if str(item.get("filename", "")).endswith(".mp4"):
                    files.append(self.out / item.get("subfolder", "") / item["filename"])
        assert files, entry["outputs"]
        return files


def _write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ASSETS / "astronaut.png", folder / "astronaut.png")
    with wave.open(str(ASSETS / "speech.wav")) as src, wave.open(str(folder / "speech.wav"), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(int(CLIP_S * src.getframerate())))
    from PIL import Image

    Image.fromarray(np.full((320, 320, 3), 128, np.uint8)).save(folder / "noface.png")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Comfy]:
    root = Path(COMFY_DIR)
    res = CliRunner().invoke(comfyui, ["install", "--comfyui-dir", str(root)])
    assert res.exit_code == 0, res.output
    base = tmp_path_factory.mktemp("comfy")
    _write_inputs(base / "input")
    port = _free_port()
    python = os.environ.get("FACETALK_COMFYUI_PYTHON", sys.executable)
    log = (base / "server.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--input-directory", str(base / "input"), "--output-directory", str(base / "output"),
         "--user-directory", str(base), "--database-url", "sqlite:///:memory:"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT)
    comfy = Comfy(f"http://127.0.0.1:{port}", base / "output", started)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (base / "server.log").read_text()[-3000:]
            try:
                comfy.get("/object_info/FaceTalkGenerate")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.monotonic() < deadline, "ComfyUI did not answer in 300 s"
                time.sleep(1.0)
        comfy.summary["ready_s"] = round(time.monotonic() - started, 1)
        yield comfy
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        keep = os.environ.get("FACETALK_COMFYUI_KEEP")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for mp4 in (base / "output").rglob("*.mp4"):
                shutil.copy(mp4, Path(keep) / mp4.name)
            shutil.copy(base / "server.log", Path(keep) / "server.log")
            (Path(keep) / "summary.json").write_text(json.dumps(comfy.summary, indent=2))


def _probe(path: Path) -> dict[str, Any]:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return {"frames": frames, "width": v.codec_context.width, "height": v.codec_context.height,
                "duration_s": round(float(c.duration) / 1e6, 3), "audio_streams": len(c.streams.audio)}


def _example(name: str) -> dict[str, Any]:
    return json.loads(example_workflows()[name])


def test_object_info_lists_our_nodes(server: Comfy) -> None:
    info = server.get("/object_info")
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        assert node_id in info
        served = info[node_id]
        assert served["output"] == list(cls.RETURN_TYPES)
        assert served["output_name"] == list(cls.RETURN_NAMES)
        ours = cls.INPUT_TYPES()["required"]
        assert list(served["input"]["required"]) == list(ours)
        for name, spec in ours.items():
            if isinstance(spec[0], str) and spec[0] in ("INT", "FLOAT"):
                got = served["input"]["required"][name][1]
                assert (got["min"], got["max"], got["default"]) == (
                    spec[1]["min"], spec[1]["max"], spec[1]["default"]), name


def test_create_video_workflow(server: Comfy) -> None:
    t0 = time.monotonic()
    entry = server.run(_example("facetalk_create_video_api.json"))
    (video,) = server.videos(entry)
    facts = _probe(video)
    server.summary["create_video"] = {"file": video.name, "wall_s": round(time.monotonic() - t0, 1),
                                      "start_to_first_done_s": round(server.first_done - server.started, 1),
                                      **facts}
    assert facts["frames"] == round(CLIP_S * 25) and (facts["width"], facts["height"]) == (512, 512)
    assert abs(facts["duration_s"] - CLIP_S) < 0.1 and facts["audio_streams"] == 1


def test_save_mp4_workflow(server: Comfy) -> None:
    entry = server.run(_example("facetalk_save_mp4_api.json"))
    (video,) = server.videos(entry)
    facts = _probe(video)
    server.summary["save_mp4"] = {"file": video.name, **facts}
    assert video.parent.name == "facetalk" and facts["frames"] == round(CLIP_S * 25)


def test_video_combine_workflow(server: Comfy) -> None:
    if "VHS_VideoCombine" not in server.get("/object_info"):
        pytest.skip("VideoHelperSuite is not installed in this ComfyUI")
    prompt = convert(json.loads((DATA / "sonic_video_combine_api.json").read_text()))
    entry = server.run(prompt)
    videos = [v for v in server.videos(entry) if "audio" in v.name or len(server.videos(entry)) == 1]
    facts = _probe(videos[-1])
    server.summary["video_combine"] = {"file": videos[-1].name, **facts}
    assert facts["frames"] == 50 and (facts["width"], facts["height"]) == (384, 384)


def test_converted_sonic_workflow_runs(server: Comfy) -> None:
    prompt = convert(json.loads((DATA / "sonic_create_video_api.json").read_text()))
    entry = server.run(prompt)
    (video,) = server.videos(entry)
    facts = _probe(video)
    server.summary["converted_sonic"] = {"file": video.name, **facts}
    # Sonic's duration 10 s is carried over: 3 s of speech + a closed-mouth tail, audio padded.
    assert facts["frames"] == 250 and (facts["width"], facts["height"]) == (256, 256)


def test_out_of_range_widget_is_http_400(server: Comfy) -> None:
    prompt = _example("facetalk_create_video_api.json")
    prompt["3"]["inputs"]["dynamic_scale"] = 3.0
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400
    assert "dynamic_scale" in json.dumps(body)
    server.summary["http_400"] = body.get("node_errors", body)


def test_no_face_is_a_node_error(server: Comfy) -> None:
    prompt = _example("facetalk_create_video_api.json")
    prompt["1"]["inputs"]["image"] = "noface.png"
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_type"] == "FaceTalkGenerate"
    assert NoFaceFound.default_hint in errors[0]["exception_message"]
    server.summary["no_face"] = errors[0]["exception_message"]


def test_interrupt_stops_within_a_second(server: Comfy) -> None:
    """ComfyUI's Cancel (POST /interrupt) during the frame loop: the queue is empty within 1 s."""
    ws_client = pytest.importorskip("websockets.sync.client")
    prompt = _example("facetalk_create_video_api.json")
    prompt["3"]["inputs"].update({"min_resolution": 512, "duration": 40.0, "inference_steps": 30})
    client_id = "facetalk-test-interrupt"
    with ws_client.connect(server.url.replace("http", "ws") + f"/ws?clientId={client_id}") as ws:
        status, body = server.post("/prompt", {"prompt": prompt, "client_id": client_id})
        assert status == 200, body
        pid = body["prompt_id"]
        deadline = time.monotonic() + 300
        value = 0
        while value < 300:  # 30 % of the bar: the render is in its frame loop (frames start near 5 %)
            assert time.monotonic() < deadline, "no progress from FaceTalk Generate"
            msg = ws.recv(timeout=60)
            if isinstance(msg, str):
                data = json.loads(msg)
                if data.get("type") == "progress" and data["data"].get("node") == "3":
                    value = data["data"]["value"]
        server.summary["progress_max"] = data["data"]["max"]
        t0, wall0 = time.monotonic(), time.time()
        server.post("/interrupt", {})
        while server.get("/queue")["queue_running"]:
            assert time.monotonic() - t0 < 10
            time.sleep(0.05)
    stopped = time.monotonic() - t0
    entry = server.get(f"/history/{pid}")[pid]
    marks = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_interrupted"]
    assert marks and marks[0]["node_type"] == "FaceTalkGenerate"
    # ComfyUI stamps the interruption (ms) when the node has given up: that is the stop time;
    # the queue-empty time adds ComfyUI's own clean-up and this test's polling.
    node_stop = marks[0]["timestamp"] / 1000 - wall0
    server.summary["interrupt"] = {"node_stopped_s": round(node_stop, 3), "queue_empty_s": round(stopped, 2)}
    assert node_stop < 1.0, f"the node stopped {node_stop:.2f} s after /interrupt"
