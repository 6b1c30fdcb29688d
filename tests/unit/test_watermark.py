"""Watermark unit tests: payload coding, cost per frame, imperceptibility on flat areas."""

from __future__ import annotations

import datetime as dt
import time

import cv2
import numpy as np
import pytest

from facetalk import GenerationOptions
from facetalk.face.framing import Framing
from facetalk.provenance import watermark as wm
from facetalk.provenance.overlays import build_overlays


def test_payload_round_trip_and_crc() -> None:
    bits = wm.payload_bits("0123456789abcdef", "0.1.0", dt.date(2026, 3, 4))
    assert len(bits) >= 64 + 16
    p = wm.parse_bits(bits)
    assert p is not None
    assert p.to_dict() == {"generator": "facetalk", "version": "0.1.0",
                           "render_id": "0123456", "date": "2026-03-04"}
    for i in (0, 17, len(bits) - 1):  # any single flipped bit is caught by the CRC
        broken = bits.copy()
        broken[i] ^= 1
        assert wm.parse_bits(broken) is None


def test_viterbi_corrects_noisy_soft_bits() -> None:
    bits = wm.payload_bits("fedcba9876543210")
    coded = wm.conv_encode(bits)
    rng = np.random.default_rng(0)
    soft = (1.0 - 2.0 * coded) + rng.normal(0.0, 0.9, len(coded))
    raw_errors = int(np.sum((soft < 0) != (coded == 1)))
    assert raw_errors > 20  # the channel really is noisy...
    assert np.array_equal(wm.viterbi_decode(soft), bits)  # ...and the code fixes it


def test_random_noise_never_parses() -> None:
    rng = np.random.default_rng(1)
    hits = sum(wm.parse_bits(wm.viterbi_decode(rng.normal(size=wm._CODED_BITS))) is not None
               for _ in range(300))
    assert hits == 0
    # The list decoder offers 16 paths per read to the CRC: still nothing from noise.
    hits = sum(any(wm.parse_bits(p) is not None
                   for p in wm.list_viterbi_decode(rng.normal(size=wm._CODED_BITS), wm.LIST_SIZE))
               for _ in range(300))
    assert hits == 0


def test_list_decoder_recovers_reads_the_best_path_gets_wrong() -> None:
    rng = np.random.default_rng(2)
    plain = listed = 0
    for _ in range(60):  # a channel at the edge: soft SNR 0.8, as after CRF 35 twice
        bits = wm.payload_bits(rng.bytes(8).hex())
        coded = wm.conv_encode(bits)
        soft = 0.8 * (1.0 - 2.0 * coded) + rng.normal(0.0, 1.0, len(coded))
        paths = wm.list_viterbi_decode(soft, wm.LIST_SIZE)
        assert np.array_equal(paths[0], wm.viterbi_decode(soft))  # best path = Viterbi's
        plain += np.array_equal(paths[0], bits)
        listed += any(np.array_equal(p, bits) for p in paths)
    assert listed >= plain + 10, (plain, listed)


