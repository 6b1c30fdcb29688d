"""The motion model on synthetic signals: features -> mouth, blinks, head, both drivers.

No portrait and no render: a few seconds of synthesized sound each, so these run in the
fast tier. Every expectation is about the motion a viewer would see (a closed mouth in
silence, an open jaw on a vowel, lips pressed in a stop's silence...).
"""

from __future__ import annotations

import numpy as np
import pytest

from facetalk.motion.blinks import blink_curve
from facetalk.motion.controls import CONTROLS, C
from facetalk.motion.features import Features, FeatureStream, analyze
from facetalk.motion.filters import _ema, _runs, _smooth, ema_alpha, running_max
from facetalk.motion.live import MotionStream
from facetalk.motion.mouth import f2_range, f2_span, mouth_curves, strong_f2
from facetalk.motion.plan import MotionPlan, plan_motion
from facetalk.options import GenerationOptions
from helpers import signals

R = signals.RATE
FPS = 25
#: An open /a/ as in "father": high F1 (the jaw opens for it).
A_FORMANTS = ((750, 90), (1200, 100), (2600, 130))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * R), np.float32)


def offline(x: np.ndarray, **options: object) -> tuple[Features, MotionPlan]:
    feat = analyze(np.asarray(x, np.float32), R)
    return feat, plan_motion(feat, int(round(len(x) / R * FPS)), GenerationOptions(**options))


def live(x: np.ndarray, chunk: int = 320, **options: object) -> tuple[np.ndarray, np.ndarray]:
    """The live driver's controls and pose, fed ``x`` in 20 ms chunks as a client sends it."""
    features, motion = FeatureStream(R), MotionStream(GenerationOptions(**options))
    frames = []
    for i in range(0, len(x), chunk):
        frames += motion.push(features.push(x[i:i + chunk]))
    assert [f.index for f in frames] == list(range(len(frames)))  # in order, none skipped
    return np.array([f.controls for f in frames]), np.array([f.pose for f in frames])


def vowel(seconds: float, seed: int = 0) -> np.ndarray:
    """/s/ + an open vowel, the vowel ``seconds`` long."""
    syl, _ = signals.syllable(A_FORMANTS, seconds, np.random.default_rng(seed))
    return syl.astype(np.float32)


# -- filters ----------------------------------------------------------------------------------
def test_filters_on_tiny_inputs() -> None:
    x = np.array([0.0, 0, 1, 1, 1, 0, 1, 0])
    assert _runs(x > 0) == [(2, 5), (6, 7)]
    assert _runs(np.zeros(3, bool)) == []
    assert running_max(x, 1, 0).tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert running_max(x, 0, 1).tolist() == [0, 1, 1, 1, 1, 1, 1, 0]
    step = np.r_[np.zeros(50), np.ones(50)]
    sm = _smooth(step, 0.02, 100.0)
    # Truncated at the look-ahead: no long tails. Not compared exactly: numpy 2.4's convolve
    # sums the normalised kernel to 1 - 1e-16 (an untruncated tail would leave 1e-5 or more).
    assert sm[:45].max() < 1e-12 and sm[55:].min() > 1 - 1e-12
    assert np.allclose(sm[49] + sm[50], 1.0)  # zero phase: symmetric around the step
    e = _ema(step, 0.5, 100.0, start=0.0)
    a = ema_alpha(0.5, 100.0)
    assert e[49] == 0 and e[50] == pytest.approx(a) and e[99] == pytest.approx(1 - (1 - a) ** 50)


def test_f2_span_needs_enough_values_and_a_minimum_width() -> None:
    assert f2_span(np.full(20, 1500.0)) == (900.0, 2300.0)  # too few: a typical adult span
    lo, hi = f2_span(np.full(21, 1500.0))
    assert (lo, hi) == (1500.0, 1900.0)  # at least 400 Hz wide
    lo, hi = f2_span(np.linspace(1000, 2000, 101))
    assert (lo, hi) == pytest.approx((1100.0, 1900.0))


# -- mouth ------------------------------------------------------------------------------------
def test_silence_keeps_the_mouth_closed() -> None:
    _, plan = offline(silence(2.0))
    for name in ("jaw", "lip_up", "lip_down", "round", "spread", "press"):
        assert np.abs(plan.controls[:, C[name]]).max() < 1e-6, name


