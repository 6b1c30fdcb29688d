"""The storage a render worker on another machine sees: a small interface, one implementation.

The API keeps using :class:`~facetalk.service.storage.Storage` (uploads, downloads,
retention). A worker only needs three things, and this module names exactly those:
the job's two inputs as local files, a place to write the output that becomes
visible atomically, and a way to remove what a stopped render left behind. A shared
directory (NFS, CephFS, SMB with POSIX semantics) gives all three directly; an
S3-compatible store would download the inputs to a temp dir and upload the output in
``output_target``'s exit, behind the same three methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ...errors import InvalidInput
from .storage import Storage


class RenderStorage(Protocol):
    """What a render worker needs from storage (see the module docstring)."""

    def inputs(self, job_id: str) -> contextlib.AbstractContextManager[tuple[Path, Path]]:
        """The job's portrait and audio as readable local paths, for the render's duration."""

    def output_target(self, job_id: str) -> contextlib.AbstractContextManager[Path]:
        """A local path to write the MP4 to (the engine writes a temp file and renames it);
        the output is published when the block exits without an exception."""

    def discard_partials(self, job_id: str) -> None:
        """Remove half-written outputs of a stopped or killed render of this job."""

    def describe(self) -> str:
        """Where the files live, for logs and ``/v1/workers``."""


class SharedDirectory:
    """A directory every machine mounts (same layout as the API's ``Storage``).

    Atomicity comes from the engine: it writes ``.output.mp4.<random>.partial`` in the
    job's folder and renames it to ``output.mp4``; on one filesystem (NFS included)
    the rename is atomic, so a job rendered twice (a re-delivery) replaces its own
    output in one step and a reader sees either the old or the new complete file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._dirs = Storage(self.root)

    def check(self) -> None:
        """Fail early, with a hint, when the shared folder is not there (not mounted)."""
        if not self._dirs.jobs.is_dir():
            raise InvalidInput(
                f"{self._dirs.jobs} does not exist: the shared storage is not mounted here",
                hint="Mount the folder the API uses (--storage on 'facetalk serve') at this "
                     "path, or pass --storage with this machine's mount point.")

    @contextlib.contextmanager
    def inputs(self, job_id: str) -> Iterator[tuple[Path, Path]]:
        """The inputs are read in place from the shared folder."""
        yield (self._dirs.input_path(job_id, "portrait"), self._dirs.input_path(job_id, "audio"))

    @contextlib.contextmanager
    def output_target(self, job_id: str) -> Iterator[Path]:
        """The final path itself: the engine's rename is the publication."""
        yield self._dirs.output_path(job_id)

    def discard_partials(self, job_id: str) -> None:
        """Partials of this job (a render on a machine that died leaves one)."""
        self._dirs.delete_partials(job_id)

    def describe(self) -> str:
        """The folder."""
        return str(self.root)


def open_storage(location: str | Path) -> SharedDirectory:
    """The storage named by ``--storage``: a directory path (or ``file://`` URL).

    Object stores are refused with a clear message until one is implemented.
    """
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise InvalidInput(f"storage {text!r} is not supported",
                           hint="Use a directory that every machine mounts (NFS, CephFS...); "
                                "S3-compatible stores are not implemented yet.")
    return SharedDirectory(Path(text))
