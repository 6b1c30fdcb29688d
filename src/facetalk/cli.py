"""The ``facetalk`` command: render, demo (and more subcommands as they land).

Flags for every GenerationOptions field are generated from the dataclass (the field
name with dashes), so the CLI cannot drift from the library. Errors print one line
with a hint and exit non-zero; set FACETALK_DEBUG=1 to see a traceback instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import FacetalkError
from .options import PRESETS, GenerationOptions, _base_type

DEMO_TEXT = ("Hello! I am a talking portrait, made on this computer. My voice never leaves "
             "the building. Maybe you would like to make one, too?")


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
    from .devices import DEVICES, ENV

    return click.option(
        "--device", type=click.Choice(DEVICES), default=None, envvar=ENV, show_envvar=True,
        help="Where the face models run: auto (an accelerator if ONNX Runtime has one, "
             "else the CPU), cpu, cuda, tensorrt, openvino or cann. [default: auto]")(func)


def _run_render(portrait: Any, audio: Any, options: GenerationOptions, out: Path,
                quiet: bool, as_json: bool, device: str | None = None) -> None:
    from tqdm import tqdm

    from .pipeline import Progress, generate

    show = not quiet and sys.stderr.isatty()
    bar = tqdm(total=100, unit="%", disable=not show, leave=False,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")

    def on_progress(p: Progress) -> None:
        bar.set_description_str(f"{p.stage:>9}")
        if p.frames_total:
            eta = f"eta {p.eta_s:.0f}s" if p.eta_s is not None else ""
            bar.set_postfix_str(f"{p.frames_done}/{p.frames_total} frames {eta}")
        bar.n = int(p.fraction * 100)
        bar.refresh()

    try:
        result = generate(portrait, audio, options, on_progress, output=out, device=device)
    finally:
        bar.close()
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        click.echo(json.dumps({
            "path": str(result.path), "duration": result.duration, "frames": result.frames,
            "width": result.width, "height": result.height, "fps": result.fps,
            "wall_s": result.wall_s, "timings": result.timings, "warnings": result.warnings,
            "sync_offset_ms": result.sync_offset_ms, "render_id": result.render_id,
            "options": result.options.to_dict()}, indent=2))
    elif not quiet:
        click.echo(result.summary())


#: Subcommands that live in their own modules, imported only when used (so that
#: ``facetalk render`` never loads the web stack). name -> "module:attribute".
LAZY_COMMANDS: dict[str, str] = {
    "bench": "facetalk.bench:bench",
    "batch": "facetalk.batch:batch",
    "eval": "facetalk.evalcli:eval_command",
    "serve": "facetalk.service.cli:serve",
    "worker": "facetalk.service.cli:worker",
    "verify": "facetalk.provenance:verify_command",
    "doctor": "facetalk.doctor:doctor",
    "stream-bench": "facetalk.streambench:stream_bench",
}


class LazyGroup(click.Group):
    """A click group whose extra subcommands are imported on first use."""

    def _available(self) -> dict[str, str]:
        import importlib.util

        out = {}
        for name, target in LAZY_COMMANDS.items():
            module = target.split(":")[0]
            try:
                if importlib.util.find_spec(module) is not None:
                    out[name] = target
            except ModuleNotFoundError:
                continue
        return out

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names |= {n for n in self._available() if self.get_command(ctx, n) is not None}
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        target = self._available().get(name)
        if target is None:
            return None
        import importlib

        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr, None)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="facetalk")
def main() -> None:
    """facetalk: one portrait + one speech recording -> a talking MP4, offline on a CPU."""


@main.command()
@click.argument("portrait", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("audio", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Where to write the MP4.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@device_option
@generation_options
def render(portrait: Path, audio: Path, output: Path, quiet: bool, as_json: bool,
           device: str | None, **flags: Any) -> None:
    """Render PORTRAIT (JPG/PNG/...) speaking AUDIO (WAV/MP3/M4A/...) into an MP4."""
    try:
        _run_render(portrait, audio, options_from_flags(flags), output, quiet, as_json, device)
    except (FacetalkError, Exception) as exc:
        _fail(exc)


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("out/demo.mp4"), show_default=True, help="Where to write the MP4.")
@click.option("--text", default=DEMO_TEXT, help="What the demo says (needs espeak-ng).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@device_option
@generation_options
def demo(output: Path, text: str, quiet: bool, device: str | None, **flags: Any) -> None:
    """Render the bundled sample portrait saying a sentence (espeak-ng, or a bundled clip)."""
    try:
        from . import tts

        assets = resources.files("facetalk") / "assets"
        portrait = (assets / "astronaut.png").read_bytes()
        if tts.available():
            speech = tts.speak(text, wpm=150)
            with tempfile.TemporaryDirectory() as tmp:
                wav = os.path.join(tmp, "speech.wav")
                tts.write_wav(wav, speech.samples, speech.rate)
                audio = Path(wav).read_bytes()
        else:
            if text != DEMO_TEXT:
                click.echo("warning: espeak-ng is not installed; using the bundled clip "
                           "instead of --text", err=True)
            audio = (assets / "speech.wav").read_bytes()
        _run_render(portrait, audio, options_from_flags(flags), output, quiet, False, device)
    except (FacetalkError, Exception) as exc:
        _fail(exc)


if __name__ == "__main__":  # pragma: no cover
    main()
