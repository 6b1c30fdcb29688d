"""Upload validation in separate processes: decode hostile bytes away from the server.

Every upload is fully decoded with the engine's own loaders before it is queued. That
decoding runs in a small pool of long-lived helper processes rather than in the
server, for three reasons measured or feared on a 2-core box:

- **responsiveness**: decoding is ~20 ms of CPU per job; in the server's process it
  competes with the event loop for the GIL and /healthz latency spikes under a burst;
- **isolation**: a decoder that crashes (a segfault in a C library on a crafted file)
  or hangs takes down one helper, which is replaced; the request gets a 415;
- **memory**: a 32-megapixel portrait decodes to ~100 MB, in the helper, not the server;
  a file whose header lies about its size fails to allocate under the helper's own data
  limit (:data:`DATA_LIMIT_BYTES`) instead of taking the box's memory.

``POST /v1/verify`` uses the same helpers and limits: a video (or a picture, which FFmpeg
reads as a one-frame video) over the pixel limit is refused from its header.

The helpers are :class:`~.process.HelperProcess` children, like the analyzer and the render workers.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import resource
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import FacetalkError, InvalidInput, LimitExceeded, NoFaceFound, UnsupportedMedia
from ...settings import Limits
from ..logs import log
from .messages import Answer, Inspect, Refusal, Verify
from .process import HelperProcess, announce_ready, child_channel

if TYPE_CHECKING:
    import numpy as np

    from ...media.audio import Audio

_log = logging.getLogger("facetalk.validator")

#: A file that takes longer than this to decode is refused (and its helper replaced).
DECODE_TIMEOUT_S = 60.0
#: Data segment (RLIMIT_DATA: heap and private mappings) of a validator process. A
#: 32-megapixel frame is ~100 MB as RGB and the watermark reader's planes a few times
#: that; an allocation past this fails (a 4xx for the client) instead of swapping the box.
DATA_LIMIT_BYTES = 3 * 1024**3
_ERRORS: dict[str, type[FacetalkError]] = {
    c.code: c for c in (InvalidInput, UnsupportedMedia, LimitExceeded, NoFaceFound)}


def decode_portrait(path: Path, limits: Limits) -> np.ndarray:
    """The engine's ``load_portrait``, with any failure on hostile bytes turned into the
    client's unsupported media (logged, so a decoder bug stays visible)."""
    from PIL import Image

    from ...media.image import load_portrait

    try:
        return load_portrait(str(path), limits)
    except Image.DecompressionBombError as exc:
        # Pillow's own bomb guard fires at open for >2x its default limit.
        raise LimitExceeded(f"the portrait declares too many pixels ({exc})",
                            hint="Resize the picture; 2-4 megapixels is plenty.") from None
    except (InvalidInput, MemoryError):
        raise
    except Exception as exc:
        log(_log, logging.WARNING, "portrait decoder raised an unexpected error",
            error=type(exc).__name__)
        raise UnsupportedMedia("the portrait could not be decoded") from None


def decode_audio(path: Path, limits: Limits) -> Audio:
    """The engine's ``load_audio``, guarded like :func:`decode_portrait`."""
    from ...media.audio import load_audio

    try:
        return load_audio(str(path), limits)
    except (InvalidInput, MemoryError):
        raise
    except Exception as exc:
        log(_log, logging.WARNING, "audio decoder raised an unexpected error",
            error=type(exc).__name__)
        raise UnsupportedMedia("the audio could not be decoded") from None


def inspect_inputs(portrait: Path, audio: Path, limits: Limits) -> dict[str, dict[str, Any]]:
    """Fully decode both inputs with the engine's loaders; facts for the job record.

    Any decoder failure on hostile bytes is the client's unsupported media, never a
    server error; it is logged so a decoder bug stays visible.
    """
    pixels = decode_portrait(portrait, limits)
    h, w = pixels.shape[:2]
    del pixels
    sound = decode_audio(audio, limits)
    return {
        "portrait": {"width": int(w), "height": int(h)},
        "audio": {"duration_s": round(sound.duration, 3), "sample_rate": sound.source_rate,
                  "channels": sound.source_channels},
    }


def verify_video(path: Path, limits: Limits) -> dict[str, Any]:
    """``facetalk verify``'s report of an uploaded video, within a job's input limits.

    Frames over ``max_image_pixels`` are refused from the header: Pillow's for a picture
    (FFmpeg reads a PNG or JPEG as a one-frame video and would decode it whole), the stream
    parameters of FFmpeg's probe otherwise; so is a container declared longer than
    ``max_audio_seconds`` (a render is never longer). Only then is the watermark read.
    """
    from ...provenance.verify import verify_report

    _check_picture_header(path, limits)
    _check_video_header(path, limits)
    return verify_report(path)


def _too_many_pixels(w: int, h: int, limits: Limits) -> LimitExceeded:
    return LimitExceeded(
        f"the video's frames are {w}x{h}, over the limit of "
        f"{limits.max_image_pixels / 1e6:.1f} megapixels (FACETALK_MAX_IMAGE_PIXELS)",
        hint="Verify the video as it was published, not a larger copy.")


def _check_picture_header(path: Path, limits: Limits) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:  # lazy: reads the header only
            w, h = im.size
    except Image.DecompressionBombError:
        raise LimitExceeded("the file declares far too many pixels",
                            hint="Verify the video as it was published.") from None
    except Exception:  # not a picture Pillow knows (a video): FFmpeg decides below
        return
    if w * h > limits.max_image_pixels:
        raise _too_many_pixels(w, h, limits)


