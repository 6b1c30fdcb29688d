"""FaceTalk Generate and FaceTalk Save MP4: facetalk as ComfyUI nodes.

Widgets carry Sonic's names and ranges, so a Sonic workflow's values fit unchanged and
the outputs come in Sonic's order (frames, fps) plus the audio fitted to the video.
Neither ComfyUI nor torch is imported here at module level: ComfyUI's progress bar and
interrupt flag are looked up lazily, inside a run, and simply skipped outside ComfyUI.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import Cancelled, FacetalkError, InvalidInput, LimitExceeded
from ..options import FRAMINGS, LABEL_POSITIONS, PRESETS, GenerationOptions, field_info
from ..settings import Limits

log = logging.getLogger("facetalk.comfyui")

CATEGORY = "facetalk"

#: Sonic's ComfyUI sampler accepts any 64-bit seed; facetalk's seed is 31-bit. Larger
#: seeds are folded (seed mod 2**31): deterministic, and no Sonic workflow is refused.
SEED_MAX = 0xFFFFFFFFFFFFFFFF
#: Sonic's ``min_resolution`` starts at 128; facetalk renders at 256 or more. Values
#: 128..255 are raised to 256 (with a log line) rather than refused.
SONIC_MIN_RESOLUTION = 128

#: One frame handed to ComfyUI costs H*W*3*4 bytes (float32 RGB): 3 MiB at 512x512,
#: 12 MiB at 1024x1024, so a minute at 25 fps is 4.4 GiB at 512 and 17.6 GiB at 1024.
#: Above this budget FaceTalk Generate refuses before rendering and points to
#: FaceTalk Save MP4, which streams to a file. ``FACETALK_COMFYUI_MAX_FRAMES_GB`` moves it.
DEFAULT_MAX_FRAME_GB = 4.0

_PROGRESS_STEPS = 1000
#: Share of the progress bar for the render; the rest is decoding frames into the tensor.
_RENDER_SHARE = 0.9


class FaceTalkNodeError(RuntimeError):
    """A facetalk error as ComfyUI shows it: facetalk's message, then its hint."""

    def __init__(self, message: str, hint: str = "", code: str = "facetalk_error") -> None:
        self.message = message
        self.hint = hint
        self.code = code
        super().__init__(f"facetalk: {message}" + (f" - {hint}" if hint else ""))


def _facetalk_fields() -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in field_info()}


def max_frame_bytes() -> int:
    """The budget for frames handed to ComfyUI as one tensor, in bytes."""
    raw = os.environ.get("FACETALK_COMFYUI_MAX_FRAMES_GB", "")
    try:
        gb = float(raw) if raw.strip() else DEFAULT_MAX_FRAME_GB
    except ValueError:
        raise FaceTalkNodeError(f"FACETALK_COMFYUI_MAX_FRAMES_GB must be a number, got {raw!r}") from None
    return int(gb * 1024**3)


def frame_bytes(width: int, height: int, frames: int) -> int:
    """Bytes of ``frames`` float32 RGB frames of ``width`` x ``height``: ComfyUI's IMAGE."""
    return width * height * 3 * 4 * frames


