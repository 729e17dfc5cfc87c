"""Finishing outputs (EXR, DPX, DNxHR) at tiny size, each read back by a reader other than
its writer: FFmpeg's EXR decoder for OpenEXR's files, OpenImageIO for FFmpeg's DPX,
MediaInfo and FFmpeg for DNxHR's container tags; provenance read back from each."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from uav.io import VideoWriter, probe, read_frames, write_video
from uav.io.metadata import resolve_start_number
from uav.io.output_info import color_report, describe_output
from uav.io.provenance import read_provenance, settings_hash, sidecar_path, weights_identity

oiio = pytest.importorskip("OpenImageIO")
pymediainfo = pytest.importorskip("pymediainfo")

W, H = 64, 48
RECORD = {"uav_version": "test", "seed": 7, "settings": {"noise_level": 120}}


def _float_frames(n: int, width: int = W, height: int = H) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    # values off every 8-bit step: an 8-bit stage anywhere would show
    return [rng.uniform(0.0, 1.0, (height, width, 3)).astype(np.float32) for _ in range(n)]


def _exr_planes_by_ffmpeg(path: Path) -> np.ndarray:
    """RGB of an EXR as FFmpeg decodes it (raw half planes: swscale would clip to [0, 1])."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == "gbrpf16le"
    g, b, r = (np.frombuffer(p, np.float16).reshape(frame.height, -1)[:, :frame.width] for p in frame.planes)
    return np.stack([r, g, b], axis=-1).astype(np.float32)


@pytest.mark.parametrize("compression", ["piz", "zip", "none", "dwaa"])
def test_exr_round_trip_through_ffmpeg(tmp_path: Path, compression: str) -> None:
    frames = _float_frames(3)
    out = write_video(tmp_path / "shot 010", frames, fps=Fraction(24000, 1001), codec="exr", compression=compression,
                      start_number=1001, timecode="01:00:00:00", provenance=RECORD,
                      color={"color_primaries": "bt2020", "color_trc": "bt709"})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["shot_010.0001001.exr", "shot_010.0001002.exr", "shot_010.0001003.exr", "uav.json"]
    for i, frame in enumerate(frames):
        back = _exr_planes_by_ffmpeg(out / f"shot_010.{1001 + i:07d}.exr")
        half = frame.astype(np.float16).astype(np.float32)
        if compression == "dwaa":  # lossy by design: perceptual quantisation of the half values
            assert np.abs(back - half).mean() < 0.02
        else:
            assert np.allclose(back, frame, rtol=1e-3, atol=1e-4)
            assert np.array_equal(back, half)
    spec = oiio.ImageInput.open(str(out / "shot_010.0001002.exr"))
    try:
        attrs = {a.name: a.value for a in spec.spec().extra_attribs}
        assert spec.spec().format == "half"
    finally:
        spec.close()
    assert attrs["compression"] == compression
    assert attrs["uav:color_trc"] == "bt709"
    assert attrs["chromaticities"][0] == pytest.approx(0.708, abs=1e-6)  # BT.2020 red x
    assert tuple(attrs["framesPerSecond"]) == (24000, 1001)
    info = probe(out)
    assert (info.num_frames, info.first_frame_number, info.bit_depth) == (3, 1001, 32)
    assert info.start_timecode == "01:00:00:00"
    assert (info.color_primaries, info.color_trc) == ("bt2020", "bt709")
    assert read_provenance(out) == (RECORD, "sidecar")
    (out / "uav.json").unlink()
    assert read_provenance(out) == (RECORD, "exr header")
    facts = describe_output(out)
    assert facts["compression"] == compression and facts["pixel_type"] == "half"


