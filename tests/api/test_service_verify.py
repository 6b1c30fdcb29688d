"""``POST /v1/verify``: the provenance report of an uploaded video, as ``facetalk verify``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facetalk import GenerationOptions, generate
from facetalk.media import tts
from facetalk.service.api import create_app
from facetalk.service.settings import ServiceSettings


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    storage = tmp_path_factory.mktemp("verify-api")
    app = create_app(ServiceSettings(storage=storage, workers=1, api_keys=("k-verify",)))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = "k-verify"
        yield client


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory, astronaut_path: Path) -> tuple[Path, str]:
    """A 3 s facetalk render (watermark on by default) and its render id."""
    d = tmp_path_factory.mktemp("verify-clip")
    s = tts.speak("Maybe by Monday, if you can.", wpm=150)
    wav = d / "s.wav"
    tts.write_wav(str(wav), s.samples, s.rate)
    res = generate(astronaut_path, wav, GenerationOptions(min_resolution=384, duration=3.0),
                   output=d / "marked.mp4")
    return res.path, res.render_id


def other_video(path: Path) -> Path:
    """A video facetalk did not make: moving noise and a gradient, 3 s."""
    rng = np.random.default_rng(5)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        ramp = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None]
        for i in range(75):
            img = np.clip(ramp + rng.normal(0, 20, (240, 320, 3)) + 3 * i, 0, 255)
            f = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def test_a_facetalk_video_reads_back_with_its_render_id(api: TestClient,
                                                        marked: tuple[Path, str]) -> None:
    path, rid = marked
    r = api.post("/v1/verify", files={"video": ("clip.mp4", path.read_bytes())})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["watermark"]["found"] is True
    assert report["watermark"]["payload"]["render_id"] == rid[:7]
    assert report["watermark"]["confidence"] > 0.5
    assert report["metadata"]["ai_generated"] is True and report["metadata"]["render_id"] == rid
    assert list((api.app.state.settings.storage / "tmp").iterdir()) == []  # type: ignore[attr-defined]


def test_another_video_reads_as_not_found(api: TestClient, tmp_path: Path) -> None:
    r = api.post("/v1/verify", files={"video": ("x.mp4", other_video(tmp_path / "x.mp4").read_bytes())})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["watermark"]["found"] is False and report["watermark"]["payload"] == {}
    assert report["metadata"]["ai_generated"] is False


def test_bad_requests_get_a_clear_4xx(api: TestClient, astronaut_path: Path) -> None:
    junk = api.post("/v1/verify", files={"video": ("a.mp4", b"not a video at all " * 100)})
    assert 400 <= junk.status_code < 500 and "video" in junk.json()["detail"], junk.text
    wrong_part = api.post("/v1/verify", files={"portrait": ("a.png", astronaut_path.read_bytes())})
    assert 400 <= wrong_part.status_code < 500, wrong_part.text
    nothing = api.post("/v1/verify", files={})
    assert 400 <= nothing.status_code < 500, nothing.text
    no_key = TestClient(api.app).post("/v1/verify", files={"video": ("x", b"abc")})
    assert no_key.status_code == 401
    assert list((api.app.state.settings.storage / "tmp").iterdir()) == []  # type: ignore[attr-defined]


def pixel_bomb(width: int, height: int) -> bytes:
    """A PNG of ``width`` x ``height`` black pixels: a few hundred KB that decode to GBs."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_a_pixel_bomb_is_refused_from_its_header_without_the_server_decoding_it(api: TestClient) -> None:
    """Issue 22 item 1: 8000x8000 (64 MP, over the 32 MP limit) in ~200 KB. Before the fix
    the server decoded it itself (RGB frame plus float64 watermark planes: > 1 GB RSS)."""
    import resource

    bomb = pixel_bomb(8000, 8000)
    assert len(bomb) < 400_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    r = api.post("/v1/verify", files={"video": ("bomb.png", bomb, "image/png")})
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "limit_exceeded" and "8000x8000" in r.json()["detail"]
    assert peak_after - peak_before < 150 * 1024 * 1024, (peak_before, peak_after)
    assert list((api.app.state.settings.storage / "tmp").iterdir()) == []  # type: ignore[attr-defined]


def test_verify_applies_the_pixel_and_length_limits_to_videos(tmp_path: Path) -> None:
    from facetalk.errors import LimitExceeded
    from facetalk.service.helpers.validator import verify_video
    from facetalk.settings import Limits

    clip = other_video(tmp_path / "x.mp4")
    assert verify_video(clip, Limits())["watermark"]["found"] is False
    with pytest.raises(LimitExceeded, match="320x240"):
        verify_video(clip, Limits(max_image_pixels=320 * 240 - 1))
    with pytest.raises(LimitExceeded, match="declared 3 s"):
        verify_video(clip, Limits(max_audio_seconds=2.0))
