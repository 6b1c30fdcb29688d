"""Issue 21: the audio is analysed as it decodes, and a large portrait is shrunk to the
working scale once; both give what the whole-signal / full-size paths gave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facetalk.errors import LimitExceeded
from facetalk.media.audio import load_audio, stream_audio
from facetalk.media.tts import write_wav
from facetalk.motion.features import BLOCK_HOPS, RAW_FIELDS, raw_features, raw_features_stream
from facetalk.settings import Limits


def test_chunked_analysis_equals_the_whole_signal() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(int(16000 * 2.6 * BLOCK_HOPS / 100)) / 16000  # several blocks
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (rng.random(t.size) > 0.3)
         + 0.05 * rng.normal(size=t.size)).astype(np.float32)
    whole = raw_features(x, 16000)
    chunks = [x[i:i + 7777] for i in range(0, len(x), 7777)]
    streamed = raw_features_stream(iter(chunks), 16000)
    assert streamed.n == whole.n
    for k in RAW_FIELDS:
        assert np.array_equal(getattr(streamed, k), getattr(whole, k)), k


def test_stream_audio_matches_load_audio_and_keeps_the_limit(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    rng = np.random.default_rng(0)
    write_wav(str(wav), (0.2 * rng.normal(size=22050 * 3)).astype(np.float32), 22050)
    header, chunks = stream_audio(str(wav), chunk_s=0.25)
    parts = list(chunks)
    assert len(parts) > 8 and header.samples.size == 0 and header.source_rate == 22050
    assert np.array_equal(np.concatenate(parts), load_audio(str(wav)).samples)
    with pytest.raises(LimitExceeded):
        stream_audio(str(wav), Limits(max_audio_seconds=1.0))


def test_a_large_portrait_is_shrunk_to_the_working_scale(astronaut_path: Path) -> None:
    import cv2

    from facetalk.face.framing import plan_framing
    from facetalk.media.image import load_portrait
    from facetalk.options import GenerationOptions
    from facetalk.pipeline import prepare_face
    from facetalk.render.renderer import make_renderer

    small = load_portrait(str(astronaut_path))
    big = cv2.resize(small, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    options = GenerationOptions(min_resolution=256)
    face, rig = prepare_face(big, options)
    framing = plan_framing(face, options)
    # Working scale 1.5x the output's: the portrait keeps 1.5 pixels per output pixel.
    assert face.image.shape[0] < 0.7 * big.shape[0]
    assert framing.scale == pytest.approx(1 / 1.5, rel=0.02)
    renderer = make_renderer(face, rig, framing, True)
    assert renderer.interp == cv2.INTER_LINEAR
    assert renderer.still.shape == (256, 256, 3)
