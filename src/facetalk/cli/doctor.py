"""``facetalk doctor``: what this box offers facetalk (CPU, execution providers, codecs, versions).

Meant to be pasted into a bug report or read before a deployment: it imports every
runtime dependency, lists the ONNX Runtime execution providers behind each
``--device`` name, checks the codecs a render needs, and loads the face models once.
It exits non-zero when something a render needs is missing.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from ..devices import DEVICES

#: Distributions whose versions are reported: label -> candidates (all installed ones are shown).
PACKAGES = {"facetalk": ("facetalk",), "numpy": ("numpy",),
            "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-cann",
                            "onnxruntime-directml"),
            "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
                       "opencv-contrib-python-headless"),
            "av": ("av",), "scipy": ("scipy",), "numba": ("numba",), "pillow": ("pillow",),
            "mediapipe": ("mediapipe",)}
#: CPU features that matter to the kernels we run (x86 SIMD levels, Arm NEON/SVE/dot product).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512bw", "amx_tile",
             "asimd", "asimddp", "asimdhp", "sve", "sve2", "i8mm", "bf16")
#: Codecs a render or an input needs: (name, mode, needed for a render).
CODECS = (("libx264", "w", True), ("aac", "w", True), ("h264", "r", False), ("mp3", "r", False),
          ("mp3float", "r", False), ("aac", "r", False), ("vorbis", "r", False), ("flac", "r", False),
          ("opus", "r", False))


#: Arm CPU part numbers (/proc/cpuinfo "CPU implementer" / "CPU part") of server cores.
ARM_PARTS = {("0x41", "0xd0c"): "Arm Neoverse N1", ("0x41", "0xd40"): "Arm Neoverse V1",
             ("0x41", "0xd49"): "Arm Neoverse N2", ("0x41", "0xd4f"): "Arm Neoverse V2",
             ("0x41", "0xd8e"): "Arm Neoverse N3", ("0x41", "0xd84"): "Arm Neoverse V3",
             ("0x48", "0xd01"): "HiSilicon Kunpeng 920", ("0xc0", "0xac3"): "Ampere-1"}


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """Model name, logical cores and SIMD features (from /proc/cpuinfo, or ``cpuinfo`` text)."""
    info: dict[str, Any] = {"machine": platform.machine(), "cores": os.cpu_count(),
                            "model": platform.processor() or "unknown", "features": []}
    flags: set[str] = set()
    arm: dict[str, str] = {}
    text = cpuinfo
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and info["model"] in ("unknown", "", "x86_64"):
            info["model"] = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key in ("cpu implementer", "cpu part"):
            arm.setdefault(key, value.strip())
    if arm and info["model"] in ("unknown", "", "aarch64"):
        impl, part = arm.get("cpu implementer", "?"), arm.get("cpu part", "?")
        info["model"] = ARM_PARTS.get((impl, part), f"Arm implementer {impl}, part {part}")
    if not flags:  # macOS and others: numpy knows what it dispatches to
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            feats = {}
        flags = {k.lower() for k, v in feats.items() if v}
    info["features"] = [f for f in CPU_FLAGS if f in flags]
    return info


def versions() -> dict[str, str | None]:
    """Installed version of each runtime package (None when it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for label, names in PACKAGES.items():
        found = []
        for name in names:
            try:
                found.append(metadata.version(name) + ("" if name == label else f" ({name})"))
            except metadata.PackageNotFoundError:
                continue
        out[label] = " + ".join(found) or None
    return out


def providers() -> dict[str, Any]:
    """ONNX Runtime's providers and, per ``--device`` name, whether it can be used."""
    from ..devices import DEVICES, PROVIDERS, available_providers, resolve
    from ..devices import PACKAGES as DEVICE_PACKAGES

    try:
        have = available_providers()
    except ImportError as exc:
        return {"error": f"onnxruntime cannot be imported: {exc}", "available": [], "devices": {}}
    devices: dict[str, str] = {}
    for name in DEVICES:
        if name == "auto":
            devices[name] = "-> " + resolve("auto")[0]
        elif PROVIDERS[name][0] in have:
            devices[name] = "available"
        else:
            devices[name] = f"missing ({DEVICE_PACKAGES.get(name, 'onnxruntime')})"
    return {"available": have, "devices": devices}


def codecs() -> dict[str, Any]:
    """FFmpeg (through PyAV) library versions and the codecs we use."""
    import av

    found: dict[str, bool] = {}
    for name, mode, _ in CODECS:
        try:
            av.codec.Codec(name, mode)
            found[f"{name} ({'encode' if mode == 'w' else 'decode'})"] = True
        except Exception:  # PyAV raises UnknownCodecError, ValueError or FFmpegError by version
            found[f"{name} ({'encode' if mode == 'w' else 'decode'})"] = False
    libs = {k: ".".join(str(p) for p in v) for k, v in getattr(av, "library_versions", {}).items()}
    return {"pyav": av.__version__, "ffmpeg_libraries": libs, "codecs": found}


def models(device: str | None = None) -> dict[str, Any]:
    """The shipped face models: size, SHA-256 prefix, and whether they load."""
    from ..devices import resolve, session
    from ..face.detector import MODELS

    resolve(device)  # an unavailable device is one problem, not one per model
    out: dict[str, Any] = {}
    for path in sorted(MODELS.glob("*.onnx")):
        entry: dict[str, Any] = {"bytes": path.stat().st_size,
                                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
        try:
            sess = session(path, device)
            entry["providers"] = sess.get_providers()
        except Exception as exc:  # report any load failure instead of dying half-way
            entry["error"] = f"{type(exc).__name__}: {exc}"
        out[path.name] = entry
    return out


def report(device: str | None = None) -> dict[str, Any]:
    """Everything ``facetalk doctor`` prints, as a dict."""
    rep: dict[str, Any] = {"platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
                           "python": sys.version.split()[0], "cpu": cpu_info(), "versions": versions()}
    rep["onnxruntime"] = providers()
    try:
        rep["media"] = codecs()
    except ImportError as exc:
        rep["media"] = {"error": f"PyAV cannot be imported: {exc}", "codecs": {}}
    from ..errors import FacetalkError

    try:
        rep["models"] = models(device) if not rep["onnxruntime"].get("error") else {}
    except FacetalkError as exc:
        rep["models"], rep["device_error"] = {}, f"{exc.message} ({exc.hint})"
    for mod in ("cv2", "numba", "scipy"):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            rep.setdefault("import_errors", {})[mod] = str(exc)
    return rep


def problems(rep: dict[str, Any]) -> list[str]:
    """What stops a render on this box (empty when all is well)."""
    out = []
    if rep["onnxruntime"].get("error"):
        out.append(rep["onnxruntime"]["error"])
    if rep["media"].get("error"):
        out.append(rep["media"]["error"])
    for name, mode, needed in CODECS:
        key = f"{name} ({'encode' if mode == 'w' else 'decode'})"
        if needed and not rep["media"]["codecs"].get(key, False):
            out.append(f"codec {key} is missing from PyAV's FFmpeg")
    for name, entry in rep.get("models", {}).items():
        if "error" in entry:
            out.append(f"model {name} does not load: {entry['error']}")
    if rep.get("device_error"):
        out.append(rep["device_error"])
    elif not rep.get("models") and not rep["onnxruntime"].get("error"):
        out.append("no face models found in the package")
    for mod, err in rep.get("import_errors", {}).items():
        out.append(f"{mod} cannot be imported: {err}")
    return out


def _text(rep: dict[str, Any]) -> str:
    cpu = rep["cpu"]
    lines = [f"platform     {rep['platform']}, Python {rep['python']}",
             f"cpu          {cpu['model']} ({cpu['machine']}, {cpu['cores']} logical cores)",
             f"cpu features {' '.join(cpu['features']) or 'none of ' + ', '.join(CPU_FLAGS[:6])}"]
    ort = rep["onnxruntime"]
    if ort.get("error"):
        lines.append(f"onnxruntime  {ort['error']}")
    else:
        lines.append(f"providers    {', '.join(ort['available'])}")
        lines.append("devices      " + ", ".join(f"{k}: {v}" for k, v in ort["devices"].items()))
    media = rep["media"]
    if media.get("error"):
        lines.append(f"media        {media['error']}")
    else:
        libs = ", ".join(f"{k} {v}" for k, v in media["ffmpeg_libraries"].items() if k in ("libavcodec",
                                                                                          "libavformat"))
        lines.append(f"pyav         {media['pyav']} ({libs})")
        lines.append("codecs       " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                                  for k, v in media["codecs"].items()))
    lines.append("versions     " + ", ".join(f"{k} {v or '-'}" for k, v in rep["versions"].items()))
    for name, entry in rep.get("models", {}).items():
        state = entry.get("error") or "loads on " + ", ".join(entry.get("providers", []))
        lines.append(f"model        {name} ({entry['bytes'] / 1e6:.1f} MB, "
                     f"sha256 {entry['sha256']}): {state}")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Load the models on this device (default: $FACETALK_DEVICE or auto).")
def doctor(as_json: bool, device: str | None) -> None:
    """Show what this machine offers facetalk: CPU, ONNX Runtime providers, codecs, versions."""
    rep = report(device)
    bad = problems(rep)
    rep["problems"] = bad
    click.echo(json.dumps(rep, indent=2) if as_json else _text(rep))
    if not as_json:
        click.echo("status       " + ("ready" if not bad else "NOT READY: " + "; ".join(bad)))
    sys.exit(1 if bad else 0)
