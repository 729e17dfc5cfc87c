"""Tests for `uav eval` and `uav compare` on tiny PNG sequences and an mp4."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import uav.cli.evaluate  # noqa: F401 - registers the commands
from uav import eval as M
from uav.cli.app import app

runner = CliRunner()
T, SIZE = 5, 40


def _reference() -> np.ndarray:
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur((rng.random((SIZE + 20, SIZE + 20, 3)) * 255).astype(np.uint8), (0, 0), 2.0)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    return np.stack([big[5 + t : 5 + t + SIZE, 5 : 5 + SIZE] for t in range(T)])


def _write_sequence(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    ref = _reference()
    rng = np.random.default_rng(1)
    noisy = np.clip(ref.astype(int) + rng.integers(-6, 7, ref.shape), 0, 255).astype(np.uint8)
    flicker = np.clip(ref.astype(int) + np.array([(-1) ** t * 20 for t in range(T)])[:, None, None, None], 0, 255)
    flicker = flicker.astype(np.uint8)
    return {
        "ref": (ref, _write_sequence(root / "ref", ref)),
        "noisy": (noisy, _write_sequence(root / "noisy", noisy)),
        "flicker": (flicker, _write_sequence(root / "flicker", flicker)),
        "short": (ref[:3], _write_sequence(root / "short", ref[:3])),
        "root": root,
    }


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # the whole of stdout is one JSON object


def test_eval_json_has_contract_keys_and_matches_library(clips):
    out, out_dir = clips["noisy"]
    ref, ref_dir = clips["ref"]
    doc = _json(runner.invoke(app, ["eval", str(out_dir), "--ref", str(ref_dir), "--json"]))
    assert list(doc) == ["psnr", "psnr_y", "ssim", "ssim_y", "ewarp", "per_frame"]
    assert doc["psnr"] == pytest.approx(M.psnr(out, ref), abs=1e-9)
    assert doc["psnr_y"] == pytest.approx(M.psnr(out, ref, y_channel=True), abs=1e-9)
    assert doc["ssim"] == pytest.approx(M.ssim(out, ref), abs=1e-9)
    assert doc["ssim_y"] == pytest.approx(M.ssim(out, ref, y_channel=True), abs=1e-9)
    assert doc["ewarp"] == pytest.approx(M.warping_error(out).mean() * 1e3, rel=1e-6)
    assert [len(doc["per_frame"][k]) for k in ("psnr", "psnr_y", "ssim", "ssim_y", "ewarp")] == [T, T, T, T, T - 1]

    cropped = _json(runner.invoke(app, ["eval", str(out_dir), "--ref", str(ref_dir), "--json", "--crop-border", "4",
                                        "--no-ewarp"]))
    assert cropped["psnr"] == pytest.approx(M.psnr(out, ref, crop_border=4), abs=1e-9)
    assert cropped["ewarp"] is None and "ewarp" not in cropped["per_frame"]


def test_eval_table_and_identical_input(clips):
    _, ref_dir = clips["ref"]
    result = runner.invoke(app, ["eval", str(ref_dir), "--ref", str(ref_dir)])
    assert result.exit_code == 0, result.stderr
    assert "PSNR-Y" in result.stdout and "E*warp" in result.stdout and "inf" in result.stdout
    doc = _json(runner.invoke(app, ["eval", str(ref_dir), "--ref", str(ref_dir), "--json", "--no-ewarp"]))
    assert doc["psnr"] is None and doc["ssim"] == pytest.approx(1.0)  # infinite PSNR is JSON null


def test_compare_json_ranks_flicker_worse_and_writes_report(clips, tmp_path):
    _, ref_dir = clips["ref"]
    _, noisy_dir = clips["noisy"]
    _, flick_dir = clips["flicker"]
    report = tmp_path / "out" / "report.html"
    result = runner.invoke(app, ["compare", str(noisy_dir), str(flick_dir), "--ref", str(ref_dir), "--json",
                                 "--report", str(report), "--flow-on", "reference"])
    doc = _json(result)
    labels = [str(noisy_dir), str(flick_dir)]
    assert doc["videos"] == labels
    assert set(doc) == {"videos", "psnr", "psnr_y", "ssim", "ssim_y", "ewarp", "per_frame"}
    assert list(doc["psnr"]) == labels and list(doc["per_frame"]) == labels
    assert doc["ewarp"][str(flick_dir)] > 5 * doc["ewarp"][str(noisy_dir)]
    assert len(doc["per_frame"][str(flick_dir)]["ewarp"]) == T - 1

    class Imgs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.srcs = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    parser = Imgs()
    parser.feed(report.read_text(encoding="utf-8"))
    assert len(parser.srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in parser.srcs)


def test_compare_table_lists_every_video(clips):
    _, ref_dir = clips["ref"]
    result = runner.invoke(app, ["compare", str(clips["noisy"][1]), str(clips["flicker"][1]), "--ref", str(ref_dir),
                                 "--no-ewarp"])
    assert result.exit_code == 0, result.stderr
    assert "noisy" in result.stdout and "flicker" in result.stdout


def test_eval_reads_mp4_and_resizes_baseline(clips, tmp_path):
    ref, ref_dir = clips["ref"]
    small = np.stack([cv2.resize(f, (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA) for f in ref])
    path = tmp_path / "small.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = SIZE // 2, SIZE // 2, "yuv420p"
        stream.options = {"crf": "10"}
        for f in small:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    refused = runner.invoke(app, ["eval", str(path), "--ref", str(ref_dir), "--json"])
    assert refused.exit_code == 2 and "--resize-to-ref" in refused.stderr
    assert json.loads(refused.stdout) == {"ok": False, "error": refused.stderr.strip().removeprefix("error: ")}
    doc = _json(runner.invoke(app, ["eval", str(path), "--ref", str(ref_dir), "--json", "--resize-to-ref",
                                    "--no-ewarp"]))
    assert 20.0 < doc["psnr"] < 45.0


def test_eval_errors_are_one_line_with_exit_code_2(clips):
    _, ref_dir = clips["ref"]
    short = runner.invoke(app, ["eval", str(clips["short"][1]), "--ref", str(ref_dir), "--json"])
    assert short.exit_code == 2 and "3 frames but the reference has 5" in short.stderr
    assert json.loads(short.stdout)["ok"] is False  # docs/cli.md: --json errors are a JSON document too
    ranged = _json(runner.invoke(app, ["eval", str(clips["short"][1]), "--ref", str(ref_dir), "--json", "--end", "3"]))
    assert ranged["psnr"] is None  # the first three frames are identical
    unknown = runner.invoke(app, ["eval", str(ref_dir), "--ref", str(ref_dir), "--flow", "nope"])
    assert unknown.exit_code == 2 and "unknown flow estimator 'nope'" in unknown.stderr
    missing = runner.invoke(app, ["eval", str(ref_dir), "--ref", str(clips["root"] / "missing")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ")
    lpips = runner.invoke(app, ["eval", str(ref_dir), "--ref", str(ref_dir), "--lpips-weights", "w.pth"])
    assert lpips.exit_code == 2 and ("lpips" in lpips.stderr.lower())


# --------------------------------------------------------------------------- issue 14: hostile inputs


def _write_mp4(path: Path, frames: np.ndarray, rate: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "10"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _one_error_line(result, *, as_json: bool) -> str:
    """The contract of a refused command: exit 2, one `error:` line, no traceback, JSON only with --json."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "─" not in result.stderr  # no rich usage panel
    message = lines[0].removeprefix("error: ")
    if as_json:
        assert json.loads(result.stdout) == {"ok": False, "error": message}
    else:
        assert result.stdout == ""
    return message


