"""``facetalk bench``: render speed, memory and the encode-only floor on this machine.

The measuring (child processes, workload) is ``facetalk.measure.bench``; this module runs it
and prints the figures side by side.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import click

from ..measure.bench import _run_child, machine_info, speech_clip


@click.command("bench")
@click.option("--seconds", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Length of the speech workload.")
@click.option("--sizes", default="512,1024", show_default=True,
              help="Comma-separated output sizes (short side, px).")
@click.option("--framing", "framings", default="crop", show_default=True,
              help="Comma-separated framings: crop, full, vertical.")
@click.option("--repeat", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Renders per size, each between two floor runs; with more than one, "
                   "the median ratio is printed too (a drifting machine moves single runs).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write all figures to this JSON file.")
def bench(seconds: float, sizes: str, framings: str, repeat: int, json_path: Path | None
          ) -> None:
    """Measure render speed, memory and the encode-only floor on this machine."""
    from ..options import GenerationOptions

    fps = GenerationOptions().fps
    size_list = [int(s) for s in sizes.split(",") if s.strip()]
    framing_list = [f.strip() for f in framings.split(",") if f.strip()]
    portrait = str(resources.files("facetalk") / "assets" / "astronaut.png")
    results: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    info = machine_info()
    click.echo(f"machine: {info['cpu']} ({info['cores']} cores), Python {info['python']}")
    with tempfile.TemporaryDirectory() as tmp:
        audio = str(speech_clip(seconds, Path(tmp) / "speech.wav"))
        expected_frames = max(1, int(round(seconds * fps)))
        click.echo(f"workload: bundled portrait + {seconds:g} s of speech")
        for framing in framing_list:
            for size in size_list:
                out = str(Path(tmp) / f"r{size}{framing}.mp4")
                floor_args = {"portrait": portrait, "audio": audio, "size": size,
                              "framing": framing, "out": str(Path(tmp) / "floor.mp4")}
                # Every render runs between two floor runs and the faster of the two
                # counts: a slow moment of the machine during one floor run cannot
                # flatter the ratio. Repetitions share the floor run between them.
                before = _run_child("floor", **floor_args, frames=expected_frames)
                rows = []
                for i in range(repeat):
                    r = _run_child("render", portrait=portrait, audio=audio, size=size,
                                   framing=framing, out=out)
                    after = _run_child("floor", **floor_args, frames=r["frames"])
                    floors = [after] if before["frames"] != r["frames"] else [before, after]
                    before = after
                    f = min(floors, key=lambda run: run["wall_s"])
                    row = {"size": size, "framing": framing, "repeat": i + 1, "render": r,
                           "floor": f, "floor_runs_s": [run["wall_s"] for run in floors],
                           "ratio_to_floor": r["wall_s"] / f["wall_s"],
                           "fps": r["frames"] / r["wall_s"],
                           "realtime_x": r["audio_s"] / r["wall_s"]}
                    rows.append(row)
                    _print_row(row)
                results += rows
                if repeat > 1:
                    summaries.append(_summary(rows))
    if json_path is not None:
        json_path.write_text(json.dumps({"machine": info, "seconds": seconds,
                                         "results": results, "summary": summaries},
                                        indent=2))
        click.echo(f"wrote {json_path}")


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of the repeated runs of one size and framing (printed too)."""
    import statistics

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    first = [r["render"]["first_frame_s"] for r in rows
             if r["render"].get("first_frame_s") is not None]
    out = {"size": rows[0]["size"], "framing": rows[0]["framing"], "runs": len(rows),
           "ratio_to_floor": spread([r["ratio_to_floor"] for r in rows]),
           "render_wall_s": spread([r["render"]["wall_s"] for r in rows]),
           "floor_wall_s": spread([r["floor"]["wall_s"] for r in rows]),
           "peak_rss_mb": spread([r["render"]["peak_rss_mb"] for r in rows]),
           "first_frame_s": spread(first) if first else None}
    ratio, wall = out["ratio_to_floor"], out["render_wall_s"]
    click.echo(f"\n{out['size']} {out['framing']}, {len(rows)} runs: ratio to floor median "
               f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f}), render "
               f"{wall['median']:.2f} s ({wall['min']:.2f}-{wall['max']:.2f})"
               + (f", first frame median {out['first_frame_s']['median']:.2f} s"
                  if first else ""))
    return out


def _print_row(row: dict[str, Any]) -> None:
    r, f = row["render"], row["floor"]
    click.echo(
        f"\n{r['width']}x{r['height']} {row['framing']}: {r['frames']} frames in "
        f"{r['wall_s']:.2f} s = {row['fps']:.0f} frames/s, {row['realtime_x']:.1f}x real "
        f"time; encode floor {f['wall_s']:.2f} s ({r['frames'] / f['wall_s']:.0f} frames/s, "
        f"best of {' / '.join(f'{w:.2f}' for w in row['floor_runs_s'])} s); "
        f"ratio to floor {row['ratio_to_floor']:.2f}")
    click.echo(f"  CPU seconds (all threads): render {r['cpu_s']:.2f}, floor {f['cpu_s']:.2f} "
               f"(the box has {os.cpu_count()} cores: wall x cores is the most there is)")
    first = f"{r['first_frame_s']:.2f} s" if r.get("first_frame_s") is not None else "n/a"
    click.echo(f"  peak RSS {r['peak_rss_mb']:.0f} MB (floor run {f['peak_rss_mb']:.0f} MB); "
               f"first frame queued {first} after launching the process")
    stages = {**{k: v for k, v in r["timings"].items()}}
    click.echo("  stages (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    click.echo("  inside render (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["stats"].items()))
