"""``facetalk verify``: print a video's AI-generated label and facetalk watermark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import FacetalkError
from ..provenance.verify import verify_report
from .common import _fail


def _describe(report: dict[str, Any]) -> list[str]:
    meta, mark = report["metadata"], report["watermark"]
    if meta["ai_generated"]:
        parts = [f"generator {meta['generator']}" if meta["generator"] else "",
                 f"render {meta['render_id']}" if meta["render_id"] else "",
                 f"created {meta['creation_time']}" if meta["creation_time"] else ""]
        lines = ["metadata: labelled AI-generated (" + ", ".join(x for x in parts if x) + ")"]
    else:
        lines = ["metadata: no AI-generated label"]
    if mark["found"]:
        pl = mark["payload"]
        lines.append(f"watermark: {pl['generator']} {pl['version']}, render {pl['render_id']}, "
                     f"made {pl['date']} (confidence {mark['confidence']:.2f})")
    else:
        lines.append("watermark: no facetalk watermark found")
    return lines


@click.command("verify")
@click.argument("video", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def verify_command(video: Path, as_json: bool) -> None:
    """Report VIDEO's AI-generated metadata label and facetalk watermark (render id, date)."""
    try:
        report = verify_report(video)
    except (FacetalkError, Exception) as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for line in _describe(report):
            click.echo(line)
