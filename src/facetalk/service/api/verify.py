"""``POST /v1/verify``: read a video's AI-generated labels (metadata and watermark)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect

from ...errors import InvalidInput
from ..errors import BadRequest
from .schemas import ERRORS
from .uploads import receive_form, upload_guard

router = APIRouter(tags=["provenance"])


@router.post("/v1/verify", responses=ERRORS,
             summary="Read a video's AI-generated labels (metadata and watermark)",
             openapi_extra={"requestBody": {"required": True, "content": {
              "multipart/form-data": {"schema": {"type": "object", "required": ["video"],
                                                 "properties": {"video": {
                                                     "type": "string",
                                                     "format": "binary"}}}}}}})
async def verify(request: Request) -> dict[str, Any]:
    """Upload ``video`` (any container PyAV reads); the answer is what ``facetalk verify
    --json`` prints: ``{"watermark": {"found", "payload", "confidence", ...},
    "metadata": {...}}``. Videos facetalk did not make read as not found. The upload
    is deleted when the answer is sent.

    The server never decodes the upload itself: it is read in an upload validator
    process, under the job uploads' limits (bytes, pixels, length), so a small file that
    declares 16000x16000 pixels is refused from its header with 413.
    """
    storage, limits = request.app.state.queue.storage, request.app.state.settings.limits

    try:
        form = await receive_form(request.headers.get("content-type"), request.stream(),
                                  storage.new_upload, limits,
                                  file_parts=("video",), guard=upload_guard(request))
    except ClientDisconnect:
        raise BadRequest("the upload was interrupted by the client") from None
    try:
        if set(form.files) != {"video"} or form.fields:
            raise InvalidInput("send one file part named 'video' and nothing else",
                               hint="curl -F video=@clip.mp4 .../v1/verify")
        path = form.files["video"].path
        return await anyio.to_thread.run_sync(request.app.state.validators.verify, path,
                                              limiter=request.app.state.verify_slot)
    finally:
        form.discard()

