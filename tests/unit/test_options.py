"""GenerationOptions: validation, presets, loose-value coercion, CLI flag derivation."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from facetalk import GenerationOptions, InvalidInput
from facetalk.cli import main, options_from_flags
from facetalk.options import PRESETS, field_info


def test_defaults_follow_the_reference_names() -> None:
    o = GenerationOptions()
    assert o.duration is None  # the audio's own length, never a fixed 10 s
    assert (o.min_resolution, o.expand_ratio, o.dynamic_scale, o.motion_scale) == (512, 0.2, 1.0, 1.0)
    assert (o.inference_steps, o.fps, o.framing) == (25, 25, "crop")
    assert o.lip_sync_correction and o.smooth_motion and o.blink
    assert o.quality_tier == "quality"
    assert GenerationOptions(inference_steps=10).quality_tier == "fast"


@pytest.mark.parametrize("bad", [
    {"min_resolution": 100}, {"min_resolution": 4096}, {"dynamic_scale": 0.1},
    {"motion_scale": -1}, {"framing": "square"}, {"fps": 0}, {"duration": 0},
    {"expand_ratio": 1.5}, {"blink": "yes"}, {"seed": -1}, {"min_resolution": 512.5},
    {"dynamic_scale": float("nan")}, {"sync_offset_ms": 900},
    # A video longer than the longest audio the box takes (900,000 frames for 0.6 s of
    # audio was accepted once), and a duration that overflowed further on.
    {"duration": 36000}, {"duration": 1e308},
])
def test_invalid_values_are_refused_on_construction(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        GenerationOptions(**bad)  # type: ignore[arg-type]


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GenerationOptions().fps = 30  # type: ignore[misc]


def test_presets_and_explicit_values() -> None:
    fast = GenerationOptions.build("fast")
    assert fast.inference_steps == PRESETS["fast"]["inference_steps"]
    assert fast.quality_tier == "fast"
    q = GenerationOptions.build("quality", min_resolution=768)
    assert q.min_resolution == 768 and q.inference_steps == PRESETS["quality"]["inference_steps"]
    with pytest.raises(InvalidInput):
        GenerationOptions.build("ultra")


def test_loose_strings_are_converted_by_field_type() -> None:
    o = GenerationOptions.from_mapping({"min_resolution": "768", "blink": "false",
                                        "duration": "", "dynamic_scale": "1.1",
                                        "framing": "full", "preset": "fast"})
    assert o.min_resolution == 768 and o.blink is False and o.duration is None
    assert o.dynamic_scale == pytest.approx(1.1) and o.framing == "full"
    with pytest.raises(InvalidInput):
        GenerationOptions.from_mapping({"fps": "fast"})
    with pytest.raises(InvalidInput):
        GenerationOptions.from_mapping({"no_such_option": 1})


def test_every_field_has_a_cli_flag_and_help() -> None:
    out = CliRunner().invoke(main, ["render", "--help"], terminal_width=200).output
    for f in field_info():
        flag = "--" + f["name"].replace("_", "-")
        assert flag in out, flag
        assert f["help"], f["name"]
    assert "--preset" in out


def test_flags_map_to_options() -> None:
    o = options_from_flags({"min_resolution": 1024, "dynamic_scale": 1.1, "blink": False,
                            "preset": "fast", "fps": None})
    assert (o.min_resolution, o.dynamic_scale, o.blink, o.inference_steps, o.fps) == (
        1024, 1.1, False, PRESETS["fast"]["inference_steps"], 25)


def test_readme_documents_every_parameter() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Parameters", 1)[1].split("\n## ", 1)[0]
    for f in field_info():
        assert f"| `{f['name']}` |" in table, f["name"]


def test_text_fields_refuse_other_types() -> None:
    with pytest.raises(InvalidInput):
        GenerationOptions(label=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        GenerationOptions(framing=3)  # type: ignore[arg-type]


def test_duration_may_reach_the_longest_audio_accepted() -> None:
    from facetalk.settings import Limits

    assert GenerationOptions(duration=Limits().max_audio_seconds).duration == 1800.0
