"""Where a job's files live: one private folder per job, names chosen by the server.

Client filenames are never used: the inputs are ``portrait`` and ``audio`` (no
extension, mode 0600, in a 0700 folder that no route serves), the output is
``output.mp4``. A job id is validated (32 hex digits) before it touches a path.
Issue 7 swaps this for a shared-storage implementation behind the same methods.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
INPUTS = ("portrait", "audio")
OUTPUT = "output.mp4"


def new_job_id() -> str:
    """A random, unguessable job id (122 random bits)."""
    return uuid.uuid4().hex


def valid_job_id(job_id: str) -> bool:
    """True when ``job_id`` has the shape of an id this server hands out."""
    return bool(JOB_ID.match(job_id))


class Storage:
    """The storage folder: ``jobs/<id>/``, ``tmp/`` for uploads in flight."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs = self.root / "jobs"
        self.tmp = self.root / "tmp"

    def prepare(self) -> None:
        """Create the folders (private to the service user) and clear stale uploads."""
        for d in (self.root, self.jobs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        for leftover in self.tmp.iterdir():
            _remove(leftover)

    def job_dir(self, job_id: str) -> Path:
        """The job's folder (the id is validated first: it becomes a path)."""
        if not valid_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.jobs / job_id

    def input_path(self, job_id: str, name: str) -> Path:
        """``portrait`` or ``audio`` of a job."""
        if name not in INPUTS:
            raise ValueError(f"not an input name: {name!r}")
        return self.job_dir(job_id) / name

    def output_path(self, job_id: str) -> Path:
        """The finished MP4 (present only once complete: the engine renames into place)."""
        return self.job_dir(job_id) / OUTPUT

    def new_upload(self) -> Path:
        """A fresh private temp file path for an upload in flight."""
        return self.tmp / uuid.uuid4().hex

    def adopt(self, job_id: str, uploads: dict[str, Path]) -> None:
        """Move validated uploads into the job's folder (same filesystem: a rename)."""
        d = self.job_dir(job_id)
        d.mkdir(mode=0o700)
        for name, path in uploads.items():
            os.replace(path, self.input_path(job_id, name))

    def delete_inputs(self, job_id: str) -> None:
        """Remove the uploaded portrait and audio (privacy: as early as allowed)."""
        for name in INPUTS:
            _remove(self.input_path(job_id, name))

    def delete_partials(self, job_id: str) -> None:
        """Remove half-written outputs left by a killed render."""
        d = self.job_dir(job_id)
        if d.is_dir():
            for p in d.iterdir():
                if p.name.endswith(".partial"):
                    _remove(p)

    def delete_job(self, job_id: str) -> None:
        """Remove everything the job stored."""
        _remove(self.job_dir(job_id))

    def free_bytes(self) -> int:
        """Free space on the storage disk."""
        return shutil.disk_usage(self.root).free


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