def widget_inputs() -> dict[str, tuple[Any, ...]]:
    """The widgets shared by both nodes: Sonic's names and ranges, then facetalk's own.

    Ranges of facetalk's own widgets are read from :func:`facetalk.options.field_info`
    so they cannot drift from what ``GenerationOptions`` accepts.
    """
    ft = _facetalk_fields()

    def tip(name: str, extra: str = "") -> str:
        return (ft[name]["help"] + (" " + extra if extra else "")).strip()

    max_seconds = float(Limits().max_audio_seconds)
    return {
        "min_resolution": ("INT", {
            "default": 512, "min": SONIC_MIN_RESOLUTION, "max": int(ft["min_resolution"]["max"]), "step": 64,
            "tooltip": tip("min_resolution", f"Sonic's range 128-2048; values below "
                           f"{ft['min_resolution']['min']} are raised to {ft['min_resolution']['min']}.")}),
        "duration": ("FLOAT", {
            "default": 0.0, "min": 0.0, "max": max_seconds, "step": 0.1,
            "tooltip": "Video length in seconds. 0 = the audio's own length (Sonic's default of 10 s "
                       "cut longer recordings short). A shorter value cuts audio and video together; "
                       "a longer one adds a closed-mouth idle tail."}),
        "expand_ratio": ("FLOAT", {
            "default": 0.2, "min": 0.1, "max": float(ft["expand_ratio"]["max"]), "step": 0.01,
            "tooltip": tip("expand_ratio", "Sonic's range 0.1-1.0; 0.15-0.2 keeps the face large.")}),
        "seed": ("INT", {
            "default": 0, "min": 0, "max": SEED_MAX,
            "tooltip": tip("seed", "Seeds above 2^31-1 are folded (seed mod 2^31).")}),
        "inference_steps": ("INT", {
            "default": int(ft["inference_steps"]["default"]), "min": int(ft["inference_steps"]["min"]),
            "max": int(ft["inference_steps"]["max"]), "step": 1, "tooltip": tip("inference_steps")}),
        "dynamic_scale": ("FLOAT", {
            "default": 1.0, "min": float(ft["dynamic_scale"]["min"]),
            "max": float(ft["dynamic_scale"]["max"]), "step": 0.01, "tooltip": tip("dynamic_scale")}),
        "fps": ("FLOAT", {
            "default": 25.0, "min": float(ft["fps"]["min"]), "max": float(ft["fps"]["max"]), "step": 1.0,
            "tooltip": tip("fps", "Whole numbers only.")}),
        "motion_scale": ("FLOAT", {
            "default": 1.0, "min": float(ft["motion_scale"]["min"]), "max": float(ft["motion_scale"]["max"]),
            "step": 0.01, "tooltip": tip("motion_scale")}),
        "preset": (["none", *PRESETS], {
            "default": "none",
            "tooltip": "none = the widgets as set; fast / quality replace inference_steps and "
                       "min_resolution with the preset's values; subtle sets dynamic_scale "
                       "0.7 (a smaller mouth opening, which looks more photographic)."}),
        "framing": (list(FRAMINGS), {"default": ft["framing"]["default"], "tooltip": tip("framing")}),
        "lip_sync_correction": ("BOOLEAN", {"default": True, "tooltip": tip("lip_sync_correction")}),
        "smooth_motion": ("BOOLEAN", {"default": True, "tooltip": tip("smooth_motion")}),
        "blink": ("BOOLEAN", {"default": True, "tooltip": tip("blink")}),
        "label": ("STRING", {"default": "", "multiline": False,
                             "tooltip": tip("label", "Empty = no visible label.")}),
        "label_position": (list(LABEL_POSITIONS), {"default": ft["label_position"]["default"],
                                                   "tooltip": tip("label_position")}),
        "watermark": ("BOOLEAN", {"default": True, "tooltip": tip("watermark")}),
    }


def build_options(widgets: dict[str, Any]) -> GenerationOptions:
    """GenerationOptions from the widget values, with Sonic's wider ranges mapped in.

    Clamped, not refused: ``min_resolution`` 128-255 (raised to facetalk's minimum) and
    ``seed`` above 2**31-1 (folded). Refused with facetalk's message: anything else
    ``GenerationOptions`` rejects, and a fractional ``fps``.
    """
    ft = _facetalk_fields()
    values = dict(widgets)
    preset = values.pop("preset", "none")
    if preset not in ("none", *PRESETS):
        raise InvalidInput(f"unknown preset {preset!r}; choose none, {', '.join(PRESETS)}")
    if preset != "none":
        values.update(PRESETS[preset])
    lo_res = int(ft["min_resolution"]["min"])
    if int(values.get("min_resolution", 512)) < lo_res:
        log.warning("min_resolution %s raised to %s (facetalk's minimum)", values["min_resolution"], lo_res)
        values["min_resolution"] = lo_res
    duration = values.get("duration")
    if duration is not None and float(duration) <= 0:
        values["duration"] = None
    if "seed" in values:
        values["seed"] = int(values["seed"]) % (int(ft["seed"]["max"]) + 1)
    if "fps" in values:
        fps = float(values["fps"])
        if not fps.is_integer():
            raise InvalidInput(f"fps must be a whole number of frames per second, got {fps}")
        values["fps"] = int(fps)
    label = values.get("label")
    if label is not None and not str(label).strip():
        values["label"] = None
    return GenerationOptions(**values)


