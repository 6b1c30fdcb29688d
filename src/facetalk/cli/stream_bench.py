"""``facetalk stream-bench``: latency and frame rate of live mode, measured end to end
(the measuring is ``facetalk.measure.streambench``)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("stream-bench")
@click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Speech to stream (any format; default: synthesized).")
@click.option("--seconds", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Length of the default synthesized speech.")
@click.option("--sessions", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Concurrent live sessions.")
@click.option("--size", type=click.IntRange(256, 2048), default=512, show_default=True,
              help="Frame size (short side).")
@click.option("--url", default=None, help="Target this server instead of starting one.")
@click.option("--api-key", default=None, envvar="FACETALK_API_KEY", help="For --url.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the figures to this JSON file.")
def stream_bench(audio: Path | None, seconds: float, sessions: int, size: int,
                 url: str | None, api_key: str | None, json_path: Path | None) -> None:
    """Stream speech through live mode in real time and report latency and frame rate."""
    from ..measure.streambench import run_stream_bench

    s, speech_s = run_stream_bench(audio, seconds, sessions, size, url, api_key)
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    cpu = s["server_cpu_percent"]
    click.echo(f"{sessions} session(s) asked, {s['served']} served, {s['refused']} refused"
               + (f" ({'; '.join(s['refusals'])})" if s["refused"] else "")
               + f"; {speech_s:.1f} s of speech at {size} px: latency p50 {ms(s['latency_p50_ms'])} ms, "
               f"p95 {ms(s['latency_p95_ms'])} ms, max {ms(s['latency_max_ms'])} ms; "
               f"{s['fps']:.1f} frames/s (slowest session); of {s['expected']} frames "
               f"{s['dropped']} dropped, {s['late']} late (> 150 ms); server counted "
               f"{s['server_dropped']} dropped, {s['server_late']} late"
               + (f"; server CPU {cpu:.0f}% of one core" if cpu is not None else ""))
    if json_path is not None:
        json_path.write_text(json.dumps(s, indent=2))
