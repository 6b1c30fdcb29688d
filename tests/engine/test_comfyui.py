"""The ComfyUI node pack: schema against Sonic's, the node functions on a real render, the converter."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from facetalk.comfyui import (
    NODE_CLASS_MAPPINGS,
    NODE_DISPLAY_NAME_MAPPINGS,
    FaceTalkGenerate,
    FaceTalkSaveMP4,
)
from facetalk.comfyui.cli import comfyui, example_workflows
from facetalk.comfyui.convert import SONIC_CLASSES, convert, detect_format
from facetalk.comfyui.nodes import FaceTalkNodeError, build_options, frame_bytes, widget_inputs
from facetalk.errors import InvalidInput, NoFaceFound
from facetalk.options import field_info

DATA = Path(__file__).parents[1] / "data" / "comfyui"
ASSETS = Path(__file__).parents[2] / "src" / "facetalk" / "assets"
SONIC = json.loads((DATA / "sonic_nodes.json").read_text())["nodes"]
#: Defaults that differ from Sonic's on purpose (README "Use in ComfyUI" says why).
CHANGED_DEFAULTS = {"duration": 0.0, "expand_ratio": 0.2}


def _spec(node: type, name: str) -> tuple[str, dict]:
    kind, opts = node.INPUT_TYPES()["required"][name]
    return kind, opts


# -- schema ------------------------------------------------------------------------

@pytest.mark.parametrize("node", [FaceTalkGenerate, FaceTalkSaveMP4])
@pytest.mark.parametrize("sonic_node", ["SONIC_PreData", "SONICSampler"])
def test_widgets_accept_every_sonic_value(node: type, sonic_node: str) -> None:
    """Every widget of Sonic's pre-data and sampler nodes exists, same type, range at least Sonic's."""
    for name, sonic in SONIC[sonic_node]["inputs"].items():
        if sonic["type"] not in ("INT", "FLOAT"):
            continue
        kind, opts = _spec(node, name)
        assert kind == sonic["type"], name
        if sonic["min"] is not None:
            assert opts["min"] <= sonic["min"], name
        if sonic["max"] is not None:
            assert opts["max"] >= sonic["max"], name
        if sonic["step"] is not None:
            assert opts["step"] == sonic["step"], name
        if sonic["default"] is not None:
            assert opts["default"] == CHANGED_DEFAULTS.get(name, sonic["default"]), name
    for link in ("image", "audio"):
        assert _spec(node, link)[0] == SONIC["SONIC_PreData"]["inputs"][link]["type"]


def test_outputs_in_sonic_order() -> None:
    sonic_out = SONIC["SONICSampler"]["outputs"]
    assert FaceTalkGenerate.RETURN_TYPES[:2] == tuple(o["type"] for o in sonic_out)
    assert FaceTalkGenerate.RETURN_NAMES[:2] == tuple(o["name"] for o in sonic_out)
    assert FaceTalkGenerate.RETURN_TYPES[2] == "AUDIO"
    assert not set(NODE_CLASS_MAPPINGS) & set(SONIC)
    assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS)
    for cls in NODE_CLASS_MAPPINGS.values():
        assert callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)


def test_facetalk_widgets_follow_generation_options() -> None:
    """facetalk's own widgets carry GenerationOptions' ranges, and the defaults build valid options."""
    fields = {f["name"]: f for f in field_info()}
    widgets = widget_inputs()
    for name in ("motion_scale", "inference_steps", "dynamic_scale", "fps"):
        assert widgets[name][1]["min"] == fields[name]["min"]
        assert widgets[name][1]["max"] == fields[name]["max"]
    assert widgets["framing"][0] == list(fields["framing"]["choices"])
    options = build_options({k: v[1]["default"] for k, v in widgets.items()})
    assert options.duration is None and options.label is None and options.fps == 25


def test_sonic_ranges_clamped_or_refused() -> None:
    opts = build_options({"min_resolution": 128, "seed": 2**40 + 5, "duration": 0.0, "fps": 30.0})
    assert opts.min_resolution == 256  # raised to facetalk's minimum
    assert opts.seed == (2**40 + 5) % 2**31  # folded
    assert opts.duration is None and opts.fps == 30
    with pytest.raises(InvalidInput, match="fps must be a whole number"):
        build_options({"fps": 12.5})
    with pytest.raises(InvalidInput, match="dynamic_scale"):
        build_options({"dynamic_scale": 3.0})
    assert build_options({"preset": "fast", "inference_steps": 30}).inference_steps == 10


def test_memory_figures() -> None:
    """The README's per-minute figures (25 fps, float32 RGB)."""
    assert round(frame_bytes(512, 512, 1500) / 2**30, 1) == 4.4
    assert round(frame_bytes(1024, 1024, 1500) / 2**30, 1) == 17.6


