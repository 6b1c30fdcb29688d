"""The mouth from acoustic features (opening, rounding, closures), shared by both drivers.

The mouth reads the sound, not words, so it works in any language:

* opening follows loudness, scaled by vowel openness (F1) and reduced for voiceless
  consonants;
* lips round for a dark spectrum (o/u: low F2) and spread for a bright one (i/e: high
  F2), relative to this speaker;
* lips close in silence, in stop closures (the short silence before a p/b burst) and in
  nasal murmurs (m/n);
* in a weak voiceless fricative next to a voiced sound (f, and th which looks alike) the
  lower lip rests against the upper teeth with the jaw a little open;
* onsets are anticipated (lips move before the sound) and every curve is smoothed
  with a zero-phase filter, so smoothing never adds lag.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import kernels
from .features import Features
from .filters import LOOKAHEAD_S, _ema, _smooth, percentile_sorted, running_max

#: The offline driver has the whole recording and may look further: only speechiness
#: uses it (telling a tone from a vowel needs more than 60 ms of it).
OFFLINE_LOOKAHEAD_S = 0.7


#: Lips start to move this long before a sound onset (mouth leads voice).
ANTICIPATION_S = 0.04

#: Where the lips round and spread on the speaker's brightness span (0 dark .. 1 bright):
#: fully rounded at ROUND_FULL and below, not at all from ROUND_FROM; spread likewise
#: from SPREAD_FROM up to SPREAD_FULL. On the tune speakers of the voices set u/o sit at
#: a median 0.23 (quartiles 0.07-0.41) and i/e at 0.78 (10th percentile 0.44): the old
#: ramps (0.4 and 0.6 over 0.35) left a median u/o only half rounded and a median i/e
#: half spread, so rounded vowels came out only 7 % narrower than spread ones. The
#: ramps now meet at 0.6 and rounding starts further up: the u/o of the speakers other
#: than the audiobook reader mostly sit at 0.2-0.7 and were hardly rounded at all.
ROUND_FROM, ROUND_FULL = 0.6, 0.2
SPREAD_FROM, SPREAD_FULL = 0.6, 0.9
#: Control gains of rounding and spreading at full drive (before dynamic_scale).
ROUND_GAIN, SPREAD_GAIN = 1.2, 0.9
#: Smoothing (Gaussian sigma, seconds) of rounding and spreading (smooth motion; half
#: that otherwise). Recorded u/o last 50-200 ms; 15 ms keeps the short ones' shape at
#: their middle (30 ms: a little less) and, with SHAPE_LEAD_S, stays within the live
#: driver's lookahead.
SHAPE_SMOOTH_S = 0.015
#: Rounding and spreading start this long before the sound that drives them (lips
#: shape ahead of the vowel, never after it). At most the live driver's LOOKAHEAD_S
#: minus the smoothing's reach, or the live mouth can no longer follow the offline one.
SHAPE_LEAD_S = 0.02
#: Rounding reaches full strength only once the mouth is this open (0..1 opening): the
#: pout parts the lips, and rounded lips on a closed or barely open mouth (nasals and
#: voiced consonants are dark too) moved the re-tracked lip gap out of step with the
#: sound (eSpeak suite: r 0.862 without this, 0.877 with it and before the change).
ROUND_OPEN = 0.5


#: A nasal murmur whose labial index (see features) is below this is an /m/.
LABIAL_MAX = -0.4

#: A stop closure dips this far (dB) below the speech around it, or less in noise (never
#: below STOP_DIP_MIN_DB); see bilabial_closures.
STOP_DIP_DB = 14.0
STOP_DIP_MIN_DB = 6.0
#: A voice bar or murmur (voiced, almost all energy below 500 Hz) closes the lips from
#: this far below the loudest sound around it. 10 dB suited eSpeak; recorded /m/ and /b/
#: murmurs sit only 6-12 dB under their vowels (tune speakers of the voices set: p/b/m
#: closed 71 % -> 88 % at 6 dB; vowels and l/w/r unchanged).
BAR_DIP_DB = 6.0
#: A recorded murmur (the closed lips of /m/, or of /b/ /p/ with voicing that flickers
#: on and off): at least MURMUR_LOW of its energy below 500 Hz, MURMUR_DIP_DB or more
#: under the speech around it (as BAR_DIP_DB). The missed /m/ and /b/ of the tune speakers (voices set:
#: "some", "how much", "make", "to be") were 80-99 % below 500 Hz and 5-14 dB under their
#: vowels, without the labial cue (index 0.1-1.6, not below LABIAL_MAX) or a voice bar's
#: purity (over 95 % low).
MURMUR_LOW = 0.8
MURMUR_DIP_DB = 6.0
#: How much of a murmur closes the lips: its quietest MURMUR_CORE_S.
MURMUR_CORE_S = 0.02

#: f (and th): voiceless frication much weaker than the speech around it, with some of
#: its energy above 3 kHz but not most of it (s and sh are 7-10 dB under their vowels,
#: over 90 % high or with energy at 2-3 kHz; f and th 15-30 dB under, 5-60 % high). Tune
#: speakers of the voices set (clean, phone band, noisy room): found in 8 of 15 f, 2 of
#: 24 v (voiced: looks like b/d here). Within FV_NEAR_S of voiced sound on one side at
#: least (word-initial f follows a pause; as far ahead as the driver may look), FV_DIP_DB
#: under the loudest sound in that span, 2 dB over the floor (not a pause), at least
#: FV_MIN_S long (after a pause, FV_ONSET_MIN_S).
FV_DIP_DB = 12.0
FV_HIGH = (0.05, 0.65)
FV_LOW_MAX = 0.85
FV_NEAR_S = 0.15
FV_MIN_S = 0.04
FV_ONSET_MIN_S = 0.06
#: The f/v shape as mouth controls: the jaw a little open (opening FV_OPEN: the chin
#: about 0.03 IOD down), the lower lip held up where it rests (lip_down cancels the
#: jaw's drop at its middle: 0.85 * 0.26 IOD per unit of jaw in the rig, 0.07 per unit of
#: lip_down), the upper lip lifted by FV_LIP_UP so the upper teeth show over it.
FV_OPEN = 0.15
FV_LIP_DOWN = -0.8 * FV_OPEN * 0.85 * 0.26 / 0.07
FV_LIP_UP = 0.5


def strong_f2(feat: Features) -> np.ndarray:
    """Hops whose F2 is trusted for this speaker's range: loud, voiced, with a formant."""
    return feat.voiced & (feat.f2 > 0) & (feat.loud > 0.4)


