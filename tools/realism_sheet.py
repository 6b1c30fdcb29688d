"""Blind realism test of mouths: normalised, shuffled sheets of mouth crops, and the scoring of the answers.

A judge who sees a real mouth at 300 px beside a rendered one at 90 px, or a crisp PNG beside
a blocky JPEG, judges the pixels' history, not the mouth. So every crop, real or rendered, goes
through the same steps: the mouth corners (Face Mesh landmarks 61 and 291) levelled, the mouth
scaled to the same width, the same box around the mouth centre, one JPEG round trip at one
quality, optionally one mild down/up scale. The tiles are shuffled with a seed and labelled only
by sheet-row-column; which tile is which is written to a key file that judges never see.

    # sheets (items: JSON lists from tools/realism_refs.py, or written by hand); hold out the people
    # whose portraits were rendered (their 'who' in build/realism/portraits/portraits.json)
    python tools/realism_sheet.py make --items build/realism/refs/items.json \\
        --facetalk out/beard.mp4=beard --facetalk out/glasses.mp4=glasses --exclude ft_father,fx1 \\
        --soften 0.5 --min-mouth-px 56 --out build/realism/sheets
    # judges get build/realism/sheets/ only (sheets, INSTRUCTIONS.txt, answers_template.json); the key
    # is build/realism/sheets_key.json. Answers: one JSON per judge, {"1-A1": "real", "1-A2":
    # {"verdict": "generated", "cue": "teeth are one white band"}, ...}
    python tools/realism_sheet.py score build/realism/sheets_key.json answers/*.json
    # comparing two versions of the renderer: renders named alike in two folders, two sets of
    # sheets (each render once per set, control in one and variant in the other), three judges
    # per set; then judged real per arm over both sets
    python tools/realism_sheet.py crossover --control out/main --variant out/new \
        --items build/realism/refs/items.json --exclude ... --soften 0.5 --out build/realism/cx
    python tools/realism_sheet.py score-crossover build/realism/cx/set1_key.json \
        build/realism/cx/set2_key.json --answers-1 a/*.json --answers-2 b/*.json

An item (JSON object): ``path`` (image or video), ``kind`` ("real" or "facetalk"), ``tag`` (portrait
type or mouth state), optional ``id``, ``box`` ([x0, y0, x1, y1] pixels: look for the face only
there, for group photos), ``rotate`` (90, 180, 270: clockwise, for pictures stored on their side),
``frames`` (video frame numbers to take) or ``widest`` (take the N frames of widest inner-lip opening).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facetalk.errors import FacetalkError

#: Face Mesh landmarks: mouth corners, outer lip top/bottom (mid-line), inner lip top/bottom (mid-line).
CORNER_L, CORNER_R, OUTER_TOP, OUTER_BOTTOM, INNER_TOP, INNER_BOTTOM = 61, 291, 0, 17, 13, 14
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
JUDGE_INSTRUCTIONS = """\
Each tile on these sheets is a mouth cut from a photograph or video of a real person, or from a
computer-generated talking-head video. All tiles were scaled, cropped and compressed the same way,
so size and compression tell you nothing. For every label, answer "real" or "generated"; for
"generated", name in a few words what gave it away (the cue). Fill in answers_template.json and hand it
back under your name. Judge every tile on its own: the sheets hold no fixed share of either kind.
"""


def face_api() -> tuple[Any, Any]:
    """facetalk's face analysis and Face Mesh, imported in this one place (lazily: the
    sheet and score logic is tested without them)."""
    from facetalk.face.analysis import analyze_face
    from facetalk.face.mesh import FaceMesh

    return analyze_face, FaceMesh


@dataclass
class Params:
    """Everything that makes crops alike; written into the key so a run can be repeated."""

    mouth_px: int = 112  # mouth width (corner to corner) in the crop
    box_w: float = 2.0  # crop width, in mouth widths
    box_h: float = 1.5  # crop height, in mouth widths
    jpeg_quality: int = 80
    soften: float = 1.0  # < 1: downscale by this factor and back up (the same for every crop)


@dataclass
class Crop:
    """One normalised mouth crop and where it came from."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    source: str
    kind: str
    tag: str
    frame: int | None = None
    opening: float = 0.0  # inner-lip gap / mouth width, in the source
    mouth_px_src: float = 0.0  # mouth width in the source, pixels (small sources are upscaled: see the key)
    extra: dict[str, Any] = field(default_factory=dict)