# -- conversions between ComfyUI's types and what generate() reads -------------------

def image_to_png(image: Any) -> bytes:
    """The first image of an IMAGE batch ([B,H,W,C] float 0..1) as PNG bytes."""
    import numpy as np
    from PIL import Image

    if getattr(image, "ndim", 0) != 4 or image.shape[0] < 1 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(getattr(image, "shape", ()))
        raise InvalidInput(f"image must be a [B,H,W,C] IMAGE batch, got shape {shape}")
    if image.shape[0] > 1:
        log.info("FaceTalk: %d images in the batch; the first one is used", image.shape[0])
    arr = image[0].detach().cpu().float().clamp(0, 1).mul(255).round().to(dtype=_torch().uint8).numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr[..., :3])).save(buf, format="PNG")
    return buf.getvalue()


def audio_to_wav(audio: Any) -> bytes:
    """The first clip of an AUDIO dict ({waveform [B,C,T], sample_rate}) as 16-bit WAV bytes."""
    import numpy as np

    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (TypeError, KeyError) as exc:
        raise InvalidInput("audio must be ComfyUI AUDIO: {'waveform': [B,C,T], 'sample_rate': int}") from exc
    if getattr(waveform, "ndim", 0) != 3 or waveform.shape[-1] == 0:
        shape = tuple(getattr(waveform, "shape", ()))
        raise InvalidInput(f"audio waveform must be [B,C,T] with samples, got {shape}")
    clip = waveform[0].detach().cpu().float().numpy()  # [C, T]
    if not np.isfinite(clip).all():
        raise InvalidInput("the audio contains NaN or infinite samples")
    pcm = (np.clip(clip, -1.0, 1.0) * 32767.0).round().astype("<i2").T  # [T, C] interleaved
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm).tobytes())
    return buf.getvalue()


def fit_audio(audio: dict[str, Any], seconds: float) -> dict[str, Any]:
    """AUDIO cut or zero-padded to ``seconds``, so it ends with the video."""
    torch = _torch()
    waveform, rate = audio["waveform"], int(audio["sample_rate"])
    target = round(seconds * rate)
    have = waveform.shape[-1]
    if have >= target:
        out = waveform[..., :target]
    else:
        out = torch.nn.functional.pad(waveform, (0, target - have))
    return {"waveform": out.contiguous(), "sample_rate": rate}


