"""``facetalk render`` and ``facetalk demo``: one portrait + one recording -> an MP4."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import click

from ..errors import FacetalkError
from ..options import GenerationOptions
from .common import _fail, device_option, generation_options, options_from_flags

DEMO_TEXT = ("Hello! I am a talking portrait, made on this computer. My voice never leaves "
             "the building. Maybe you would like to make one, too?")


def _run_render(portrait: Any, audio: Any, options: GenerationOptions, out: Path,
                quiet: bool, as_json: bool, device: str | None = None) -> None:
    from tqdm import tqdm

    from ..pipeline import Progress, generate

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


@click.command()
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


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("out/demo.mp4"), show_default=True, help="Where to write the MP4.")
@click.option("--text", default=DEMO_TEXT, help="What the demo says (needs espeak-ng).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary line.")
@device_option
@generation_options
def demo(output: Path, text: str, quiet: bool, device: str | None, **flags: Any) -> None:
    """Render the bundled sample portrait saying a sentence (espeak-ng, or a bundled clip)."""
    try:
        from ..media import tts

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
