"""``facetalk eval VIDEO``: measure any talking-head video from the outside."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click


@click.command("eval")
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--audio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Measure against this audio instead of the video's own track.")
@click.option("--portrait", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The source picture: also report how much of the picture "
                                 "outside the head changed.")
@click.option("--phonemes", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Phoneme timings of the speech: TSV lines 'start end phone' "
                                 "(seconds; eSpeak or ARPAbet names) or JSON "
                                 "[{start, end, phone}]. Adds p/b/m, open-vowel, rounding and "
                                 "f/v figures.")
@click.option("--transcript", default=None,
              help="What the (English) speech says: aligned with pocketsphinx "
                   "(pip install 'facetalk[align]') to get the phoneme timings.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def eval_command(video: Path, audio: Path | None, portrait: Path | None, phonemes: Path | None,
                 transcript: str | None, as_json: bool) -> None:
    """Lip sync, silences, blinks, head motion and jitter of VIDEO (any tool's output).

    The video is decoded and its face re-tracked frame by frame; nothing is read from
    how it was made. AV offset > 0 means the mouth moves after the sound (audio leads).
    With --phonemes or --transcript, also how the mouth shapes timed phonemes.
    """
    from ..errors import FacetalkError, UnsupportedMedia
    from .common import _fail

    try:
        from ..measure.evaluate import (
            align_transcript,
            articulation_report,
            evaluate_video_track,
            read_phonemes,
        )
        from ..media.image import load_portrait

        image = load_portrait(portrait) if portrait is not None else None
        timed = read_phonemes(phonemes) if phonemes is not None else None
        try:
            ev, track, sound = evaluate_video_track(video, audio, image)
        except Exception as exc:
            import av

            if isinstance(exc, (av.error.FFmpegError, IndexError)):
                raise UnsupportedMedia(f"{video} could not be read as a video with audio: {exc}") from None
            raise
        if ev.frames == 0:
            raise UnsupportedMedia(f"{video} has no video frames")
        if timed is None and transcript:
            timed = align_transcript(sound, transcript)
        art = articulation_report(track, timed) if timed is not None else None
    except (FacetalkError, Exception) as exc:
        _fail(exc)
        return
    if as_json:
        data = ev.to_dict()
        if art is not None:
            data["phonemes"] = art.to_dict()
        for d in (data, data.get("phonemes") or {}):
            for k, v in d.items():  # JSON has no NaN
                if isinstance(v, float) and math.isnan(v):
                    d[k] = None
        click.echo(json.dumps(data, indent=2))
        return
    yaw, pitch, roll = ev.head_range_deg
    rows = [
        ("frames", f"{ev.frames} at {ev.fps:g} fps ({ev.video_s:.2f} s; audio {ev.audio_s:.2f} s)"),
        ("face tracked", f"{ev.face_found_rate:.1%} of frames"),
        ("AV offset", f"{ev.av_offset_ms:+.0f} ms (+ = mouth after sound)"),
        ("mouth-speech r", f"{ev.pearson_r:.2f} (at best offset {ev.best_lag_r:.2f})"),
        ("silent frames closed", f"{ev.silent_closed_rate:.1%} of {ev.silent_frames}"),
        ("blinks", f"{ev.blinks} ({ev.blinks_per_min:.1f} per minute, interval CV "
                   f"{ev.blink_interval_cv:.2f})"),
        ("head motion range", f"yaw {yaw:.1f}, pitch {pitch:.1f}, roll {roll:.1f} degrees"),
        ("jitter", f"{ev.jitter_milli_iod:.2f} thousandths of the eye distance per frame²"),
    ]
    if art is not None:
        def share(rate: float, count: int) -> str:
            return f"{rate:.0%} of {count}" if count else "none in the timings"

        ratio = art.round_spread_width
        rows += [
            ("p/b/m closed", share(art.bilabials_closed, art.bilabials)),
            ("open vowels open", share(art.open_vowels_open, art.open_vowels)),
            ("rounded vs spread", (f"mouth {ratio:.2f}x as wide on u/o ({art.rounded}) as on i/e "
                                   f"({art.spread})") if not math.isnan(ratio) else "not measured"),
            ("f/v lip to teeth", share(art.labiodentals_shown, art.labiodentals)),
        ]
    if ev.background_changed is not None:
        rows.append(("outside the head", f"{ev.background_changed:.2%} of pixels changed"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k.ljust(width)}  {v}")
    click.echo("")
    for line in ev.verdicts:
        click.echo(f"- {line}")
