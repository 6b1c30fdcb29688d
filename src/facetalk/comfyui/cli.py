"""``facetalk comfyui``: install the node pack into a ComfyUI checkout, convert Sonic workflows."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import click

from ..errors import FacetalkError

#: The loader written into ComfyUI's custom_nodes: it only imports facetalk's mappings,
#: falling back to the facetalk that ran the install when ComfyUI's Python lacks it.
LOADER = '''"""facetalk's ComfyUI nodes; written by `facetalk comfyui install`, safe to delete."""

try:
    from facetalk.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError:  # facetalk is not installed in ComfyUI's Python: use the installing copy
    sys.path.append({src!r})
    from facetalk.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
'''


def example_workflows() -> dict[str, str]:
    """The shipped example workflows: file name -> JSON text."""
    folder = resources.files("facetalk.comfyui").joinpath("examples")
    return {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".json")}


@click.group(name="comfyui")
def comfyui() -> None:
    """Use facetalk inside ComfyUI (nodes: FaceTalk Generate, FaceTalk Save MP4)."""


@comfyui.command()
@click.option("--comfyui-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The ComfyUI checkout (the folder with main.py and custom_nodes/).")
def install(comfyui_dir: Path) -> None:
    """Write custom_nodes/facetalk/ (a loader and the example workflows) into a ComfyUI checkout."""
    if not (comfyui_dir / "main.py").is_file() and not (comfyui_dir / "custom_nodes").is_dir():
        raise click.ClickException(f"{comfyui_dir} does not look like ComfyUI (no main.py, no custom_nodes/)")
    target = comfyui_dir / "custom_nodes" / "facetalk"
    (target / "example_workflows").mkdir(parents=True, exist_ok=True)
    src = str(Path(__file__).resolve().parents[2])
    (target / "__init__.py").write_text(LOADER.format(src=src), encoding="utf-8")
    for name, text in example_workflows().items():
        (target / "example_workflows" / name).write_text(text, encoding="utf-8")
    click.echo(f"installed {target} (restart ComfyUI to load it); Python running ComfyUI must have "
               f"facetalk's dependencies (pip install facetalk in its environment)")


@comfyui.command()
@click.argument("workflow", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the converted workflow (same format as the input).")
def convert(workflow: Path, output: Path) -> None:
    """Rewrite a saved Sonic workflow (UI or API format) to use FaceTalk Generate."""
    from .convert import convert as convert_workflow
    from .convert import detect_format

    try:
        data = json.loads(workflow.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"cannot read {workflow} as JSON: {exc}") from None
    try:
        kind = detect_format(data)
        out = convert_workflow(data)
    except FacetalkError as exc:
        raise click.ClickException(f"{exc.message}" + (f" ({exc.hint})" if exc.hint else "")) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"wrote {output} ({kind} format)")
