"""The interactive API docs (``/docs``, ``/redoc``): off by default, never from a CDN.

FastAPI's own pages load Swagger UI, ReDoc and Google Fonts from public CDNs: on the
offline boxes this service is made for they stay blank, and elsewhere every visit tells
a third party that the service exists. ``/openapi.json`` (always served) is what tools
read; the pages are a convenience, so they are served only with ``--api-docs on``, and
then with their scripts from the ``fastapi-offline`` package (MIT; it ships Swagger UI,
Apache-2.0, and ReDoc, MIT), from this server. Only the package's files are used, not its code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, HTMLResponse

from ...errors import InvalidInput

#: The package whose ``static/`` folder holds the docs' scripts.
ASSET_PACKAGE = "fastapi_offline"
#: The only files served from it, and their types.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
PREFIX = "/docs-assets/"


def asset_dir() -> Path | None:
    """The folder of the docs' scripts in the installed ``fastapi-offline``, or None."""
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their local assets (``--api-docs on``)."""
    folder = asset_dir()
    if folder is None:
        raise InvalidInput("--api-docs on needs the docs' scripts, from the fastapi-offline package",
                           hint="pip install 'facetalk[docs]' (or leave the docs off; "
                                "/openapi.json is served either way)")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=title,
                                   swagger_js_url=PREFIX + "swagger-ui-bundle.js",
                                   swagger_css_url=PREFIX + "swagger-ui.css",
                                   swagger_favicon_url=PREFIX + "favicon.png",
                                   # No badge fetched from the public spec validator.
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=title,
                              redoc_js_url=PREFIX + "redoc.standalone.js",
                              redoc_favicon_url=PREFIX + "favicon.png", with_google_fonts=False)

    @app.get(PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no docs file {name[:64]!r}")
        return FileResponse(folder / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})