def test_import_pulls_in_neither_comfyui_nor_torch() -> None:
    code = ("import sys, facetalk.comfyui, facetalk.comfyui.convert, facetalk.comfyui.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'comfy', 'folder_paths')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- node functions on a real render -----------------------------------------------

try:
    import torch
except ImportError:  # the schema and converter tests above and below still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _portrait() -> torch.Tensor:
    from PIL import Image

    arr = np.asarray(Image.open(ASSETS / "astronaut.png").convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None]


def _audio(seconds: float, channels: int = 1) -> dict:
    with wave.open(str(ASSETS / "speech.wav")) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(int(seconds * rate)), dtype="<i2").astype(np.float32) / 32768.0
    wav = torch.from_numpy(np.repeat(pcm[None], channels, axis=0))[None]  # [1, C, T]
    return {"waveform": wav, "sample_rate": rate}


def _widgets(**over: object) -> dict:
    values = {k: v[1]["default"] for k, v in widget_inputs().items()}
    values.update({"min_resolution": 256, "inference_steps": 10})
    values.update(over)
    return values


@pytest.mark.slow
@needs_torch
def test_generate_frames_and_audio() -> None:
    audio = _audio(1.5, channels=2)
    frames, fps, out_audio = FaceTalkGenerate().generate(_portrait(), audio, **_widgets())
    assert fps == 25.0
    assert frames.dtype == torch.float32 and tuple(frames.shape) == (round(1.5 * 25), 256, 256, 3)
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert float(frames.std()) > 0.05  # a picture, not a blank
    # The mouth moves: frames differ over time around the lower face.
    lower = frames[:, 150:220, 90:170]
    assert float((lower - lower.mean(0)).abs().mean()) > 0.002
    rate = audio["sample_rate"]
    assert out_audio["sample_rate"] == rate
    assert tuple(out_audio["waveform"].shape) == (1, 2, round(frames.shape[0] / fps * rate))
    have = audio["waveform"].shape[-1]  # 38 frames = 1.52 s: the last 0.02 s is padding
    assert torch.equal(out_audio["waveform"][..., :have], audio["waveform"])
    assert float(out_audio["waveform"][..., have:].abs().max()) == 0.0


@pytest.mark.slow
@needs_torch
def test_generate_pads_audio_to_a_longer_duration() -> None:
    audio = _audio(1.0)
    widgets = _widgets(duration=1.6, fps=20.0)
    frames, fps, out_audio = FaceTalkGenerate().generate(_portrait(), audio, **widgets)
    assert fps == 20.0 and frames.shape[0] == 32
    wav, rate = out_audio["waveform"], out_audio["sample_rate"]
    assert wav.shape[-1] == round(1.6 * rate)
    assert float(wav[..., rate * 1 + 10:].abs().max()) == 0.0  # the padding is silence


@needs_torch
def test_generate_refuses_a_tensor_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACETALK_COMFYUI_MAX_FRAMES_GB", "0.05")
    t0 = time.monotonic()
    with pytest.raises(FaceTalkNodeError, match="FaceTalk Save MP4") as info:
        FaceTalkGenerate().generate(_portrait(), _audio(1.0), **_widgets(duration=60.0))
    assert time.monotonic() - t0 < 2.0  # refused before any rendering
    assert info.value.code == "limit_exceeded" and "GiB" in info.value.message


@needs_torch
def test_no_face_is_a_node_error_with_facetalks_hint() -> None:
    flat = torch.full((1, 320, 320, 3), 0.5)
    with pytest.raises(FaceTalkNodeError) as info:
        FaceTalkGenerate().generate(flat, _audio(1.0), **_widgets())
    assert info.value.code == NoFaceFound.code
    assert NoFaceFound.default_hint in str(info.value)


