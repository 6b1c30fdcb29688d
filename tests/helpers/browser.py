"""Helpers for browser tests: Chromium via Playwright, a server for the README's screenshots."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from helpers.service import Server, wait_gone

CHROMIUM = "/usr/bin/chromium"
#: This machine's closed network refuses Chromium's background connections: turn them off.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1100, "height": 900}
PHONE = {"width": 390, "height": 844}


class ReadmeServer(Server):
    """``facetalk serve`` started as the README says: the venv's ``facetalk`` command."""

    def start(self, timeout: float = 90.0) -> Server:
        exe = Path(sys.executable).with_name("facetalk")
        assert exe.is_file(), f"{exe} missing: pip install -e '.[server]'"
        cmd = [str(exe), "serve", "--port", str(self.port), "--storage", str(self.storage),
               *self.args]
        env = dict(self.env)
        if self.api_key:
            env["FACETALK_API_KEYS"] = self.api_key  # as the README recommends (not argv)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/readyz", headers=self.headers, timeout=2.0).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Start, yield, stop: a clean exit, and no process of the server left."""
    server.start()
    try:
        yield server
    finally:
        tree = server.tree()
        code = server.stop()
        assert wait_gone(tree, 10.0) == [], "server processes left behind"
        # Uvicorn re-raises SIGTERM after a graceful shutdown: -15 is its clean exit.
        assert code in (0, -signal.SIGTERM), server.log()


@contextlib.contextmanager
def browser(pw: Any, tmp: Path, viewport: dict[str, int] = DESKTOP,
            extra_args: tuple[str, ...] = (), locale: str = "en-US") -> Iterator[Any]:
    """A fresh Chromium profile; yields a page whose JavaScript errors fail the test."""
    profile = tmp / f"profile-{time.monotonic_ns()}"
    ctx = pw.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True,
        args=[*CHROMIUM_ARGS, *extra_args], viewport=viewport, locale=locale,
        accept_downloads=True)
    errors: list[str] = []
    try:
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.set_default_timeout(30_000)
        yield page
    finally:
        ctx.close()
        shutil.rmtree(profile, ignore_errors=True)
    # Chromium logs every 4xx answer (a 401 before the key, a 422 for a faceless photo);
    # the tests check what the page shows for them. Anything else is a bug in the page.
    real = [e for e in errors if not e.startswith("Failed to load resource")]
    assert not real, f"errors in the page: {real}"


def choose(page: Any, selector: str, path: Path) -> None:
    """Pick a file by clicking the input, as a person would (a user gesture for audio)."""
    with page.expect_file_chooser() as chooser:
        page.click(selector)
    chooser.value.set_files(str(path))
