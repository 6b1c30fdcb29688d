"""The FastAPI app factory: shared state, one router per resource, middleware, errors.

Why FastAPI on Uvicorn: the OpenAPI schema (and, with ``--api-docs on``, /docs) for
free, async streaming (uploads, SSE, Range downloads) without threads per connection,
and both are widely deployed, MIT/BSD licensed and maintained. The routes are in
``jobs``, ``verify``, ``live``, ``web`` and ``ops``; each reads what it needs from
``app.state``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._version import __version__
from ..helpers.validator import ValidatorPool
from ..jobs.queue import JobQueue, open_queue
from ..logs import AuditTrail, log
from ..settings import ServiceSettings
from . import jobs, live, ops, verify, web
from .auth import ApiKeyMiddleware
from .connections import RequestLimitMiddleware
from .docs import install_docs
from .errors import install_error_handlers
from .live import AvatarStore, live_state
from .metrics import Metrics
from .ops import WorkerCollector
from .origin import HostOriginMiddleware
from .web import PublicPageMiddleware

_log = logging.getLogger("facetalk.service")

#: Upload validator processes (each decode can hold a 32-megapixel frame in memory).
VALIDATION_SLOTS = 2
#: The routers, in the order they appear in /openapi.json (and /docs).
ROUTERS: tuple[APIRouter, ...] = (jobs.router, verify.router, web.router, live.router, ops.router)


def create_app(settings: ServiceSettings | None = None, queue: JobQueue | None = None) -> FastAPI:
    """Build the service. The queue (embedded by default) starts with the app's lifespan."""
    settings = settings or ServiceSettings.load()
    if queue is None:
        queue = open_queue(settings)  # embedded, or Celery when settings.queue is a redis:// URL
    audit = AuditTrail(settings.storage / "audit.log")
    metrics = Metrics(queue, settings.max_queued)
    queue.add_listener(audit)
    queue.add_listener(metrics.on_change)
    metrics.registry.register(WorkerCollector(queue))  # type: ignore[arg-type]
    validators = ValidatorPool(VALIDATION_SLOTS, settings.limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(validators.start)
        await run_in_threadpool(queue.start)
        log(_log, logging.INFO, "facetalk service started", version=__version__,
            workers=settings.workers, storage=str(settings.storage),
            max_queued=settings.max_queued, retention_s=settings.retention,
            api_keys=len(settings.api_keys))
        try:
            yield
        finally:
            await run_in_threadpool(queue.stop)
            await run_in_threadpool(validators.stop)
            audit.close()
            log(_log, logging.INFO, "facetalk service stopped")

    app = FastAPI(
        title="facetalk", version=__version__, lifespan=lifespan,
        docs_url=None, redoc_url=None,  # FastAPI's pages load from CDNs; see docs.py
        description="One portrait + one speech recording -> a lip-synced talking MP4, "
                    "rendered on this machine. Submit a job, follow it, download the video.")
    state = app.state
    state.settings, state.queue, state.metrics, state.validators = settings, queue, metrics, validators
    state.validation_slots = anyio.CapacityLimiter(VALIDATION_SLOTS)
    state.verify_slot = anyio.CapacityLimiter(1)  # decoding a video is a render-sized job
    state.avatars = AvatarStore(settings.storage / "avatars", retention=settings.avatar_retention,
                                max_count=settings.max_avatars,
                                max_bytes=settings.avatar_storage_mb << 20)
    live_state(app)  # live sessions' cap and limiters (app.state.live, .live_slots)
    # Every route is added the same way: one router per resource.
    for router in ROUTERS:
        app.include_router(router)
    if settings.api_docs:
        install_docs(app)
    # Middleware: the last added is the outermost. The page files answer before the key check.
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(PublicPageMiddleware)
    app.add_middleware(RequestLimitMiddleware, limit=settings.max_connections)
    # Outermost: a request for another Host or a write from another site is refused before
    # anything else sees it (the pages included, and WebSocket handshakes); a request over
    # the limit costs nothing more (idle sockets are not requests).
    app.add_middleware(HostOriginMiddleware, settings=settings)
    install_error_handlers(app)
    return app


class SecurityHeadersMiddleware:
    """``nosniff`` and ``no-store`` unless a route says otherwise (pure ASGI: no overhead
    per body chunk, unlike Starlette's BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