def test_a_loud_vowel_opens_the_jaw_and_silence_closes_it_again() -> None:
    x = np.concatenate([silence(0.5), vowel(0.5), silence(0.6)])
    _, plan = offline(x)
    jaw = plan.controls[:, C["jaw"]]
    t = np.arange(len(jaw)) / FPS
    during = (t > 0.7) & (t < 1.0)  # well inside the vowel (it starts after a 90 ms /s/)
    assert jaw[during].min() > 0.25, jaw[during]
    assert jaw[t < 0.35].max() < 1e-6 and jaw[t > 1.35].max() < 1e-6


def test_the_subtle_preset_opens_the_mouth_less_and_still_shuts_it() -> None:
    """The ``subtle`` preset scales the opening (jaw and lips part less on the same vowel)
    without touching when the mouth opens and closes."""
    x = np.concatenate([silence(0.5), vowel(0.5), silence(0.6)])
    _, plan = offline(x)
    _, sub = offline(x, **GenerationOptions.build("subtle").__dict__)
    jaw, jaw_sub = plan.controls[:, C["jaw"]], sub.controls[:, C["jaw"]]
    assert 0.6 * jaw.max() < jaw_sub.max() < 0.8 * jaw.max(), (jaw.max(), jaw_sub.max())
    assert np.mean((jaw > 0.05) == (jaw_sub > 0.05 * 0.7)) > 0.95  # open on the same frames
    t = np.arange(len(jaw_sub)) / FPS
    assert jaw_sub[t < 0.35].max() < 1e-6 and jaw_sub[t > 1.35].max() < 1e-6


def test_a_30_ms_gap_after_speech_presses_the_lips() -> None:
    first = vowel(0.35, seed=1)
    gap_at = 0.5 + len(first) / R
    second = vowel(0.35, seed=2)[int(0.09 * R):]  # the vowel alone: the gap is the only break
    x = np.concatenate([silence(0.5), first, silence(0.03), second, silence(0.5)])
    feat, plan = offline(x)
    press = mouth_curves(feat, 1.0, True)["press"]
    hop = int(round((gap_at + 0.015) * feat.rate))
    assert press[hop - 2:hop + 3].max() > 0.9, press[hop - 5:hop + 6]
    # The closure shows as closed lips in the frame nearest the gap, jaw shut there.
    frames = np.nonzero(plan.controls[:, C["press"]] > 0.5)[0]
    near = frames[np.abs(frames / FPS - (gap_at + 0.015)) <= 0.5 / FPS + 1e-9]
    assert len(near) == 1, (frames / FPS, gap_at)
    assert plan.controls[near[0], C["jaw"]] == 0.0
    # ...and only there while the voice goes on: no press in the middle of either vowel.
    t = frames / FPS
    assert not np.any((t > 0.7) & (t < gap_at - 0.06)), t


def test_a_steady_tone_does_not_move_the_mouth() -> None:
    _, plan = offline(np.concatenate([silence(0.5), signals.tone(3.0), silence(0.5)]))
    assert plan.controls[:, C["jaw"]].max() < 0.02
    assert plan.controls[:, C["lip_down"]].max() < 0.02


def test_notes_with_vibrato_do_not_pass_for_a_voice() -> None:
    """A voice under music is found by its pitch gliding while its F1 and timbre move; an
    instrument's vibrato glides too (3-5 % here, 12 partials) but keeps its timbre."""
    from facetalk.motion.mouth import speechiness

    rng = np.random.default_rng(0)
    step = int(signals.RATE / 2.0)
    t = np.arange(step) / signals.RATE
    notes = []
    for k in range(16):
        f = 220.0 * 2 ** (rng.choice([0, 2, 4, 5, 7, 9, 11, 12]) / 12)
        phase = 2 * np.pi * np.cumsum(f * (1 + (0.03 + 0.02 * (k % 2)) * np.sin(2 * np.pi * 5.5 * t)))
        phase /= signals.RATE
        notes.append(sum(np.sin(j * phase) / j for j in range(1, 13))
                     * np.minimum(1, t / 0.05) * np.exp(-t))
    x = np.concatenate(notes)
    feat = analyze((0.4 * x / np.abs(x).max()).astype(np.float32), signals.RATE)
    score = speechiness(feat, ahead_s=0.5)[feat.vad]
    assert feat.vad.mean() > 0.9 and np.mean(score > 0.1) < 0.3, np.mean(score > 0.1)


