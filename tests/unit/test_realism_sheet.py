"""The blind realism test's tooling on synthetic inputs: normalisation, sheets, key and scoring.

No face model runs here: landmarks are made up, so what is checked is the geometry and the bookkeeping
(a mis-levelled or off-centre crop, a tile missing from the key or a miscounted answer would fail).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


rs = _load("realism_sheet")


def _mouth(left: tuple[float, float], right: tuple[float, float], open_px: float = 0.0) -> np.ndarray:
    """478 landmarks with only the mouth ones meaningful: corners, outer and inner lip mid-points."""
    lm = np.zeros((478, 3), np.float32)
    lx, ly = left
    rx, ry = right
    mx, my = (lx + rx) / 2, (ly + ry) / 2
    ux, uy = (rx - lx), (ry - ly)
    n = np.hypot(ux, uy)
    dx, dy = -uy / n, ux / n  # "down" for a level mouth
    lm[rs.CORNER_L, :2] = left
    lm[rs.CORNER_R, :2] = right
    half = open_px / 2
    lm[rs.INNER_TOP, :2] = (mx - dx * half, my - dy * half)
    lm[rs.INNER_BOTTOM, :2] = (mx + dx * half, my + dy * half)
    lm[rs.OUTER_TOP, :2] = (mx - dx * (half + 10), my - dy * (half + 10))
    lm[rs.OUTER_BOTTOM, :2] = (mx + dx * (half + 14), my + dy * (half + 14))
    return lm


def _dots(shape: tuple[int, int], pts: list[tuple[float, float]], colours: list[tuple[int, int, int]]):  # type: ignore[no-untyped-def]
    """Grey picture with a coloured disc on each point, sized to stay a few pixels wide in the tile."""
    img = np.full((*shape, 3), 128, np.uint8)
    r = max(6, round(0.05 * float(np.hypot(pts[1][0] - pts[0][0], pts[1][1] - pts[0][1]))))
    for (x, y), c in zip(pts, colours, strict=True):
        cv2.circle(img, (round(x), round(y)), r, c, -1)
    return img


def _centroid(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    d = np.abs(img.astype(int) - np.array(colour)).sum(axis=2)
    ys, xs = np.nonzero(d < 90)
    assert len(xs) > 10, "marker lost"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize(("left", "right", "shape"), [
    ((300.0, 420.0), (700.0, 380.0), (900, 1000)),  # large, tilted: shrunk then rotated
    ((40.0, 60.0), (90.0, 72.0), (140, 150)),  # small, tilted the other way: enlarged
])
def test_corners_land_level_and_w_apart(left, right, shape) -> None:  # type: ignore[no-untyped-def]
    p = rs.Params(mouth_px=112, box_w=2.0, box_h=1.5, jpeg_quality=95)
    lm = _mouth(left, right, open_px=8)
    img = _dots(shape, [left, right], [(255, 0, 0), (0, 0, 255)])
    # A nose-side marker a third of a mouth width above the mouth's middle: up must stay up.
    w = float(np.hypot(right[0] - left[0], right[1] - left[1]))
    up = np.array([(right[1] - left[1]) / w, -(right[0] - left[0]) / w])
    nose = (np.array(left) + np.array(right)) / 2 + up * w / 3
    cv2.circle(img, (round(nose[0]), round(nose[1])), max(6, round(0.05 * w)), (0, 255, 0), -1)
    tile = rs.normalise(img, lm, p)
    assert tile.shape == (168, 224, 3)
    a, b = _centroid(tile, (255, 0, 0)), _centroid(tile, (0, 0, 255))
    n = _centroid(tile, (0, 255, 0))
    assert abs(n[0] - 112) < 2.0 and abs(((a[1] + b[1]) / 2 - n[1]) - 112 / 3) < 2.5
    assert abs(a[1] - b[1]) < 2.0  # level
    assert abs((b[0] - a[0]) - 112) < 3.0  # W apart
    assert abs((a[0] + b[0]) / 2 - 112) < 2.0  # centred across
    # Down the box: the outer lips' midpoint is 2 px below the corners' line in _mouth's geometry.
    assert abs((a[1] + b[1]) / 2 - (84 - 2 * 112 / np.hypot(right[0] - left[0], right[1] - left[1]))) < 2.5


def test_same_mouth_same_tile_whatever_the_source_scale() -> None:
    p = rs.Params()
    big = _dots((800, 800), [(200, 400), (600, 400)], [(255, 0, 0), (0, 0, 255)])
    small = cv2.resize(big, (200, 200), interpolation=cv2.INTER_AREA)
    t1 = rs.normalise(big, _mouth((200, 400), (600, 400)), p)
    t2 = rs.normalise(small, _mouth((50, 100), (150, 100)), p)
    for colour in ((255, 0, 0), (0, 0, 255)):
        assert np.linalg.norm(_centroid(t1, colour) - _centroid(t2, colour)) < 2.0


def test_jpeg_round_trip_and_soften_apply_to_every_tile() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (168, 224, 3), dtype=np.uint8)
    q80 = rs.jpeg_round_trip(noise, 80)
    assert q80.shape == noise.shape and not np.array_equal(q80, noise)
    lm = _mouth((56, 84), (168, 84))
    sharp = rs.normalise(noise, lm, rs.Params(jpeg_quality=95))
    soft = rs.normalise(noise, lm, rs.Params(jpeg_quality=95, soften=0.5))
    hf = lambda im: float(np.abs(np.diff(im.astype(float), axis=1)).mean())  # noqa: E731
    assert hf(soft) < 0.7 * hf(sharp)


def test_opening_and_widest_frames() -> None:
    assert rs.opening_ratio(_mouth((0, 0), (100, 0), open_px=30)) == pytest.approx(0.3, abs=1e-6)
    gaps = [0, 10, 40, 42, 41, 5, 0, 38, 0, 20]
    track = [None if g == 0 else _mouth((0, 0), (100, 0), open_px=g) for g in gaps]
    assert rs.widest_frames(track, 2, min_gap=3) == [3, 7]  # 4 and 2 are too close to 3
    assert rs.widest_frames(track, 3, min_gap=1) == [2, 3, 4]


def _crops(n: int, kind: str, tag: str) -> list:  # type: ignore[type-arg]
    out = []
    for i in range(n):
        img = np.full((168, 224, 3), (i * 7) % 256, np.uint8)
        out.append(rs.Crop(img, f"{kind}{i}", kind, tag, None, 0.2, 100.0))
    return out


def test_layout_shuffles_with_the_seed_and_keeps_every_tile_once() -> None:
    crops = _crops(30, "real", "open")
    a = rs.layout(crops, seed=3, cols=6, rows=4)
    b = rs.layout(crops, seed=3, cols=6, rows=4)
    c = rs.layout(crops, seed=4, cols=6, rows=4)
    assert [len(s) for s in a] == [24, 6]
    src = lambda sheets: [cr.source for s in sheets for _, cr in s]  # noqa: E731
    assert src(a) == src(b) != src(c)
    assert sorted(src(a)) == sorted(cr.source for cr in crops)
    labels = [lab for s in a for lab, _ in s]
    assert len(set(labels)) == 30 and labels[0] == "1-A1" and labels[23] == "1-D6" and labels[24] == "2-A1"


def test_make_writes_sheets_and_a_key_outside_them(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    items = [{"path": f"x{i}.png", "kind": "real" if i % 2 else "facetalk", "tag": "t"} for i in range(10)]
    monkeypatch.setattr(rs, "crops_of", lambda item, p, gap: [
        rs.Crop(np.zeros((168, 224, 3), np.uint8), item["path"], item["kind"], item["tag"], None, 0.1,
                30.0 if item["path"] == "x0.png" else 90.0)])
    key = rs.make(items, tmp_path / "sheets", rs.Params(), seed=1, cols=3, rows=2, min_mouth_px=40)
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == [
        "INSTRUCTIONS.txt", "answers_template.json", "sheet_01.png", "sheet_02.png"]
    template = json.loads((tmp_path / "sheets" / "answers_template.json").read_text())
    assert set(template) == set(key["tiles"]) and "x1.png" not in json.dumps(template)
    assert (tmp_path / "sheets_key.json").exists()
    assert len(key["tiles"]) == 9 and key["skipped"][0]["source"] == "x0.png"
    sheet = cv2.imread(str(tmp_path / "sheets" / "sheet_01.png"))
    assert sheet.shape[1] == 3 * (224 + 8) + 8
    assert json.loads((tmp_path / "sheets_key.json").read_text())["tiles"] == key["tiles"]


def test_held_out_people_are_matched_by_id_person_or_file() -> None:
    item = {"id": "grid_smile", "who": "ft_grid", "file": "ft_grid", "path": "x.jpg"}
    assert rs.excluded(item, {"ft_grid"}) and rs.excluded(item, {"grid_smile"})
    assert not rs.excluded(item, {"grid", "obama"})
    assert not rs.excluded({"path": "y.mp4", "kind": "facetalk"}, {"None", ""})


def test_score_counts_per_kind_tag_and_judge(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = {"tiles": {
        "1-A1": {"kind": "real", "tag": "open"}, "1-A2": {"kind": "real", "tag": "closed"},
        "1-A3": {"kind": "facetalk", "tag": "beard"}, "1-A4": {"kind": "facetalk", "tag": "beard"},
        "1-A5": {"kind": "facetalk", "tag": "glasses"}}}
    ans = {"j1": {"1-A1": "real", "1-A2": "generated", "1-A3": "real", "1-A4": "generated",
                  "1-A5": "generated"},
           "j2": {"1-A1": "real", "1-A2": "real", "1-A3": "real"}}
    r = rs.score(key, ans)
    assert r["kind real"]["real"] == 3 and r["kind real"]["answered"] == 4
    assert r["kind facetalk"]["fraction_real"] == pytest.approx(2 / 4)
    assert r["kind facetalk"]["unanswered"] == 2
    assert r["tag facetalk/beard"]["fraction_real"] == pytest.approx(2 / 3)
    assert r["tag facetalk/glasses"]["fraction_real"] == 0.0
    assert r["judge j2/facetalk"]["answered"] == 1
    with pytest.raises(ValueError, match="not in the key"):
        rs.score(key, {"j3": {"9-Z9": "real"}})
    f = tmp_path / "judge.json"
    f.write_text(json.dumps({"judge": "ann", "answers": {
        "1-A1": "Real ", "1-A3": {"verdict": "generated", "cue": "flat black hole"}}}))
    judge, verdicts, cues = rs.load_answers(f)
    assert (judge, verdicts) == ("ann", {"1-A1": "real", "1-A3": "generated"})
    assert cues == {"1-A3": "flat black hole"}
    assert rs.cues_by_tag(key, {judge: cues}) == {"facetalk/beard": ["1-A3 (ann): flat black hole"]}
    f.write_text(json.dumps({"1-A1": "maybe"}))
    with pytest.raises(ValueError, match="maybe"):
        rs.load_answers(f)


def test_crossover_shows_every_render_once_per_set_from_each_arm_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    control, variant = tmp_path / "c", tmp_path / "v"
    control.mkdir()
    variant.mkdir()
    names = [f"p{i}" for i in range(7)]
    for n in names:
        (control / f"{n}.mp4").write_bytes(b"")
        (variant / f"{n}.mp4").write_bytes(b"")
    (control / "only_here.mp4").write_bytes(b"")  # no twin: left out
    one, two = rs.crossover_items(control, variant, seed=3)
    for items in (one, two):
        assert sorted(i["tag"].split(":", 1)[1] for i in items) == names
    arms_one = {i["tag"].split(":", 1)[1]: i["tag"].split(":", 1)[0] for i in one}
    arms_two = {i["tag"].split(":", 1)[1]: i["tag"].split(":", 1)[0] for i in two}
    assert all(arms_one[n] != arms_two[n] for n in names)
    assert sorted(list(arms_one.values()).count(a) for a in ("control", "variant")) == [3, 4]
    assert all(Path(i["path"]).parent == (control if i["tag"].startswith("control") else variant)
               for i in one + two)
    assert rs.crossover_items(control, variant, seed=3) == (one, two)
    with pytest.raises(ValueError, match="no renders"):
        rs.crossover_items(control, tmp_path, seed=3)


def test_crossover_scores_both_sets_together_per_arm() -> None:
    k1 = {"tiles": {"1-A1": {"kind": "real", "tag": "open"},
                    "1-A2": {"kind": "facetalk", "tag": "control:p0"},
                    "1-A3": {"kind": "facetalk", "tag": "variant:p1"}}}
    k2 = {"tiles": {"1-A1": {"kind": "real", "tag": "open"},
                    "1-A2": {"kind": "facetalk", "tag": "variant:p0"},
                    "1-A3": {"kind": "facetalk", "tag": "control:p1"}}}
    key = rs.merged_key([k1, k2])
    assert len(key["tiles"]) == 6
    answers = {"a": {"1:1-A1": "real", "1:1-A2": "generated", "1:1-A3": "real"},
               "b": {"2:1-A1": "real", "2:1-A2": "real", "2:1-A3": "generated"}}
    figs = rs.arm_figures(key, answers)
    assert figs == {"control": {"real": 0, "answered": 2}, "real": {"real": 2, "answered": 2},
                    "variant": {"real": 2, "answered": 2}}


def test_crossover_scores_per_band_of_opening() -> None:
    """Real tiles are set against renders at the same openings: a sheet whose real mouths
    are all smiles says nothing about how wide openings look."""
    key = {"tiles": {"A1": {"kind": "real", "tag": "open", "opening": 0.05},
                     "A2": {"kind": "real", "tag": "open", "opening": 0.32},
                     "A3": {"kind": "facetalk", "tag": "control:p0", "opening": 0.45},
                     "A4": {"kind": "facetalk", "tag": "variant:p0", "opening": 0.2}}}
    answers = {"a": {"A1": "real", "A2": "generated", "A3": "generated", "A4": "real"},
               "b": {"A1": "real", "A2": "real", "A3": "real", "A4": "real"}}
    figs = rs.arm_figures(key, answers, by_opening=True)
    assert figs == {"control >=0.30": {"real": 1, "answered": 2},
                    "real 0.00-0.15": {"real": 2, "answered": 2},
                    "real >=0.30": {"real": 1, "answered": 2},
                    "variant 0.15-0.30": {"real": 2, "answered": 2}}
    assert rs.arm_figures(key, answers)["real"] == {"real": 3, "answered": 4}


def test_widest_picture_has_a_row_per_video_of_its_widest_openings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    openings = {"a.mp4": [0, 30, 5, 40, 10, 20, 0, 35], "b.mp4": [8, 2]}
    monkeypatch.setattr(rs, "track_video", lambda path, rotate=0: (
        [_mouth((100.0, 200.0), (200.0, 200.0), o) for o in openings[path.name]], 10.0))
    read: dict[str, list[int]] = {}

    def frames(path: Path, wanted: list[int], rotate: int = 0) -> dict[int, np.ndarray]:
        read[path.name] = list(wanted)
        return {i: np.full((400, 300, 3), 100, np.uint8) for i in wanted}

    monkeypatch.setattr(rs, "read_frames", frames)
    pic = rs.widest_picture(["a.mp4=A", "b.mp4"], 2, 100)
    # 0.4 s apart at 10 fps: frames 3 (40 px) and 7 (35 px), not the 1-frame neighbour 1;
    # b has one frame open wider than the other and a black tile where none is left.
    assert read == {"a.mp4": [3, 7], "b.mp4": [0]}
    tile_h, tile_w = 130, 180  # 1.3 x 1.8 mouth widths of 100 px
    assert pic.shape == (2 * tile_h, 2 * tile_w, 3)
    assert pic[tile_h + 40:, tile_w + 40:].max() == 0 and pic[tile_h + 40:, 40:tile_w - 40].max() > 0