def test_frame_rate_mismatch_is_refused_naming_both_rates(clips, tmp_path):
    ref, ref_dir = clips["ref"]
    ref24 = _write_mp4(tmp_path / "ref24.mp4", ref, 24)
    out30 = _write_mp4(tmp_path / "out30.mp4", ref, 30)  # same frames, another rate
    for as_json in (False, True):
        result = runner.invoke(app, ["eval", str(out30), "--ref", str(ref24), "--no-ewarp"]
                               + (["--json"] if as_json else []))
        message = _one_error_line(result, as_json=as_json)
        assert "30 fps" in message and "24 fps" in message and str(out30) in message
    compared = runner.invoke(app, ["compare", str(ref24), str(out30), "--ref", str(ref24), "--no-ewarp"])
    assert "30 fps" in _one_error_line(compared, as_json=False)
    # the same rate passes, and an image sequence (no rate of its own) pairs with a video
    assert runner.invoke(app, ["eval", str(_write_mp4(tmp_path / "same.mp4", ref, 24)), "--ref", str(ref24),
                               "--no-ewarp"]).exit_code == 0
    assert runner.invoke(app, ["eval", str(out30), "--ref", str(ref_dir), "--no-ewarp"]).exit_code == 0


def test_report_to_a_folder_is_refused_before_scoring(clips, tmp_path):
    _, ref_dir = clips["ref"]
    folder = tmp_path / "reports"
    folder.mkdir()
    for as_json in (False, True):
        result = runner.invoke(app, ["eval", str(ref_dir), "--ref", str(ref_dir), "--report", str(folder)]
                               + (["--json"] if as_json else []))
        message = _one_error_line(result, as_json=as_json)
        assert message.startswith("--report:") and "folder" in message
    assert list(folder.iterdir()) == [] and list(tmp_path.iterdir()) == [folder]  # nothing written anywhere