def estimate_frames(image: Any, audio: dict[str, Any], options: GenerationOptions) -> tuple[int, int, int]:
    """(frames, width, height) a render will have: known before rendering, for the memory check."""
    seconds = options.duration
    if seconds is None:
        seconds = audio["waveform"].shape[-1] / int(audio["sample_rate"])
    frames = max(1, round(seconds * options.fps))
    short = max(2, options.min_resolution // 2 * 2)
    if options.framing == "crop":
        return frames, short, short
    if options.framing == "vertical":
        return frames, short, max(2, int(short * 16 / 9) // 2 * 2)
    h, w = int(image.shape[1]), int(image.shape[2])
    long_side = math.ceil(short * max(h, w) / min(h, w))
    return frames, (long_side if w >= h else short), (short if w >= h else long_side)


def check_memory(frames: int, width: int, height: int) -> None:
    """Refuse, before rendering, a clip whose frames would not fit the tensor budget."""
    need, budget = frame_bytes(width, height, frames), max_frame_bytes()
    if need > budget:
        per_min = frame_bytes(width, height, 1500) / 1024**3
        raise LimitExceeded(
            f"{frames} frames of {width}x{height} need {need / 1024**3:.1f} GiB as one IMAGE tensor, "
            f"above this node's limit of {budget / 1024**3:.1f} GiB ({per_min:.1f} GiB per minute at 25 fps)",
            "use the FaceTalk Save MP4 node, which writes the MP4 straight to the output folder, or "
            "lower min_resolution / duration (the limit is FACETALK_COMFYUI_MAX_FRAMES_GB)")


def _torch() -> Any:
    import torch

    return torch


# -- ComfyUI hooks, looked up lazily and optional -------------------------------------

def _comfy_progress() -> Any | None:
    try:
        from comfy.utils import ProgressBar  # type: ignore[import-not-found]
    except ImportError:
        return None
    return ProgressBar(_PROGRESS_STEPS)


def _comfy_interrupted() -> Callable[[], bool]:
    try:
        from comfy import model_management  # type: ignore[import-not-found]
    except ImportError:
        return lambda: False
    return model_management.processing_interrupted


def _raise_comfy_interrupt() -> None:
    """Hand a cancel back to ComfyUI as its own interrupt (shown as 'interrupted', not an error)."""
    try:
        from comfy import model_management  # type: ignore[import-not-found]
    except ImportError:
        return
    model_management.throw_exception_if_processing_interrupted()


def _render(image: Any, audio: dict[str, Any], options: GenerationOptions, output: Path,
            bar: Any | None, interrupted: Callable[[], bool]) -> Any:
    """generate() with ComfyUI's progress bar and interrupt; facetalk errors become node errors."""
    import facetalk

    def on_progress(p: Any) -> None:
        if bar is not None:
            bar.update_absolute(int(p.fraction * _RENDER_SHARE * _PROGRESS_STEPS))

    try:
        return facetalk.generate(image_to_png(image), audio_to_wav(audio), options, on_progress,
                                 output=output, cancel=interrupted)
    except Cancelled:
        _raise_comfy_interrupt()
        raise FaceTalkNodeError("the render was cancelled", "", "cancelled") from None
    except FacetalkError as exc:
        raise FaceTalkNodeError(exc.message, exc.hint, exc.code) from exc


def decode_frames(path: Path, frames: int, width: int, height: int, bar: Any | None,
                  interrupted: Callable[[], bool]) -> Any:
    """The MP4's frames as one [N,H,W,3] float32 0..1 tensor, filled frame by frame."""
    import av

    torch = _torch()
    out = torch.empty((frames, height, width, 3), dtype=torch.float32)
    n = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if n >= frames:
                break
            if interrupted():
                _raise_comfy_interrupt()
                raise FaceTalkNodeError("the render was cancelled", "", "cancelled")
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))
            out[n].copy_(rgb).mul_(1.0 / 255.0)
            n += 1
            if bar is not None and n % 10 == 0:
                bar.update_absolute(int((_RENDER_SHARE + (1 - _RENDER_SHARE) * n / frames) * _PROGRESS_STEPS))
    if n < frames:
        out = out[:n].clone()
    if bar is not None:
        bar.update_absolute(_PROGRESS_STEPS)
    return out


def _node_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a node function so facetalk's own errors surface as FaceTalkNodeError."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FacetalkError as exc:
            raise FaceTalkNodeError(exc.message, exc.hint, exc.code) from exc
    return wrapper


