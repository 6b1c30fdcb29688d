"""What the commands share: option flags generated from GenerationOptions, --device, and
the one-line error report (exit code by error type, a hint, no traceback unless
FACETALK_DEBUG=1). Light on purpose: every command module imports it."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import FacetalkError
from ..options import PRESETS, GenerationOptions, _base_type


def _option_decorators() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    decorators = []
    for f in dataclasses.fields(GenerationOptions):
        meta = f.metadata
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(f)
        default_txt = "audio length" if f.name == "duration" else (
            "off" if f.default is None else str(f.default))
        help_txt = f"{meta['help']} [default: {default_txt}]"
        if kind is bool:
            decorators.append(click.option(
                f"{flag}/--no-{f.name.replace('_', '-')}", f.name, default=None, help=help_txt))
            continue
        if meta.get("choices"):
            ptype: Any = click.Choice(meta["choices"])
        elif kind is int:
            ptype = click.IntRange(meta.get("min"), meta.get("max"))
        elif kind is float:
            ptype = click.FloatRange(meta.get("min"), meta.get("max"))
        else:
            ptype = str
        metavar = None if meta.get("choices") else (
            "SECONDS" if f.name == "duration" else kind.__name__.upper())
        decorators.append(click.option(flag, f.name, type=ptype, default=None, help=help_txt,
                                       metavar=metavar, show_default=False))
    decorators.append(click.option(
        "--preset", type=click.Choice(sorted(PRESETS)), default=None,
        help="Named bundle of options (explicit flags win): "
             + "; ".join(f"{k} = {v}" for k, v in PRESETS.items())))
    return decorators


def generation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator adding one flag per GenerationOptions field (plus --preset)."""
    for deco in reversed(_option_decorators()):
        func = deco(func)
    return func


def options_from_flags(flags: dict[str, Any]) -> GenerationOptions:
    """GenerationOptions from parsed flags: preset first, then flags that were given."""
    names = {f.name for f in dataclasses.fields(GenerationOptions)}
    given = {k: v for k, v in flags.items() if k in names and v is not None}
    return GenerationOptions.build(flags.get("preset"), **given)


def _fail(exc: BaseException) -> None:
    if os.environ.get("FACETALK_DEBUG"):
        raise exc
    if isinstance(exc, FacetalkError):
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
    click.echo("hint: this is a bug in facetalk; run with FACETALK_DEBUG=1 for details",
               err=True)
    sys.exit(1)


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--device``: where the neural stages run (a runtime setting, not a video option)."""
    from ..devices import DEVICES, ENV

    return click.option(
        "--device", type=click.Choice(DEVICES), default=None, envvar=ENV, show_envvar=True,
        help="Where the face models run: auto (an accelerator if ONNX Runtime has one, "
             "else the CPU), cpu, cuda, tensorrt, openvino or cann. [default: auto]")(func)
