"""Image sequences as editors see them (issue #23 item 5): the numbering is the timing
(gaps and repeats are refused, naming the numbers), EXIF orientation is applied as
viewers apply it, and alpha is carried to the outputs that hold it."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from uav import VideoUpscaler
from uav.io import VideoInputError, probe, read_frames, write_video
from uav.io.reader import iter_frames
from uav.weights import make_tiny_release, moving_pattern

W, H = 16, 12


def _png(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    data = rgb if alpha is None else np.dstack([rgb, alpha])
    Image.fromarray(data, "RGBA" if alpha is not None else "RGB").save(path)
    return path


def _plates(folder: Path, numbers: list[int], name: str = "plate.{:04d}.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, n in enumerate(numbers):
        _png(folder / name.format(n), np.full((H, W, 3), 10 * k, np.uint8))
    return folder


# ---------------------------------------------------------------------------- numbering is timing
@pytest.mark.parametrize("numbers, words", [
    ([1001, 1002, 1004, 1005], "image sequence 1001-1005 is missing frame 1003"),
    ([1, 2, 5, 6, 9], "image sequence 1-9 is missing frames 3-4, 7-8"),
])
def test_a_gap_in_the_numbering_is_refused_naming_the_numbers(tmp_path, numbers, words):
    folder = _plates(tmp_path / "seq", numbers)
    for source in (folder, folder / "plate.%04d.png"):
        with pytest.raises(VideoInputError) as info:
            probe(source)
        message = str(info.value)
        assert words in message and "numbering is the timing" in message and "\n" not in message


def test_a_repeated_number_is_refused(tmp_path):
    folder = _plates(tmp_path / "seq", [1, 2])
    _png(folder / "plate.02.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(VideoInputError, match=r"frame number 2 appears twice \(plate.0002.png and plate.02.png\)"):
        probe(folder)


def test_whole_sequences_and_unnumbered_folders_still_read(tmp_path):
    assert probe(_plates(tmp_path / "a", [7, 8, 9, 10])).num_frames == 4
    assert probe(_plates(tmp_path / "b", [1, 2], name="take{}.png") / "take%d.png").num_frames == 2
    folder = tmp_path / "c"
    folder.mkdir()
    for name in ("dawn.png", "noon.png", "dusk.png"):
        _png(folder / name, np.zeros((H, W, 3), np.uint8))
    assert probe(folder).num_frames == 3


def test_dry_run_refuses_the_gap_the_run_refuses(tmp_path):
    from typer.testing import CliRunner

    import uav.cli
    from uav.cli.app import app

    uav.cli._load_commands()
    folder = _plates(tmp_path / "seq", [1, 2, 4])
    for extra in (["--dry-run"], []):
        res = CliRunner().invoke(app, ["upscale", str(folder), "--self-check", "-o", str(tmp_path / "o.mp4"), *extra])
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert res.exit_code == 2 and len(errors) == 1 and "missing frame 3" in errors[0], res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


# ---------------------------------------------------------------------------- EXIF orientation
def _marked(height: int = 24, width: int = 32) -> np.ndarray:
    """A picture whose every turn and mirror looks different: a red block top-left, a green one bottom-left."""
    image = np.full((height, width, 3), 128, np.uint8)
    image[:8, :10] = (255, 0, 0)
    image[-6:, :6] = (0, 255, 0)
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_frames_are_turned_as_exif_says(tmp_path, orientation):
    folder = tmp_path / "jpg"
    folder.mkdir()
    for k in range(2):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(_marked()).save(folder / f"f{k}.jpg", quality=100, exif=exif)
    # Pillow's exif_transpose is how viewers and editors show the frame
    shown = np.asarray(ImageOps.exif_transpose(Image.open(folder / "f0.jpg")).convert("RGB")).astype(int)
    frames = read_frames(folder).astype(int)
    info = probe(folder)
    assert frames.shape[1:3] == shown.shape[:2] == (info.height, info.width)
    assert np.abs(frames[0] - shown).max() <= 8  # two JPEG decoders, one picture


# ---------------------------------------------------------------------------- alpha
@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    return VideoUpscaler.from_pretrained(make_tiny_release(tmp_path_factory.mktemp("w") / "tiny"), device="cpu")


@pytest.fixture()
def rgba_sequence(tmp_path):
    folder = tmp_path / "rgba"
    folder.mkdir()
    rgb = moving_pattern(frames=3, height=H, width=W)
    x = np.linspace(0, 255, W)[None, :]
    alphas = [np.clip(x + 40 * k + np.zeros((H, 1)), 0, 255).astype(np.uint8) for k in range(3)]
    for k in range(3):
        _png(folder / f"{k:03d}.png", rgb[k], alphas[k])
    return folder, alphas


def _expected(alpha: np.ndarray) -> np.ndarray:
    return cv2.resize(alpha, (4 * W, 4 * H), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize("codec, out", [("png", "o_png"), ("tiff", "o_tif"), ("prores_4444", "o.mov")])
def test_alpha_is_carried_to_outputs_that_hold_it(upscaler, rgba_sequence, tmp_path, codec, out):
    folder, alphas = rgba_sequence
    assert probe(folder).has_alpha
    written = upscaler.upscale(str(folder), output=tmp_path / out, steps=1, seed=0, writer_options={"codec": codec})
    if codec == "prores_4444":
        with av.open(str(written)) as container:  # read back with PyAV itself, not uav's reader
            got = [f.to_ndarray(format="rgba")[:, :, 3] for f in container.decode(video=0)]
        tolerance = 2  # 10-bit alpha
    else:
        files = sorted(f for f in written.iterdir() if f.name != "uav.json")  # the provenance record
        got = [np.asarray(Image.open(f)) if codec == "png" else cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
               for f in files]
        got = [g[:, :, 3] if g.dtype == np.uint8 else np.round(g[:, :, 3] / 257) for g in got]
        tolerance = 0
    assert len(got) == 3
    for k in range(3):
        assert got[k].shape == (4 * H, 4 * W)
        assert np.abs(got[k].astype(int) - _expected(alphas[k])).max() <= tolerance


def test_alpha_into_a_codec_without_it_is_one_warning(upscaler, rgba_sequence, tmp_path, caplog):
    folder, _ = rgba_sequence
    with caplog.at_level(logging.WARNING, logger="uav"):
        upscaler.upscale(str(folder), output=tmp_path / "o.mp4", steps=1, seed=0)
    lines = [r.getMessage() for r in caplog.records if "alpha" in r.getMessage()]
    assert len(lines) == 1 and "h264 output cannot hold it" in lines[0] and "prores_4444, png or tiff" in lines[0]
    assert probe(tmp_path / "o.mp4").num_frames == 3


def test_video_alpha_is_read_and_kept(upscaler, tmp_path):
    frames = [np.concatenate([moving_pattern(frames=2, height=H, width=W)[k],
                              np.full((H, W, 1), 60 + 100 * k, np.uint8)], axis=2) for k in range(2)]
    src = write_video(tmp_path / "a.mov", frames, fps=24, codec="prores_4444", alpha=True)
    assert probe(src).has_alpha and not probe(write_video(tmp_path / "b.mp4", [f[:, :, :3] for f in frames],
                                                          fps=24)).has_alpha
    planes = list(iter_frames(src, alpha=True))  # 10-bit ProRes reads back 16-bit
    assert planes[0].dtype == np.uint16 and [int(round(a.mean() / 257)) for a in planes] == [60, 160]
    out = upscaler.upscale(str(src), output=tmp_path / "up", steps=1, seed=0, writer_options={"codec": "png"})
    got = [np.asarray(Image.open(f))[:, :, 3] for f in sorted(out.glob("*.png"))]
    assert [int(round(g.mean())) for g in got] == [60, 160]