def _vowel_consonant_vowel(kind: str) -> tuple[np.ndarray, float, float]:
    """/a/ + consonant + /a/ (with a faint noise floor), and where the consonant is (s).

    ``f``: weak frication with a falling spectrum, 22 dB under the vowels; ``s``:
    high-passed noise 8 dB under; ``gap``: a pause."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    a_formants = ((700, 80), (1200, 90), (2600, 120))
    cut = int(0.09 * signals.RATE)  # the syllable's leading /s/
    v1, v2 = (signals.syllable(a_formants, 0.3, rng)[0][cut:] for _ in range(2))
    rms = float(np.sqrt(np.mean(v1**2)))
    noise = np.random.default_rng(1).normal(0, 1, int(0.1 * signals.RATE))
    if kind == "gap":
        mid = np.zeros_like(noise)
    else:
        mid = (lfilter([1], [1, -0.85], noise) if kind == "f"
               else lfilter([1, -2, 1], [1], noise))
        mid *= rms * 10 ** ((-22 if kind == "f" else -8) / 20) / np.sqrt(np.mean(mid**2))
    pad = np.zeros(4000)
    x = np.concatenate([pad, v1, mid, v2, pad])
    x += np.random.default_rng(5).normal(0, rms * 10 ** (-45 / 20), len(x))
    start = (len(pad) + len(v1)) / signals.RATE
    return x.astype(np.float32), start, start + len(mid) / signals.RATE


@pytest.mark.parametrize("kind", ["f", "s", "gap"])
def test_a_weak_fricative_between_vowels_gets_the_f_shape(kind: str) -> None:
    from facetalk.motion.mouth import labiodentals

    x, a, b = _vowel_consonant_vowel(kind)
    feat = analyze(x, signals.RATE)
    lab = labiodentals(feat, 0.7)
    t = np.arange(feat.n) / feat.rate
    inside, outside = lab[(t > a + 0.01) & (t < b - 0.01)], lab[(t < a - 0.02) | (t > b + 0.02)]
    assert outside.max() == 0.0
    if kind == "f":
        assert inside.mean() >= 0.8, inside.mean()
        _, plan = offline(x)
        mid = int(round((a + b) / 2 * FPS))
        c = plan.controls[mid]
        # jaw part-open, lower lip held up against the upper teeth, upper lip lifted
        assert c[C["jaw"]] > 0.05 and c[C["lip_down"]] < 0 and c[C["lip_up"]] > 0.2, c
    else:
        assert inside.max() == 0.0, inside.mean()


def test_the_f_shape_holds_the_lower_lip_where_the_rig_drops_it() -> None:
    """FV_LIP_DOWN is written from the rig's amplitudes (motion may not import render):
    the f shape's lip_down must cancel the jaw's drop of the lower lip's middle."""
    from facetalk.motion.mouth import FV_LIP_DOWN, FV_OPEN
    from facetalk.render.rig import JAW_DROP, LIP_DOWN

    jaw_drop_mid = 0.8 * FV_OPEN * (0.35 + 0.5) * JAW_DROP  # see rig._jaw_fixed
    assert FV_LIP_DOWN * LIP_DOWN == pytest.approx(-jaw_drop_mid)


def test_head_motion_of_a_long_clip_needs_no_syllables_by_hops_table() -> None:
    """Ten minutes of syllables: the head's bumps are added block by block, not as one
    syllables x hops array (about 1 GB for 5 minutes, 10 GB for 30: the memory bench's
    30-minute render at 1024 px was killed for running out of memory)."""
    import tracemalloc

    from facetalk.motion.head import HeadStyle, head_and_brows

    x, _ = signals.vowel_pairs(repeats=4)
    x = np.tile(x, int(np.ceil(600 / (len(x) / signals.RATE))))
    feat = analyze(x, signals.RATE)
    style = HeadStyle.draw(np.random.default_rng(0))
    tracemalloc.start()
    try:
        pose, brow = head_and_brows(feat, 0.0, style, 1.0, np.ones(feat.n))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100e6, peak / 1e6  # the result itself is 6 floats per hop: 2.9 MB
    assert np.abs(pose[:, 1]).max() > 0.005 and brow.max() > 0  # nods and brows still there


def test_rounded_and_spread_vowels_shape_the_lips() -> None:
    x, marks = signals.vowel_pairs(4)
    feat, plan = offline(x)
    lo, hi = f2_range(feat)
    assert lo < 1200 < 2000 < hi  # /u/'s low and /i/'s high F2 both in the span
    assert strong_f2(feat).sum() > 20
    t = np.arange(plan.n_frames) / FPS
    rnd, spr = plan.controls[:, C["round"]], plan.controls[:, C["spread"]]
    for name, v0, v1 in marks:
        inside = (t > v0 + 0.1) & (t < v1 - 0.1)
        if name == "u":
            assert rnd[inside].mean() > spr[inside].mean() + 0.1, (name, v0)
        else:
            assert spr[inside].mean() > rnd[inside].mean() + 0.1, (name, v0)


