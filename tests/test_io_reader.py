"""Tests of uav.io.reader: probing, frame-accurate reading, VFR, rotation, sequences, bad inputs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from io_helpers import HEIGHT, WIDTH, decode_index, index_frame, make_clip

from uav.io import VideoInputError, iter_frames, parse_frame_position, probe, read_frames
from uav.io.timecode import frames_to_timecode, offset_timecode, timecode_to_frames

NTSC_FILM = Fraction(24000, 1001)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 frames of H.264 at 23.976 with B-frames and a keyframe every 8 frames, AAC audio, timecode."""
    path = tmp_path_factory.mktemp("reader") / "clip.mp4"
    return make_clip(path, num_frames=30, fps=NTSC_FILM, timecode="01:00:00:00", audio="aac",
                     options={"g": "8", "bf": "2"}, sar=Fraction(4, 3))


def indices(frames: np.ndarray | list[np.ndarray]) -> list[int]:
    return [decode_index(f) for f in frames]


# ----------------------------------------------------------------------------- probe


def test_probe_reports_stream_facts(clip: Path) -> None:
    info = probe(clip)
    assert (info.width, info.height, info.num_frames) == (WIDTH, HEIGHT, 30)
    assert info.fps == NTSC_FILM and isinstance(info.fps, Fraction)
    assert not info.variable_frame_rate
    assert info.start_timecode == "01:00:00:00"
    assert info.has_audio and info.audio_codec == "aac"
    assert (info.color_range, info.color_space, info.color_primaries, info.color_trc) == ("tv", "bt709", "bt709", "bt709")
    assert info.sample_aspect_ratio == Fraction(4, 3)
    assert info.bit_depth == 8 and info.rotation == 0 and not info.is_image_sequence
    assert info.duration == pytest.approx(30 / float(NTSC_FILM))


def test_rate_is_exact_despite_millisecond_timestamps(tmp_path: Path) -> None:
    # Matroska stores milliseconds, so 23.976 fps timestamps are rounded (0, 42, 83, ...).
    path = make_clip(tmp_path / "ms.mkv", num_frames=30, fps=NTSC_FILM)
    info = probe(path)
    assert info.fps == NTSC_FILM
    assert not info.variable_frame_rate and info.num_frames == 30


def test_rate_is_exact_despite_jittered_90k_timestamps(tmp_path: Path) -> None:
    # 24000/1001 fps in a 1/90000 time base is 3753.75 ticks a frame: deltas alternate 3753/3754.
    timestamps = [round(i * 90000 * 1001 / 24000) for i in range(30)]
    path = make_clip(tmp_path / "jitter.mp4", num_frames=30, fps=NTSC_FILM, timestamps=timestamps,
                     time_base=Fraction(1, 90000))
    info = probe(path)
    assert info.fps == NTSC_FILM
    assert not info.variable_frame_rate


def test_ten_bit_source_reads_as_uint16(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "pro.mov", num_frames=6, encoder="prores_ks", pix_fmt="yuv422p10le")
    info = probe(path)
    assert info.bit_depth == 16 and info.pix_fmt == "yuv422p10le"
    frames = read_frames(path)
    assert frames.dtype == np.uint16 and frames.shape == (6, HEIGHT, WIDTH, 3)
    assert indices(frames) == list(range(6))
    assert frames.max() > 60000  # full 16-bit scale, not 10-bit codes


# ----------------------------------------------------------------------------- frame accuracy


@pytest.mark.parametrize("start,end", [(0, 3), (7, 10), (8, 9), (13, 21), (27, 30), (None, None)])
def test_start_end_are_frame_accurate(clip: Path, start: int | None, end: int | None) -> None:
    got = indices(list(iter_frames(clip, start=start, end=end)))
    assert got == list(range(start or 0, 30 if end is None else end))


def test_timecode_positions_are_absolute_source_timecode(clip: Path) -> None:
    got = indices(read_frames(clip, start="01:00:00:07", end="01:00:00:12"))
    assert got == [7, 8, 9, 10, 11]


def test_timecode_positions_are_relative_without_source_timecode(tmp_path: Path) -> None:
    path = make_clip(tmp_path / "notc.mp4", num_frames=12)
    assert probe(path).start_timecode is None
    assert indices(read_frames(path, start="00:00:00:03", end="6")) == [3, 4, 5]