@pytest.mark.parametrize("pix_fmt, top", [("gbrp10be", 1023), ("rgb48be", 65535)])
def test_dpx_round_trip_through_openimageio(tmp_path: Path, pix_fmt: str, top: int) -> None:
    frames = _float_frames(2)
    out = write_video(tmp_path / "plate", frames, fps=Fraction(24000, 1001), codec="dpx", pix_fmt=pix_fmt,
                      start_number=86400, provenance=RECORD, timecode="01:00:00:00",
                      color={"color_primaries": "bt709", "color_trc": "bt709"})
    files = sorted(out.glob("*.dpx"))
    assert [f.name for f in files] == ["plate.0086400.dpx", "plate.0086401.dpx"]
    for i, (f, frame) in enumerate(zip(files, frames)):
        image = oiio.ImageInput.open(str(f))
        try:
            spec = image.spec()
            pixels = image.read_image(oiio.UINT16)
        finally:
            image.close()
        assert spec.get_int_attribute("oiio:BitsPerSample") == (10 if top == 1023 else 16)
        assert spec.get_string_attribute("dpx:Transfer") == "ITU-R 709-4"
        assert spec.get_string_attribute("dpx:Colorimetric") == "ITU-R 709-4"
        # the film and TV headers uav adds to FFmpeg's: each frame's timecode, the rate, the creator
        assert spec.get_string_attribute("dpx:TimeCode") == f"01:00:00:{i:02d}"
        assert spec.get_float_attribute("dpx:FrameRate") == pytest.approx(24000 / 1001)
        assert spec.get_string_attribute("Software") == "uav test"
        codes = np.round(pixels.astype(np.float64) / 65535 * top)
        assert np.abs(codes - np.round(frame.astype(np.float64) * top)).max() <= 1
    info = probe(out)
    assert (info.start_timecode, info.fps, info.first_frame_number) == ("01:00:00:00", Fraction(24000, 1001), 86400)
    back = read_frames(out)
    assert back.dtype == np.uint16 and back.shape == (2, H, W, 3)
    assert np.abs(np.round(back / 65535 * top) - np.round(np.stack(frames) * top)).max() <= 1
    assert read_provenance(out) == (RECORD, "sidecar")
    report = color_report(out, {"color_primaries": "bt709", "color_trc": "bt709", "color_range": "pc"})
    assert report["carried"] == {"color_primaries": "bt709", "color_trc": "bt709"}
    assert set(report["not_carried"]) == {"color_space", "color_range"}


FULL_2020 = {"color_range": "pc", "color_space": "bt2020nc", "color_primaries": "bt2020", "color_trc": "bt2020-10"}
LIMITED_709 = {"color_range": "tv", "color_space": "bt709", "color_primaries": "bt709", "color_trc": "bt709"}


