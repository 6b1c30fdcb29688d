"""What the page shows before a job exists: the face box and framings, or a recording's
length and waveform, computed by the engine's own code in a helper process.

Why the engine's code: the preview must agree with what a render will do, so the
portrait goes through ``load_portrait`` -> ``analyze_face`` -> ``plan_framing``, the
same calls ``generate()`` makes, and a picture the page accepts is one a job accepts.

Why a helper process (one, started on the first request, replaced if it dies or
hangs): mediapipe is a C++ graph that would otherwise run inside the server, compete
with the event loop, cost ~150 MB there, and its log silencer swaps file descriptor 2,
which would swallow the server's own log lines meanwhile. The helper is only started
when someone uses the page, so a server that only serves the API never pays for it.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InvalidInput, UnsupportedMedia
from ...options import FRAMINGS, GenerationOptions
from ...settings import Limits
from ..errors import ServiceError
from ..logs import log
from .messages import Analyze
from .process import HelperProcess
from .validator import answer_of, decode_audio, decode_portrait, serve_helper

_log = logging.getLogger("facetalk.web")

#: A file that takes longer than this to analyze is refused and the helper replaced.
ANALYZE_TIMEOUT_S = 60.0
#: Long side of the preview picture sent back to the page (enough for a phone or a laptop).
PREVIEW_MAX_SIDE = 720
#: Bars of the waveform sent back for a recording the browser could not decode itself.
WAVEFORM_BARS = 240


class ShuttingDown(ServiceError):
    """The server is stopping; the page may retry against the next start."""

    code = "unavailable"
    status = 503
    default_hint = "The server is restarting; try again in a moment."


# -- the analyses (run in the helper; plain functions so tests can call them directly) ------
def analyze_portrait(path: Path, options: GenerationOptions, limits: Limits) -> dict[str, Any]:
    """Face box, the rectangle each framing would show, output sizes and a preview JPEG.

    Coordinates are pixels of the upright picture (EXIF orientation applied), the same
    picture the preview shows, so the page only scales them.
    """
    from ...face.analysis import analyze_face
    from ...face.framing import plan_framing

    pixels = decode_portrait(path, limits)
    h, w = pixels.shape[:2]
    face = analyze_face(pixels)
    framings: dict[str, dict[str, float | int]] = {}
    for name in FRAMINGS:
        fr = plan_framing(face, dataclasses.replace(options, framing=name))
        # Framing maps output pixel centres to the picture; its visible rectangle runs
        # from half an output pixel before the first centre to half after the last.
        x0 = fr.origin_x + 0.5 - 0.5 / fr.scale
        y0 = fr.origin_y + 0.5 - 0.5 / fr.scale
        framings[name] = {"x": round(x0, 2), "y": round(y0, 2),
                          "width": round(fr.out_w / fr.scale, 2),
                          "height": round(fr.out_h / fr.scale, 2),
                          "out_width": fr.out_w, "out_height": fr.out_h}
    x0, y0, x1, y1 = face.box
    return {
        "kind": "portrait",
        "width": int(w), "height": int(h),
        "face": {"box": [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)],
                 "size": round(face.size, 2)},
        "framings": framings,
        "warnings": list(face.warnings),
        "preview": _preview(pixels),
    }


def _preview(pixels: np.ndarray) -> dict[str, Any]:
    """A small JPEG of the upright picture as the engine sees it (transparency on white,
    EXIF turned), which the page can show even for formats browsers do not display."""
    from PIL import Image

    im = Image.fromarray(pixels)
    im.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return {"src": f"data:image/jpeg;base64,{data}", "width": im.width, "height": im.height}


def analyze_audio(path: Path, limits: Limits) -> dict[str, Any]:
    """Length (as the engine will read it) and a peak envelope for the waveform.

    The page decodes common formats itself; this is for the rest (anything PyAV's
    FFmpeg decodes), and it refuses audio over the server's length limit early.
    """
    sound = decode_audio(path, limits)
    return {"kind": "audio", "duration_s": round(sound.duration, 3),
            "sample_rate": sound.source_rate, "channels": sound.source_channels,
            "peaks": peaks(sound.samples, WAVEFORM_BARS)}


def peaks(samples: np.ndarray, bars: int) -> list[float]:
    """Largest absolute sample in each of ``bars`` equal slices, 0..1 (3 decimals)."""
    if samples.size == 0:
        return []
    bars = max(1, min(bars, samples.size))
    edges = np.linspace(0, samples.size, bars + 1).astype(int)
    mags = np.abs(samples.astype(np.float32))
    out = np.maximum.reduceat(mags, edges[:-1])
    return [round(float(v), 3) for v in np.clip(out, 0.0, 1.0)]


def _run(kind: str, path: Path, options: dict[str, Any], limits: Limits) -> dict[str, Any]:
    if kind == "portrait":
        return analyze_portrait(path, GenerationOptions(**options), limits)
    if kind == "audio":
        return analyze_audio(path, limits)
    raise InvalidInput(f"nothing to analyze for {kind!r}")


# -- the helper process ------------------------------------------------------------------
def _analyze(request: Analyze, limits: Limits) -> dict[str, Any]:
    return _run(request.kind, Path(request.path), request.options, limits)


def main(argv: list[str] | None = None) -> None:
    """``python -m facetalk.service.helpers.analyzer FD CONFIG_JSON``: started by the server."""
    serve_helper(argv, _analyze, ("facetalk.media.audio", "facetalk.face.analysis",
                                  "facetalk.face.framing", "facetalk.media.image"), "file")


class Analyzer:
    """One helper process, started on first use; ``analyze`` blocks (call it from a thread).

    Requests are served one at a time: each takes ~50 ms of CPU, and on a 2-core box a
    second helper would only compete with the renders.
    """

    def __init__(self, limits: Limits, timeout: float = ANALYZE_TIMEOUT_S) -> None:
        self.limits = limits
        self.timeout = timeout
        self._lock = threading.Lock()
        self._helper: HelperProcess | None = None
        self._closed = False

    def _start(self) -> HelperProcess:
        helper = HelperProcess("facetalk.service.helpers.analyzer",
                               {"limits": dataclasses.asdict(self.limits)})
        self._helper = helper
        try:
            helper.wait_ready(self.timeout)
        except EOFError:
            self._kill()
            raise
        return helper

    def _kill(self) -> None:
        if self._helper is not None:
            self._helper.kill()
            self._helper = None

    def analyze(self, kind: str, path: Path, options: GenerationOptions | None = None
                ) -> dict[str, Any]:
        """Run one analysis in the helper; raise the engine's typed error on bad input."""
        request = Analyze(kind, str(path), (options or GenerationOptions()).to_dict())
        with self._lock:
            # Two tries: a helper killed while idle can still look alive for a moment (its
            # threads are being torn down), so the first death may not be this file's fault.
            # A file that kills a fresh helper too is reported as the cause.
            for attempt in (1, 2):
                if self._closed:
                    raise ShuttingDown("the server is shutting down")
                try:
                    reply = self._ask(request)
                    break
                except (EOFError, OSError):
                    if self._closed:
                        raise ShuttingDown("the server is shutting down") from None
                    code = self._helper.proc.poll() if self._helper is not None else None
                    log(_log, logging.WARNING, "the analyzer process died", exitcode=code,
                        attempt=attempt)
                    self._kill()
            else:
                raise UnsupportedMedia("the file could not be analyzed (the decoder crashed)",
                                       hint="Try another file or format.")
        return answer_of(reply)

    def _ask(self, request: Analyze) -> object:
        """One round trip to the helper (started if needed); the caller holds the lock."""
        if self._helper is not None and not self._helper.alive():
            self._kill()  # died while idle (killed, out of memory): start a new one
        helper = self._helper or self._start()
        reply = helper.ask(request, self.timeout)
        if reply is None:
            log(_log, logging.WARNING, "analysis took too long; analyzer replaced",
                timeout_s=self.timeout)
            self._kill()
            raise UnsupportedMedia(f"the file could not be analyzed within {self.timeout:.0f} s")
        return reply

    def pid(self) -> int | None:
        """Pid of the helper while it runs (tests)."""
        helper = self._helper
        return helper.pid if helper is not None and helper.alive() else None

    def stop(self) -> None:
        """End the helper (at server shutdown), without waiting for an analysis to end."""
        self._closed = True
        helper = self._helper
        if helper is not None and helper.alive():
            helper.proc.kill()  # a request in flight sees EOF and answers at once
        with self._lock:
            self._kill()


if __name__ == "__main__":
    main()
