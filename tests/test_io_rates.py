"""One frame-rate parser for the API, the image-sequence reader, the writer and ``--fps``."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import uav.cli
from uav.cli.app import app
from uav.io import VideoWriter, parse_fps, probe

uav.cli._load_commands()  # the whole `uav` app, as the console script builds it


@pytest.mark.parametrize(
    ("value", "expected"),
    [(24, Fraction(24)), ("25", Fraction(25)), (" 24000/1001 ", Fraction(24000, 1001)), ("29.97", Fraction(2997, 100)),
     (Fraction(30000, 1001), Fraction(30000, 1001)), (np.int64(50), Fraction(50)), ("10000", Fraction(10000))],
)
def test_exact_rates_are_accepted(value: object, expected: Fraction) -> None:
    assert parse_fps(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be > 0"), ("-24", "must be > 0"), ("nan", "positive rational"), ("inf", "positive rational"),
     ("1e30", "at most 10000"), ("24/0", "positive rational"), ("abc", "positive rational"), ("", "positive rational"),
     ("1e-30", "below 2\\*\\*31"), ("1/3000000000", "below 2\\*\\*31")],
)
def test_absurd_rates_are_refused_naming_the_value(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_fps(value, name="--fps")
    assert str(info.value).startswith("--fps") and repr(value) in str(info.value)


@pytest.mark.parametrize("value", [23.976, float("nan"), True, None, [24]])
def test_inexact_or_odd_types_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError):
        parse_fps(value)


def test_the_writer_and_the_sequence_reader_share_the_parser(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most 10000"):
        VideoWriter(tmp_path / "o.mp4", fps="1e30", width=16, height=16)
    import cv2

    (tmp_path / "seq").mkdir()
    cv2.imwrite(str(tmp_path / "seq" / "0001.png"), np.zeros((8, 8, 3), np.uint8))
    assert probe(tmp_path / "seq", fps="24000/1001").fps == Fraction(24000, 1001)
    with pytest.raises(ValueError, match="fps must be > 0"):
        probe(tmp_path / "seq", fps=0)
    assert not list(tmp_path.glob(".*"))  # the refused writer left no temporary


@pytest.mark.parametrize("fps", ["1e30", "0", "nan", "-5", "abc"])
def test_cli_fps_is_one_error_line_and_exit_2(fps: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "in.mp4"), "--fps", fps, "--self-check"],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --fps") and repr(fps) in lines[0], result.stderr
    assert "Traceback" not in result.output
