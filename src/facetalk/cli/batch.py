"""``facetalk batch JOBS.csv --out DIR``: many renders, one progress bar, failures isolated.

The CSV has a header row with ``portrait`` and ``audio`` columns (paths, relative to
the CSV's folder), an optional ``output`` column (file name inside ``--out``) and any
GenerationOptions field as an optional column for per-row options (empty = default),
plus an optional ``preset`` column. Each row renders in a worker process; a bad row
(missing file, no face, invalid option...) is reported in the summary and the batch
goes on. Exit code 0 when every row succeeded, 2 when some failed.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import FacetalkError


@dataclass
class Row:
    """One job of the batch, as read from the CSV."""

    index: int
    portrait: Path
    audio: Path
    output: Path
    options: dict[str, str]


@dataclass
class Outcome:
    """What happened to one row."""

    index: int
    ok: bool
    output: str
    duration: float = 0.0
    frames: int = 0
    wall_s: float = 0.0
    error: str = ""


def read_jobs(csv_path: Path, out_dir: Path) -> list[Row]:
    """Rows of the CSV; paths resolved against the CSV's folder."""
    from ..options import GenerationOptions

    known = {f for f in GenerationOptions.__dataclass_fields__} | {"preset"}
    base = csv_path.parent
    rows = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = set(reader.fieldnames or [])
        missing = {"portrait", "audio"} - header
        if missing:
            raise click.ClickException(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
        unknown = header - known - {"portrait", "audio", "output"}
        if unknown:
            raise click.ClickException(f"{csv_path}: unknown column(s) {', '.join(sorted(unknown))}")
        for i, rec in enumerate(reader, start=1):
            portrait = base / (rec.get("portrait") or "").strip()
            audio = base / (rec.get("audio") or "").strip()
            name = (rec.get("output") or "").strip() or f"{i:03d}_{portrait.stem}.mp4"
            # Output names are names, not paths: nothing is written outside --out.
            out = out_dir / Path(name).name
            opts = {k: v.strip() for k, v in rec.items()
                    if k in known and v is not None and v.strip() != ""}
            rows.append(Row(i, portrait, audio, out, opts))
    return rows


def _render_row(row: Row, progress: Any) -> Outcome:
    """Worker: render one row, report progress, turn any failure into an Outcome."""
    from ..options import GenerationOptions
    from ..pipeline import Progress, generate

    def on_progress(p: Progress) -> None:
        if p.frames_total:
            progress.put((row.index, p.frames_done, p.frames_total))

    t0 = time.perf_counter()
    try:
        options = GenerationOptions.from_mapping(row.options)
        res = generate(row.portrait, row.audio, options, on_progress, output=row.output)
    except FacetalkError as exc:
        return Outcome(row.index, False, str(row.output), wall_s=time.perf_counter() - t0,
                       error=f"{exc.code}: {exc.message}")
    except Exception as exc:
        return Outcome(row.index, False, str(row.output), wall_s=time.perf_counter() - t0,
                       error=f"internal error: {type(exc).__name__}: {exc}")
    return Outcome(row.index, True, str(res.path), res.duration, res.frames,
                   time.perf_counter() - t0)


def _worker_init() -> None:
    # Several renders share the cores: keep each one's thread pools small.
    import cv2

    cv2.setNumThreads(1)


def run_batch(rows: list[Row], workers: int, show_progress: bool) -> list[Outcome]:
    """Render all rows with ``workers`` processes; returns outcomes in row order."""
    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    manager = ctx.Manager()
    progress = manager.Queue()
    done_frames: dict[int, int] = {}
    total_frames: dict[int, int] = {}
    bar = tqdm(total=len(rows), unit="job", disable=not show_progress,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")
    outcomes: dict[int, Outcome] = {}
    env_threads = os.environ.get("FACETALK_ENCODER_THREADS")
    if workers > 1 and env_threads is None:
        # Handed to the workers: x264 gets its share of the cores, not all of them.
        os.environ["FACETALK_ENCODER_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    try:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                    initializer=_worker_init) as pool:
            futures = {pool.submit(_render_row, r, progress): r for r in rows}
            pending = set(futures)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.2,
                                            return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    row = futures[fut]
                    outcomes[row.index] = fut.result()
                while True:
                    try:
                        idx, done, total = progress.get_nowait()
                    except queue.Empty:
                        break
                    done_frames[idx] = done
                    total_frames[idx] = total
                ok = sum(o.ok for o in outcomes.values())
                bar.n = len(outcomes)
                frames = sum(done_frames.values())
                bar.set_description_str(f"{len(outcomes)}/{len(rows)} jobs")
                bar.set_postfix_str(f"{frames} frames, {ok} ok, {len(outcomes) - ok} failed")
                bar.refresh()
    finally:
        bar.close()
        manager.shutdown()
        if workers > 1 and env_threads is None:
            os.environ.pop("FACETALK_ENCODER_THREADS", None)
    return [outcomes[r.index] for r in rows]


@click.command("batch")
@click.argument("jobs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the MP4s.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Render processes (up to the number of cores helps).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def batch(jobs: Path, out_dir: Path, workers: int, quiet: bool) -> None:
    """Render every row of JOBS (CSV: portrait,audio[,output][,option columns...])."""
    import sys

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = read_jobs(jobs, out_dir)
    if not rows:
        raise click.ClickException(f"{jobs}: no rows")
    t0 = time.perf_counter()
    results = run_batch(rows, workers, show_progress=not quiet and sys.stderr.isatty())
    wall = time.perf_counter() - t0
    width = max(len(Path(o.output).name) for o in results)
    click.echo(f"{'row':>4}  {'status':6}  {'video s':>7}  {'frames':>6}  {'wall s':>6}  "
               f"{'output'.ljust(width)}  error")
    for o in results:
        click.echo(f"{o.index:>4}  {'ok' if o.ok else 'FAILED':6}  {o.duration:7.2f}  "
                   f"{o.frames:>6}  {o.wall_s:6.1f}  {Path(o.output).name.ljust(width)}  {o.error}")
    good = [o for o in results if o.ok]
    frames = sum(o.frames for o in good)
    video = sum(o.duration for o in good)
    click.echo(f"{len(good)}/{len(results)} succeeded: {video:.1f} s of video, {frames} frames "
               f"in {wall:.1f} s ({frames / max(wall, 1e-9):.0f} frames/s, workers={workers})")
    if len(good) < len(results):
        sys.exit(2)
