"""Uploads: a streaming multipart parser with hard limits, then validation by decoding.

Why not FastAPI's ``UploadFile``: Starlette spools a whole file part to disk before
the handler sees it, so a 1 GB upload would cost 1 GB of disk before being refused.
Here python-multipart's streaming parser (the one Starlette uses) feeds each part
straight into a private temp file while counting and hashing, and the request is cut
off the moment a part passes ``Limits.max_input_bytes``.

Content is then judged only by decoding it with the engine's own loaders (see
``validator``): never by the filename, its extension or the client's Content-Type.
Filenames are ignored entirely.

Two guards bound what an upload can hold on to (``UploadGuard``): a stall (no bytes for
``--upload-idle-timeout``) is refused with 408, and every chunk is checked against the
free disk, so parallel uploads together stop at ``--min-free-disk-mb`` with 507 instead
of each passing a check made once before its body.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from ...errors import InvalidInput, LimitExceeded
from ...options import GenerationOptions, _base_type
from ...settings import Limits, megabytes
from ..errors import BadRequest, InsufficientStorage, RequestTimeout, UnsupportedContentType

FILE_PARTS = ("portrait", "audio")
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationOptions))
#: Every non-file field a submission may carry.
FORM_FIELDS = (*OPTION_FIELDS, "preset", "options")
#: Largest non-file field (the JSON ``options`` is the biggest legitimate one).
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = len(FILE_PARTS) + len(FORM_FIELDS)
#: Bytes of an upload held before they are hashed and written, in a worker thread: a write
#: can block for hundreds of ms when the disk is busy (measured: up to 0.9 s with six
#: parallel uploads on a loaded box), and the event loop that answers /healthz must not.
FLUSH_BYTES = 256 * 1024
#: Seconds an upload may send nothing before it is refused (``--upload-idle-timeout``).
UPLOAD_IDLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class UploadGuard:
    """What an upload in flight may cost: time without a byte, and the disk it may fill."""

    #: No bytes for this long: 408 and the partial files are deleted.
    idle_timeout: float = UPLOAD_IDLE_TIMEOUT_S
    #: Free bytes on the upload disk now (None: no disk check).
    free_bytes: Callable[[], int] | None = None
    #: A chunk that would leave less free space than this is refused with 507.
    reserve_bytes: int = 0

    def make_room(self, n: int) -> None:
        """Refuse ``n`` more bytes when they would take the disk below the reserve.

        It reads the disk's real free space, which every upload in flight (and every
        render) is already taking, so parallel uploads are counted together; the caller adds
        its own bytes not yet written, so each upload overshoots by at most the bytes another
        one holds unwritten (:data:`FLUSH_BYTES`).
        """
        if self.free_bytes is not None and self.free_bytes() - n < self.reserve_bytes:
            raise InsufficientStorage("the server's storage disk is nearly full; the upload was stopped")


def upload_guard(request: Any) -> UploadGuard:
    """The guard of an upload to this app: its settings' idle timeout and disk reserve."""
    settings = request.app.state.settings
    return UploadGuard(settings.upload_idle_timeout, request.app.state.queue.storage.free_bytes,
                       settings.min_free_disk_mb * 1024 * 1024)


