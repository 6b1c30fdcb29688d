"""``facetalk bench`` runs end to end and its figures add up (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from facetalk.cli.bench import bench

pytestmark = pytest.mark.slow


def test_bench_measures_render_and_floor(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--seconds", "2", "--sizes", "256", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "256x256 crop: 50 frames in" in r.output
    assert "ratio to floor" in r.output and "best of" in r.output
    for stage in ("decode", "features", "render.warp", "render.resample", "encode"):
        assert stage in r.output
    row = json.loads(out.read_text())["results"][0]
    render, floor = row["render"], row["floor"]
    assert render["frames"] == floor["frames"] == 50
    assert len(row["floor_runs_s"]) == 2  # before and after the render
    assert floor["wall_s"] == min(row["floor_runs_s"])
    assert row["ratio_to_floor"] == pytest.approx(render["wall_s"] / floor["wall_s"])
    assert render["wall_s"] > 0 and render["cpu_s"] > 0 and render["peak_rss_mb"] > 50
    assert render["first_frame_s"] > 0


def test_bench_repeats_between_floor_runs_and_reports_the_median(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--seconds", "1", "--sizes", "256", "--repeat", "2",
                                   "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    first, second = data["results"]
    assert (first["repeat"], second["repeat"]) == (1, 2)
    # Three floor runs for two renders: the one between them serves both.
    assert first["floor_runs_s"][1] == second["floor_runs_s"][0]
    ratios = sorted(row["ratio_to_floor"] for row in (first, second))
    (summary,) = data["summary"]
    assert summary["runs"] == 2
    assert summary["ratio_to_floor"]["median"] == pytest.approx(sum(ratios) / 2)
    assert (summary["ratio_to_floor"]["min"], summary["ratio_to_floor"]["max"]) == tuple(ratios)
    assert "256 crop, 2 runs: ratio to floor median" in r.output
