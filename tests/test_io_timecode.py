"""Timecode on OpenTimelineIO's arithmetic, and timecode that is carried, never required."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from io_helpers import make_clip
from opentimelineio import opentime

from uav.io import carry_over, carry_timecode, probe, write_video
from uav.io.timecode import frames_to_timecode, offset_timecode, timecode_rate_supported, timecode_to_frames

NTSC = Fraction(30000, 1001)
SMPTE = [Fraction(24000, 1001), Fraction(24), Fraction(25), NTSC, Fraction(30), Fraction(48000, 1001), Fraction(48),
         Fraction(50), Fraction(60000, 1001), Fraction(60)]


def _naive_non_drop(frames: int, nominal: int) -> str:
    # non-drop labels are plain base-`nominal` counting that wraps after 24 hours of labels
    frames %= 24 * 3600 * nominal
    seconds, ff = divmod(frames, nominal)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}:{ff:02d}"


@pytest.mark.parametrize("fps", SMPTE, ids=str)
def test_non_drop_labels_count_at_the_nominal_rate_and_wrap_after_24_hours(fps: Fraction) -> None:
    nominal = round(fps)
    day = 24 * 3600 * nominal
    for n in [*range(0, 3000, 7), day - 1, day, day + 5, 3 * day + 12345]:
        label = frames_to_timecode(n, fps)
        assert label == _naive_non_drop(n, nominal)
        assert timecode_to_frames(label, fps) == n % day


@pytest.mark.parametrize("fps", [NTSC, Fraction(60000, 1001)], ids=str)
def test_drop_frame_agrees_with_opentimelineio_and_round_trips(fps: Fraction) -> None:
    for n in range(0, 200_000, 97):
        label = frames_to_timecode(n, fps, drop_frame=True)
        assert label == opentime.to_timecode(opentime.RationalTime(n, float(fps)), float(fps), True)
        assert timecode_to_frames(label, fps) == n
    assert frames_to_timecode(1800, NTSC, drop_frame=True) == "00:01:00;02"


@pytest.mark.parametrize("fps", [Fraction(15), Fraction(277, 12), Fraction(12), Fraction(120), Fraction(2997, 100)],
                         ids=str)
def test_rates_smpte_does_not_define_are_named_in_the_error(fps: Fraction) -> None:
    assert not timecode_rate_supported(fps)
    with pytest.raises(ValueError, match=rf"not defined at {fps} fps"):
        timecode_to_frames("01:00:00:00", fps)
    with pytest.raises(ValueError, match="not defined"):
        frames_to_timecode(10, fps)
    with pytest.raises(ValueError, match="not defined"):
        offset_timecode("01:00:00:00", 3, fps)


def test_carry_timecode_omits_what_cannot_be_carried(caplog: pytest.LogCaptureFixture) -> None:
    assert carry_timecode("10:00:00:00", 3, Fraction(24000, 1001)) == "10:00:00:03"
    assert carry_timecode(None, 3, Fraction(24)) is None
    with caplog.at_level(logging.WARNING, logger="uav.io.metadata"):
        assert carry_timecode("01:00:00:00", 3, Fraction(277, 12)) is None
        assert carry_timecode("01:00:00:20", 3, Fraction(15)) is None
    assert "gets no timecode" in caplog.text and "277/12" in caplog.text


def test_writer_drops_a_timecode_its_rate_cannot_have_instead_of_failing(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    frames = [np.zeros((16, 16, 3), np.uint8)] * 2
    with caplog.at_level(logging.WARNING, logger="uav.io.writer"):
        out = write_video(tmp_path / "o.mov", frames, fps=15, timecode="01:00:00:00")
    assert probe(out).start_timecode is None and "not defined at 15 fps" in caplog.text
    with pytest.raises(ValueError, match="timecode must look like"):
        write_video(tmp_path / "bad.mov", frames, fps=15, timecode="1 hour")  # malformed is still an error
    with pytest.raises(ValueError, match="frame field 24"):
        write_video(tmp_path / "bad.mov", frames, fps=24, timecode="01:00:00:24")


def test_carry_over_takes_timecode_colour_aspect_and_audio_of_the_range(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "s.mov", num_frames=12, fps=Fraction(25), timecode="01:00:00:00", audio="pcm_s16le",
                    sar=Fraction(4, 3))
    options = carry_over(probe(src), 4, 6)
    assert options == {
        "audio_source": src, "audio_start_frame": 4, "audio_end_frame": 10, "timecode": "01:00:00:04",
        "color": {"color_range": "tv", "color_space": "bt709", "color_primaries": "bt709", "color_trc": "bt709"},
        "sample_aspect_ratio": Fraction(4, 3),
    }
    odd = make_clip(tmp_path / "odd.mov", num_frames=4, fps=Fraction(15), timecode="01:00:00:00", color=False)
    assert "timecode" not in carry_over(probe(odd), 0, 4)  # 15 fps: rendered without timecode, not refused
