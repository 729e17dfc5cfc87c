"""Image sequences: header sizes through Pillow, explicit file lists, and the timeline's sequences."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from uav.io import VideoInputError, probe, read_images
from uav.io.sequence import image_size

sys.path.insert(0, str(Path(__file__).parent))
import otio_fixtures as F  # noqa: E402


def _image(path: Path, width: int, height: int, dtype: type = np.uint8, value: int = 0) -> Path:
    cv2.imwrite(str(path), np.full((height, width, 3), value, dtype))
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".bmp"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_header_sizes_without_decoding(tmp_path: Path, suffix: str, dtype: type) -> None:
    if dtype == np.uint16 and suffix in (".jpg", ".bmp"):
        pytest.skip("8-bit only formats")
    assert image_size(_image(tmp_path / f"a{suffix}", 37, 21, dtype)) == (37, 21)


def test_unreadable_headers_fall_back_to_decoding(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert image_size(tmp_path / "junk.png") is None
    folder = tmp_path / "seq"
    folder.mkdir()
    _image(folder / "0001.png", 8, 6)
    (folder / "0002.png").write_bytes(b"not an image")
    with pytest.raises(VideoInputError, match="0002.png: cannot be decoded"):
        probe(folder)


def test_mixed_sizes_are_found_from_the_headers(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(3):
        _image(folder / f"{i:04d}.tif", 8, 6, np.uint16)
    _image(folder / "0003.tif", 8, 7, np.uint16)
    with pytest.raises(VideoInputError, match="0003.tif: is 8x7 but the sequence's first image 0000.tif is 8x6"):
        probe(folder)


def test_read_images_keeps_the_given_order_and_depth(tmp_path: Path) -> None:
    files = [_image(tmp_path / f"f{i}.png", 4, 2, np.uint16, 1000 * i) for i in range(4)]
    frames = read_images([files[2], files[0], files[3]])
    assert frames.shape == (3, 2, 4, 3) and frames.dtype == np.uint16
    assert [int(f[0, 0, 0]) for f in frames] == [2000, 0, 3000]
    with pytest.raises(VideoInputError, match="nope.png: image sequence frame is missing"):
        read_images([files[0], tmp_path / "nope.png"])
    _image(tmp_path / "eight.png", 4, 2, np.uint8)
    with pytest.raises(VideoInputError, match="is 8-bit but the sequence starts 16-bit"):
        read_images([files[0], tmp_path / "eight.png"])
    with pytest.raises(ValueError, match="at least one"):
        read_images([])


def test_timeline_sequences_are_read_through_uav_io(tmp_path: Path) -> None:
    from uav_otio import plan_timeline
    from uav_otio.render import _read_sequence

    media = F.media_set(tmp_path)
    (job,) = plan_timeline(F.image_sequence(media), handles=2).jobs
    frames = _read_sequence(job)
    assert frames.shape == (job.frames, F.H, F.W, 3) and frames.dtype == np.uint8
    expected = [cv2.imread(str(job.media.frame_path(i)))[..., ::-1] for i in range(job.first_index, job.end_index)]
    np.testing.assert_array_equal(frames, np.stack(expected))
    job.media.frame_path(job.first_index + 1).unlink()
    with pytest.raises(VideoInputError, match="image sequence frame is missing"):
        _read_sequence(job)
