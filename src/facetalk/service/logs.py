"""JSON log lines (one object per line) for the service, its workers and the audit trail.

The audit trail is its own logger (``facetalk.audit``): one line per job state change
with the job id, input hashes, options, timings and client address, and nothing else
about the people in the media (see AuditTrail), written to stderr and to
``<storage>/audit.log`` (rotated at 20 MB, five files kept).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

AUDIT = "facetalk.audit"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}``; tracebacks as one string field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


#: One ``name=value`` pair of a query string, as uvicorn logs it (raw, still percent-encoded).
_QUERY_PAIR = re.compile(r"([^?&=\s\"']+)=([^&\s\"']*)")


def _redact(text: str) -> str:
    """``text`` with the value of every query parameter that decodes to ``api_key`` blanked.

    Matched after percent-decoding the name, as the server does when it reads the key:
    ``api%5Fkey=KEY`` authenticates too, and must not reach the log in clear.
    """
    def blank(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"{name}=***" if unquote_plus(name).lower() == "api_key" else m.group(0)

    return _QUERY_PAIR.sub(blank, text)


def _may_hold_key(text: str) -> bool:
    low = text.lower()
    return "=" in low and ("key" in low or "%" in low)


class RedactKeys(logging.Filter):
    """Blank the API key in logged URLs: browsers can only send the key of a WebSocket in
    its query string, and uvicorn logs paths with their query (still percent-encoded)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and _may_hold_key(record.msg):
            record.msg = _redact(record.msg)
        if isinstance(record.args, tuple) and any(
                isinstance(a, str) and _may_hold_key(a) for a in record.args):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def configure(level: str = "info") -> None:
    """Route every log record (uvicorn's included) to stderr as one JSON object per line,
    with API keys in URLs blanked."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactKeys())
    root.addHandler(handler)
    root.setLevel(level.upper())


def log(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with structured ``fields`` merged into the JSON object."""
    logger.log(level, msg, extra={"fields": fields})


class AuditTrail:
    """One JSON line per job state change, to ``<storage>/audit.log`` and the log stream.

    Registered as a queue state listener. It records what an auditor needs (job id,
    state change, attempt, input SHA-256s, options, timings, error code, client
    address) and never the media, filenames or anything else about the people in them.
    """

    def __init__(self, path: Path | None) -> None:
        self._logger = logging.getLogger(AUDIT)
        self._file: logging.Handler | None = None
        if path is not None:
            self._file = logging.handlers.RotatingFileHandler(
                path, maxBytes=20 * 1024 * 1024, backupCount=5, encoding="utf-8")
            self._file.setFormatter(JsonFormatter())

    def __call__(self, job: Any, previous: str | None, extra: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "event": "job_state", "job": job.id, "from": previous, "to": job.status,
            "attempt": job.attempts, "client": job.client,
            "inputs": {name: (job.inputs.get(name) or {}).get("sha256")
                       for name in ("portrait", "audio")},
            "options": job.options,
        }
        if job.result:
            fields["timings"] = job.result.get("timings")
            fields["render_id"] = job.result.get("render_id")
        if job.error:
            fields["error"] = job.error.get("error")
        fields.update(extra)
        record = self._logger.makeRecord(AUDIT, logging.INFO, __file__, 0, "job state change",
                                         None, None, extra={"fields": fields})
        self._logger.handle(record)
        if self._file is not None:
            self._file.handle(record)

    def close(self) -> None:
        """Flush and close the audit file."""
        if self._file is not None:
            self._file.close()