class FaceTalkGenerate:
    """Portrait + speech -> frames, fps and fitted audio, where Sonic's sampler sat."""

    DESCRIPTION = ("Talking portrait on the CPU: one image and one recording in, frames + fps (as "
                   "Sonic's sampler) + the audio fitted to the video out. Long clips: FaceTalk Save MP4.")
    CATEGORY = CATEGORY
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE", "FLOAT", "AUDIO")
    RETURN_NAMES = ("image", "fps", "audio")
    OUTPUT_TOOLTIPS = ("The frames, [N,H,W,3] float 0..1.", "Frames per second.",
                       "The input audio cut or padded to the video's length.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        """Image and audio links, then the widgets (see :func:`widget_inputs`)."""
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The portrait; the first image of a batch is used."}),
            "audio": ("AUDIO", {"tooltip": "The speech recording."}),
            **widget_inputs(),
        }}

    @_node_errors
    def generate(self, image: Any, audio: dict[str, Any],
                 **widgets: Any) -> tuple[Any, float, dict[str, Any]]:
        """Render to a temporary MP4, decode it into one tensor, fit the audio to it."""
        options = build_options(widgets)
        check_memory(*estimate_frames(image, audio, options))
        bar, interrupted = _comfy_progress(), _comfy_interrupted()
        with tempfile.TemporaryDirectory(prefix="facetalk-comfyui-") as tmp:
            result = _render(image, audio, options, Path(tmp) / "render.mp4", bar, interrupted)
            check_memory(result.frames, result.width, result.height)
            frames = decode_frames(result.path, result.frames, result.width, result.height, bar, interrupted)
        for warning in result.warnings:
            log.warning("FaceTalk: %s", warning)
        seconds = frames.shape[0] / result.fps
        return frames, float(result.fps), fit_audio(audio, seconds)


def _output_dir(fallback: str | os.PathLike[str] | None) -> Path:
    if fallback is not None:
        return Path(fallback)
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        return Path(os.environ.get("FACETALK_COMFYUI_OUTPUT", "output"))
    return Path(folder_paths.get_output_directory())


def _next_path(folder: Path, stem: str) -> Path:
    n = 1
    while (folder / f"{stem}_{n:05d}.mp4").exists():
        n += 1
    return folder / f"{stem}_{n:05d}.mp4"


class FaceTalkSaveMP4:
    """Portrait + speech -> facetalk's own MP4 in the output folder: for clips of any length."""

    DESCRIPTION = ("Writes facetalk's MP4 (AI-generated metadata, watermark, AAC audio) straight to "
                   "ComfyUI's output folder; frames never become a tensor, so memory does not "
                   "limit the length.")
    CATEGORY = CATEGORY
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the MP4 written.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        """As FaceTalk Generate, plus the file name prefix."""
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The portrait; the first image of a batch is used."}),
            "audio": ("AUDIO", {"tooltip": "The speech recording."}),
            "filename_prefix": ("STRING", {
                "default": "facetalk/FaceTalk",
                "tooltip": "Sub-folder and name start, inside the output folder."}),
            **widget_inputs(),
        }}

    @_node_errors
    def save(self, image: Any, audio: dict[str, Any], filename_prefix: str = "facetalk/FaceTalk",
             output_dir: str | os.PathLike[str] | None = None, **widgets: Any) -> dict[str, Any]:
        """Render straight into ``<output>/<prefix>_NNNNN.mp4`` and show it in the UI."""
        options = build_options(widgets)
        root = _output_dir(output_dir).resolve()
        target = (root / (filename_prefix.strip() or "FaceTalk")).resolve()
        if root != target and root not in target.parents:
            raise InvalidInput(f"filename_prefix {filename_prefix!r} leaves the output folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        path = _next_path(target.parent, target.name)
        bar = _comfy_progress()
        result = _render(image, audio, options, path, bar, _comfy_interrupted())
        if bar is not None:
            bar.update_absolute(_PROGRESS_STEPS)
        for warning in result.warnings:
            log.warning("FaceTalk: %s", warning)
        sub = path.parent.relative_to(root).as_posix()
        return {"ui": {"images": [{"filename": path.name, "subfolder": "" if sub == "." else sub,
                                   "type": "output"}], "animated": (True,)},
                "result": (str(path),)}


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "FaceTalkGenerate": FaceTalkGenerate,
    "FaceTalkSaveMP4": FaceTalkSaveMP4,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "FaceTalkGenerate": "FaceTalk Generate",
    "FaceTalkSaveMP4": "FaceTalk Save MP4",
}
