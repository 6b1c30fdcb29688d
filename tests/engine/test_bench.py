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
    r = CliRunner().invoke(bench, ["--seconds", "2", "--sizes", "256", "--portrait", "small",
                                   "--json", str(out)])
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
                                   "--portrait", "small", "--json", str(out)])
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
    assert "small 256 crop, 2 runs: ratio to floor median" in r.output


def test_phone_portrait_is_phone_sized_and_stored_sideways(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from facetalk.measure.bench import phone_portrait
    from facetalk.media.image import load_portrait

    path = phone_portrait(tmp_path / "phone.jpg")
    with Image.open(path) as im:
        assert im.format == "JPEG" and im.size == (4032, 3024)  # landscape as stored
        assert im.getexif()[0x0112] == 6
        stored = np.asarray(im.convert("RGB"))
    upright = load_portrait(str(path))
    assert upright.shape == (4032, 3024, 3)  # the loader honoured the tag
    assert np.array_equal(upright, np.rot90(stored, -1))
    assert path.stat().st_size > 2_000_000  # grain: not trivially compressible


def test_bench_phone_workload_reports_sharpness(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--seconds", "1", "--sizes", "256", "--portrait", "phone",
                                   "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "phone portrait (4032x3024 as stored, EXIF orientation 6)" in r.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["portrait"] == "phone" and row["render"]["width"] == 256
    assert 0.3 < row["render"]["sharpness"] < 3.0
    assert "sharpness against the portrait" in r.output


def test_bench_memory_compares_a_short_and_a_long_clip(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(bench, ["--seconds", "1", "--memory", "--memory-seconds", "4",
                                   "--sizes", "256", "--portrait", "small", "--json", str(out)])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["short"]["audio_s"] == pytest.approx(1.0, abs=0.05)
    assert row["long"]["audio_s"] == pytest.approx(4.0, abs=0.05)
    assert row["long"]["frames"] == 100 and "floor" not in row
    assert row["rss_growth_mb"] == pytest.approx(
        row["long"]["peak_rss_mb"] - row["short"]["peak_rss_mb"])
    assert "memory, small portrait (512x512 as stored), 256x256 crop: peak RSS" in r.output