def opening_ratio(lm: np.ndarray) -> float:
    """Inner-lip gap over mouth width: size-free measure of how open a mouth is."""
    width = float(np.linalg.norm(lm[CORNER_R, :2] - lm[CORNER_L, :2]))
    gap = float(np.linalg.norm(lm[INNER_BOTTOM, :2] - lm[INNER_TOP, :2]))
    return gap / width if width > 0 else 0.0


def mouth_transform(lm: np.ndarray, p: Params) -> np.ndarray:
    """2x3 affine taking source pixels to crop pixels: corners level, mouth ``mouth_px`` wide, centred.

    The centre is the corners' midpoint across, and halfway between the outer lip top and bottom down
    (both measured along the levelled axes), so open and closed mouths sit alike in the box.
    """
    left, right = lm[CORNER_L, :2].astype(np.float64), lm[CORNER_R, :2].astype(np.float64)
    axis = right - left
    width = float(np.hypot(*axis))
    if width <= 1e-6:
        raise ValueError("mouth corners coincide")
    ux = axis / width
    uy = np.array([-ux[1], ux[0]])  # image y grows downward; uy points "down" when the mouth is level
    mid = (left + right) / 2
    top, bottom = lm[OUTER_TOP, :2], lm[OUTER_BOTTOM, :2]
    v = ((top - mid) @ uy + (bottom - mid) @ uy) / 2
    centre = mid + v * uy
    s = p.mouth_px / width
    out_w, out_h = crop_size(p)
    rot = np.stack([ux, uy]) * s  # rows: crop x and y axes
    offset = np.array([out_w / 2, out_h / 2]) - rot @ centre
    return np.hstack([rot, offset[:, None]])


def crop_size(p: Params) -> tuple[int, int]:
    """Crop width and height in pixels."""
    return round(p.box_w * p.mouth_px), round(p.box_h * p.mouth_px)


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode to JPEG and decode, so every tile carries the same compression."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def normalise(rgb: np.ndarray, lm: np.ndarray, p: Params) -> np.ndarray:
    """The one normalisation every tile gets (see the module docstring)."""
    m = mouth_transform(lm, p)
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    src = rgb
    if scale < 1.0:
        # Shrink first with area averaging (warpAffine alone would alias large sources), then only
        # rotate and place at scale 1.
        h, w = rgb.shape[:2]
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        src = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        pre = np.diag([sw / w, sh / h, 1.0])
        m = m @ np.linalg.inv(pre)
    out_w, out_h = crop_size(p)
    tile = cv2.warpAffine(src, m, (out_w, out_h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if p.soften < 1.0:
        small = cv2.resize(tile, (max(1, round(out_w * p.soften)), max(1, round(out_h * p.soften))),
                           interpolation=cv2.INTER_AREA)
        tile = cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_CUBIC)
    return jpeg_round_trip(tile, p.jpeg_quality)


def _rotate(rgb: np.ndarray, rotate: int) -> np.ndarray:
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return cv2.rotate(rgb, codes[rotate]) if rotate else rgb


def read_image(path: Path, rotate: int = 0) -> np.ndarray:
    """RGB uint8 picture (EXIF orientation applied by OpenCV), optionally turned upright."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return _rotate(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rotate)


def landmarks_in(rgb: np.ndarray, box: list[float] | None) -> np.ndarray:
    """Landmarks of the largest face (inside ``box`` if given), in ``rgb``'s pixels."""
    analyze_face, _ = face_api()
    x0 = y0 = 0
    region = rgb
    if box is not None:
        h, w = rgb.shape[:2]
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(w, int(box[2])), min(h, int(box[3]))
        region = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    lm = np.array(analyze_face(region).landmarks, dtype=np.float32)
    lm[:, 0] += x0
    lm[:, 1] += y0
    return lm


def track_video(path: Path, rotate: int = 0) -> tuple[list[np.ndarray | None], float]:
    """Face Mesh landmarks of every frame (None where no face), tracked as facetalk's evaluation does."""
    _, face_mesh = face_api()
    mesh = face_mesh(max_faces=1, static=False)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    out: list[np.ndarray | None] = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        faces = mesh.process(_rotate(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rotate))
        out.append(faces[0] if faces else None)
    cap.release()
    return out, fps


def read_frames(path: Path, wanted: list[int], rotate: int = 0) -> dict[int, np.ndarray]:
    """The given frames of a video, RGB, decoded in order (seeking is not frame-exact in every codec)."""
    cap = cv2.VideoCapture(str(path))
    left, out, i = set(wanted), {}, 0
    while left:
        ok, bgr = cap.read()
        if not ok:
            break
        if i in left:
            out[i] = _rotate(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), rotate)
            left.discard(i)
        i += 1
    cap.release()
    if left:
        raise ValueError(f"{path}: frames {sorted(left)} not found (video has {i})")
    return out


