"""Importing the package, its options and its command stays light (a fresh interpreter each).

``facetalk --help`` and ``from facetalk import GenerationOptions`` must not pay for numba,
SciPy, ONNX Runtime, PyAV or OpenCV: those load when a render (or a command that needs
them) starts.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numba", "scipy", "onnxruntime", "av", "cv2", "numpy", "fastapi", "celery")


@pytest.mark.parametrize("statement", [
    "import facetalk",
    "import facetalk.options",
    "from facetalk.cli import main",
    "from facetalk import GenerationOptions, Limits, FacetalkError",
])
def test_import_loads_no_heavy_library(statement: str) -> None:
    code = (f"import sys; {statement}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{statement} imported {out.stdout.strip()}"


def test_the_check_itself_sees_a_heavy_import() -> None:
    code = f"import sys, facetalk.motion.filters; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "numpy" in out.stdout
