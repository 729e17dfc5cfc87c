"""Tests for uav.report: picture contents and sizes, PNG writing, and the HTML report."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from uav.eval import report as R
from uav.eval import evaluate_video

L = R.LABEL_HEIGHT


def _clip(T: int = 5, H: int = 24, W: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)


def _read_png(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a decodable PNG"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_temporal_profile_tracks_a_row_or_column_over_time():
    clip = _clip()
    np.testing.assert_array_equal(R.temporal_profile(clip, row=7), clip[:, 7])
    col = R.temporal_profile(clip, column=3)
    assert col.shape == (24, 5, 3)
    np.testing.assert_array_equal(col[:, 2], clip[2, :, 3])
    floats = R.temporal_profile(clip / 255.0, row=7)
    np.testing.assert_array_equal(floats, clip[:, 7])
    with pytest.raises(ValueError, match="exactly one"):
        R.temporal_profile(clip, row=1, column=1)
    with pytest.raises(ValueError, match="row: 24 is outside"):
        R.temporal_profile(clip, row=24)


def test_profile_figure_has_expected_size_and_panels(tmp_path):
    out, ref = _clip(seed=1), _clip(seed=2)
    lq = _clip(H=6, W=8, seed=3)  # resized to the first video's 24x32
    fig = R.profile_figure({"output": out, "gt": ref, "input": lq}, row=10, time_scale=3, gap=4)
    assert fig.shape == (L + 5 * 3, 3 * 32 + 2 * 4, 3) and fig.dtype == np.uint8
    # the first panel is the output's row 10, each time step three pixels thick
    np.testing.assert_array_equal(fig[L:, :32], np.repeat(out[:, 10], 3, axis=0))
    np.testing.assert_array_equal(fig[L:, 36:68], np.repeat(ref[:, 10], 3, axis=0))
    colfig = R.profile_figure({"a": out, "b": ref}, column=5, labels=False, gap=2)
    assert colfig.shape == (24, 2 * 5 + 2, 3)
    path = R.write_png(tmp_path / "sub" / "profile.png", fig)
    assert _read_png(path.read_bytes()).shape == fig.shape
    assert sorted(p.name for p in path.parent.iterdir()) == ["profile.png"]  # no temporary left behind
    with pytest.raises(ValueError, match="same number of frames"):
        R.profile_figure({"a": out, "b": out[:3]}, row=0)


def test_frame_strip_and_crop_figure_sizes_and_contents():
    a, b = _clip(T=6, seed=4), _clip(T=6, seed=5)
    strip = R.frame_strip({"a": a, "b": b}, count=3, gap=2)
    assert strip.shape == (2 * (L + 24) + 2, 3 * 32 + 2 * 2, 3)
    np.testing.assert_array_equal(strip[L : L + 24, :32], a[0])
    np.testing.assert_array_equal(strip[L : L + 24, -32:], a[5])
    chosen = R.frame_strip({"a": a}, [1, 4], labels=False, gap=0)
    np.testing.assert_array_equal(chosen, np.concatenate([a[1], a[4]], axis=1))

    crops = R.crop_figure({"a": a, "b": b}, frame=2, box=(4, 12, 8, 14), zoom=3, gap=4)
    assert crops.shape == (L + 8 * 3, 2 * 6 * 3 + 4, 3)
    np.testing.assert_array_equal(crops[L : L + 3, :3], np.broadcast_to(a[2, 4, 8], (3, 3, 3)))
    with pytest.raises(ValueError, match="box"):
        R.crop_figure({"a": a}, frame=0, box=(0, 30, 0, 4))
    with pytest.raises(ValueError, match="frames: expected indices"):
        R.frame_strip({"a": a}, [6])


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))
        self._in_cell = tag in ("td", "th")

    def handle_data(self, data):
        if self._in_cell:
            self.cells.append(data.strip())


def test_report_parses_and_embeds_pictures_and_metrics(tmp_path):
    ref = _clip(T=4, seed=6)
    out = np.clip(ref.astype(int) + 3, 0, 255).astype(np.uint8)
    metrics = {"out.mp4": evaluate_video(out, ref, ewarp=False), "gt.mp4": evaluate_video(ref, ref, ewarp=False)}
    profile = R.profile_figure({"out": out, "gt": ref}, row=3)
    strip = R.frame_strip({"out": out, "gt": ref}, count=2)
    png = R.write_png(tmp_path / "strip.png", strip)
    report = R.write_report(tmp_path / "report.html", metrics=metrics,
                            images=[("temporal profile", profile), ("strip <frames>", png)], title="Eval & test")

    parser = _Collector()
    parser.feed(report.read_text(encoding="utf-8"))
    parser.close()
    assert len(parser.imgs) == 2
    shapes = []
    for img in parser.imgs:
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        shapes.append(_read_png(base64.b64decode(src.split(",", 1)[1])).shape)
    assert shapes == [profile.shape, strip.shape]
    assert parser.imgs[1]["alt"] == "strip <frames>"
    assert "out.mp4" in parser.cells and "gt.mp4" in parser.cells
    assert f"{metrics['out.mp4'].psnr:.2f}" in parser.cells
    assert "∞" in parser.cells  # identical clips: infinite PSNR shown as such
    assert "<svg" in report.read_text(encoding="utf-8")  # per-frame chart


def test_report_can_reference_pictures_next_to_it(tmp_path):
    clip = _clip(T=3, seed=7)
    profile = R.profile_figure({"v": clip}, row=0)
    existing = R.write_png(tmp_path / "pics" / "strip.png", R.frame_strip({"v": clip}))
    report = R.write_report(tmp_path / "r.html", metrics={}, images=[("p", profile), ("s", existing)], embed=False)
    parser = _Collector()
    parser.feed(report.read_text(encoding="utf-8"))
    srcs = [img["src"] for img in parser.imgs]
    assert srcs == ["r_00.png", "pics/strip.png"]
    assert _read_png((tmp_path / "r_00.png").read_bytes()).shape == profile.shape
    with pytest.raises(FileNotFoundError, match="nope.png"):
        R.write_report(tmp_path / "x.html", metrics={}, images=[("x", Path(tmp_path / "nope.png"))])