def test_out_of_range_positions_are_clear_errors(clip: Path) -> None:
    with pytest.raises(ValueError, match="past the last frame"):
        iter_frames(clip, start=30)
    with pytest.raises(ValueError, match="has only 30 frames"):
        iter_frames(clip, end=31)
    with pytest.raises(ValueError, match="must be after"):
        iter_frames(clip, start=5, end=5)
    with pytest.raises(ValueError, match="before the clip's start timecode"):
        iter_frames(clip, start="00:59:59:00")
    with pytest.raises(ValueError, match="vfr must be one of"):
        iter_frames(clip, vfr="drop")


def test_parse_frame_position() -> None:
    fps = Fraction(24)
    assert parse_frame_position(None, fps, None) is None
    assert parse_frame_position(12, fps, None) == 12
    assert parse_frame_position(" 40 ", fps, "01:00:00:00") == 40
    assert parse_frame_position("00:00:01:05", fps, None) == 29
    assert parse_frame_position("10:00:01:00", fps, "10:00:00:00") == 24
    assert parse_frame_position("00:01:00;02", Fraction(30000, 1001), None) == 1800
    with pytest.raises(ValueError, match=">= 0"):
        parse_frame_position(-1, fps, None)
    with pytest.raises(ValueError, match="frame index like"):
        parse_frame_position("1.5s", fps, None)
    with pytest.raises(ValueError, match="frame field"):
        parse_frame_position("00:00:00:24", fps, None)
    with pytest.raises(TypeError):
        parse_frame_position(2.0, fps, None)  # type: ignore[arg-type]


def test_drop_frame_timecode_arithmetic() -> None:
    ntsc = Fraction(30000, 1001)
    assert timecode_to_frames("00:10:00;00", ntsc) == 17982
    assert frames_to_timecode(17982, ntsc, drop_frame=True) == "00:10:00;00"
    assert frames_to_timecode(1800, ntsc, drop_frame=True) == "00:01:00;02"
    for n in range(0, 40000, 37):
        assert timecode_to_frames(frames_to_timecode(n, ntsc, drop_frame=True), ntsc) == n
    with pytest.raises(ValueError, match="skipped"):
        timecode_to_frames("00:01:00;00", ntsc)
    with pytest.raises(ValueError, match="only defined"):
        timecode_to_frames("00:01:00;05", Fraction(25))
    assert offset_timecode("00:59:59:23", 1, Fraction(24)) == "01:00:00:00"


# ----------------------------------------------------------------------------- VFR


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    # 40 ms frames, with every fourth frame held for 120 ms (a stalled capture)
    timestamps, t = [], 0
    for i in range(20):
        timestamps.append(t)
        t += 120 if i % 4 == 1 else 40
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    make_clip(path, num_frames=20, fps=Fraction(25), timestamps=timestamps, time_base=Fraction(1, 1000))
    return path, timestamps


def test_vfr_is_detected_and_refused_by_default(vfr_clip: tuple[Path, list[int]]) -> None:
    path, _ = vfr_clip
    info = probe(path)
    assert info.variable_frame_rate
    assert info.fps == 25
    with pytest.raises(VideoInputError, match="variable frame rate.*vfr='cfr'"):
        iter_frames(path)


def test_vfr_cfr_conversion_picks_nearest_frames(vfr_clip: tuple[Path, list[int]]) -> None:
    path, timestamps = vfr_clip
    info = probe(path)
    got = indices(read_frames(path, vfr="cfr"))
    duration_ms = timestamps[-1] + 40
    assert len(got) == info.num_frames_cfr == round(duration_ms * 25 / 1000)
    times = np.array(timestamps)
    expected = [int(np.argmin(np.abs(times - k * 40))) for k in range(len(got))]
    assert got == expected
    assert sorted(set(got)) == list(range(20))  # every source frame survives, 8 are shown twice
    assert indices(read_frames(path, vfr="cfr", start=5, end=9)) == expected[5:9]


def test_vfr_passthrough_returns_every_frame_once(vfr_clip: tuple[Path, list[int]]) -> None:
    path, _ = vfr_clip
    assert indices(read_frames(path, vfr="passthrough")) == list(range(20))


# ----------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("ccw,expected_rotation,marker_corner", [(90, 270, "bottom-left"), (-90, 90, "top-right"),
                                                                  (180, 180, "bottom-right")])