@needs_torch
def test_bad_audio_is_a_node_error() -> None:
    with pytest.raises(FaceTalkNodeError, match="waveform"):
        FaceTalkGenerate().generate(_portrait(), {"waveform": torch.zeros(1, 0), "sample_rate": 16000},
                                    **_widgets())


class _FakeInterrupt(Exception):
    pass


@pytest.mark.realtime
@needs_torch
def test_comfy_progress_and_cancel_within_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ComfyUI's hooks present: the bar moves, and an interrupt stops the render within 1 s."""
    state = {"interrupt": False, "updates": [], "set_at": None}

    class ProgressBar:
        def __init__(self, total: int, node_id: object = None) -> None:
            self.total = total

        def update_absolute(self, value: int, total: int | None = None, preview: object = None) -> None:
            state["updates"].append(value)

    def throw() -> None:
        if state["interrupt"]:
            state["interrupt"] = False
            raise _FakeInterrupt()

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    mm = types.ModuleType("comfy.model_management")
    utils.ProgressBar = ProgressBar
    mm.processing_interrupted = lambda: state["interrupt"]
    mm.throw_exception_if_processing_interrupted = throw
    comfy.utils, comfy.model_management = utils, mm
    for name, mod in (("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", mm)):
        monkeypatch.setitem(sys.modules, name, mod)

    def press_cancel() -> None:
        while not any(u > 200 for u in state["updates"]):  # well into the frame loop
            time.sleep(0.01)
        state["set_at"] = time.monotonic()
        state["interrupt"] = True

    presser = threading.Thread(target=press_cancel, daemon=True)
    presser.start()
    with pytest.raises(_FakeInterrupt):
        FaceTalkGenerate().generate(_portrait(), _audio(8.0), **_widgets(min_resolution=512))
    stopped = time.monotonic() - state["set_at"]
    assert stopped < 1.0, f"stopped {stopped:.2f} s after the interrupt"
    assert state["updates"] == sorted(state["updates"])


@pytest.mark.slow
@needs_torch
def test_save_mp4_writes_facetalks_file(tmp_path: Path) -> None:
    import av

    out = FaceTalkSaveMP4().save(_portrait(), _audio(1.2), filename_prefix="talks/clip", output_dir=tmp_path,
                                 **_widgets())
    path = Path(out["result"][0])
    assert path == tmp_path / "talks" / "clip_00001.mp4" and path.stat().st_size > 1000
    assert out["ui"]["images"] == [{"filename": "clip_00001.mp4", "subfolder": "talks", "type": "output"}]
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 30 and len(c.streams.audio) == 1
        assert "ai" in json.dumps(dict(c.metadata)).lower()
    with pytest.raises(FaceTalkNodeError, match="leaves the output folder"):
        FaceTalkSaveMP4().save(_portrait(), _audio(1.0), filename_prefix="../x", output_dir=tmp_path,
                               **_widgets())


# -- converter ---------------------------------------------------------------------

def _ui_consistent(wf: dict) -> None:
    nodes = {n["id"]: n for n in wf["nodes"]}
    for lid, src, sslot, dst, dslot, _type in wf["links"]:
        assert lid in (nodes[src]["outputs"][sslot]["links"] or [])
        assert nodes[dst]["inputs"][dslot]["link"] == lid
    ids = {lk[0] for lk in wf["links"]}
    for n in nodes.values():
        for inp in n.get("inputs", []):
            assert inp["link"] is None or inp["link"] in ids
    assert wf["last_link_id"] >= max(ids) and wf["last_node_id"] >= max(nodes)


def test_convert_ui_sonic_workflow() -> None:
    src = json.loads((DATA / "sonic_create_video_ui.json").read_text())
    out = convert(src)
    assert src == json.loads((DATA / "sonic_create_video_ui.json").read_text())  # input untouched
    _ui_consistent(out)
    types_ = {n["id"]: n["type"] for n in out["nodes"]}
    assert types_ == {1: "LoadImage", 2: "LoadAudio", 6: "FaceTalkGenerate", 7: "CreateVideo", 8: "SaveVideo"}
    ft = next(n for n in out["nodes"] if n["type"] == "FaceTalkGenerate")
    names = list(widget_inputs())
    values = dict(zip([*names[:4], "control", *names[4:]], ft["widgets_values"], strict=True))
    assert (values["min_resolution"], values["duration"], values["expand_ratio"]) == (512, 1.5, 0.2)
    assert (values["seed"], values["control"], values["inference_steps"], values["dynamic_scale"],
            values["fps"]) == (42, "fixed", 25, 1.2, 25.0)
    links = {(lk[1], lk[2], lk[3], lk[4]) for lk in out["links"]}
    assert {(1, 0, 6, 0), (2, 0, 6, 1)} <= links  # loaders -> FaceTalk Generate
    assert {(6, 0, 7, 0), (6, 1, 7, 2), (6, 2, 7, 1)} <= links  # frames, fps, fitted audio -> Create Video


