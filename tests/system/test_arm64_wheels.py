"""Every runtime dependency installs on Linux aarch64 from binary wheels alone.

The full ARM64 proof (an arm64 Debian root file system under QEMU running the
end-to-end render test) is ``make arm64``: too slow for every test run (tens of
minutes). This check is its fast guard: it asks pip to resolve the package's
dependencies for CPython 3.11 on manylinux aarch64 with ``--only-binary=:all:``
(metadata only, nothing is installed), so a new dependency without aarch64 wheels,
or a pin that excludes them (as ``mediapipe`` did), fails here. It needs PyPI,
which the development machines and CI reach.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")


def test_runtime_dependencies_have_aarch64_wheels(tmp_path: Path) -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.lower().startswith("mediapipe") for d in deps), "mediapipe has no aarch64 wheel"
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--disable-pip-version-check", "--report", str(report), "--only-binary=:all:",
           "--implementation", "cp", "--python-version", "3.11", "--target", str(tmp_path / "t")]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    proc = subprocess.run(cmd + deps, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed = json.loads(report.read_text())["install"]
    names = {i["metadata"]["name"].lower() for i in installed}
    assert {"onnxruntime", "numpy", "opencv-python-headless", "av", "numba"} <= names
    for item in installed:
        wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
        assert wheel.endswith(".whl"), wheel
        assert "aarch64" in wheel or wheel.endswith("-none-any.whl"), wheel