def _gradient(width: int = 256, height: int = 128) -> np.ndarray:
    """Smooth ramps across the full code range: a range mix-up moves every value."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    return np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                           np.broadcast_to(1 - x, (height, width, 1))], axis=-1).copy()


@pytest.mark.parametrize("codec, suffix", [("dnxhr_hq", ".mov"), ("dnxhr_hqx", ".mov"), ("dnxhr_444", ".mov"),
                                           ("dnxhr_hqx", ".mxf"), ("dnxhr", ".mxf")])
@pytest.mark.parametrize("color", [FULL_2020, LIMITED_709], ids=["full-bt2020", "limited-bt709"])
def test_dnxhr_profiles_tags_and_levels(tmp_path: Path, codec: str, suffix: str, color: dict[str, str]) -> None:
    frame = _gradient()
    out = write_video(tmp_path / f"o{suffix}", [frame] * 2, fps=25, codec=codec, color=color, provenance=RECORD,
                      timecode="10:00:00:00")
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        expected = {"dnxhr_hq": "DNXHR HQ", "dnxhr_444": "DNXHR 444"}.get(codec, "DNXHR HQX")
        assert stream.codec_context.profile == expected
    info = probe(out)
    assert info.num_frames == 2 and info.start_timecode == "10:00:00:00"
    back = read_frames(out)
    back = back.astype(np.float64) / (65535 if back.dtype == np.uint16 else 255)
    # a writer converting with one range and tagging the other is off by up to 16/255 at the ends
    assert np.abs(back - frame).max() < 0.03 and np.abs(back - frame).mean() < 0.008
    report = color_report(out, color)
    track = next(t for t in pymediainfo.MediaInfo.parse(str(out)).tracks if t.track_type == "Video")
    assert track.format == "VC-3"
    assert track.color_primaries == ("BT.2020" if color is FULL_2020 else "BT.709")
    assert track.matrix_coefficients == ("BT.2020 non-constant" if color is FULL_2020 else "BT.709")
    if suffix == ".mxf":
        assert track.color_range == ("Full" if color is FULL_2020 else "Limited")  # MediaInfo reads the MXF field
    if suffix == ".mov":  # the range rides in Avid's ACLR atom, which FFmpeg reads back
        assert report == {"carried": color, "not_carried": {}}
    assert {k: v for k, v in report["carried"].items() if k != "color_range"} == \
        {k: v for k, v in color.items() if k != "color_range"}
    record, where = read_provenance(out)
    assert record == RECORD and where == ("sidecar" if suffix == ".mxf" else "metadata")
    if suffix == ".mxf":
        assert sidecar_path(out).is_file()


@pytest.mark.parametrize("codec, suffix", [("h264", ".mp4"), ("h265", ".mov"), ("prores_hq", ".mkv"),
                                           ("prores_4444", ".mkv")])
def test_full_range_survives_every_video_codec(tmp_path: Path, codec: str, suffix: str) -> None:
    frame = _gradient()
    options = {"crf": 0} if codec in ("h264", "h265") else {}
    out = write_video(tmp_path / f"o{suffix}", [frame], fps=24, codec=codec, color=FULL_2020, provenance=RECORD,
                      pix_fmt="yuv444p10le" if codec in ("h264", "h265") else None, **options)
    report = color_report(out, FULL_2020)
    assert report == {"carried": FULL_2020, "not_carried": {}}
    back = read_frames(out).astype(np.float64) / 65535
    assert np.abs(back - frame).max() < 0.02
    assert read_provenance(out) == (RECORD, "metadata")


@pytest.mark.parametrize("codec, suffix", [("prores_hq", ".mov"), ("dnxhr_444", ".mxf")])
def test_full_range_where_the_file_cannot_say_so_is_written_limited(tmp_path: Path, codec: str, suffix: str) -> None:
    frame = _gradient()
    out = write_video(tmp_path / f"o{suffix}", [frame], fps=24, codec=codec, color=FULL_2020)
    report = color_report(out, FULL_2020)
    assert set(report["not_carried"]) == {"color_range"} and "color_range=pc" in report["not_carried"]["color_range"]
    # the picture is right: converted to limited range, which is what readers assume
    back = read_frames(out).astype(np.float64) / 65535
    assert np.abs(back - frame).max() < 0.02


def test_png_and_tiff_say_they_carry_no_tags(tmp_path: Path) -> None:
    out = write_video(tmp_path / "p", _float_frames(1), fps=24, codec="tiff", color=LIMITED_709)
    report = color_report(out, LIMITED_709)
    assert report["carried"] == {}
    assert "tif" in report["not_carried"]["color_primaries"] and "RGB" in report["not_carried"]["color_range"]


def test_float_frames_keep_their_precision_into_16_bit_outputs(tmp_path: Path) -> None:
    frames = _float_frames(1)
    out = write_video(tmp_path / "t", frames, fps=24, codec="tiff")
    back = read_frames(out)[0].astype(np.float64) / 65535
    assert np.abs(back - frames[0]).max() <= 0.5 / 65535 + 1e-7


def test_exr_and_dpx_inputs_stay_deeper_than_8_bits(tmp_path: Path) -> None:
    from uav.frames import frames_to_tensor

    frames = _float_frames(2)
    exr = write_video(tmp_path / "e", frames, fps=Fraction(25), codec="exr")
    dpx = write_video(tmp_path / "d", frames, fps=25, codec="dpx")
    assert probe(exr).fps == 25  # from framesPerSecond
    for folder, step in ((exr, 1e-3), (dpx, 1 / 1023)):
        clip = frames_to_tensor(read_frames(folder))
        values = ((clip + 1) / 2).numpy()
        original = np.stack(frames).transpose(3, 0, 1, 2)[None]
        assert np.abs(values - original).max() <= step
        off_grid = np.abs(values * 255 - np.round(values * 255)) > 0.05
        assert off_grid.mean() > 0.5  # not 8-bit values


def test_exr_input_outside_0_1_is_clipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from uav.io.exr import write_exr

    folder = tmp_path / "hdr"
    folder.mkdir()
    write_exr(folder / "hdr.0001.exr", np.full((H, W, 3), 4.0, np.float32))
    with caplog.at_level("WARNING"):
        frames = read_frames(folder)
    assert frames.max() == 1.0 and "clipped to [0, 1]" in caplog.text


def test_finishing_names_refuse_spaces_and_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must not contain spaces"):
        VideoWriter(tmp_path / "out/my shot.%07d.exr", fps=24, width=W, height=H, codec="exr")
    with pytest.raises(ValueError, match="at least 256x120"):
        VideoWriter(tmp_path / "o.mov", fps=24, width=W, height=H, codec="dnxhr_hqx")
    with pytest.raises(ValueError, match="compression must be one of piz, zip, dwaa, none"):
        VideoWriter(tmp_path / "x", fps=24, width=W, height=H, codec="exr", compression="b44")
    with pytest.raises(ValueError, match="compression only applies to exr"):
        VideoWriter(tmp_path / "o.mov", fps=24, width=W, height=H, codec="prores_hq", compression="piz")
    assert list(tmp_path.iterdir()) == []


def test_aborted_mxf_leaves_neither_file_nor_sidecar(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "o.mxf", fps=24, width=256, height=128, codec="dnxhr", provenance=RECORD)
    writer.write(_float_frames(1, 256, 128)[0].astype(np.float32).__mul__(255).astype(np.uint8))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_start_number_from_source_or_timecode(tmp_path: Path) -> None:
    from uav.io.info import VideoInfo

    seq = VideoInfo(path=tmp_path, width=W, height=H, num_frames=10, fps=Fraction(24), is_image_sequence=True,
                    first_frame_number=1001)
    video = VideoInfo(path=tmp_path / "v.mov", width=W, height=H, num_frames=10, fps=Fraction(24),
                      start_timecode="01:00:00:00")
    assert resolve_start_number(None, seq, 3) == 0
    assert resolve_start_number("source", seq, 3) == 1004
    assert resolve_start_number("source", video, 3) == 3
    assert resolve_start_number("timecode", video, 3) == 86403
    assert resolve_start_number("17", video, 3) == 17
    with pytest.raises(ValueError, match="the source has no timecode"):
        resolve_start_number("timecode", seq, 0)
    with pytest.raises(ValueError, match="'source' or 'timecode'"):
        resolve_start_number("first", seq, 0)


def test_weights_identity_is_cheap_and_copy_stable(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "w"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "model.safetensors").write_bytes(b"a" * (3 << 20))
    (folder / "config.json").write_text("{}")
    first = weights_identity(folder)
    assert first is not None and first["files"] == 2
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # new mtimes, same content
    assert weights_identity(copy)["hash"] == first["hash"]
    data = bytearray((folder / "unet" / "model.safetensors").read_bytes())
    data[-1] = ord("b")  # the last MiB is part of the hash
    (copy / "unet" / "model.safetensors").write_bytes(bytes(data))
    assert weights_identity(copy)["hash"] != first["hash"]
    assert settings_hash({"a": 1, "b": 2}) == settings_hash({"b": 2, "a": 1})
