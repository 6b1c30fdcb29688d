"""One declaration per service setting: the flags, --help, the environment and the README table.

``facetalk.service.settings.SETTINGS`` is the only place a setting's flag, variable,
default and help are written; these tests fail when the README, ``--help`` or a command's
own reads drift from it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from facetalk.cli.serve import serve, worker
from facetalk.errors import InvalidInput
from facetalk.service.settings import SETTINGS, ServiceSettings, WorkerSettings, markdown_table, settings_for
from facetalk.settings import Limits

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_readme_table_is_the_declared_one(command: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table(command) in readme, f"regenerate the README table with markdown_table({command!r})"


@pytest.mark.parametrize("command", [serve, worker], ids=["serve", "worker"])
def test_help_lists_every_declared_flag_and_variable(command: object) -> None:
    out = CliRunner().invoke(command, ["--help"], terminal_width=400).output  # type: ignore[arg-type]
    assert out.startswith("Usage"), out
    for s in settings_for(command.name):  # type: ignore[attr-defined]
        assert s.flag in out
        if s.env:
            assert f"[env: {s.env}" in out, s.env
    flags = set(re.findall(r"^\s+(--[a-z-]+)", out, re.MULTILINE)) - {"--help", "--device"}
    assert flags == {s.flag for s in settings_for(command.name)}  # type: ignore[attr-defined]


def test_service_and_worker_read_only_declared_variables() -> None:
    """Every FACETALK_* name the service code mentions is declared (or the engine's)."""
    declared = {s.env for s in SETTINGS if s.env}
    # The engine's own: its input Limits (README "Limits"; "FACETALK_MAX_*" in prose) and the device.
    engine = {f"FACETALK_{f.name.upper()}" for f in dataclasses.fields(Limits)}
    engine |= {"FACETALK_DEVICE", "FACETALK_MAX"}
    files = [*(ROOT / "src/facetalk/service").rglob("*.py"), ROOT / "src/facetalk/cli/serve.py"]
    used = {m for f in files for m in re.findall(r"FACETALK_[A-Z_]*[A-Z]", f.read_text())}
    assert used - declared - engine == set()
    assert {"FACETALK_LEASE", "FACETALK_WORKER_NAME", "FACETALK_WORKERS"} <= declared


def test_worker_settings_come_from_the_table(tmp_path: Path) -> None:
    env = {"FACETALK_QUEUE": "redis://127.0.0.1:6379/0", "FACETALK_STORAGE": str(tmp_path),
           "FACETALK_WORKERS": "3", "FACETALK_WORKER_NAME": "w-env", "FACETALK_LEASE": "45s",
           "FACETALK_VISIBILITY_TIMEOUT": "2h"}
    ws = WorkerSettings.load({}, env)
    assert (ws.queue, ws.storage, ws.concurrency, ws.name, ws.lease_s, ws.visibility_timeout) == (
        "redis://127.0.0.1:6379/0", tmp_path, 3, "w-env", 45.0, 7200.0)
    flagged = WorkerSettings.load({"concurrency": 2, "name": "w-flag", "lease": "10"}, env)
    assert (flagged.concurrency, flagged.name, flagged.lease_s) == (2, "w-flag", 10.0)  # flag wins
    with pytest.raises(InvalidInput, match="queue URL"):
        WorkerSettings.load({}, {})
    with pytest.raises(InvalidInput, match="lease"):
        WorkerSettings.load({"lease": "1"}, env)


def test_serve_settings_read_the_table_variables(tmp_path: Path) -> None:
    env = {"FACETALK_PORT": "8123", "FACETALK_API_KEYS": "key-one-1, key-two-2",
           "FACETALK_RETENTION": "30m", "FACETALK_STORAGE": str(tmp_path)}
    s = ServiceSettings.load({"port": 9000}, env)
    assert (s.port, s.api_keys, s.retention, s.storage) == (
        9000, ("key-one-1", "key-two-2"), 1800.0, tmp_path)
    with pytest.raises(InvalidInput, match="port"):
        ServiceSettings.load({}, {"FACETALK_PORT": "http"})