def test_bad_option_values_are_one_line(clips):
    _, ref_dir = clips["ref"]
    base = ["eval", str(ref_dir), "--ref", str(ref_dir)]
    for extra, needle in ((["--crop-border", "-1"], "--crop-border"), (["--flow-on", "both"], "--flow-on"),
                          (["--profile-row", "-2"], "--profile-row"),
                          (["--profile-row", "1", "--profile-column", "1"], "at most one"),
                          (["--flow", "nope"], "unknown flow estimator 'nope'")):
        for as_json in (False, True):
            message = _one_error_line(runner.invoke(app, base + extra + (["--json"] if as_json else [])),
                                      as_json=as_json)
            assert needle in message, (extra, message)


def test_missing_lpips_package_names_the_extra(clips, tmp_path, monkeypatch):
    import sys

    _, ref_dir = clips["ref"]
    monkeypatch.setitem(sys.modules, "lpips", None)  # `import lpips` fails, as without the extra
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    result = runner.invoke(app, ["eval", str(ref_dir), "--ref", str(ref_dir), "--lpips-weights", str(weights),
                                 "--json"])
    assert "uav[lpips]" in _one_error_line(result, as_json=True)


def test_compare_table_is_titled_compare(clips):
    _, ref_dir = clips["ref"]
    result = runner.invoke(app, ["compare", str(ref_dir), "--ref", str(ref_dir), "--no-ewarp"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "uav compare" in result.stdout and "uav eval" not in result.stdout
    single = runner.invoke(app, ["eval", str(ref_dir), "--ref", str(ref_dir), "--no-ewarp"], env={"COLUMNS": "200"})
    assert "uav eval" in single.stdout


def test_eval_and_compare_share_one_option_declaration():
    import dataclasses

    import typer.main

    from uav.cli.evaluate import EvalOptions

    def options(name: str) -> dict[str, tuple]:
        command = next(c for c in app.registered_commands if c.name == name)
        click_command = typer.main.get_command_from_info(command, pretty_exceptions_short=True,
                                                         rich_markup_mode=None)
        return {p.name: (tuple(p.opts), p.default, p.required) for p in click_command.params
                if p.param_type_name == "option"}

    fields = [f.name for f in dataclasses.fields(EvalOptions)]
    assert list(options("eval")) == fields and options("eval") == options("compare")
    assert options("eval")["ref"] == (("--ref",), None, True)
    assert options("eval")["crop_border"][:2] == (("--crop-border",), 0)