@dataclass
class Upload:
    """One received file part: where it is, how big, its SHA-256."""

    path: Path
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes received."""
        return self.digest.hexdigest()


@dataclass
class Submission:
    """The parsed form: file parts on disk, text fields in memory."""

    files: dict[str, Upload] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the temp files (on refusal, or after they were moved into a job)."""
        for up in self.files.values():
            up.path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks: route part bytes into temp files or field buffers."""

    def __init__(self, new_path: Any, limits: Limits, charset: str,
                 file_parts: tuple[str, ...] = FILE_PARTS, guard: UploadGuard | None = None) -> None:
        self.new_path = new_path
        self.guard = guard or UploadGuard()
        self.limits = limits
        self.charset = charset
        self.file_parts = file_parts
        self.sub = Submission()
        self.parts = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition: bytes | None = None
        self._name = ""
        self._file: IO[bytes] | None = None
        self._upload: Upload | None = None
        self._buf = bytearray()
        #: File bytes received but not yet written ((upload, file, chunk); chunk None = close).
        self._pending: list[tuple[Upload, IO[bytes], bytes | None]] = []
        self.pending_bytes = 0

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidInput(f"too many form parts (more than {MAX_PARTS})",
                               hint="Send each field once: portrait, audio and the options.")
        self._disposition, self._name, self._buf = None, "", bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        raw = params.get(b"name")
        if raw is None:
            raise BadRequest("a form part has no name",
                             hint="Every part needs Content-Disposition: form-data; name=\"...\".")
        name = raw.decode(self.charset, errors="replace")
        # Only the part's name matters; a filename (however hostile) is never read.
        if name in self.file_parts:
            if name in self.sub.files:
                raise InvalidInput(f"the {name} file was sent twice", hint="Send it once.")
            up = Upload(self.new_path())
            # Private from the first byte (0600), never overwriting anything (O_EXCL).
            fd = os.open(up.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._file = os.fdopen(fd, "wb")  # closed in on_part_end() or close()
            self._upload = up
            self.sub.files[name] = up
        elif name in FORM_FIELDS:
            if name in self.sub.fields:
                raise InvalidInput(f"the field {name!r} was sent twice", hint="Send it once.")
            self._file, self._upload = None, None
        else:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise InvalidInput(
                f"unknown form field {shown!r}",
                hint="Allowed: portrait, audio (files), options (JSON), preset, and the option "
                     "fields " + ", ".join(OPTION_FIELDS) + ".")
        self._name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._upload is not None and self._file is not None:
            self._upload.size += len(chunk)
            if self._upload.size > self.limits.max_input_bytes:
                raise LimitExceeded(
                    f"the {self._name} is larger than the limit of "
                    f"{megabytes(self.limits.max_input_bytes)} (FACETALK_MAX_INPUT_BYTES)",
                    hint="Send a smaller file: compress the audio (MP3/M4A) or resize the picture.")
            self.guard.make_room(len(chunk) + self.pending_bytes)
            self._pending.append((self._upload, self._file, chunk))
            self.pending_bytes += len(chunk)
        else:
            self._buf += chunk
            if len(self._buf) > MAX_FIELD_BYTES:
                raise LimitExceeded(f"the field {self._name!r} is longer than "
                                    f"{MAX_FIELD_BYTES // 1024} KB")

    def on_part_end(self) -> None:
        if self._file is not None and self._upload is not None:
            self._pending.append((self._upload, self._file, None))  # closed once written
            self._file = None
        elif self._name:
            try:
                self.sub.fields[self._name] = self._buf.decode(self.charset)
            except UnicodeError:
                raise InvalidInput(f"the field {self._name!r} is not valid text") from None
        self._upload = None

    def flush(self) -> None:
        """Hash and write what was received (called in a worker thread, never concurrently
        with the parser: the event loop awaits it)."""
        pending, self._pending, self.pending_bytes = self._pending, [], 0
        for up, file, chunk in pending:
            if chunk is None:
                file.close()
            else:
                up.digest.update(chunk)
                file.write(chunk)

    def close(self) -> None:
        """Close every file still open (after a refusal; their paths are then deleted)."""
        for _, file, _ in self._pending:
            file.close()
        self._pending, self.pending_bytes = [], 0
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_form(content_type: str | None, body: AsyncIterator[bytes], new_path: Any,
                       limits: Limits, file_parts: tuple[str, ...] = FILE_PARTS,
                       guard: UploadGuard | None = None) -> Submission:
    """Parse a multipart body into temp files and fields, enforcing every limit on the way.

    ``file_parts`` names the parts that are files (a job's portrait and audio by default);
    ``guard`` (see :func:`upload_guard`) adds the disk check; without it only the default
    idle timeout applies.
    """
    guard = guard or UploadGuard()
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UnsupportedContentType(
            f"expected multipart/form-data, got {content_type or 'no Content-Type'!s:.60}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("the multipart Content-Type has no boundary")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
        # Only a text encoding that decodes any bytes (not rot13, zlib, idna, ...).
        b"\xff\xfe\x00a".decode(charset, errors="replace")
    except (LookupError, ValueError):
        charset = "utf-8"
    rx = _Receiver(new_path, limits, charset, file_parts, guard)
    callbacks: Any = {
        "on_part_begin": rx.on_part_begin, "on_part_data": rx.on_part_data,
        "on_part_end": rx.on_part_end, "on_header_field": rx.on_header_field,
        "on_header_value": rx.on_header_value, "on_header_end": rx.on_header_end,
        "on_headers_finished": rx.on_headers_finished,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        chunks = body.__aiter__()
        while True:
            try:
                with anyio.fail_after(guard.idle_timeout):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise RequestTimeout(f"the upload sent nothing for {guard.idle_timeout:g} s and was "
                                     "stopped (FACETALK_UPLOAD_IDLE_TIMEOUT)") from None
            parser.write(chunk)
            if rx.pending_bytes >= FLUSH_BYTES:
                await anyio.to_thread.run_sync(rx.flush)
        parser.finalize()
        await anyio.to_thread.run_sync(rx.flush)
    except FormParserError:
        rx.close()
        rx.sub.discard()
        raise BadRequest("the multipart body is malformed",
                         hint="Let your HTTP client build the form (curl -F, requests files=...).") from None
    except BaseException:
        rx.close()
        rx.sub.discard()
        raise
    rx.close()
    return rx.sub


async def read_capped(body: AsyncIterator[bytes], cap: int, what: str) -> bytes:
    """A small non-form body (JSON), refused with 413 as soon as it passes ``cap`` bytes."""
    buf = bytearray()
    async for chunk in body:
        buf += chunk
        if len(buf) > cap:
            raise LimitExceeded(f"the {what} is larger than {cap // 1024} KB")
    return bytes(buf)


def options_from_form(fields: dict[str, str], allowed: Collection[str] | None = None,
                      what: str = "this route") -> GenerationOptions:
    """GenerationOptions from form fields and/or one JSON ``options`` object.

    ``GenerationOptions.from_mapping`` does all the validation (one source of truth);
    this only unpacks the JSON, refuses a name given both ways and, when ``allowed`` is
    given (live avatars), any option ``what`` does not use.
    """
    merged: dict[str, Any] = {}
    if "options" in fields and fields["options"].strip():
        try:
            data = json.loads(fields["options"])
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"the options field is not valid JSON ({exc.msg})",
                               hint='Send a JSON object, e.g. {"min_resolution": 768}.') from None
        except (RecursionError, ValueError):  # nested too deeply; an integer over 4300 digits
            raise InvalidInput("the options field is nested too deeply or holds a number too long",
                               hint='Send a flat JSON object, e.g. {"min_resolution": 768}.') from None
        if not isinstance(data, dict):
            raise InvalidInput("the options field must be a JSON object",
                               hint='Send a JSON object, e.g. {"min_resolution": 768}.')
        known = {f.name: f for f in dataclasses.fields(GenerationOptions)}
        for key, value in data.items():
            if isinstance(value, (dict, list)):
                raise InvalidInput(f"option {key!r} must be a single value, not {type(value).__name__}")
            if key in known and value is not None and _base_type(known[key]) is str \
                    and not isinstance(value, str):
                raise InvalidInput(f"{key} must be text, got {value!r}")
            if key == "preset" and value is not None and not isinstance(value, str):
                raise InvalidInput(f"preset must be text, got {value!r}")
        merged.update(data)
    for key, value in fields.items():
        if key == "options":
            continue
        if key in merged:
            raise InvalidInput(f"{key} was given both as a form field and inside options",
                               hint="Give each option once.")
        merged[key] = value
    unknown = set(merged) - set(allowed) if allowed is not None else set()
    if unknown:
        raise InvalidInput(f"options not used by {what}: {', '.join(sorted(unknown))}")
    return GenerationOptions.from_mapping(merged)
