"""GPU-fault policies (issue #14) on CPU: injected out-of-memory errors and fp16 overflows.

The faults are injected where the accelerator would raise them: the U-Net call of the
denoising loop and the VAE's ``decode``. Each test checks that the retry happened, what the
user was told, and that the result equals a run made with the smaller setting from the start.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import uav.cli
import uav.sampling.loop as loop
import uav.sampling.recovery as recovery
from uav import VideoUpscaler
from uav.cli.app import app
from uav.sampling.recovery import GPUMemoryError, NonFiniteError
from uav.weights import make_tiny_release, moving_pattern

uav.cli._load_commands()

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return make_tiny_release(tmp_path_factory.mktemp("release") / "upscale_a_video", fmt="bin")


@pytest.fixture(scope="module")
def upscaler(release):
    return VideoUpscaler.from_pretrained(release, vae="video")


@pytest.fixture(scope="module")
def upscaler_fp16(release):
    return VideoUpscaler.from_pretrained(release, vae="video", dtype="fp16", vae_dtype="fp16")


@pytest.fixture
def small_floors(monkeypatch):
    """Tiles down to 8 px, so tiny test frames can exercise the tiling steps."""
    monkeypatch.setattr(recovery, "MIN_LATENT_TILE", 8)
    monkeypatch.setattr(recovery, "MIN_DECODE_TILE", 8)


def unet_oom_when(monkeypatch, too_big) -> list[tuple]:
    """Make the U-Net call raise OutOfMemoryError for inputs ``too_big(sample)``; return the shapes that failed."""
    original = loop._unet_call
    failed: list[tuple] = []

    def call(unet, sample, *args, **kwargs):
        if too_big(sample):
            failed.append(tuple(sample.shape))
            raise torch.OutOfMemoryError(OOM)
        return original(unet, sample, *args, **kwargs)

    monkeypatch.setattr(loop, "_unet_call", call)
    return failed


def vae_oom_when(monkeypatch, vae, too_big) -> list[tuple]:
    cls = type(vae)
    original = cls.decode
    failed: list[tuple] = []

    def decode(self, z, img, w_lr):
        if too_big(z):
            failed.append(tuple(z.shape))
            raise torch.OutOfMemoryError(OOM)
        return original(self, z, img, w_lr)

    monkeypatch.setattr(cls, "decode", decode)
    return failed


def run(up, clip, events=None, **knobs):
    cb = None if events is None else (lambda e: events.append(e) if e["stage"] == "recovery" else None)
    return up.upscale(clip, num_inference_steps=1, seed=0, output_type="pt", callback=cb, **knobs)


# ---------------------------------------------------------------------------- out of memory
@pytest.mark.slow
def test_denoise_oom_halves_window_batch_without_changing_the_numbers(upscaler, monkeypatch, caplog):
    clip = moving_pattern(frames=9, height=8, width=8)
    reference = run(upscaler, clip, window_batch=1)
    failed = unet_oom_when(monkeypatch, lambda sample: sample.shape[0] > 2)  # CFG: > 1 window per call
    events: list[dict] = []
    with caplog.at_level(logging.INFO, logger="uav"):
        out = run(upscaler, clip, events, window_batch=4)
    assert failed and all(shape[0] > 2 for shape in failed)
    steps = [(e["setting"], e["value"], e["changes_numbers"]) for e in events]
    assert steps and steps[-1] == ("window_batch", 1, False)
    assert all(setting == "window_batch" and not changes for setting, _, changes in steps)
    assert torch.allclose(out, reference, atol=1e-5)
    assert sum("retrying with smaller settings" in r.message for r in caplog.records) == 1  # policy logged once


@pytest.mark.slow
def test_denoise_oom_at_window_batch_one_restarts_with_latent_tiles(upscaler, monkeypatch, small_floors):
    clip = moving_pattern(frames=3, height=24, width=24)
    reference = run(upscaler, clip, tile=True, tile_mode="latent", tiling="feather", tile_size=8, tile_overlap=2)
    failed = unet_oom_when(monkeypatch, lambda sample: sample.shape[-1] > 16)
    events: list[dict] = []
    out = run(upscaler, clip, events, tiling="feather")
    assert failed and [(e["setting"], e["value"]) for e in events] == [("latent_tile", 8)]
    assert events[0]["changes_numbers"] is True
    assert torch.equal(out, reference)


@pytest.mark.slow
def test_decode_oom_halves_the_chunk_then_tiles(upscaler, monkeypatch, small_floors):
    clip = moving_pattern(frames=4, height=32, width=32)
    reference = run(upscaler, clip, decode_chunk=1, decode_tile=16)
    failed = vae_oom_when(monkeypatch, upscaler.vae, lambda z: z.shape[2] > 1 or z.shape[-1] > 16)
    events: list[dict] = []
    out = run(upscaler, clip, events, decode_chunk=3)
    assert failed
    assert [(e["setting"], e["value"]) for e in events] == [("decode_chunk", 1), ("decode_tile", 16)]
    assert torch.equal(out, reference)


@pytest.mark.slow
def test_decode_oom_on_a_later_chunk_keeps_the_earlier_frames(upscaler, monkeypatch):
    clip = moving_pattern(frames=5, height=8, width=8)
    reference = run(upscaler, clip, decode_chunk=1)
    calls = {"n": 0}

    def once_then_small(z):
        calls["n"] += 1
        return calls["n"] == 2 and z.shape[2] > 1  # the second chunk fails once

    vae_oom_when(monkeypatch, upscaler.vae, once_then_small)
    events: list[dict] = []
    out = run(upscaler, clip, events, decode_chunk=2)
    assert [(e["setting"], e["value"]) for e in events] == [("decode_chunk", 1)]
    assert out.shape == reference.shape == (1, 3, 5, 32, 32)
    # frames 0-1 were decoded as one chunk of 2 before the failure; the rest one by one
    assert torch.equal(out[:, :, 2:], reference[:, :, 2:])
    assert torch.equal(out[:, :, :2], run(upscaler, clip, decode_chunk=2)[:, :, :2])


def test_oom_at_the_smallest_setting_is_one_line_with_advice(upscaler, monkeypatch):
    unet_oom_when(monkeypatch, lambda sample: True)
    with pytest.raises(GPUMemoryError) as info:
        run(upscaler, moving_pattern(frames=2, height=8, width=8), window_batch=2)
    message = str(info.value)
    assert "\n" not in message and "window_batch=1" in message and "docs/performance.md" in message
    assert isinstance(info.value, ValueError)  # a user error


@pytest.mark.slow
def test_decode_oom_at_the_smallest_setting_fails(upscaler, monkeypatch):
    vae_oom_when(monkeypatch, upscaler.vae, lambda z: True)
    with pytest.raises(GPUMemoryError, match="decode_chunk=1"):
        run(upscaler, moving_pattern(frames=2, height=8, width=8))


def test_cli_oom_exits_2_with_one_line_and_writes_nothing(release, tmp_path, monkeypatch):
    from uav.io.writer import VideoWriter

    src = tmp_path / "in"
    src.mkdir()
    clip = src / "clip.mp4"
    frames = moving_pattern(frames=3, height=16, width=16)
    w = VideoWriter(clip, fps=Fraction(24), width=16, height=16)
    for f in frames:
        w.write(f)
    w.close()
    unet_oom_when(monkeypatch, lambda sample: True)
    out_dir = tmp_path / "out"
    result = CliRunner().invoke(app, ["upscale", str(clip), "-o", str(out_dir / "x.mp4"), "--weights", str(release),
                                      "--steps", "1"], catch_exceptions=False)
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "out of GPU memory" in errors[0] and "docs/performance.md" in errors[0]
    assert "Traceback" not in result.stderr
    assert not out_dir.exists() or not any(out_dir.iterdir())


# ---------------------------------------------------------------------------- non-finite values
def inject_unet_inf(monkeypatch, *, always: bool = False) -> dict:
    original = loop._unet_call
    state = {"fired": 0}

    def call(unet, sample, *args, **kwargs):
        out = original(unet, sample, *args, **kwargs)
        if out.dtype == torch.float16 or always:
            if always or state["fired"] == 0:
                state["fired"] += 1
                out = out.clone()
                out[0, 0, 0, 0, 0] = float("inf")  # what an fp16 overflow leaves behind
        return out

    monkeypatch.setattr(loop, "_unet_call", call)
    return state


@pytest.mark.slow
def test_fp16_unet_overflow_is_recomputed_wider_and_told_once(upscaler_fp16, monkeypatch, caplog):
    clip = moving_pattern(frames=8, height=8, width=8)
    clean = run(upscaler_fp16, clip)
    state = inject_unet_inf(monkeypatch)
    events: list[dict] = []
    with caplog.at_level(logging.WARNING, logger="uav"):
        out = run(upscaler_fp16, clip, events)
    assert state["fired"] == 1
    assert torch.isfinite(out).all()
    assert [(e["event"], e["dtype"]) for e in events] == [("non_finite", "bf16")]
    assert sum("non-finite" in r.message for r in caplog.records) == 1
    # only the overflowing window was recomputed (in bf16): the result stays near the clean fp16 run
    assert (out - clean).abs().max() < 0.1


@pytest.mark.slow
def test_nonfinite_in_every_dtype_is_an_error(upscaler_fp16, monkeypatch):
    inject_unet_inf(monkeypatch, always=True)
    with pytest.raises(NonFiniteError, match="weights verify"):
        run(upscaler_fp16, moving_pattern(frames=2, height=8, width=8))


@pytest.mark.slow
def test_fp16_decode_overflow_is_recomputed(upscaler_fp16, monkeypatch):
    clip = moving_pattern(frames=4, height=8, width=8)
    cls = type(upscaler_fp16.vae)
    original = cls.decode
    fired = []

    def decode(self, z, img, w_lr):
        out = original(self, z, img, w_lr)
        if z.dtype == torch.float16 and not fired:
            fired.append(1)
            out.sample[:] = float("nan")
        return out

    monkeypatch.setattr(cls, "decode", decode)
    events: list[dict] = []
    out = run(upscaler_fp16, clip, events)
    assert fired and torch.isfinite(out).all()
    assert [(e["event"], e["where"]) for e in events] == [("non_finite", "decoded frames")]


def test_fp32_runs_are_not_checked(upscaler, monkeypatch):
    """The checks cost one sync per call only where fp16 can overflow; fp32 runs skip them."""
    import sys

    calls = []
    original = torch.isfinite

    def counting(x):
        caller = sys._getframe(1).f_code.co_filename
        if caller.endswith(("sampling/loop.py", "sampling/decode.py")):
            calls.append(caller)
        return original(x)

    monkeypatch.setattr(torch, "isfinite", counting)
    out = run(upscaler, moving_pattern(frames=2, height=8, width=8))
    assert calls == [] and original(out).all()
