"""The service's processes: import hygiene in fresh interpreters, the validator pool.

(Helpers: tests/helpers/service.py; settings and store: tests/unit/test_service_store.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.service import alive, wait_gone


def test_importing_facetalk_does_not_import_the_web_stack() -> None:
    code = ("import sys, facetalk, facetalk.options, facetalk.settings; "
            "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'prometheus_client', "
            "'facetalk.service.api') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_worker_module_does_not_import_the_web_stack() -> None:
    """Render processes import facetalk.service.jobs.render: it must stay free of the web stack."""
    code = ("import sys, facetalk.service.jobs.render; "
            "bad = [m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validator_pool_survives_a_dead_helper(tmp_path: Path, astronaut_path: Path,
                                               short_speech: Path) -> None:
    """A decoder process that dies mid-request costs that request a 415, nothing more."""
    from facetalk.errors import UnsupportedMedia
    from facetalk.service.helpers.validator import ValidatorPool
    from facetalk.settings import Limits

    pool = ValidatorPool(1, Limits())
    pool.start()
    try:
        facts = pool.inspect(astronaut_path, short_speech)
        assert facts["portrait"] == {"width": 512, "height": 512}
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(UnsupportedMedia):
            pool.inspect(astronaut_path, short_speech)
        assert pool.pids() != [pid] and not alive(pid)
        assert pool.inspect(astronaut_path, short_speech) == facts  # the new helper works
    finally:
        helpers = pool.pids()
        pool.stop()
    assert wait_gone(helpers, 5.0) == []