def f2_span(f2: np.ndarray) -> tuple[float, float]:
    """An F2 span from trusted F2 values: 10th and 90th percentile (at least 400 Hz wide);
    a typical adult span until more than 20 values are known."""
    if len(f2) > 20:
        lo, hi = np.percentile(f2, [10, 90])
        return float(lo), float(max(hi, lo + 400.0))
    return 900.0, 2300.0


def f2_range(feat: Features) -> tuple[float, float]:
    """This speaker's F2 span: 10th and 90th percentile over loud voiced hops."""
    return f2_span(feat.f2[strong_f2(feat)])


#: Width of a speaker's brightness span (log10 units): the 10th-90th percentile width of
#: the tune speakers' loud voiced hops is 1.9-2.8, eSpeak's 1.4-1.8.
BRIGHT_WIDTH = 2.2


def bright_span(values: np.ndarray) -> tuple[float, float]:
    """A brightness span (see features) BRIGHT_WIDTH wide, centred between the 10th and
    90th percentile of trusted values; a typical one (recorded and eSpeak voices centre
    near -1.3) until more than 20 values are known.

    Only the centre is measured: a live voice that has said only a few u's and i's has
    unsteady tails, and a span cut at them moved the lips away from the offline driver's.
    """
    if len(values) > 20:
        lo, hi = np.percentile(values, [10, 90])
        centre = float(lo + hi) / 2
    else:
        centre = -1.3
    return centre - BRIGHT_WIDTH / 2, centre + BRIGHT_WIDTH / 2


def bright_span_sorted(values: Sequence[float]) -> tuple[float, float]:
    """:func:`bright_span` of sorted, NaN-free values (a live voice's, kept sorted as they
    arrive rather than partitioned again for every frame)."""
    if len(values) > 20:
        centre = (percentile_sorted(values, 10) + percentile_sorted(values, 90)) / 2
    else:
        centre = -1.3
    return centre - BRIGHT_WIDTH / 2, centre + BRIGHT_WIDTH / 2


def bright_range(feat: Features) -> tuple[float, float]:
    """This speaker's brightness span over the hops whose F2 would be trusted."""
    return bright_span(feat.bright[strong_f2(feat) | (feat.voiced & (feat.loud > 0.4))])