def test_rotation_metadata_is_applied(tmp_path: Path, ccw: int, expected_rotation: int, marker_corner: str) -> None:
    path = make_clip(tmp_path / "rot.mp4", num_frames=3, rotation=ccw)
    info = probe(path)
    assert info.rotation == expected_rotation
    frame = read_frames(path, end=1)[0]
    if expected_rotation in (90, 270):
        assert (info.width, info.height) == (HEIGHT, WIDTH) and frame.shape == (WIDTH, HEIGHT, 3)
    else:
        assert frame.shape == (HEIGHT, WIDTH, 3)
    h, w = frame.shape[:2]
    corners = {"top-left": frame[: h // 8, : w // 8], "top-right": frame[: h // 8, -w // 8:],
               "bottom-left": frame[-h // 8:, : w // 8], "bottom-right": frame[-h // 8:, -w // 8:]}
    red = {name: bool(c[..., 0].mean() > 150 and c[..., 1].mean() < 80) for name, c in corners.items()}
    assert red == {name: name == marker_corner for name in corners}


# ----------------------------------------------------------------------------- image sequences


def test_16bit_tiff_sequence_values_are_preserved(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 65536, size=(4, 10, 12, 3), dtype=np.uint16)
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"shot_{i:04d}.tif"), f[:, :, ::-1])
    info = probe(folder)
    assert info.is_image_sequence and info.bit_depth == 16
    assert (info.width, info.height, info.num_frames, info.fps) == (12, 10, 4, 24)
    np.testing.assert_array_equal(read_frames(folder), frames)
    np.testing.assert_array_equal(read_frames(folder / "shot_%04d.tif", start=1, end=3), frames[1:3])
    assert probe(folder, fps="30000/1001").fps == Fraction(30000, 1001)


def test_folder_is_sorted_naturally_and_gray_png_becomes_rgb(tmp_path: Path) -> None:
    for i in range(1, 12):  # unpadded: sorted as text, f10 would come before f2
        cv2.imwrite(str(tmp_path / f"f{i}.png"), index_frame(i)[:, :, 0])  # single channel
    (tmp_path / "notes.txt").write_text("not an image")
    frames = read_frames(tmp_path)
    assert frames.shape == (11, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert [decode_index(f) for f in frames] == list(range(1, 12))
    single = probe(tmp_path / "f10.png")  # one image is a one-frame sequence
    assert single.is_image_sequence and single.num_frames == 1


def test_timecode_positions_on_a_sequence_use_its_fps(tmp_path: Path) -> None:
    for i in range(30):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), index_frame(i)[:, :, ::-1])
    assert indices(read_frames(tmp_path, start="00:00:01:00", fps=25)) == list(range(25, 30))


def test_mixed_sizes_name_the_first_offending_file(tmp_path: Path) -> None:
    for i in range(5):
        size = (20, 16) if i in (3, 4) else (16, 16)
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.zeros((size[1], size[0], 3), np.uint8))
    with pytest.raises(VideoInputError, match=r"003\.png: is 20x16 but .*000\.png is 16x16"):
        probe(tmp_path)


def test_mixed_image_types_and_empty_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VideoInputError, match="contains no images"):
        probe(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(VideoInputError, match="mixes"):
        probe(tmp_path)
    with pytest.raises(VideoInputError, match="no files match"):
        probe(tmp_path / "%05d.png")


# ----------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoInputError, match=r"nope\.mp4: no such file"):
        probe(tmp_path / "nope.mp4")


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are my notes, not a video\n" * 20)
    with pytest.raises(VideoInputError, match=r"notes\.mp4: is not a video FFmpeg can read"):
        probe(path)


def test_truncated_mp4_without_index(clip: Path, tmp_path: Path) -> None:
    # PyAV writes the index (moov) last, so a cut-off file has none
    data = clip.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoInputError, match="truncated"):
        probe(path)


def test_truncated_faststart_mp4(tmp_path: Path) -> None:
    full = make_clip(tmp_path / "fast.mp4", num_frames=30, container_options={"movflags": "faststart"},
                     options={"crf": "0"})
    data = full.read_bytes()
    path = tmp_path / "fastcut.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoInputError, match="truncated"):
        probe(path)


def test_zero_frame_video(tmp_path: Path) -> None:
    import av

    path = tmp_path / "empty.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoInputError, match=r"empty\.mp4: contains no video frames"):
        probe(path)


def test_errors_are_single_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.mov"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoInputError) as excinfo:
        probe(path)
    assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)