def _frame(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(60, 200, size, dtype=np.float32)[None, :, None]
    return np.clip(base + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("form, size, budget_ms", [("rgb", 512, 0.5), ("rgb", 1024, 1.0),
                                                   ("i420", 512, 0.25), ("i420", 1024, 0.5)])
def test_embedding_cost_per_frame(form: str, size: int, budget_ms: float) -> None:
    overlay = wm.WatermarkOverlay(size, size, "0123456789abcdef", fps=25)
    frame = _frame(size)
    apply = overlay.apply
    if form == "i420":  # luma only: a third of the additions
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
        apply = overlay.apply_i420
    apply(frame, 0)  # the one-off preparation
    times = []
    for i in range(1, 101):
        t0 = time.perf_counter()
        apply(frame, i)
        times.append(time.perf_counter() - t0)
    assert np.median(times) * 1000 <= budget_ms, np.median(times)


def test_flat_areas_get_only_a_faint_dither() -> None:
    size = 256
    flat = np.full((size, size, 3), 128, np.uint8)
    overlay = wm.WatermarkOverlay(size, size, "0123456789abcdef", fps=25)
    marked = flat.copy()
    overlay.apply(marked, 0)  # full modulation
    diff = marked.astype(np.int16) - flat
    assert np.abs(diff).max() <= 3
    assert np.sqrt(np.mean(diff.astype(float) ** 2)) <= 1.0
    psnr = 10 * np.log10(255 ** 2 / np.mean(diff.astype(float) ** 2))
    assert psnr >= 48, psnr


def test_textured_frame_psnr_at_least_40_db() -> None:
    size = 384
    frame = _frame(size, seed=3)
    overlay = wm.WatermarkOverlay(size, size, "0123456789abcdef", fps=25)
    worst = np.inf
    for i in range(25):  # one modulation period
        marked = frame.copy()
        overlay.apply(marked, i)
        mse = np.mean((marked.astype(float) - frame) ** 2)
        if mse > 0:
            worst = min(worst, 10 * np.log10(255 ** 2 / mse))
    assert 40.0 <= worst < 60.0, worst  # there, and within budget


def test_option_controls_the_overlay() -> None:
    framing = Framing(out_w=256, out_h=256, scale=1.0, origin_x=0.0, origin_y=0.0)
    on = build_overlays(GenerationOptions(), framing, "0123456789abcdef")
    off = build_overlays(GenerationOptions(watermark=False), framing, "0123456789abcdef")
    assert any(isinstance(o, wm.WatermarkOverlay) for o in on)
    assert not any(isinstance(o, wm.WatermarkOverlay) for o in off)
    assert GenerationOptions.from_mapping({"watermark": "off"}).watermark is False


def test_quiet_region_is_marked_faintly_with_a_soft_edge() -> None:
    rng = np.random.default_rng(7)
    size, box = 320, (100.0, 180.0, 220.0, 240.0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (0, 0), 1.0)
    loud = wm.WatermarkOverlay(size, size, "0123456789abcdef", fps=25).pattern(frame)
    quiet_overlay = wm.WatermarkOverlay(size, size, "0123456789abcdef", fps=25, quiet=box)
    quiet = quiet_overlay.pattern(frame)

    def rms(d: np.ndarray) -> float:
        return float(np.sqrt(np.mean(d * d)))

    inside = (slice(180, 240), slice(100, 220))
    far = (slice(0, 100), slice(0, 320))  # well away from the box and its ramp
    ratio_in = rms(quiet[inside]) / rms(loud[inside])
    ratio_far = rms(quiet[far]) / rms(loud[far])
    assert abs(ratio_in / ratio_far - wm.QUIET) < 0.01
    mask = wm.quiet_mask(size, size, box)
    assert mask[inside].max() == pytest.approx(wm.QUIET)
    assert mask[far].min() == pytest.approx(1.0, abs=1e-3)
    edge = mask[210, 220:260]  # right of the box: a ramp from QUIET, not a step
    assert np.all(np.diff(edge) >= 0) and edge[0] == pytest.approx(wm.QUIET)
    assert np.max(np.diff(edge)) < 0.1 and edge[-1] == pytest.approx(1.0)


def test_detects_in_synthetic_frames_after_a_crop() -> None:
    rng = np.random.default_rng(4)
    size = 320
    overlay = wm.WatermarkOverlay(size, size, "00aa11bb22cc33dd", fps=25)
    base = _frame(size, seed=5)
    demod = wm.Demodulator(wm.period_frames(25))
    for i in range(50):
        f = np.clip(base.astype(np.int16) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
        overlay.apply(f, i)
        demod.add(wm.luma709(f)[29:-35, 41:-23])
    det = wm.detect(demod)
    assert det.found and det.payload is not None
    assert det.payload.render_id == "00aa11b"


def test_i420_embedding_is_the_rgb_embedding_in_luma() -> None:
    """The render path marks I420 frames: the same luma change as marking RGB and
    converting, chroma untouched, same PSNR budget."""
    size = 384
    frame = _frame(size, seed=3)
    plain = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
    rgb_mark = wm.WatermarkOverlay(size, size, "0123456789abcdef", fps=25)
    yuv_mark = wm.WatermarkOverlay(size, size, "0123456789abcdef", fps=25)
    marked_rgb = frame.copy()
    rgb_mark.apply(marked_rgb, 0)  # full modulation
    via_rgb = cv2.cvtColor(marked_rgb, cv2.COLOR_RGB2YUV_I420).astype(np.float64) - plain
    marked = plain.copy()
    yuv_mark.apply_i420(marked, 0)
    direct = marked.astype(np.float64) - plain
    assert np.array_equal(marked[size:], plain[size:])  # chroma planes untouched
    a, b = via_rgb[:size].ravel(), direct[:size].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8
    assert 0.85 < np.sqrt(np.mean(b ** 2)) / np.sqrt(np.mean(a ** 2)) < 1.15
    assert 10 * np.log10(255 ** 2 / np.mean(b ** 2)) >= 40.0


def test_detects_i420_marked_frames() -> None:
    rng = np.random.default_rng(6)
    size = 320
    overlay = wm.WatermarkOverlay(size, size, "77aa11bb22cc33dd", fps=25)
    base = cv2.cvtColor(_frame(size, seed=7), cv2.COLOR_RGB2YUV_I420)
    demod = wm.Demodulator(wm.period_frames(25))
    for i in range(50):
        f = np.clip(base.astype(np.int16) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
        overlay.apply_i420(f, i)
        demod.add(f[:size].astype(np.float32))
    det = wm.detect(demod)
    assert det.found and det.payload is not None and det.payload.render_id == "77aa11b"


def _read_at_origin(spec: np.ndarray) -> wm.Payload | None:
    soft = wm._read_bits(spec, (0.0, 0.0))
    for bits in wm.list_viterbi_decode(soft, wm.LIST_SIZE):
        payload = wm.parse_bits(bits)
        if payload is not None:
            return payload
    return None


def test_one_marked_frame_reads_against_the_picture() -> None:
    """The still look (a re-encoder's key frame keeps the mark its later frames lose):
    a single marked frame carries the payload with the picture as the only noise, an
    unmarked one does not, and the combination weights looks by their sync SNR, so a
    sign-flipped copy or a look at pure noise does not spoil the read."""
    size = 384
    frame = _frame(size, seed=11)
    marked = frame.copy()
    wm.WatermarkOverlay(size, size, "5e5e11bb22cc33dd", fps=25).apply(marked, 0)
    still = wm._still_spectrum(wm.luma709(marked), 1)
    plain = wm._still_spectrum(wm.luma709(frame), 1)
    payload = _read_at_origin(still)
    assert payload is not None and payload.render_id == "5e5e11b"
    assert _read_at_origin(plain) is None
    for parts in ([-still], [still, plain], [plain, -still]):
        payload = _read_at_origin(wm._combined(parts, (0.0, 0.0)))
        assert payload is not None and payload.render_id == "5e5e11b"
    assert _read_at_origin(wm._combined([plain], (0.0, 0.0))) is None
