"""Round trips source -> uav.io reader -> uav.io writer -> reader, through every codec."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from io_helpers import HEIGHT, WIDTH, audio_duration, decode_index, frame_level, make_clip, read_audio

from uav.io import SEQUENCE_AUDIO_NAME, VideoWriter, color_tags, offset_timecode, probe, read_frames, write_video

NTSC_FILM = Fraction(24000, 1001)
START, END = 3, 23  # the rendered range of the 26-frame source


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "source.mp4"
    return make_clip(path, num_frames=26, fps=NTSC_FILM, timecode="10:00:00:00", audio="aac")


def unit(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64) / (65535.0 if a.dtype == np.uint16 else 255.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((unit(a) - unit(b)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


CASES = [
    # codec, output name, bit depth, pix_fmt, lossless
    ("h264", "out.mp4", 8, None, False),
    ("h264", "out10.mkv", 16, "yuv420p10le", False),
    ("h265", "out.mp4", 8, None, False),
    ("h265", "out10.mov", 16, "yuv420p10le", False),
    ("prores_hq", "out.mov", 8, None, False),
    ("prores_4444", "out.mov", 16, None, False),
    ("png", "png_frames", 8, None, True),
    ("png", "png16/%05d.png", 16, None, True),
    ("tiff", "tiff_frames", 16, None, True),
]


@pytest.mark.parametrize("codec,name,bit_depth,pix_fmt,lossless", CASES,
                         ids=[f"{c[0]}-{c[1].split('/')[0]}-{c[2]}bit" for c in CASES])
def test_codec_round_trip(source: Path, tmp_path: Path, codec: str, name: str, bit_depth: int,
                          pix_fmt: str | None, lossless: bool) -> None:
    info = probe(source)
    frames = read_frames(source, start=START, end=END)
    if bit_depth == 16:
        frames = frames.astype(np.uint16) * 257
    timecode = offset_timecode(info.start_timecode, START, info.fps)
    out = write_video(tmp_path / name, frames, fps=info.fps, codec=codec, pix_fmt=pix_fmt, timecode=timecode,
                      audio_source=source, audio_start_frame=START, audio_end_frame=END, color=color_tags(info))
    got = probe(out)
    assert (got.num_frames, got.width, got.height) == (END - START, WIDTH, HEIGHT)
    back = read_frames(out)
    assert back.dtype == (np.uint16 if got.bit_depth == 16 else np.uint8)
    assert [decode_index(f) for f in back] == list(range(START, END))
    if lossless:
        np.testing.assert_array_equal(back, frames)
        assert (out / SEQUENCE_AUDIO_NAME).exists()
        assert abs(audio_duration(out / SEQUENCE_AUDIO_NAME) - (END - START) / float(info.fps)) <= 1 / float(info.fps)
        return
    assert psnr(back, frames) > 30
    assert got.fps == NTSC_FILM and isinstance(got.fps, Fraction)
    assert got.start_timecode == "10:00:00:03"
    assert got.has_audio
    assert abs(audio_duration(out) - (END - START) / float(info.fps)) <= 1 / float(info.fps)
    assert (got.color_range, got.color_space) == ("tv", "bt709")
    if bit_depth == 16 or codec.startswith("prores"):
        assert got.bit_depth == 16  # 10-bit output reads back as uint16


def test_ten_bit_output_keeps_more_than_eight_bits(tmp_path: Path) -> None:
    # a smooth 16-bit ramp: 8-bit output would quantise it to steps of 257
    ramp = np.linspace(10000, 50000, WIDTH)[None, :, None] + np.zeros((HEIGHT, 1, 3))
    frames = [np.round(ramp).astype(np.uint16)] * 3
    out = write_video(tmp_path / "ramp.mov", frames, fps=24, codec="prores_4444")
    back = read_frames(out)
    err = np.abs(back.astype(np.float64) - frames[0].astype(np.float64))
    assert err.mean() < 257 / 4


def test_pcm_audio_is_cut_sample_exactly(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "pcm.mov", num_frames=24, fps=Fraction(24), audio="pcm_s16le")
    frames = read_frames(src, start=5, end=20)
    out = write_video(tmp_path / "cut.mov", frames, fps=24, codec="prores_hq", audio_source=src,
                      audio_start_frame=5, audio_end_frame=20)
    samples, rate, codec = read_audio(out)
    assert codec == "pcm_s16le" and rate == 48000
    per_frame = rate // 24
    assert len(samples) == 15 * per_frame
    expected = np.repeat([frame_level(k) for k in range(5, 20)], per_frame)
    np.testing.assert_array_equal(samples.astype(np.int64), expected)


def test_open_ended_audio_follows_the_frames_written(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "pcm.mov", num_frames=24, fps=Fraction(24), audio="pcm_s16le")
    out = write_video(tmp_path / "cut.mkv", read_frames(src, start=2, end=12), fps=24, audio_source=src,
                      audio_start_frame=2)
    samples, rate, _ = read_audio(out)
    assert len(samples) == 10 * rate // 24
    assert samples[0] == frame_level(2) and samples[-1] == frame_level(11)


def test_compressed_audio_is_copied_not_reencoded(source: Path, tmp_path: Path) -> None:
    out = write_video(tmp_path / "copy.mov", read_frames(source, start=START, end=END), fps=NTSC_FILM,
                      codec="prores_hq", audio_source=source, audio_start_frame=START, audio_end_frame=END)

    def payloads(path: Path) -> list[bytes]:
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]

    copied, original = payloads(out), payloads(source)
    assert copied and all(p in original for p in copied)
    # contiguous run of the source's packets, i.e. a cut, not a re-encode
    first = original.index(copied[0])
    assert original[first:first + len(copied)] == copied


def test_pcm_into_mp4_is_reencoded_to_aac(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "pcm.mov", num_frames=12, fps=Fraction(25), audio="pcm_s16le")
    out = write_video(tmp_path / "o.mp4", read_frames(src), fps=25, audio_source=src)
    _, rate, codec = read_audio(out)
    assert codec == "aac" and rate == 48000
    assert abs(audio_duration(out) - 12 / 25) <= 1 / 25


def test_writer_streams_audio_alongside_frames(source: Path, tmp_path: Path) -> None:
    # frames written one by one through the class API, audio interleaved as they go
    with VideoWriter(tmp_path / "s.mp4", fps=NTSC_FILM, width=WIDTH, height=HEIGHT, audio_source=source,
                     audio_start_frame=0, audio_end_frame=26, timecode="10:00:00:00") as writer:
        for frame in read_frames(source):
            writer.write(frame)
    info = probe(tmp_path / "s.mp4")
    assert info.num_frames == 26 and info.has_audio and info.start_timecode == "10:00:00:00"
    assert abs(audio_duration(tmp_path / "s.mp4") - 26 / float(NTSC_FILM)) <= 1 / float(NTSC_FILM)


def test_sample_clip_script(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_sample_clip.py"
    spec = importlib.util.spec_from_file_location("make_sample_clip", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "sample.mp4"
    args = ["--frames", "12", "--width", "160", "--height", "120", "--fps", "24000/1001"]
    assert module.main([str(out), *args]) == 0
    info = probe(out)
    assert (info.num_frames, info.width, info.height, info.fps) == (12, 160, 120, NTSC_FILM)
    assert info.has_audio and abs(audio_duration(out) - 12 / float(NTSC_FILM)) <= 1 / float(NTSC_FILM)
    frames = read_frames(out)
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 5  # the pattern moves
    # Deterministic content, checked through the lossless PNG path: libx264's own output
    # is not bit-reproducible from run to run (its mb-tree reads uninitialised memory).
    first, second = tmp_path / "png1", tmp_path / "png2"
    for folder in (first, second):
        assert module.main([str(folder), "--codec", "png", "--frames", "6", "--width", "32", "--height", "24"]) == 0
    np.testing.assert_array_equal(read_frames(first), read_frames(second))
    assert (first / SEQUENCE_AUDIO_NAME).read_bytes() == (second / SEQUENCE_AUDIO_NAME).read_bytes()
