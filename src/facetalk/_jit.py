"""Where numba keeps its compiled kernels between runs.

numba caches next to the source files by default; when the package is installed
read-only (a system site-packages, a container running as a non-root user) that fails
and every process would compile the kernels again (seconds). Point the cache at a
per-user folder in that case. Must run before numba is imported.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure_cache() -> None:
    """Set NUMBA_CACHE_DIR to a writable per-user folder if the package is read-only."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    here = Path(__file__).resolve().parent
    if os.access(here, os.W_OK):
        return
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = base / "facetalk" / "numba"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # nowhere writable: numba compiles in memory each run, still correct
    os.environ["NUMBA_CACHE_DIR"] = str(target)