def mouth_curves(feat: Features, dynamic_scale: float, smooth: bool,
                 f2_span: tuple[float, float] | None = None,
                 lookahead_s: float = OFFLINE_LOOKAHEAD_S,
                 bright_span: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """Mouth controls at the feature rate (100 per second).

    ``bright_span`` places the spectrum's brightness between rounded and spread; default:
    measured on ``feat``. ``f2_span`` is no longer used for the lips (kept for callers).
    ``lookahead_s`` is the future the driver can afford (see OFFLINE_LOOKAHEAD_S).
    """
    rate = feat.rate
    n = feat.n
    loud = np.ascontiguousarray(feat.loud, dtype=np.float64)
    # Vowel openness from F1 (about 250 Hz closed to 800 Hz open), only when voiced.
    vo, has_f1 = kernels.vowel_openness(np.ascontiguousarray(feat.f1, dtype=np.float64), feat.voiced)
    vo = _smooth(vo, 0.02, rate)
    # Opening level: mostly linear amplitude (the jaw opens most on loud vowel nuclei,
    # little on unstressed ones), with some log loudness so quiet syllables still show.
    amp = np.clip(10 ** ((feat.db - feat.peak_db) / 20.0), 0.0, 1.0)
    loud_08, amp_08 = np.power(loud, 0.8), np.power(amp, 0.8)
    voice = speechiness(feat, ahead_s=lookahead_s)
    # A weak fricative dips as deep as a stop closure but is not silent: f, not p.
    shares = denoised_shares(feat)
    fv = labiodentals(feat, lookahead_s, shares)
    press = bilabial_closures(feat, shares) * (1.0 - fv)
    lo, hi = bright_span if bright_span is not None else bright_range(feat)
    # Compiled (kernels.mouth_targets), hop by hop:
    # * openness 0.6-1.0 from F1 when voiced, 0.45 otherwise, 0.3 for voiceless frication
    #   (s, f, sh...: energy mostly above 3 kHz, mouth nearly closed);
    # * the voice gate: below 0.1 the sound is not speech (a tune scored at most 0.09, a
    #   tone 0, while 99 % of loud speech hops score above 0.47): it must not move the
    #   mouth at all, not even by the few percent that were left to open the lips on every
    #   loud note;
    # * target = level * openness * speech * voice, shut by the closures (press);
    # * rounding / spreading from the spectrum's brightness, placed within this speaker's
    #   own range (10th to 90th percentile over loud voiced hops), so voices of any size
    #   are treated alike: the dark end is rounded (o, u), the bright end spread (i, e).
    #   LPC's F2 was used before: on recorded voices (voices set, tune speakers) it put u/o
    #   and i/e at the same median place in the span; brightness puts them at 0.05 and 0.79.
    target, rnd, spr = kernels.mouth_targets(
        vo, has_f1, feat.voiced, np.ascontiguousarray(feat.high_ratio, dtype=np.float64), feat.vad,
        loud, loud_08, amp_08, voice, press, np.ascontiguousarray(feat.bright, dtype=np.float64),
        float(lo), float(hi), ROUND_FROM, ROUND_FROM - ROUND_FULL, SPREAD_FROM,
        SPREAD_FULL - SPREAD_FROM)

    sig = 0.025 if smooth else 0.01
    target = _smooth(target, sig, rate)
    press = _smooth(press, 0.012, rate)
    rnd = _smooth(rnd, SHAPE_SMOOTH_S if smooth else SHAPE_SMOOTH_S / 2, rate)
    spr = _smooth(spr, SHAPE_SMOOTH_S if smooth else SHAPE_SMOOTH_S / 2, rate)
    # Lips shape ahead of the vowel: each hop takes the stronger of its own shape and
    # the one SHAPE_LEAD_S later, so a shape starts early and still ends with its sound.
    shape_lead = int(round(SHAPE_LEAD_S * rate))
    if shape_lead > 0:
        rnd = np.maximum(rnd, _ahead(rnd, shape_lead))
        spr = np.maximum(spr, _ahead(spr, shape_lead))
    # Anticipation: the mouth begins to open before the sound does -- except before a
    # burst after silence, where the lips are shut for the plosive until its release.
    lead = int(round(ANTICIPATION_S * rate))
    if lead > 0:
        ahead = _ahead(target, lead)
        ahead[burst_onsets(feat)] = 0.0
        target = np.maximum(target, 0.6 * ahead)
    # Lips part in proportion to the opening (close = 1 - opening): a portrait that shows
    # its teeth reveals them gradually instead of snapping from closed to its own (open)
    # smile.
    shapes = kernels.mouth_shapes(np.ascontiguousarray(target), np.ascontiguousarray(rnd),
                                  np.ascontiguousarray(spr), float(dynamic_scale),
                                  float(np.clip(dynamic_scale, 0, 1.5)), ROUND_GAIN, SPREAD_GAIN,
                                  ROUND_OPEN)
    # f/v: blended in over the mouth's own shape, ahead of the sound like the other shapes;
    # never over a closure (a stop's burst can pass for an f: the lips must still shut).
    fv = _smooth(fv, SHAPE_SMOOTH_S, rate)
    if shape_lead > 0:
        fv = np.maximum(fv, _ahead(fv, shape_lead))
    fv *= 1.0 - np.clip(running_max(press, 2, 2), 0.0, 1.0)
    keep = 1.0 - fv
    out = {
        "jaw": shapes[0] * keep + 0.8 * FV_OPEN * fv,
        "lip_up": shapes[1] * keep + FV_LIP_UP * fv,
        "lip_down": shapes[2] * keep + FV_LIP_DOWN * fv,
        "close": shapes[3] * keep + fv,
        "round": shapes[4],
        "spread": shapes[5],
        "press": press,
        # The opening that follows the sound, without the f/v jaw (lip-sync correction
        # compares it with the loudness: f's jaw opens on a quiet sound).
        "opening": shapes[0],
    }
    for k in out:
        out[k] = out[k][:n]
    return out


def _ahead(x: np.ndarray, hops: int) -> np.ndarray:
    """``x`` as it will be ``hops`` (> 0) hops later, zero past its end: a shape or an
    opening started that much before its sound."""
    return np.concatenate([x[hops:], np.zeros(hops)])


def labiodentals(feat: Features, lookahead_s: float = LOOKAHEAD_S,
                 shares: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """1 on the hops of a weak voiceless fricative next to a voiced sound (f, th), else 0.

    See FV_DIP_DB. The voice after it is looked for only as far as the driver may look
    ahead (``lookahead_s``): live, an f after a pause is found once the voice comes.
    ``shares``: :func:`denoised_shares` of ``feat`` if the caller has them.
    """
    rate = feat.rate
    out = np.zeros(feat.n)
    if feat.n == 0:
        return out
    back = int(round(FV_NEAR_S * rate))
    ahead = int(round(min(FV_NEAR_S, lookahead_s) * rate))
    env = running_max(feat.db, back, ahead)
    low, high = shares if shares is not None else denoised_shares(feat)
    voice = (feat.vad & feat.voiced).astype(np.int8)
    before = running_max(voice, back, 0) > 0
    after = running_max(voice, 0, ahead) > 0
    cue = (~feat.voiced & (high > FV_HIGH[0]) & (high < FV_HIGH[1]) & (low < FV_LOW_MAX)
           & (feat.db < env - FV_DIP_DB) & (feat.db > feat.floor_db + 2.0))
    kernels.mark_runs(out, cue & before, float(rate), FV_MIN_S)
    # After a pause a stop's burst and aspiration (the p of "please") look alike, shorter.
    kernels.mark_runs(out, cue & after & ~before, float(rate), FV_ONSET_MIN_S)
    return out


def speechiness(feat: Features, history_s: float = 1.4, ahead_s: float = LOOKAHEAD_S
                ) -> np.ndarray:
    """0..1 per hop: how much the sound around it behaves like speech.

    Speech alternates voiced and voiceless sounds (about a quarter of its active time
    is voiceless: fricatives, bursts) several times a second, and its pitch glides.
    Tones, beeps and instrumental music are almost always voiced, change voicing rarely
    and hold each pitch; noise and breathing are almost never voiced. Under a bed of
    music nearly every hop is voiced, so a voice is also told by its pitch gliding while
    its F1 and timbre change (see kernels.speech_score). Scored over the
    last ``history_s`` seconds and ``ahead_s`` ahead so a long vowel inside speech
    still counts as speech; the mouth opening is scaled by it, so a tone or a tune
    leaves the mouth at rest instead of chattering. With
    little look-ahead (live), a new sound is trusted until it can be judged.
    """
    n = feat.n
    if n == 0:
        return np.zeros(0)
    before = max(1, int(history_s * feat.rate))
    after = int(round(ahead_s * feat.rate))
    # Per hop: voiceless share, frication share, voicing changes per second and the share
    # of voiced hop pairs holding their pitch, over the window; compiled (see kernels).
    log_f0 = np.log2(np.maximum(feat.f0, 1.0))
    score = kernels.speech_score(feat.vad, feat.voiced, feat.high_ratio, log_f0,
                                 np.ascontiguousarray(feat.f1, dtype=np.float64),
                                 np.ascontiguousarray(feat.bright, dtype=np.float64), before, after,
                                 float(feat.rate))
    return _ema(score, 0.12, feat.rate)


def bilabial_closures(feat: Features, shares: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> np.ndarray:
    """0..1 lip-closure strength per hop: stop closures, voice bars, /m/ murmurs.

    * A stop closure is a dip (at least 30 ms) well below the surrounding speech level
      right after speech. p, b but also t, d, k, g look alike here: their place of
      articulation is not told apart, so alveolar and velar stops close the lips
      briefly too (visually a blink of the lips, not a wrong shape).
    * A voice bar (voiced closure of b, d, g; or humming; or a recorded /m/ murmur) is a
      weak, almost purely low-frequency stretch of voicing, at least 20 ms, below the
      vowels (BAR_DIP_DB).
    * A nasal murmur is voiced, quieter than the neighbouring vowels, with its energy
      below 500 Hz; only murmurs with the labial cue (see features) close the lips: /m/
      yes, /n/ and /ng/ no.

    Levels are compared with the loudest sound within LOOKAHEAD_S ahead and 75 or
    150 ms back, so no decision needs more future audio than that. ``shares``:
    :func:`denoised_shares` of ``feat`` if the caller has them.
    """
    rate = feat.rate
    press = np.zeros(feat.n)
    ahead = int(round(LOOKAHEAD_S * rate))
    env = running_max(feat.db, int(0.075 * rate), ahead)
    env_long = running_max(feat.db, int(0.15 * rate), ahead)
    low, high = shares if shares is not None else denoised_shares(feat)
    labial = _smooth(feat.labial, 0.02, rate) < LABIAL_MAX
    # Compiled, hop by hop (see kernels.lip_closures), as follows.
    # * Stop closures, right after speech (within 8 hops). A closure silences the mouth,
    #   so its dip can go no lower than the room's noise: in a noisy room (10 dB SNR)
    #   14 dB is never reached. Ask for 70 % of the way down to the floor, between
    #   STOP_DIP_MIN_DB and STOP_DIP_DB; at least 30 ms.
    # * Voice bars: voiced, over 95 % of the energy low, under 3 % high, BAR_DIP_DB under
    #   env_long and 3 dB over the floor; at least 20 ms.
    # * Murmurs: /n/ and /ng/ qualify too (their place is not told apart here), a brief
    #   closure like the alveolar stops'. Only its quietest moment (MURMUR_CORE_S): the lips
    #   show shut in one frame, while closing the whole murmur (often 30-50 % of the
    #   vowels' amplitude) took the mouth away from the loudness (tune speakers,
    #   re-tracked: median r 0.82 -> 0.78).
    # * Nasal murmurs with the labial cue (/m/): voiced, low, 5 dB under env or 6 dB
    #   under env_long; at least 30 ms.
    core = int(round(MURMUR_CORE_S * rate / 2))
    kernels.lip_closures(press, np.ascontiguousarray(feat.db), feat.vad, feat.voiced, low, high,
                         feat.low_ratio, feat.high_ratio, labial, env, env_long, float(feat.floor_db),
                         float(rate), (STOP_DIP_MIN_DB, STOP_DIP_DB), BAR_DIP_DB, MURMUR_LOW,
                         MURMUR_DIP_DB, core)
    return press


def denoised_shares(feat: Features) -> tuple[np.ndarray, np.ndarray]:
    """Energy shares below 500 Hz and above 3 kHz with the room's noise taken out.

    Noise (or music) under a murmur fills the bands a murmur leaves empty, so its share
    below 500 Hz falls from 0.99 to 0.8 at 10 dB SNR. The noise's own shares are those
    of the quietest hops (within 3 dB of the floor), its power the floor's; both are
    subtracted. Where nothing is that quiet, the shares are returned as measured.
    """
    quiet = feat.db < feat.floor_db + 3.0
    if quiet.sum() <= 5:
        return feat.low_ratio, feat.high_ratio
    power = 10 ** (feat.db / 10.0)
    noise = 10 ** (feat.floor_db / 10.0)
    signal = np.maximum(power - noise, 1e-12)
    low = (feat.low_ratio * power - float(kernels.median(feat.low_ratio[quiet])) * noise) / signal
    high = (feat.high_ratio * power - float(kernels.median(feat.high_ratio[quiet])) * noise) / signal
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def burst_onsets(feat: Features) -> np.ndarray:
    """Hops where speech starts with a burst (a plosive released after silence).

    Lips closed for p/b stay closed until the release, so such onsets get no
    anticipatory opening.
    """
    flux_ref = float(kernels.median(feat.flux[feat.vad])) if feat.vad.any() else 0.0
    # A burst: the first 3 hops' flux over twice the speech's median (compiled).
    return kernels.burst_onsets(feat.vad, np.ascontiguousarray(feat.flux), flux_ref)