@pytest.mark.parametrize("name,video", [("sonic_video_combine_api.json", "VHS_VideoCombine"),
                                        ("sonic_create_video_api.json", "CreateVideo")])
def test_convert_api_sonic_workflow(name: str, video: str) -> None:
    src = json.loads((DATA / name).read_text())
    out = convert(src)
    assert detect_format(out) == "api"
    assert not {n["class_type"] for n in out.values()} & SONIC_CLASSES
    assert not {"ImageOnlyCheckpointLoader", "CLIPVisionLoader", "VAELoader"} & {
        n["class_type"] for n in out.values()}
    ft = out["8"]
    assert ft["class_type"] == "FaceTalkGenerate"
    assert ft["inputs"]["image"] == ["1", 0] and ft["inputs"]["audio"] == ["2", 0]
    for k in ("min_resolution", "duration", "expand_ratio"):
        assert ft["inputs"][k] == src["7"]["inputs"][k]
    for k in ("seed", "inference_steps", "dynamic_scale", "fps"):
        assert ft["inputs"][k] == src["8"]["inputs"][k]
    assert set(ft["inputs"]) == {"image", "audio", *widget_inputs()}
    combine = out["9"]["inputs"]
    assert combine["images"] == ["8", 0] and combine["audio"] == ["8", 2]
    assert combine.get("frame_rate", combine.get("fps")) == ["8", 1]


def test_convert_refuses_non_sonic_input() -> None:
    with pytest.raises(InvalidInput, match="no SONICSampler"):
        convert({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}})
    with pytest.raises(InvalidInput, match="not a ComfyUI workflow"):
        convert({"hello": 1})


def test_cli_convert_and_install(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "converted.json"
    res = runner.invoke(comfyui, ["convert", str(DATA / "sonic_create_video_ui.json"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    _ui_consistent(json.loads(out.read_text()))
    res = runner.invoke(comfyui, ["install", "--comfyui-dir", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "does not look like ComfyUI" in res.output
    (tmp_path / "ComfyUI").mkdir()
    (tmp_path / "ComfyUI" / "main.py").write_text("")
    res = runner.invoke(comfyui, ["install", "--comfyui-dir", str(tmp_path / "ComfyUI")])
    assert res.exit_code == 0, res.output
    pack = tmp_path / "ComfyUI" / "custom_nodes" / "facetalk"
    init = str(pack / "__init__.py")
    code = (f"import importlib.util as u; s = u.spec_from_file_location('pack', {init!r}); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); print(sorted(m.NODE_CLASS_MAPPINGS))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['FaceTalkGenerate', 'FaceTalkSaveMP4']"
    assert sorted(p.name for p in (pack / "example_workflows").iterdir()) == sorted(example_workflows())


def test_shipped_examples_use_only_our_nodes_and_core_ones() -> None:
    known = {"LoadImage", "LoadAudio", "CreateVideo", "SaveVideo", *NODE_CLASS_MAPPINGS}
    examples = example_workflows()
    assert {"facetalk_create_video_ui.json", "facetalk_create_video_api.json"} <= set(examples)
    for name, text in examples.items():
        wf = json.loads(text)
        if detect_format(wf) == "ui":
            _ui_consistent(wf)
            assert {n["type"] for n in wf["nodes"]} <= known, name
        else:
            assert {n["class_type"] for n in wf.values()} <= known, name
            for n in wf.values():
                if n["class_type"] in NODE_CLASS_MAPPINGS:
                    required = NODE_CLASS_MAPPINGS[n["class_type"]].INPUT_TYPES()["required"]
                    assert set(n["inputs"]) == set(required), name
