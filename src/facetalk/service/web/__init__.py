"""The web pages' static files (``/`` and ``/live``), as written: no build step, no CDN.

The boxes the service runs on have no internet, so every script, style sheet and string
table the pages use is in ``static/`` and served from there (``api.web`` serves them).
The page files are the same for everyone and hold no data; everything the pages read or
send goes through ``/v1/...``, which the API key still guards.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The page's files and their types; nothing else is ever served from the folder.
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "main.js": "text/javascript; charset=utf-8",
    "state.js": "text/javascript; charset=utf-8",
    "i18n.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "settings.js": "text/javascript; charset=utf-8",
    "portrait.js": "text/javascript; charset=utf-8",
    "voice.js": "text/javascript; charset=utf-8",
    "jobs.js": "text/javascript; charset=utf-8",
    "history.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "i18n.json": "application/json",
    "icon.svg": "image/svg+xml",
    "live.html": "text/html; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "live-tap.js": "text/javascript; charset=utf-8",
    "live.css": "text/css; charset=utf-8",
}
#: Where they are served: ``/`` is index.html, the rest under ``/web/``.
PREFIX = "/web/"

# Same origin only; blob: and data: for the local previews and recordings. No inline
# script, so an uploaded file name or a server message can never become code.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=()",
    # Revalidate every time: an upgraded server must never run an old script.
    "Cache-Control": "no-cache",
}


def static_dir() -> Path:
    """Folder of the pages' files inside the installed package."""
    return Path(str(resources.files(__package__) / "static"))
