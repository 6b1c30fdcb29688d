"""facetalk.measure.procs: the process tree and memory the probe and service tests read."""

from __future__ import annotations

import os
import threading

from facetalk.measure.procs import process_tree, rss_bytes


def test_the_tree_starts_at_the_process_and_memory_counts_only_live_ones() -> None:
    me = os.getpid()
    # A second thread: children are listed per task, and the walk must read every task.
    t = threading.Thread(target=threading.Event().wait, args=(0.2,))
    t.start()
    tree = process_tree(me)
    t.join()
    assert tree[0] == me and len(tree) == len(set(tree))
    own = rss_bytes([me])
    assert own > 10 * 2**20  # an interpreter running pytest holds far more than 10 MB
    gone = 2**22 + 12345  # above the default pid_max: never a live process
    assert rss_bytes([gone]) == 0 and process_tree(gone) == [gone]
    assert abs(rss_bytes([me, gone]) - own) < 2**20  # the ended one adds nothing
