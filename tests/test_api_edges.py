"""The API's edges: what ``VideoUpscaler`` refuses, each in one line before any work
(issue #23 items 3 and 13): its own input as the output, tensors and devices torch
would fail on with a traceback, frames on the wrong scale, a zero frame rate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from uav import VideoUpscaler
from uav.io import probe, write_video
from uav.weights import make_tiny_release, moving_pattern


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    return make_tiny_release(tmp_path_factory.mktemp("release") / "tiny")


@pytest.fixture(scope="module")
def upscaler(tiny_release):
    return VideoUpscaler.from_pretrained(tiny_release, device="cpu")


@pytest.fixture()
def source(tmp_path):
    path = write_video(tmp_path / "in.mp4", moving_pattern(frames=2, height=12, width=16), fps=24)
    return path, path.read_bytes()


# ---------------------------------------------------------------------------- item 3: never onto the input
@pytest.mark.parametrize("spelling", ["same", "relative", "symlink", "hardlink"])
def test_output_onto_the_input_is_refused(upscaler, source, tmp_path, monkeypatch, spelling):
    path, before = source
    if spelling == "same":
        output = path
    elif spelling == "relative":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        output = Path("..") / "sub" / ".." / "in.mp4"
    elif spelling == "symlink":
        output = tmp_path / "link.mp4"
        output.symlink_to(path)
    else:
        output = tmp_path / "hard.mp4"
        os.link(path, output)
    with pytest.raises(ValueError, match="is the input itself") as info:
        upscaler.upscale(str(path), output=output, steps=1, seed=0)
    assert "\n" not in str(info.value) and "choose another output name" in str(info.value)
    assert path.read_bytes() == before and probe(path).num_frames == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_output_beside_the_input_is_written(upscaler, source, tmp_path):
    path, before = source
    out = upscaler.upscale(str(path), output=tmp_path / "out.mp4", steps=1, seed=0)
    assert probe(out).num_frames == 2 and (probe(out).width, probe(out).height) == (64, 48)
    assert path.read_bytes() == before


def test_the_cli_refuses_links_to_its_input_too(source, tmp_path):
    from uav.cli.jobs import plan_jobs

    path, _ = source
    os.link(path, tmp_path / "hard.mp4")
    (tmp_path / "soft.mp4").symlink_to(path)
    for name in ("hard.mp4", "soft.mp4"):
        with pytest.raises(ValueError, match="is the input itself"):
            plan_jobs(str(path), str(tmp_path / name), "h264", self_check=False)


# ---------------------------------------------------------------------------- item 13: one line each
import torch  # noqa: E402

from uav import InputError, SettingsError  # noqa: E402
from uav.weights import ReleaseError  # noqa: E402

CLIP = moving_pattern(frames=2, height=12, width=16)


def _one_line(exc: BaseException, *words: str) -> None:
    text = str(exc)
    assert "\n" not in text and isinstance(exc, ValueError), (type(exc), text)
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("frames, words", [
    (lambda: torch.empty(1, 3, 2, 12, 16, device="meta"), ["meta tensor", "no data"]),
    (lambda: torch.rand(1, 3, 2, 12, 16) * 255, ["must lie in [-1, 1]", "0..255 frames? pass them as uint8"]),
    (lambda: np.random.rand(2, 12, 16, 3).astype(np.float32) * 255, ["must lie in [0, 1]", "as uint8"]),
    (lambda: torch.zeros(1, 3, 2, 12, 16, dtype=torch.uint8), ["must hold floats in [-1, 1]", "uint8"]),
])
def test_frames_the_upscaler_cannot_use(upscaler, frames, words):
    with pytest.raises(InputError) as info:
        upscaler.upscale(frames(), steps=1)
    _one_line(info.value, *words)


def test_meta_tensors_for_embeddings_and_latents(upscaler):
    meta = torch.empty(1, 4, 2, 3, 4, device="meta")
    with pytest.raises(InputError) as info:
        upscaler.upscale(CLIP, steps=1, latents=meta)
    _one_line(info.value, "latents: a meta tensor")
    with pytest.raises(InputError) as info:
        upscaler.upscale(CLIP, steps=1, prompt_embeds=torch.empty(1, 77, 32, device="meta"))
    _one_line(info.value, "prompt_embeds: a meta tensor")
    with pytest.raises(InputError) as info:
        upscaler.upscale(CLIP, steps=1, propagation_steps=(0,), flows=(torch.zeros(1, 2, 1, 3, 4),))
    _one_line(info.value, "flows: expected a (forward, backward) pair")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device, words", [
    ("cuda", ["device 'cuda': CUDA is not available here", "use device='cpu'"]),
    ("cuda:3", ["device 'cuda:3': CUDA is not available here"]),
    ("tpu", ["'tpu' is not a device torch knows"]),
    ("xla", ["device 'xla' is not available here"]),
])
def test_devices_that_are_not_there(tiny_release, device, words):
    with pytest.raises(InputError) as info:
        VideoUpscaler.from_pretrained(tiny_release, device=device)
    _one_line(info.value, *words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_the_readme_snippet_on_a_cpu_only_machine_is_one_clear_line(tiny_release):
    with pytest.raises(InputError, match=r"^device 'cuda': CUDA is not available here .*use device='cpu'$"):
        VideoUpscaler.from_pretrained(tiny_release, device="cuda")


@pytest.mark.parametrize("option", ["dtype", "vae_dtype"])
def test_integer_dtypes_are_refused(tiny_release, option):
    with pytest.raises(SettingsError) as info:
        VideoUpscaler.from_pretrained(tiny_release, device="cpu", **{option: torch.int8})
    _one_line(info.value, f"{option} must be a floating-point dtype", "torch.int8")


@pytest.mark.parametrize("path", [None, 3])
def test_from_pretrained_without_a_folder(path):
    with pytest.raises(ReleaseError) as info:
        VideoUpscaler.from_pretrained(path)
    _one_line(info.value, "expected the weights folder", "docs/weights.md")


@pytest.mark.parametrize("options, words", [
    ({"fps": 0}, "writer_options['fps'] must be > 0, got 0"),
    ({"fps": float("nan")}, "writer_options['fps'] must be exact"),
    ({"fps": "nan"}, "writer_options['fps'] must be a positive rational"),
    ({"bogus": 1}, "writer_options: unknown option(s) ['bogus']"),
])
def test_writer_options_are_checked_before_any_work(upscaler, tmp_path, options, words):
    calls: list[dict] = []
    with pytest.raises(ValueError) as info:
        upscaler.upscale(CLIP, steps=1, output=tmp_path / "o.mp4", writer_options=options, callback=calls.append)
    _one_line(info.value, words)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_output_type_is_checked_before_any_work(upscaler):
    calls: list[dict] = []
    with pytest.raises(InputError, match="output_type must be 'np' or 'pt', got 'list'"):
        upscaler.upscale(CLIP, steps=1, output_type="list", callback=calls.append)
    assert calls == []


def test_an_unknown_flow_name_fails_at_construction(tiny_release, upscaler):
    from uav.settings import ComponentError

    with pytest.raises(ComponentError) as info:
        VideoUpscaler.from_pretrained(tiny_release, device="cpu", flow="magic")
    _one_line(info.value, "unknown flow estimator 'magic'", "dis")
    with pytest.raises(ComponentError):
        VideoUpscaler.from_components(unet=upscaler.unet, vae=upscaler.vae, scheduler=upscaler.scheduler,
                                      low_res_scheduler=upscaler.low_res_scheduler, flow="magic")
    with pytest.raises(InputError, match="flow: expected a registered flow estimator's name"):
        VideoUpscaler.from_components(unet=upscaler.unet, vae=upscaler.vae, scheduler=upscaler.scheduler,
                                      low_res_scheduler=upscaler.low_res_scheduler, flow=42)
