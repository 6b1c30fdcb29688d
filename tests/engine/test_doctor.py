"""Device choice (ONNX Runtime providers) and ``facetalk doctor``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from facetalk import devices
from facetalk.cli import main
from facetalk.devices import DeviceUnavailable, resolve
from facetalk.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
ACCELERATORS = ("cuda", "tensorrt", "openvino", "cann")


def test_cpu_and_auto_resolve_to_providers_that_exist() -> None:
    have = set(devices.available_providers())
    assert resolve("cpu") == ("CPUExecutionProvider",)
    assert resolve("auto")[0] in have
    assert resolve(None)[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize("name", ACCELERATORS)
def test_missing_accelerator_names_its_package(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceUnavailable) as err:
        resolve(name)
    assert devices.PACKAGES[name].split()[0] in err.value.hint
    assert devices.PROVIDERS[name][0] in err.value.message


@pytest.mark.parametrize("name", ACCELERATORS)
def test_present_accelerator_is_used_first(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "available_providers",
                        lambda: [devices.PROVIDERS[name][0], "CPUExecutionProvider"])
    assert resolve(name) == devices.PROVIDERS[name]
    if name != "tensorrt":  # auto never picks TensorRT (minutes of engine building)
        assert resolve("auto") == devices.PROVIDERS[name]


def test_unknown_device_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput):
        resolve("tpu")
    monkeypatch.setenv(devices.ENV, "cpu")
    assert devices.normalize(None) == "cpu"
    monkeypatch.setenv(devices.ENV, "nonsense")
    with pytest.raises(InvalidInput):
        resolve(None)


def test_generate_refuses_an_unavailable_device_before_any_work(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    from facetalk import generate

    monkeypatch.setattr(devices, "available_providers", lambda: ["CPUExecutionProvider"])
    out = tmp_path / "x.mp4"
    with pytest.raises(DeviceUnavailable):
        generate(b"not even an image", b"nor audio", output=out, device="cuda")
    assert not out.exists()


def test_render_flag_reports_missing_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(devices, "available_providers", lambda: ["CPUExecutionProvider"])
    res = CliRunner().invoke(main, ["render", str(ROOT / "tests/data/grace_hopper.jpg"),
                                    str(ROOT / "src/facetalk/assets/speech.wav"), "-o",
                                    str(tmp_path / "o.mp4"), "--device", "openvino"])
    assert res.exit_code == 2
    assert "onnxruntime-openvino" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.mp4").exists()


def test_render_and_demo_have_a_device_flag() -> None:
    for cmd in ("render", "demo"):
        out = CliRunner().invoke(main, [cmd, "--help"], terminal_width=200).output
        assert "--device" in out and "openvino" in out and "FACETALK_DEVICE" in out


@pytest.mark.parametrize("cmd", ["serve", "worker"])
def test_service_commands_refuse_a_missing_provider_at_start(cmd: str, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setattr(devices, "available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setenv(devices.ENV, "auto")  # so the teardown restores the environment
    monkeypatch.delenv(devices.ENV)
    res = CliRunner().invoke(main, [cmd, "--device", "cuda", "--storage", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    assert "onnxruntime-gpu" in res.output and "Traceback" not in res.output


def test_serve_hands_the_device_to_its_render_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    from facetalk.cli import serve as service_cli

    monkeypatch.setenv(devices.ENV, "auto")  # so the teardown restores the environment
    monkeypatch.delenv(devices.ENV)
    service_cli._use_device("cpu")  # the render processes inherit the environment
    assert os.environ[devices.ENV] == "cpu"


def test_doctor_reports_this_box() -> None:
    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    for word in ("cpu features", "providers", "CPUExecutionProvider", "libx264 (encode) yes",
                 "face_landmark_with_attention.onnx", "status       ready", "numpy"):
        assert word in res.output, word


def test_doctor_json_and_failure_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    res = CliRunner().invoke(main, ["doctor", "--json"])
    rep = json.loads(res.output)
    assert res.exit_code == 0 and rep["problems"] == []
    assert rep["cpu"]["cores"] >= 1 and rep["versions"]["numpy"]
    assert set(rep["onnxruntime"]["devices"]) == set(devices.DEVICES)
    assert len(rep["models"]) == 3
    monkeypatch.setattr(devices, "available_providers", lambda: ["CPUExecutionProvider"])
    bad = CliRunner().invoke(main, ["doctor", "--device", "cann"])
    assert bad.exit_code == 1 and "onnxruntime-cann" in bad.output and "NOT READY" in bad.output


def test_cpu_info_reads_arm_servers() -> None:
    from facetalk.cli.doctor import cpu_info

    text = ("processor\t: 0\nBogoMIPS\t: 200.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 "
            "crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma dcpop asimddp asimdfhm\n"
            "CPU implementer\t: 0x48\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd01\n")
    info = cpu_info(text)
    assert info["model"] == "HiSilicon Kunpeng 920"
    assert {"asimd", "asimddp", "asimdhp"} <= set(info["features"])
