"""One helper-process class for every child the service starts on its own machine.

The upload validator, the web page's analyzer and the embedded queue's render workers
all need the same thing: a fresh interpreter (``python -m MODULE FD CONFIG_JSON``, not
multiprocessing's spawn, which re-imports the server's ``__main__`` and so breaks
embedding the app) that talks over a socket pair with multiprocessing's Connection
framing, and that the server can wait on, time out, kill and replace.

Why not pebble or concurrent.futures: the render workers need a two-way channel while
a task runs (progress out, cancel in) and the server must wait on many children at once
with ``multiprocessing.connection.wait`` in its own loop; a task-pool API hides both.

Messages are small frozen dataclasses (``messages``; the renders' in ``jobs.messages``), never
tuples unpacked by position, so a field added on one side cannot shift the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from .messages import Ready


class HelperProcess:
    """A child interpreter running ``python -m module`` with a Connection to it."""

    def __init__(self, module: str, config: Mapping[str, Any]) -> None:
        """Start the child now (``OSError`` if it cannot be started)."""
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, str(theirs.fileno()), json.dumps(dict(config))],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.module = module
        self.conn = Connection(ours.detach())
        self.ready = False

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the child has not exited yet."""
        return self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        """Block until the child says :class:`Ready` (``EOFError`` if it dies or is too slow)."""
        if self.ready:
            return
        if not self.conn.poll(timeout):
            raise EOFError(f"{self.module} did not start within {timeout:.0f} s")
        msg = self.conn.recv()
        if not isinstance(msg, Ready):
            raise EOFError(f"{self.module} sent {type(msg).__name__} before Ready")
        self.ready = True

    def send(self, msg: object) -> None:
        """Send one message (``OSError`` when the child is gone)."""
        self.conn.send(msg)

    def ask(self, msg: object, timeout: float) -> object | None:
        """One request and its answer; None when no answer came within ``timeout``.
        ``EOFError``/``OSError`` when the child died."""
        self.conn.send(msg)
        if not self.conn.poll(timeout):
            return None
        reply: object = self.conn.recv()
        return reply

    def kill(self, wait: float = 5.0) -> int | None:
        """End the child (SIGKILL if still running), close the channel; its exit code."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(wait)
        self.conn.close()
        return self.proc.returncode


def child_channel(argv: list[str] | None = None) -> tuple[Connection, dict[str, Any]]:
    """In the child: the Connection and the config the parent passed (``FD CONFIG_JSON``)."""
    args = sys.argv[1:] if argv is None else argv
    return Connection(int(args[0])), json.loads(args[1])


def announce_ready(conn: Connection) -> None:
    """In the child: tell the parent the imports are done."""
    conn.send(Ready(os.getpid()))
