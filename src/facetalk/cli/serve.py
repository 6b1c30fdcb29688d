"""``facetalk serve`` (the HTTP service) and ``facetalk worker`` (a Celery render worker).

Every flag has a ``FACETALK_*`` environment variable (flag wins); see
``facetalk serve --help``, ``facetalk worker --help`` and the README's "HTTP service"
and "Scaling out" sections.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..errors import FacetalkError
from ..service.settings import ServiceSettings, Setting, WorkerSettings, default_workers, settings_for
from .common import device_option

F = TypeVar("F", bound=Callable[..., Any])


def _exit_with(exc: FacetalkError) -> NoReturn:
    """A start-up error as one line plus its hint, exit code 2 (no traceback)."""
    click.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"hint: {exc.hint}", err=True)
    sys.exit(2)


def _use_device(device: str | None) -> None:
    """Check ``--device`` now (a missing provider is a start-up error, not a failed job)
    and hand it to the render processes, which read ``FACETALK_DEVICE``."""
    from ..devices import ENV as DEVICE_ENV
    from ..devices import resolve

    resolve(device)
    if device:
        os.environ[DEVICE_ENV] = device


_LEVELS = click.Choice(["debug", "info", "warning", "error"])


def _click_option(setting: Setting, command: str) -> Callable[[F], F]:
    """The click option of one row of the settings table (facetalk.service.settings)."""
    text = (setting.worker_help if command == "worker" and setting.worker_help else setting.help)
    text = text.replace("`", "'")
    if setting.kind == "level":
        return click.option(setting.flag, type=_LEVELS, default=setting.default, show_default=True,
                            help=text)
    if setting.kind == "switch":
        return click.option(f"{setting.flag}/--no-{setting.flag[2:]}", default=False,
                            show_default=True, help=text)
    env = f" [env: {setting.env}{' (comma separated)' if setting.kind == 'keys' else ''}]"
    default = (setting.worker_default if command == "worker" and setting.worker_default
               else setting.default).replace("`", "")
    if setting.name in ("workers", "concurrency"):
        default += f" (here {default_workers()})"
    types: dict[str, Any] = {"int": int, "path": click.Path(file_okay=False, path_type=Path)}
    return click.option(setting.flag, setting.name, type=types.get(setting.kind),
                        multiple=setting.kind == "keys", default=None, metavar=setting.metavar,
                        help=f"{text} Default: {default}.{env}")


def settings_options(command: str) -> Callable[[F], F]:
    """Every option of ``command`` from the one settings table, in table order."""
    def decorate(fn: F) -> F:
        for setting in reversed(settings_for(command)):
            fn = _click_option(setting, command)(fn)
        return fn
    return decorate


@click.command()
@settings_options("serve")
@device_option
def serve(log_level: str, access_log: bool, device: str | None, **flags: Any) -> None:
    """Run the HTTP API and its render workers (Ctrl-C or SIGTERM stops it cleanly)."""
    try:
        import uvicorn

        from ..service import logs
        from ..service.api import create_app
        from ..service.api.connections import guarded_http_protocol
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        click.echo(f"error: the HTTP service needs {exc.name}", err=True)
        click.echo("hint: pip install 'facetalk[server]'", err=True)
        sys.exit(1)
    try:
        _use_device(device)
        settings = ServiceSettings.load(flags)
    except FacetalkError as exc:
        _exit_with(exc)
    logs.configure(log_level)
    log = logging.getLogger("facetalk.service")
    if not _is_loopback(settings.host) and not settings.api_keys:
        logs.log(log, logging.WARNING, "listening beyond this machine without API keys; "
                 "anyone on the network can submit and download", host=settings.host)
    try:
        app = create_app(settings)
    except FacetalkError as exc:
        _exit_with(exc)
    except (OSError, sqlite3.Error) as exc:
        click.echo(f"error: cannot use the storage folder {settings.storage}: {exc}", err=True)
        click.echo("hint: choose a writable folder with --storage", err=True)
        sys.exit(2)
    # No limit_concurrency: it counts idle sockets too and then refuses /healthz; requests in
    # progress are limited by the app (RequestLimitMiddleware) and slow request heads are
    # closed by the protocol (see facetalk.service.api.connections).
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                access_log=access_log, http=guarded_http_protocol(settings.header_timeout),
                timeout_graceful_shutdown=10, server_header=False,
                # X-Forwarded-For sets the logged client address only from listed proxies.
                proxy_headers=bool(settings.forwarded_allow_ips),
                forwarded_allow_ips=list(settings.forwarded_allow_ips) or None)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@settings_options("worker")
@device_option
def worker(device: str | None, **flags: Any) -> None:
    """Render jobs from a Celery/Redis queue (SIGTERM hands running jobs back and stops)."""
    try:
        from ..service.celery.worker import run_worker
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        click.echo(f"error: the worker needs {exc.name}", err=True)
        click.echo("hint: pip install 'facetalk[server,queue]'", err=True)
        sys.exit(1)
    try:
        _use_device(device)
        run_worker(WorkerSettings.load(flags))
    except FacetalkError as exc:
        _exit_with(exc)