def _check_video_header(path: Path, limits: Limits) -> None:
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, OSError):
        return  # verify_report says why, in the client's terms
    with container:
        for stream in container.streams.video[:1]:
            w, h = stream.codec_context.width, stream.codec_context.height
            if w * h > limits.max_image_pixels:
                raise _too_many_pixels(w, h, limits)
        seconds = container.duration / av.time_base if container.duration else 0.0
        if seconds > limits.max_audio_seconds:
            raise LimitExceeded(
                f"the video is declared {seconds:.0f} s long, over the limit of "
                f"{limits.max_audio_seconds:.0f} s (FACETALK_MAX_AUDIO_SECONDS)",
                hint="Verify an excerpt: the watermark is in every second of a render.")


def answer_of(reply: object) -> dict[str, Any]:
    """A helper's :class:`Answer`, or the typed error its :class:`Refusal` carries, raised
    in the server."""
    if isinstance(reply, Answer):
        return reply.value
    if isinstance(reply, Refusal):
        raise _ERRORS.get(reply.code, InvalidInput)(reply.message, reply.hint)
    raise TypeError(f"unexpected helper message {type(reply).__name__}")


# -- the helper process ---------------------------------------------------------------------
def serve_helper(argv: list[str] | None, handle: Callable[[Any, Limits], dict[str, Any]],
                 warm: tuple[str, ...], what: str) -> None:
    """The loop of a helper process (``python -m ... FD CONFIG_JSON``, started by the
    server only): warm ``warm``'s imports, say Ready, then answer each request with
    :class:`Answer` ``(handle(request, limits))`` or a :class:`Refusal`, until the server
    goes away. ``what`` names the input in the out-of-memory message; ``config["data_limit"]``,
    when given, caps the process's data segment (RLIMIT_DATA) once the imports are done."""
    from .. import logs

    conn, config = child_channel(argv)
    limits = Limits(**config["limits"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    os.nice(5)  # decoding for a client yields to the server's event loop, not vice versa
    logs.configure("warning")
    parent = os.getppid()
    for module in warm:
        importlib.import_module(module)
    if config.get("data_limit"):
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = int(config["data_limit"])
        resource.setrlimit(resource.RLIMIT_DATA,
                           (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        announce_ready(conn)
        while os.getppid() == parent:
            try:
                request = conn.recv()
            except EOFError:
                return  # the server is gone
            try:
                conn.send(Answer(handle(request, limits)))
            except FacetalkError as exc:
                conn.send(Refusal(exc.code, exc.message, exc.hint))
            except MemoryError:
                conn.send(Refusal("limit_exceeded", f"the {what} needs too much memory to decode",
                                  "Use a smaller file."))
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return
    finally:
        conn.close()


def _handle(request: Inspect | Verify, limits: Limits) -> dict[str, Any]:
    if isinstance(request, Verify):
        return verify_video(Path(request.path), limits)
    return inspect_inputs(Path(request.portrait), Path(request.audio), limits)


def main(argv: list[str] | None = None) -> None:
    """``python -m facetalk.service.helpers.validator FD CONFIG_JSON``: started by the server only."""
    serve_helper(argv, _handle, ("PIL.Image", "facetalk.media.audio", "facetalk.media.image",
                                 "facetalk.provenance.verify"), "input")


# -- the pool, in the server ---------------------------------------------------------------
class ValidatorPool:
    """N helper processes; ``inspect`` blocks (call it from a thread) and is thread-safe."""

    def __init__(self, size: int, limits: Limits, timeout: float = DECODE_TIMEOUT_S) -> None:
        self.size = size
        self.limits = limits
        self.timeout = timeout
        self._idle: queue.Queue[HelperProcess] = queue.Queue()
        self._all: list[HelperProcess] = []
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the helpers (they import the decoders while the server starts)."""
        for _ in range(self.size):
            self._idle.put(self._spawn())

    def _spawn(self) -> HelperProcess:
        helper = HelperProcess("facetalk.service.helpers.validator",
                               {"limits": asdict(self.limits), "data_limit": DATA_LIMIT_BYTES})
        with self._lock:
            self._all.append(helper)
        return helper

    def _replace(self, helper: HelperProcess) -> None:
        helper.kill()
        with self._lock:
            if helper in self._all:
                self._all.remove(helper)
            closed = self._closed
        if not closed:
            self._idle.put(self._spawn())

    def inspect(self, portrait: Path, audio: Path) -> dict[str, dict[str, Any]]:
        """Decode both files in a helper; raise the engine's typed error when they are bad."""
        return self._ask(Inspect(str(portrait), str(audio)), "the files")

    def verify(self, video: Path) -> dict[str, Any]:
        """``POST /v1/verify``'s report, read in a helper within the upload limits."""
        return self._ask(Verify(str(video)), "the video")

    def _ask(self, request: Inspect | Verify, what: str) -> dict[str, Any]:
        helper = self._idle.get(timeout=self.timeout * 2)
        try:
            helper.wait_ready(self.timeout)
            reply = helper.ask(request, self.timeout)
        except (EOFError, OSError):
            log(_log, logging.WARNING, "a validator process died while decoding an upload",
                exitcode=helper.proc.poll())
            self._replace(helper)
            raise UnsupportedMedia(f"{what} could not be decoded (the decoder crashed)") from None
        if reply is None:
            log(_log, logging.WARNING, "decoding took too long; validator replaced",
                timeout_s=self.timeout)
            self._replace(helper)
            raise UnsupportedMedia(f"{what} could not be decoded within {self.timeout:.0f} s")
        self._idle.put(helper)
        return answer_of(reply)

    def stop(self) -> None:
        """End every helper."""
        with self._lock:
            self._closed = True
            helpers = list(self._all)
            self._all.clear()
        for helper in helpers:
            helper.kill()

    def pids(self) -> list[int]:
        """Pids of the helpers (tests)."""
        with self._lock:
            return [h.pid for h in self._all]


if __name__ == "__main__":
    main()
