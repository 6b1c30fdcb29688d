"""Processes seen from the outside (Linux /proc): a process tree and its resident memory.

One copy for every measurer that watches a server and its helper processes: the attack
probe (tools/probe.py) and the service's load and crash tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first (empty on systems without /proc)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):  # the task ended while it was being read
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def rss_bytes(pids: Iterable[int]) -> int:
    """Summed resident memory (VmRSS) of ``pids``; ones that have ended count 0."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total
