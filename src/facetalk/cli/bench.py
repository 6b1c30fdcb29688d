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

from ..measure.bench import _run_child, machine_info, phone_portrait, speech_clip

PORTRAITS = {"small": "the bundled 512x512 portrait",
             "phone": "a 3024x4032 phone-size JPEG with EXIF rotation, made from it"}


def _portraits(spec: str, tmp: Path) -> list[tuple[str, str]]:
    """(name, path) of each portrait ``--portrait`` names (small, phone or a file)."""
    out = []
    for name in (p.strip() for p in spec.split(",") if p.strip()):
        if name == "small":
            out.append((name, str(resources.files("facetalk") / "assets" / "astronaut.png")))
        elif name == "phone":
            out.append((name, str(phone_portrait(tmp / "phone.jpg"))))
        elif Path(name).is_file():
            out.append((Path(name).name, name))
        else:
            raise click.BadParameter(f"{name!r} is not small, phone or a file", param_hint="--portrait")
    return out


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
@click.option("--portrait", "portrait_spec", default="small,phone", show_default=True,
              help="Comma-separated portraits: small (the bundled 512 px one), phone (a "
                   "3024x4032 EXIF-rotated JPEG made from it) or a file.")
@click.option("--memory", is_flag=True,
              help="Memory workload instead: render --seconds and --memory-seconds of speech "
                   "(no floor runs) and compare their peak RSS.")
@click.option("--memory-seconds", type=click.FloatRange(1, 3600), default=1800.0,
              show_default=True, help="Length of the long clip of --memory.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write all figures to this JSON file.")
def bench(seconds: float, sizes: str, framings: str, repeat: int, portrait_spec: str,
          memory: bool, memory_seconds: float, json_path: Path | None) -> None:
    """Measure render speed, memory and the encode-only floor on this machine."""
    from ..options import GenerationOptions

    fps = GenerationOptions().fps
    size_list = [int(s) for s in sizes.split(",") if s.strip()]
    framing_list = [f.strip() for f in framings.split(",") if f.strip()]
    results: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    info = machine_info()
    click.echo(f"machine: {info['cpu']} ({info['cores']} cores), Python {info['python']}")
    with tempfile.TemporaryDirectory() as tmp:
        portraits = _portraits(portrait_spec, Path(tmp))
        audio = str(speech_clip(seconds, Path(tmp) / "speech.wav"))
        if memory:
            long_audio = str(speech_clip(memory_seconds, Path(tmp) / "long.wav"))
            results = _memory(portraits, size_list, framing_list, {seconds: audio,
                                                                   memory_seconds: long_audio},
                              Path(tmp))
        for name, portrait in [] if memory else portraits:
            results_, summaries_ = _speed(name, portrait, audio, seconds, fps, size_list,
                                          framing_list, repeat, Path(tmp))
            results += results_
            summaries += summaries_
    if json_path is not None:
        json_path.write_text(json.dumps({"machine": info, "seconds": seconds,
                                         "results": results, "summary": summaries},
                                        indent=2))
        click.echo(f"wrote {json_path}")


def _describe(name: str, portrait: str) -> str:
    from PIL import Image

    with Image.open(portrait) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    rotated = f", EXIF orientation {orientation}" if orientation != 1 else ""
    return f"{name} portrait ({w}x{h} as stored{rotated})"


def _memory(portraits: list[tuple[str, str]], sizes: list[int], framings: list[str],
            clips: dict[float, str], tmp: Path) -> list[dict[str, Any]]:
    """Peak RSS of a short and a long render of each portrait, size and framing."""
    rows = []
    for name, portrait in portraits:
        for framing in framings:
            for size in sizes:
                runs = {}
                for secs, audio in clips.items():
                    r = _run_child("render", portrait=portrait, audio=audio, size=size,
                                   framing=framing, out=str(tmp / "mem.mp4"), sharpness=False)
                    runs[secs] = r
                (s0, short), (s1, long) = sorted(runs.items())
                row = {"portrait": name, "size": size, "framing": framing, "memory": True,
                       "short_s": s0, "long_s": s1, "short": short, "long": long,
                       "rss_growth_mb": long["peak_rss_mb"] - short["peak_rss_mb"]}
                rows.append(row)
                click.echo(
                    f"\nmemory, {_describe(name, portrait)}, {short['width']}x{short['height']} "
                    f"{framing}: peak RSS {short['peak_rss_mb']:.0f} MB for {s0:g} s of speech, "
                    f"{long['peak_rss_mb']:.0f} MB for {s1:g} s ({row['rss_growth_mb']:+.0f} MB); "
                    f"renders took {short['wall_s']:.1f} s and {long['wall_s']:.1f} s")
    return rows


def _speed(name: str, portrait: str, audio: str, seconds: float, fps: int, size_list: list[int],
           framing_list: list[str], repeat: int, tmp: Path
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Renders of one portrait between floor runs, per framing and size."""
    results: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    expected_frames = max(1, int(round(seconds * fps)))
    click.echo(f"\nworkload: {_describe(name, portrait)} + {seconds:g} s of speech")
    for framing in framing_list:
        for size in size_list:
            out = str(tmp / f"r{size}{framing}.mp4")
            floor_args = {"portrait": portrait, "audio": audio, "size": size,
                          "framing": framing, "out": str(tmp / "floor.mp4")}
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
                row = {"portrait": name, "size": size, "framing": framing,
                       "repeat": i + 1, "render": r,
                       "floor": f, "floor_runs_s": [run["wall_s"] for run in floors],
                       "ratio_to_floor": r["wall_s"] / f["wall_s"],
                       "fps": r["frames"] / r["wall_s"],
                       "realtime_x": r["audio_s"] / r["wall_s"]}
                rows.append(row)
                _print_row(row)
            results += rows
            if repeat > 1:
                summaries.append(_summary(rows))
    return results, summaries


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and range of the repeated runs of one size and framing (printed too)."""
    import statistics

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    first = [r["render"]["first_frame_s"] for r in rows
             if r["render"].get("first_frame_s") is not None]
    out = {"portrait": rows[0]["portrait"], "size": rows[0]["size"],
           "framing": rows[0]["framing"], "runs": len(rows),
           "ratio_to_floor": spread([r["ratio_to_floor"] for r in rows]),
           "render_wall_s": spread([r["render"]["wall_s"] for r in rows]),
           "floor_wall_s": spread([r["floor"]["wall_s"] for r in rows]),
           "peak_rss_mb": spread([r["render"]["peak_rss_mb"] for r in rows]),
           "first_frame_s": spread(first) if first else None}
    ratio, wall = out["ratio_to_floor"], out["render_wall_s"]
    click.echo(f"\n{out['portrait']} {out['size']} {out['framing']}, {len(rows)} runs: ratio to floor median "
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
    if r.get("sharpness") is not None:
        click.echo(f"  sharpness against the portrait {r['sharpness']:.2f} (face, first frame; "
                   "Laplacian variance over the portrait resized to the output)")
    click.echo(f"  peak RSS {r['peak_rss_mb']:.0f} MB (floor run {f['peak_rss_mb']:.0f} MB); "
               f"first frame queued {first} after launching the process")
    stages = {**{k: v for k, v in r["timings"].items()}}
    click.echo("  stages (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    click.echo("  inside render (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["stats"].items()))
