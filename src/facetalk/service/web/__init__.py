"""The web page served at ``/`` by ``facetalk serve``, and the two routes it needs.

- ``static/``   the page itself: one HTML file, one script, one style sheet and the
                English/中文 strings, checked in as written (no build step, no CDN:
                the boxes it runs on have no internet).
- ``routes``    ``GET /v1/options`` (the parameter schema the form is generated from)
                and ``POST /v1/analyze`` (face box and framings, or a recording's length).
- ``analyzer``  the helper process that runs the engine's face analysis for the page.

Why the page files bypass the API key: a browser cannot send ``Authorization`` when
it navigates to a URL, so a key-protected page could never load to ask for the key.
The page files are the same for everyone and hold no data; everything the page reads
or sends goes through ``/v1/...``, which the key still guards.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .routes import router

#: The page's files and their types; nothing else is ever served from the folder.
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "i18n.json": "application/json",
    "icon.svg": "image/svg+xml",
}
#: Where they are served: ``/`` is index.html, the rest under ``/web/``.
PREFIX = "/web/"

# Same origin only; blob: and data: for the local previews and recordings. No inline
# script, so an uploaded file name or a server message can never become code.
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=()",
    # Revalidate every time: an upgraded server must never run an old script.
    "Cache-Control": "no-cache",
}


def static_dir() -> Path:
    """Folder of the page's files inside the installed package."""
    return Path(str(resources.files(__package__) / "static"))


class PublicPageMiddleware:
    """Serve GET/HEAD of ``/`` and ``/web/<file>`` before the API key check; pass the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.folder = static_dir()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not (
                path == "/" or path.startswith(PREFIX)):
            await self.app(scope, receive, send)
            return
        name = "index.html" if path == "/" else path[len(PREFIX):]
        response: Response
        if name in PAGE_FILES:
            response = FileResponse(self.folder / name, media_type=PAGE_FILES[name],
                                    headers=_HEADERS)
        else:
            response = JSONResponse(
                {"error": "not_found", "detail": f"no page file {name[:64]!r}",
                 "hint": "The page is at /; the API is under /v1 (see /docs)."},
                status_code=404, headers={"X-Content-Type-Options": "nosniff"})
        await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Add the page and its routes to the service app (one call in ``create_app``)."""
    app.include_router(router)
    # Added last, so it is the outermost middleware: it answers before the key check.
    app.add_middleware(PublicPageMiddleware)