# -- blinks and head --------------------------------------------------------------------------
def test_blinks_are_deterministic_per_seed_and_about_15_a_minute() -> None:
    vad = np.tile(np.r_[np.ones(300, bool), np.zeros(100, bool)], 60)  # 4 min: 3 s speech, 1 s pause
    minutes = len(vad) / 100.0 / 60.0
    starts = {}
    for seed in (0, 1, 2):
        curve, s = blink_curve(vad, 100.0, np.random.default_rng(seed))
        again, s2 = blink_curve(vad, 100.0, np.random.default_rng(seed))
        assert np.array_equal(curve, again) and np.array_equal(s, s2)
        assert 10 <= len(s) / minutes <= 20, (seed, len(s) / minutes)
        assert curve.min() >= 0 and curve.max() <= 1
        starts[seed] = s
    assert not np.array_equal(starts[0], starts[1])
    gaps = np.diff(starts[0])
    assert gaps.std() / gaps.mean() > 0.3  # irregular, not a metronome


def test_same_seed_same_motion_other_seed_other_motion() -> None:
    x = np.concatenate([silence(0.3), vowel(0.6), silence(3.0)])
    _, a = offline(x, seed=5)
    _, b = offline(x, seed=5)
    _, c = offline(x, seed=6)
    assert np.array_equal(a.controls, b.controls) and np.array_equal(a.pose, b.pose)
    assert not np.array_equal(a.pose, c.pose)
    assert a.controls.shape == (a.n_frames, len(CONTROLS))
    assert np.degrees(np.abs(a.pose[:, :3])).max() < 4.0  # a few degrees at most


def test_motion_scale_zero_holds_the_head_still() -> None:
    _, plan = offline(np.concatenate([silence(0.3), vowel(0.6), silence(0.5)]), motion_scale=0)
    assert np.abs(plan.pose).max() == 0 and plan.controls[:, C["brow"]].max() == 0


# -- the two drivers --------------------------------------------------------------------------
def test_live_driver_matches_the_offline_plan_on_silence() -> None:
    """Nothing heard: blinks and head drift come from the seed alone, so the drivers agree
    (blinks exactly; pose up to the offline driver's one-frame averaging)."""
    x = silence(6.0)
    _, plan = offline(x, seed=3)
    controls, pose = live(x, seed=3)
    n = min(len(controls), plan.n_frames)
    assert n >= plan.n_frames - 3
    assert np.array_equal(controls[:n, C["blink_r"]], plan.controls[:n, C["blink_r"]])
    assert controls[:n, C["blink_r"]].max() > 0.5  # there was a blink to compare
    assert np.abs(pose[:n] - plan.pose[:n]).max() < 1e-3


def test_live_driver_follows_the_offline_mouth_once_it_knows_the_voice() -> None:
    """After 1.5 s the live driver has running levels of its own; from then on its mouth
    is the offline one within a few hundredths."""
    x, _ = signals.vowel_pairs(6)
    x = np.concatenate([x, silence(1.0)])
    _, plan = offline(x, seed=3, lip_sync_correction=False)
    controls, pose = live(x, seed=3, lip_sync_correction=False)
    n = min(len(controls), plan.n_frames)
    settled = slice(2 * FPS, n)
    for name in ("jaw", "lip_down", "round", "spread"):
        a, b = plan.controls[settled, C[name]], controls[settled, C[name]]
        assert np.corrcoef(a, b)[0, 1] > 0.98, name
        assert np.abs(a - b).max() < 0.1, (name, np.abs(a - b).max())
    assert np.array_equal(plan.controls[:n, C["press"]], controls[:n, C["press"]])
    assert np.degrees(np.abs(plan.pose[settled, :3] - pose[settled, :3]).max()) < 0.5


def test_live_head_stays_within_a_few_degrees_from_the_first_syllable() -> None:
    """In its first 1.5 s (before running levels) the live driver's loudness can sit flat at
    1; that plateau once counted as a stress peak per hop and nodded ~15 degrees."""
    x, _ = signals.vowel_pairs(2)
    _, pose = live(x, seed=3)
    assert np.degrees(np.abs(pose[:, :3])).max() < 4.0