def widest_frames(track: list[np.ndarray | None], n: int, min_gap: int) -> list[int]:
    """The ``n`` frames of widest inner-lip opening, at least ``min_gap`` frames apart (no near-twins)."""
    scored = [(opening_ratio(lm), i) for i, lm in enumerate(track) if lm is not None]
    picked: list[int] = []
    for _, i in sorted(scored, reverse=True):
        if all(abs(i - j) >= min_gap for j in picked):
            picked.append(i)
            if len(picked) == n:
                break
    return sorted(picked)


def crops_of(item: dict[str, Any], p: Params, min_gap_s: float = 0.5) -> list[Crop]:
    """Normalised crops of one item: one for a picture, one per chosen frame for a video."""
    path = Path(item["path"])
    kind, tag = item["kind"], item.get("tag", "")
    if kind not in ("real", "facetalk"):
        raise ValueError(f"{path}: kind must be 'real' or 'facetalk', not {kind!r}")
    rotate = int(item.get("rotate", 0))
    source = item.get("id", str(path))
    extra = {k: v for k, v in item.items() if k not in ("path", "kind", "tag", "frames", "widest", "id")}
    extra["path"] = str(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        rgb = read_image(path, rotate)
        lm = landmarks_in(rgb, item.get("box"))
        width = float(np.linalg.norm(lm[CORNER_R, :2] - lm[CORNER_L, :2]))
        return [Crop(normalise(rgb, lm, p), source, kind, tag, None, opening_ratio(lm), width, extra)]
    track, fps = track_video(path, rotate)
    if item.get("frames"):
        wanted = [int(f) for f in item["frames"]]
    else:
        wanted = widest_frames(track, int(item.get("widest", 3)), max(1, round(min_gap_s * fps)))
    frames = read_frames(path, wanted, rotate)
    crops = []
    for i in wanted:
        lm = track[i] if i < len(track) else None
        if lm is None:
            raise ValueError(f"{path}: no face in frame {i}")
        width = float(np.linalg.norm(lm[CORNER_R, :2] - lm[CORNER_L, :2]))
        crops.append(Crop(normalise(frames[i], lm, p), source, kind, tag, i, opening_ratio(lm), width, extra))
    return crops


def tile_labels(sheet: int, cols: int, rows: int) -> list[str]:
    """Labels of one sheet in reading order: '<sheet>-<row letter><column>', e.g. '2-C4'."""
    return [f"{sheet}-{string.ascii_uppercase[r]}{c + 1}" for r in range(rows) for c in range(cols)]


def layout(crops: list[Crop], seed: int, cols: int, rows: int) -> list[list[tuple[str, Crop]]]:
    """Shuffle with ``seed`` and cut into sheets of cols x rows labelled tiles."""
    order = list(range(len(crops)))
    random.Random(seed).shuffle(order)
    per = cols * rows
    sheets = []
    for s in range(0, len(order), per):
        labels = tile_labels(s // per + 1, cols, rows)
        sheets.append([(labels[k], crops[i]) for k, i in enumerate(order[s:s + per])])
    return sheets


def draw_sheet(tiles: list[tuple[str, Crop]], cols: int, rows: int, p: Params) -> np.ndarray:
    """One sheet: tiles on a grey ground, each with only its label above it."""
    tw, th = crop_size(p)
    pad, head = 8, 22
    sheet = np.full((rows * (th + head + pad) + pad, cols * (tw + pad) + pad, 3), 235, np.uint8)
    for k, (label, crop) in enumerate(tiles):
        r, c = divmod(k, cols)
        x, y = pad + c * (tw + pad), pad + r * (th + head + pad)
        cv2.putText(sheet, label, (x, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
        sheet[y + head:y + head + th, x:x + tw] = crop.image
    return sheet


def excluded(item: dict[str, Any], names: set[str]) -> bool:
    """Whether an item is held out: its id, person ('who') or source file is in ``names``.

    Renders of a portrait must not meet real crops of the same person on the sheets (a judge would just
    compare the two), and people used for tuning are kept for tuning.
    """
    return bool({str(item[k]) for k in ("id", "who", "file") if k in item} & names)


def make(items: list[dict[str, Any]], out: Path, p: Params, seed: int, cols: int, rows: int,
         min_mouth_px: float = 0.0, min_gap_s: float = 0.25) -> dict[str, Any]:
    """Crop every item, write the sheets (PNG) and the key (JSON); returns the key."""
    crops: list[Crop] = []
    skipped: list[dict[str, Any]] = []
    for item in items:
        try:
            got = crops_of(item, p, min_gap_s)
        except (ValueError, RuntimeError, FacetalkError) as exc:  # NoFaceFound is a FacetalkError
            skipped.append({"source": item.get("id", item["path"]), "why": str(exc)})
            print(f"skipped {item.get('id', item['path'])}: {exc}", file=sys.stderr)
            continue
        for crop in got:
            if crop.mouth_px_src < min_mouth_px:
                skipped.append({"source": crop.source, "frame": crop.frame,
                                "why": f"mouth only {crop.mouth_px_src:.0f} px wide"})
                continue
            crops.append(crop)
    out.mkdir(parents=True, exist_ok=True)
    sheets = layout(crops, seed, cols, rows)
    key: dict[str, Any] = {"seed": seed, "params": vars(p), "cols": cols, "rows": rows, "sheets": [],
                           "tiles": {}, "skipped": skipped}
    for s, tiles in enumerate(sheets, start=1):
        name = f"sheet_{s:02d}.png"
        cv2.imwrite(str(out / name), cv2.cvtColor(draw_sheet(tiles, cols, rows, p), cv2.COLOR_RGB2BGR))
        key["sheets"].append(name)
        for label, crop in tiles:
            key["tiles"][label] = {"source": crop.source, "kind": crop.kind, "tag": crop.tag,
                                   "frame": crop.frame, "opening": round(crop.opening, 3),
                                   "mouth_px_src": round(crop.mouth_px_src, 1), **crop.extra}
    (out / "answers_template.json").write_text(json.dumps(
        {label: {"verdict": "real or generated", "cue": ""} for label in key["tiles"]}, indent=1))
    (out / "INSTRUCTIONS.txt").write_text(JUDGE_INSTRUCTIONS)
    # The key goes beside the sheets' folder, not in it, so the folder can be handed to judges as is.
    key_path = out.parent / f"{out.name}_key.json"
    key_path.write_text(json.dumps(key, indent=1))
    return key


def load_answers(path: Path) -> tuple[str, dict[str, str], dict[str, str]]:
    """A judge's verdicts and cues.

    Accepted: {label: "real"|"generated"}, or {label: {"verdict": ..., "cue": "what gave it away"}}, either
    alone or wrapped as {"judge": name, "answers": {...}}. Returns (judge, verdicts, cues).
    """
    data = json.loads(path.read_text())
    if "answers" in data:
        judge, answers = data.get("judge", path.stem), data["answers"]
    else:
        judge, answers = path.stem, data
    verdicts, cues = {}, {}
    for label, answer in answers.items():
        verdict = answer.get("verdict") if isinstance(answer, dict) else answer
        v = str(verdict).strip().lower()
        if v not in ("real", "generated"):
            raise ValueError(f"{path}: answer for {label} is {verdict!r}, not 'real' or 'generated'")
        verdicts[label] = v
        if isinstance(answer, dict) and answer.get("cue"):
            cues[label] = str(answer["cue"]).strip()
    return judge, verdicts, cues


def cues_by_tag(key: dict[str, Any], cues: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """The judges' cues grouped by kind/tag, each as 'label verdict-judge: cue' (what the report quotes)."""
    out: dict[str, list[str]] = defaultdict(list)
    for judge, per_label in cues.items():
        for label, cue in sorted(per_label.items()):
            t = key["tiles"][label]
            out[f"{t['kind']}/{t['tag']}"].append(f"{label} ({judge}): {cue}")
    return dict(sorted(out.items()))


def score(key: dict[str, Any], answers: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Fraction judged real per kind, per (kind, tag) and per judge and kind, with counts.

    Labels a judge did not answer are counted as unanswered, not as either verdict; labels that are not
    in the key are an error (a judge looking at the wrong sheet).
    """
    tiles = key["tiles"]
    groups: dict[str, dict[str, int]] = defaultdict(lambda: {"real": 0, "answered": 0, "unanswered": 0})
    for judge, ans in answers.items():
        unknown = set(ans) - set(tiles)
        if unknown:
            raise ValueError(f"judge {judge} answered labels not in the key: {sorted(unknown)[:5]}")
        for label, t in tiles.items():
            names = [f"kind {t['kind']}", f"tag {t['kind']}/{t['tag']}", f"judge {judge}/{t['kind']}"]
            for name in names:
                g = groups[name]
                if label in ans:
                    g["answered"] += 1
                    g["real"] += ans[label] == "real"
                else:
                    g["unanswered"] += 1
    result = {}
    for name in sorted(groups):
        g = groups[name]
        result[name] = {**g, "fraction_real": g["real"] / g["answered"] if g["answered"] else None}
    return result


def crossover_items(control: Path, variant: Path, seed: int, widest: int = 1
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two sets of render items for a crossover round: every render named alike in both
    folders appears once in each set, from the control in one and from the variant in the
    other, split half and half by a seeded shuffle.

    Sheets showing both versions of a render side by side let judges compare the twins
    (and give both the verdict of the crisper one); judges of one set against judges of
    another differ by tens of points. With one set per group of judges, each judge sees
    every person once and judges both versions alike.
    """
    names = sorted(p.stem for p in control.glob("*.mp4") if (variant / p.name).exists())
    if not names:
        raise ValueError(f"no renders named alike in {control} and {variant}")
    order = list(names)
    random.Random(seed).shuffle(order)
    first = set(order[: (len(order) + 1) // 2])
    sets: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for name in names:
        arms = (("control", control), ("variant", variant))
        if name not in first:
            arms = arms[::-1]
        for items, (arm, folder) in zip(sets, arms, strict=True):
            items.append({"path": str(folder / f"{name}.mp4"), "kind": "facetalk",
                          "tag": f"{arm}:{name}", "widest": widest})
    return sets


def merged_key(keys: list[dict[str, Any]]) -> dict[str, Any]:
    """One key over several sets of sheets, each set's labels prefixed with its number
    ("1:", "2:"...), so the answers of all judges can be scored together."""
    tiles = {f"{k}:{label}": t for k, key in enumerate(keys, start=1)
             for label, t in key["tiles"].items()}
    return {"tiles": tiles}


#: Inner-lip gap over mouth width at which score-crossover splits tiles: closed or nearly, a
#: smile's or speech's usual opening, and a wide one.
OPENING_BANDS = (0.15, 0.3)


def _arm(tile: dict[str, Any]) -> str:
    return "real" if tile["kind"] == "real" else str(tile["tag"]).split(":", 1)[0]


def _band(opening: float, edges: tuple[float, ...] = OPENING_BANDS) -> str:
    lo = max([e for e in edges if e <= opening], default=0.0)
    hi = min([e for e in edges if e > opening], default=None)
    return f"{lo:.2f}-{hi:.2f}" if hi is not None else f">={lo:.2f}"


def arm_figures(key: dict[str, Any], answers: dict[str, dict[str, str]],
                by_opening: bool = False) -> dict[str, dict[str, int]]:
    """Judged real per arm of a crossover round: the real tiles, and the facetalk tiles by
    the part of their tag before the first colon ("control", "variant"); with
    ``by_opening``, per arm and band of the tile's opening (OPENING_BANDS), so the real
    tiles are compared with renders at the same openings, not wide openings with smiles."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"real": 0, "answered": 0})
    for ans in answers.values():
        for label, t in key["tiles"].items():
            if label not in ans:
                continue
            group = _arm(t)
            if by_opening:
                group += " " + _band(float(t.get("opening", 0.0)))
            out[group]["answered"] += 1
            out[group]["real"] += ans[label] == "real"
    return dict(sorted(out.items()))


def _sheet_options(parser: argparse.ArgumentParser, out: Path) -> None:
    """The options ``make`` and ``crossover`` share: items, hold-outs and the tiles' normalisation."""
    parser.add_argument("--items", action="append", help="JSON list of items (see the module docstring)")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME[,NAME]",
                        help="hold out items whose id, person ('who') or source file is named (e.g. the "
                             "people whose portraits were rendered, or those used for tuning)")
    parser.add_argument("--min-gap-s", type=float, default=0.5, help="least time between frames of one video")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mouth-px", type=int, default=112)
    parser.add_argument("--box", type=float, nargs=2, default=(2.0, 1.5), metavar=("W", "H"),
                        help="crop size in mouth widths")
    parser.add_argument("--jpeg-quality", type=int, default=80)
    parser.add_argument("--soften", type=float, default=1.0, help="down/up scale factor for every tile (<1)")
    parser.add_argument("--min-mouth-px", type=float, default=40.0,
                        help="drop sources whose mouth is narrower (enlarged to --mouth-px, they blur)")


def _params(args: argparse.Namespace) -> Params:
    return Params(args.mouth_px, args.box[0], args.box[1], args.jpeg_quality, args.soften)


def _kept(items: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The items not held out by --exclude."""
    names = {n for arg in args.exclude for n in arg.split(",") if n}
    return [i for i in items if not excluded(i, names)]


def _items_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for f in args.items or []:
        items.extend(json.loads(Path(f).read_text()))
    for spec in args.facetalk or []:
        path, _, tag = spec.partition("=")
        items.append({"path": path, "kind": "facetalk", "tag": tag or "untagged", "widest": args.widest})
    for spec in args.real or []:
        path, _, tag = spec.partition("=")
        item: dict[str, Any] = {"path": path, "kind": "real", "tag": tag or "untagged"}
        if Path(path).suffix.lower() in VIDEO_SUFFIXES:
            item["widest"] = args.widest
        items.append(item)
    return items


def widest_picture(videos: list[str], n: int, mouth_px: int) -> np.ndarray:
    """One row per ``VIDEO[=LABEL]``: its ``n`` widest openings (as :func:`crops_of` picks
    them, at least 0.4 s apart), cropped like the tiles but without JPEG or softening,
    labelled with the opening."""
    p = Params(mouth_px=mouth_px, box_w=1.8, box_h=1.3, jpeg_quality=100)
    rows = []
    for spec in videos:
        path, _, label = spec.partition("=")
        crops = crops_of({"path": path, "kind": "facetalk", "widest": n}, p, min_gap_s=0.4)
        if not crops:
            raise ValueError(f"no face was tracked in {path}")
        tiles = []
        for c in crops:
            t = c.image.copy()
            cv2.putText(t, f"{label or Path(path).stem} {c.opening:.2f}", (4, 16),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
            tiles.append(t)
        tiles += [np.zeros_like(tiles[0])] * (n - len(tiles))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``make`` sheets and key, ``score`` judges' answers against the key."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="normalised, shuffled sheets + key")
    _sheet_options(mk, Path("build/realism/sheets"))
    mk.add_argument("--facetalk", action="append", metavar="MP4=TAG", help="a facetalk render and its type")
    mk.add_argument("--real", action="append", metavar="FILE=TAG", help="a real picture or clip and its tag")
    mk.add_argument("--only", choices=["real", "facetalk"], help="keep only items of this kind")
    mk.add_argument("--widest", type=int, default=3, help="frames per video without explicit frames")
    mk.add_argument("--cols", type=int, default=6)
    mk.add_argument("--rows", type=int, default=4)
    cx = sub.add_parser("crossover", help="two sets of sheets: control and variant renders, "
                        "each render once per set (see crossover_items)")
    cx.add_argument("--control", type=Path, required=True, help="folder of control renders (*.mp4)")
    cx.add_argument("--variant", type=Path, required=True, help="folder of variant renders, named alike")
    _sheet_options(cx, Path("build/realism/crossover"))
    cs = sub.add_parser("score-crossover", help="judged real per arm over both sets of a crossover")
    cs.add_argument("keys", type=Path, nargs=2, help="the two keys (set 1, set 2)")
    cs.add_argument("--answers-1", type=Path, nargs="+", required=True, help="judges of set 1")
    cs.add_argument("--answers-2", type=Path, nargs="+", required=True, help="judges of set 2")
    wd = sub.add_parser("widest", help="a labelled picture of each video's widest openings "
                        "(one row per video, normalised like the tiles, no JPEG): to look at")
    wd.add_argument("out", type=Path)
    wd.add_argument("videos", nargs="+", metavar="VIDEO[=LABEL]")
    wd.add_argument("--n", type=int, default=3, help="frames per video")
    wd.add_argument("--mouth-px", type=int, default=150)
    sc = sub.add_parser("score", help="fraction judged real per kind and type")
    sc.add_argument("key", type=Path)
    sc.add_argument("answers", type=Path, nargs="+", help="one JSON per judge")
    sc.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)

    if args.cmd == "make":
        items = _items_from_args(args)
        if args.only:
            items = [i for i in items if i["kind"] == args.only]
        items = _kept(items, args)
        if not items:
            ap.error("no items: give --items, --facetalk or --real")
        key = make(items, args.out, _params(args), args.seed, args.cols, args.rows, args.min_mouth_px,
                   args.min_gap_s)
        kinds = defaultdict(int)
        for t in key["tiles"].values():
            kinds[t["kind"]] += 1
        print(f"{len(key['tiles'])} tiles ({dict(kinds)}) on {len(key['sheets'])} sheet(s) in {args.out}; "
              f"key: {args.out.parent / (args.out.name + '_key.json')}; skipped {len(key['skipped'])}",
              flush=True)
        return 0
    if args.cmd == "crossover":
        real = _kept([i for f in args.items or [] for i in json.loads(Path(f).read_text())], args)
        for k, renders in enumerate(crossover_items(args.control, args.variant, args.seed), start=1):
            out = args.out / f"set{k}"
            key = make(real + renders, out, _params(args), args.seed * 10 + k, 6, 4,
                       args.min_mouth_px, args.min_gap_s)
            print(f"set {k}: {len(key['tiles'])} tiles on {len(key['sheets'])} sheet(s) in {out}; "
                  f"key: {out.parent / (out.name + '_key.json')}", flush=True)
        return 0
    if args.cmd == "widest":
        sheet = widest_picture(args.videos, args.n, args.mouth_px)
        cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        print(f"{args.out}: {sheet.shape[1]}x{sheet.shape[0]}", flush=True)
        return 0
    if args.cmd == "score-crossover":
        keys = [json.loads(k.read_text()) for k in args.keys]
        merged = merged_key(keys)
        answers: dict[str, dict[str, str]] = {}
        for k, files in enumerate((args.answers_1, args.answers_2), start=1):
            for f in files:
                _, verdicts, _ = load_answers(f)
                # By file: judges' own names may repeat across the sets (or be "answers").
                answers[f"{k}:{f}"] = {f"{k}:{label}": v for label, v in verdicts.items()}
        for arm, g in arm_figures(merged, answers).items():
            print(f"{arm:10s} {g['real']:4d} / {g['answered']:4d} judged real"
                  f" ({g['real'] / max(g['answered'], 1):.0%})")
        print("by opening (inner-lip gap / mouth width):")
        for group, g in arm_figures(merged, answers, by_opening=True).items():
            print(f"  {group:20s} {g['real']:4d} / {g['answered']:4d}"
                  f" ({g['real'] / max(g['answered'], 1):.0%})")
        for name, g in score(merged, answers).items():
            if name.startswith("tag facetalk/"):
                print(f"  {name[13:]:40s} {g['real']} / {g['answered']}")
        return 0
    key = json.loads(args.key.read_text())
    loaded = [load_answers(a) for a in args.answers]
    if len({judge for judge, _, _ in loaded}) < len(loaded):
        ap.error("two answer files name the same judge")
    result = score(key, {judge: verdicts for judge, verdicts, _ in loaded})
    cues = cues_by_tag(key, {judge: c for judge, _, c in loaded})
    if args.json:
        print(json.dumps({"figures": result, "cues": cues}, indent=1))
        return 0
    print(f"{'group':40s} {'real':>5s} {'answered':>8s} {'fraction':>8s} {'missing':>7s}")
    for name, g in result.items():
        frac = "-" if g["fraction_real"] is None else f"{g['fraction_real']:.2f}"
        print(f"{name:40s} {g['real']:5d} {g['answered']:8d} {frac:>8s} {g['unanswered']:7d}")
    for group, lines in cues.items():
        print(f"cues, {group}:")
        for line in lines:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
