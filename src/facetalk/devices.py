"""Where neural stages run: ``--device`` names mapped to ONNX Runtime execution providers.

A runtime setting of the box, not a property of a video, so it is not part of
``GenerationOptions``: ``generate(device=...)``, ``--device`` on the CLI and the
service. Every neural stage (today the face detector and the face mesh; tomorrow a
learned viseme model or a refiner) gets its session from :func:`session`, so one
choice of device applies to all of them.

``auto`` picks the first accelerator ONNX Runtime offers here (CUDA, CANN, OpenVINO;
not TensorRT, whose first run spends minutes building engines) and otherwise the CPU.
A device asked for by name that this box cannot provide is an error naming the
package that brings it, never a silent fall-back to the CPU.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidInput

if TYPE_CHECKING:
    import onnxruntime

DEVICES = ("auto", "cpu", "cuda", "tensorrt", "openvino", "cann")
#: Providers per device, in ONNX Runtime's order of preference; the CPU provider
#: always closes the list so operators an accelerator lacks still run.
PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "openvino": ("OpenVINOExecutionProvider", "CPUExecutionProvider"),
    "cann": ("CANNExecutionProvider", "CPUExecutionProvider"),
}
#: The pip package that brings each accelerator's provider (each replaces ``onnxruntime``).
PACKAGES = {
    "cuda": "onnxruntime-gpu",
    "tensorrt": "onnxruntime-gpu (plus NVIDIA TensorRT)",
    "openvino": "onnxruntime-openvino",
    "cann": "onnxruntime-cann (plus Huawei's CANN toolkit)",
}
_AUTO_ORDER = ("cuda", "cann", "openvino")
#: Environment variable read when no device is passed (the service and workers use it too).
ENV = "FACETALK_DEVICE"


class DeviceUnavailable(InvalidInput):
    """The requested device has no execution provider in this installation."""

    code = "device_unavailable"


def available_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime build."""
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def normalize(device: str | None) -> str:
    """The device name to use: the argument, else ``$FACETALK_DEVICE``, else ``auto``."""
    name = (device or os.environ.get(ENV) or "auto").strip().lower()
    if name not in DEVICES:
        raise InvalidInput(f"unknown device {name!r}", hint=f"Use one of: {', '.join(DEVICES)}.")
    return name


def resolve(device: str | None = None) -> tuple[str, ...]:
    """Providers for ``device`` (see :data:`DEVICES`), or :class:`DeviceUnavailable`."""
    name = normalize(device)
    have = set(available_providers())
    if name == "auto":
        for cand in _AUTO_ORDER:
            if PROVIDERS[cand][0] in have:
                return PROVIDERS[cand]
        return PROVIDERS["cpu"]
    wanted = PROVIDERS[name]
    if wanted[0] not in have:
        raise DeviceUnavailable(
            f"device {name!r} needs ONNX Runtime's {wanted[0]}, which this installation lacks "
            f"(it has: {', '.join(sorted(have)) or 'none'})",
            hint=f"Install {PACKAGES.get(name, 'onnxruntime')} in place of onnxruntime, "
                 "or use --device cpu; 'facetalk doctor' lists what this box has.")
    return wanted


@functools.lru_cache(maxsize=16)
def _session(path: str, providers: tuple[str, ...], pid: int) -> onnxruntime.InferenceSession:
    """One session per model, providers and process.

    A forked child (Celery's prefork pool, multiprocessing) must not run its parent's
    session, whose worker threads did not survive the fork.
    """
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.log_severity_level = 3  # errors only: provider fall-back notes are not the user's concern
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # These models are small: two intra-op threads at most keep a render's encoder and
    # the service's other workers from being starved by a thread per core spinning.
    opts.intra_op_num_threads = min(2, os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: a render's face analysis runs beside the
    # audio analysis (which wants both cores) and the spin cost 0.08-0.12 s of CPU per
    # call for no gain in wall time (measured: tracking 300 frames 2.6-2.9 s either
    # way, 3.8-3.9 instead of 4.9-5.5 s of CPU).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, sess_options=opts, providers=list(providers))


def session(model: str | Path, device: str | None = None) -> onnxruntime.InferenceSession:
    """A cached ONNX Runtime session for ``model`` on ``device``'s providers."""
    return _session(str(model), resolve(device), os.getpid())
