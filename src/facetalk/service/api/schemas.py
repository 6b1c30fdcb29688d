"""OpenAPI shapes: the submission form and the job document, derived from the dataclass.

The form's option properties are generated from ``facetalk.options.field_info()`` (the
metadata of GenerationOptions' fields), so the documented schema cannot drift from
what ``GenerationOptions.from_mapping`` accepts; a test compares the two.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ...options import PRESETS, field_info

_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
_PY_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


def option_properties() -> dict[str, dict[str, Any]]:
    """JSON-schema property of every GenerationOptions field (type, range, default, help)."""
    out: dict[str, dict[str, Any]] = {}
    for info in field_info():
        prop: dict[str, Any] = {"type": _JSON_TYPES[info["type"]], "description": info["help"]}
        if info["default"] is not None:
            prop["default"] = info["default"]
        if info["min"] is not None:
            prop["minimum"] = info["min"]
        if info["max"] is not None:
            prop["maximum"] = info["max"]
        if info["choices"]:
            prop["enum"] = list(info["choices"])
        out[info["name"]] = prop
    return out


def submit_request_body() -> dict[str, Any]:
    """The multipart request body of POST /v1/jobs, for ``openapi_extra``."""
    props: dict[str, Any] = {
        "portrait": {"type": "string", "format": "binary",
                     "description": "The portrait (JPG, PNG, WebP, BMP, TIFF...). Judged by "
                                    "decoding it; the filename is ignored."},
        "audio": {"type": "string", "format": "binary",
                  "description": "The speech (WAV, MP3, M4A, OGG, FLAC...). Judged by "
                                 "decoding it; the filename is ignored."},
        **option_properties(),
        "preset": {"type": "string", "enum": sorted(PRESETS),
                   "description": "Named bundle applied first; explicit options win: "
                                  + "; ".join(f"{k} = {v}" for k, v in PRESETS.items())},
        "options": {"type": "string", "contentMediaType": "application/json",
                    "description": "All options as one JSON object, instead of (or besides) "
                                   "separate fields; a name may not appear both ways."},
    }
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["portrait", "audio"], "properties": props,
        "additionalProperties": False}}}}}


OptionsOut: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "GenerationOptions",
    __config__=ConfigDict(extra="forbid"),
    **{info["name"]: (_PY_TYPES[info["type"]] | None,
                      Field(info["default"], description=info["help"]))
       for info in field_info()},
)


class ErrorOut(BaseModel):
    """Every refusal and failure: what went wrong and what to do about it."""

    error: str = Field(description="Stable machine-readable code, e.g. unsupported_media.")
    detail: str = Field(description="One sentence about this case.")
    hint: str = Field(description="What to change to succeed.")
    error_id: str | None = Field(None, description="For internal errors: matches a server log line.")


#: The error answers the job routes document in OpenAPI.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in {
        401: "Missing or wrong API key", 404: "No such job", 409: "Not ready",
        410: "Deleted by retention", 413: "Over a size, pixel or duration limit",
        415: "Not media facetalk can decode", 422: "Invalid option or input",
        429: "Queue full (see Retry-After)", 507: "Storage disk nearly full"}.items()}


class Links(BaseModel):
    """Where to follow the job."""

    self: str
    video: str
    events: str


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(description="0 to 1.")
    stage: str | None = Field(description="Engine stage while running (face, rendering...).")
    frames_done: int
    frames_total: int
    eta_s: float | None = Field(description="Estimated seconds until the job is finished.")
    queue_position: int | None = Field(description="Jobs ahead of this one (0 = next).")
    attempts: int = Field(description="Times a render was started for this job.")
    max_attempts: int
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    options: OptionsOut  # type: ignore[valid-type]
    inputs: dict[str, dict[str, Any]] = Field(
        description="Per input: sha256, bytes and decoded facts (pixels, duration).")
    result: dict[str, Any] | None = Field(description="What the render produced (when succeeded).")
    timings: dict[str, float] = Field(description="Seconds per engine stage.")
    warnings: list[str]
    render_id: str | None
    sync_offset_ms: float | None
    error: ErrorOut | None
    inputs_deleted: bool
    output_deleted: bool
    expires_at: str | None = Field(description="When the output will be deleted (retention).")
    links: Links


class JobPage(BaseModel):
    """One page of jobs, newest first."""

    jobs: list[JobOut]
    next: str | None = Field(description="URL of the next (older) page, if any.")
    counts: dict[str, int] = Field(description="All jobs by state.")
