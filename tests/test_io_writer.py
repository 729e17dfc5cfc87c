"""Tests of uav.io.writer: atomic output, argument checking, tags."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from io_helpers import HEIGHT, WIDTH, index_frame

from uav.io import CODECS, VideoWriter, probe, write_video

FPS = Fraction(24)


def frames(n: int = 4) -> list[np.ndarray]:
    return [index_frame(i) for i in range(n)]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "uavtmp" in p.name)


def test_output_appears_only_when_closed(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    writer = VideoWriter(target, fps=FPS, width=WIDTH, height=HEIGHT)
    for f in frames():
        writer.write(f)
    assert not target.exists()
    temps = leftovers(tmp_path)
    assert len(temps) == 1 and temps[0].startswith(".out.uavtmp-") and temps[0].endswith(".mp4")
    assert writer.close() == target
    assert target.exists() and leftovers(tmp_path) == []
    assert probe(target).num_frames == 4


def test_exception_inside_block_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.mov"
    target.write_bytes(b"previous render")
    with pytest.raises(RuntimeError, match="render failed"):
        with VideoWriter(target, fps=FPS, width=WIDTH, height=HEIGHT, codec="prores_hq") as writer:
            writer.write(frames(1)[0])
            raise RuntimeError("render failed")
    assert target.read_bytes() == b"previous render"  # the old file is untouched
    assert leftovers(tmp_path) == []


def test_existing_file_is_replaced_on_close(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")
    write_video(target, frames(3), fps=FPS)
    assert probe(target).num_frames == 3


def test_abort_removes_temporary_output(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "a.mkv", fps=FPS, width=WIDTH, height=HEIGHT)
    writer.write(frames(1)[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="already closed"):
        writer.write(frames(1)[0])


def test_sequence_folder_is_renamed_into_place(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    writer = VideoWriter(target, fps=FPS, width=WIDTH, height=HEIGHT, codec="png", start_number=1001)
    for f in frames(3):
        writer.write(f)
    assert not target.exists()
    writer.close()
    assert sorted(p.name for p in target.iterdir()) == ["001001.png", "001002.png", "001003.png"]
    assert leftovers(tmp_path) == []


def test_sequence_into_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an empty folder"):
        VideoWriter(tmp_path / "frames", fps=FPS, width=WIDTH, height=HEIGHT, codec="tiff")
    assert (tmp_path / "frames" / "keep.txt").read_text() == "mine"


def test_no_frames_saves_nothing(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "out.mp4", fps=FPS, width=WIDTH, height=HEIGHT)
    with pytest.raises(ValueError, match="no frames were written"):
        writer.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no frames to write"):
        write_video(tmp_path / "out.mp4", [], fps=FPS)


def test_unknown_codec_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown codec 'vp9'") as excinfo:
        VideoWriter(tmp_path / "o.mp4", fps=FPS, width=WIDTH, height=HEIGHT, codec="vp9")
    assert all(name in str(excinfo.value) for name in CODECS)
    assert set(CODECS) == {"h264", "h265", "prores_hq", "prores_4444", "png", "tiff", "exr", "dpx", "dnxhr",
                           "dnxhr_hq", "dnxhr_hqx", "dnxhr_444"}


def test_output_folder_that_cannot_exist(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(ValueError, match="cannot be created"):
        VideoWriter(blocker / "out.mp4", fps=FPS, width=WIDTH, height=HEIGHT)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            VideoWriter(locked / "out.mp4", fps=FPS, width=WIDTH, height=HEIGHT)
    finally:
        locked.chmod(0o700)


def test_missing_output_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.mp4"
    assert write_video(target, frames(2), fps=FPS) == target and target.exists()


@pytest.mark.parametrize(
    "path,kwargs,message",
    [
        ("o.mp4", {"codec": "prores_hq"}, r"must end in \.mov or \.mkv"),
        ("o.mp4", {"codec": "png"}, "looks like a video file"),
        ("o", {"codec": "h264"}, "must end in"),
        ("o.mp4", {"pix_fmt": "rgb24"}, "pix_fmt 'rgb24' is not available"),
        ("o.mp4", {"width": 65}, "even width and height"),
        ("o.mp4", {"crf": 70}, "crf must be"),
        ("o.mov", {"codec": "prores_4444", "crf": 10}, "crf only applies"),
        ("o.mp4", {"timecode": "01:00:00:24"}, "frame field 24"),
        ("o.mp4", {"timecode": "1 hour"}, "timecode must look like"),
        ("o.mp4", {"bit_depth": 10}, "bit_depth must be 8"),
        ("o.mp4", {"color": {"color_space": "rainbow"}}, "not an FFmpeg name"),
        ("o.mp4", {"color": {"gamma": "bt709"}}, "unknown keys"),
        ("o.mp4", {"audio_source": "missing.wav"}, "audio_source .* does not exist"),
        ("o.mp4", {"audio_start_frame": 5, "audio_end_frame": 5}, "audio_end_frame must be"),
        ("f/%04d.png", {"codec": "tiff"}, "pattern must end in"),
        ("still.png", {"codec": "png"}, "not the single file 'still.png'"),
    ],
)
def test_bad_arguments_are_clear_value_errors(tmp_path: Path, path: str, kwargs: dict, message: str) -> None:
    args = {"fps": FPS, "width": WIDTH, "height": HEIGHT} | kwargs
    if "audio_source" in kwargs:
        args["audio_source"] = tmp_path / kwargs["audio_source"]
    with pytest.raises(ValueError, match=message):
        VideoWriter(tmp_path / path, **args)
    assert leftovers(tmp_path) == []


def test_float_fps_is_refused_as_inexact(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="fps must be exact"):
        VideoWriter(tmp_path / "o.mp4", fps=23.976, width=WIDTH, height=HEIGHT)


def test_wrong_frames_are_refused_and_clean_up(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "o.mp4", fps=FPS, width=WIDTH, height=HEIGHT)
    with pytest.raises(ValueError, match=r"frame 0 must be 48x64x3 uint8, got shape \(48, 64\)"):
        writer.write(np.zeros((HEIGHT, WIDTH), np.uint8))
    assert list(tmp_path.iterdir()) == []
    writer = VideoWriter(tmp_path / "o.mp4", fps=FPS, width=WIDTH, height=HEIGHT)
    with pytest.raises(ValueError, match="bit_depth=16"):
        writer.write(np.zeros((HEIGHT, WIDTH, 3), np.uint16))


def test_colour_tags_and_pixel_aspect_are_written(tmp_path: Path) -> None:
    color = {"color_range": "pc", "color_space": "bt2020nc", "color_primaries": "bt2020", "color_trc": "arib-std-b67"}
    target = write_video(tmp_path / "hdr.mov", frames(2), fps=FPS, codec="h265", bit_depth=8, color=color,
                         sample_aspect_ratio=Fraction(64, 45))
    info = probe(target)
    assert (info.color_range, info.color_space, info.color_primaries, info.color_trc) == tuple(color.values())
    assert info.sample_aspect_ratio == Fraction(64, 45)


def test_untagged_output_is_tagged_bt709(tmp_path: Path) -> None:
    info = probe(write_video(tmp_path / "o.mp4", frames(2), fps=FPS))
    assert (info.color_range, info.color_space, info.color_primaries, info.color_trc) == ("tv", "bt709", "bt709", "bt709")


@pytest.mark.parametrize("suffix", [".mov", ".mp4", ".mkv"])
def test_drop_frame_timecode_reads_back(tmp_path: Path, suffix: str) -> None:
    out = write_video(tmp_path / f"df{suffix}", frames(2), fps=Fraction(30000, 1001), timecode="01:00:00;00")
    assert probe(out).start_timecode == "01:00:00;00"


def test_image_sequence_as_audio_source_gives_silent_output(tmp_path: Path) -> None:
    seq = write_video(tmp_path / "seq", frames(3), fps=FPS, codec="png")
    for source in (seq, seq / "%06d.png"):
        out = write_video(tmp_path / "o.mp4", frames(3), fps=FPS, audio_source=source)
        assert not probe(out).has_audio


def test_two_frame_h265_movies_are_written_every_time(tmp_path: Path) -> None:
    # libx265 sometimes gives a two-frame encode garbage decode times (2 runs in 10 here),
    # which the mov muxer refused with "Not yet implemented in FFmpeg, patches welcome"
    for k in range(10):
        out = write_video(tmp_path / f"two{k}.mov", frames(2), fps=FPS, codec="h265")
        assert probe(out).num_frames == 2


def test_a_garbage_decode_time_is_replaced_by_one_in_order() -> None:
    from types import SimpleNamespace

    from uav.io.writer import VideoWriter

    muxed: list[tuple[int, int]] = []
    writer = object.__new__(VideoWriter)
    writer._last_dts = None
    writer._container = SimpleNamespace(mux=lambda p: muxed.append((p.pts, p.dts)))
    for pts, dts in [(0, -2**54), (1, 1 - 2**54), (2, 2)]:
        writer._mux_video(SimpleNamespace(pts=pts, dts=dts))
    assert muxed == [(0, 0), (1, 1), (2, 2)]
    writer._last_dts = None
    for pts, dts in [(0, -2), (4, -1), (2, 0)]:  # real B-frame reordering is left alone
        writer._mux_video(SimpleNamespace(pts=pts, dts=dts))
    assert muxed[3:] == [(0, -2), (4, -1), (2, 0)]
