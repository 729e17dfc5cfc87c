"""Plugins' results are checked where the pipeline takes them (issue #23 item 4).

A hostile plugin registers one component of every kind the pipeline calls; each returns
one kind of garbage (fewer frames, NaN/inf, integers, ``None``, a NumPy array, windows or
tiles that do not add up). Every case is one ``ValueError`` line naming the component and
its plugin, and ``upscale(..., output=)`` leaves no file. Plugins that print or call
``sys.exit`` at import or in a hook are recorded as failed; the command goes on.
"""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from uav import VideoUpscaler
from uav.plugin_results import PluginResultError
from uav.protocols import SegmentPlan, Tile
from uav.registry import Registry, build_plugin_manager, hookimpl
from uav.weights import make_tiny_release, moving_pattern

#: what the hostile colour corrector returns, by name
BAD_CLIPS = {
    "fewer": lambda out: out[:-1],
    "nan": lambda out: out * float("nan"),
    "inf": lambda out: out + float("inf"),
    "int": lambda out: (out * 100).to(torch.int64),
    "none": lambda out: None,
    "numpy": lambda out: out.numpy(),
}
BAD_FLOWS = {
    "none": lambda f, b: None,
    "single": lambda f, b: f,
    "short": lambda f, b: (f[:, :, :-1], b[:, :, :-1]),
    "nan": lambda f, b: (f * float("nan"), b),
}


class _Flow:
    def __init__(self, how: str) -> None:
        self.how = how

    def __call__(self, frames: torch.Tensor, *, size: Any = None) -> Any:
        t, _, h, w = frames.shape
        zero = torch.zeros(1, 2, t - 1, *(size or (h, w)))
        return BAD_FLOWS[self.how](zero, zero.clone())


class _Tiling:
    def __init__(self, how: str) -> None:
        self.how = how

    def plan(self, height: int, width: int, *, tile_size: int, overlap: int, scale: int = 4) -> Any:
        full = torch.ones(height * scale, width * scale)
        if self.how == "outside":
            return [Tile((0, height + 5, 0, width), full)]
        if self.how == "gap":
            half = width // 2
            return [Tile((0, height, 0, half), torch.ones(height * scale, half * scale))]
        return [Tile((0, height, 0, width), full.numpy())]  # "numpy" weights


class _Segments:
    def __init__(self, how: str) -> None:
        self.how = how

    def plan(self, num_frames: int, window: int = 8) -> Any:
        if self.how == "none":
            return None
        weights = torch.ones(1, num_frames)
        if self.how == "double":
            return SegmentPlan(((0, num_frames),), weights * 2)
        return SegmentPlan(((0, num_frames + 3),), weights)  # "outside"


class _Scheduler:
    """The published DDIM whose step output is spoilt."""

    def __init__(self, how: str, config: Any = None) -> None:
        from uav.sampling.schedulers import OfficialDDIM
        from uav.weights.sd_x4 import SD_X4_DDIM_CONFIG

        self.inner, self.how = OfficialDDIM(config or SD_X4_DDIM_CONFIG), how

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def set_timesteps(self, n: int, device: Any = None) -> Any:
        out = self.inner.set_timesteps(n)
        return None if self.how == "timesteps" else out

    def predict_x0(self, v: torch.Tensor, t: Any, sample: torch.Tensor) -> torch.Tensor:
        return self.inner.predict_x0(v, t, sample)

    def step(self, v: torch.Tensor, t: Any, sample: torch.Tensor, x0: torch.Tensor, **kw: Any) -> Any:
        out = self.inner.step(v, t, sample, x0, **kw)
        return {"nan": out * float("nan"), "numpy": out.numpy(), "shape": out[:, :, :1]}.get(self.how, out)


class Hostile:
    @hookimpl
    def register_color_correctors(self, register: Any) -> None:
        for how, spoil in BAD_CLIPS.items():
            register(f"bad-{how}", lambda spoil=spoil: (lambda out, ref: spoil(out)))

    @hookimpl
    def register_flow_estimators(self, register: Any) -> None:
        for how in BAD_FLOWS:
            register(f"bad-{how}", lambda how=how: _Flow(how))

    @hookimpl
    def register_tiling_strategies(self, register: Any) -> None:
        for how in ("outside", "gap", "numpy"):
            register(f"bad-{how}", lambda how=how: _Tiling(how))

    @hookimpl
    def register_segment_strategies(self, register: Any) -> None:
        for how in ("none", "double", "outside"):
            register(f"bad-{how}", lambda how=how: _Segments(how))

    @hookimpl
    def register_schedulers(self, register: Any) -> None:
        for how in ("nan", "numpy", "shape", "timesteps"):
            register(f"bad-{how}", lambda how=how, config=None, **kw: _Scheduler(how, config))

    @hookimpl
    def register_captioners(self, register: Any) -> None:
        register("bad-none", lambda **kw: (lambda image: None))
        register("bad-empty", lambda **kw: (lambda image: "  \n"))


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    pm = build_plugin_manager(load_entrypoints=False, blocked=[])
    pm.register(Hostile(), name="hostile")
    release = make_tiny_release(tmp_path_factory.mktemp("release") / "tiny")
    return VideoUpscaler.from_pretrained(release, device="cpu", registry=Registry(pm))


CLIP = moving_pattern(frames=3, height=12, width=16)
RUN = {"steps": 1, "seed": 0}


def _refused(upscaler: VideoUpscaler, tmp_path: Path, who: str, **knobs: Any) -> str:
    out = tmp_path / "out.mp4"
    with pytest.raises(ValueError) as info:
        upscaler.upscale(CLIP, output=out, **{**RUN, **knobs})
    message = str(info.value)
    assert "\n" not in message and who in message, message
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left
    return message


@pytest.mark.parametrize("how, words", [("fewer", "returned 2 frames for the 3"), ("nan", "NaN or infinite"),
                                        ("inf", "NaN or infinite"), ("int", "int64 values"),
                                        ("none", "returned None"), ("numpy", "numpy.ndarray")])
def test_colour_corrector_results(upscaler, tmp_path, how, words):
    message = _refused(upscaler, tmp_path, f"colour corrector 'bad-{how}' (plugin 'hostile')", color_fix=f"bad-{how}")
    assert words in message and isinstance(message, str)


@pytest.mark.parametrize("how, words", [("none", "returned None"), ("single", "forward, backward"),
                                        ("short", "shape (1, 2, 1, 12, 16)"), ("nan", "NaN")])
def test_flow_estimator_results(upscaler, tmp_path, how, words):
    message = _refused(upscaler, tmp_path, f"flow estimator 'bad-{how}' (plugin 'hostile')", flow=f"bad-{how}",
                       propagation_steps=(0,))
    assert words in message


@pytest.mark.parametrize("how, words", [("outside", "outside the 16x12 frame"), ("gap", "without weight"),
                                        ("numpy", "numpy.ndarray")])
def test_tiling_results(upscaler, tmp_path, how, words):
    message = _refused(upscaler, tmp_path, f"tiling strategy 'bad-{how}' (plugin 'hostile')", tiling=f"bad-{how}",
                       tile=True)
    assert words in message


@pytest.mark.parametrize("how, words", [("none", "expected a SegmentPlan"), ("double", "sum to 2"),
                                        ("outside", "outside the clip's 3 frames")])
def test_segment_results(upscaler, tmp_path, how, words):
    message = _refused(upscaler, tmp_path, f"segment strategy 'bad-{how}' (plugin 'hostile')", segments=f"bad-{how}")
    assert words in message


@pytest.mark.parametrize("how, words", [("nan", "NaN or infinite values in the next sample"),
                                        ("numpy", "numpy.ndarray"), ("shape", "of shape (1, 4, 1, 12, 16)"),
                                        ("timesteps", "from set_timesteps")])
def test_scheduler_results(upscaler, tmp_path, how, words):
    message = _refused(upscaler, tmp_path, f"scheduler 'bad-{how}' (plugin 'hostile')", scheduler=f"bad-{how}")
    assert words in message


def test_nan_from_the_network_is_not_blamed_on_the_scheduler(upscaler):
    from uav.plugin_results import CheckedScheduler

    sched = CheckedScheduler(_Scheduler("ok").inner, "scheduler 'x'")
    sched.set_timesteps(2)
    sample = torch.zeros(1, 4, 2, 3, 3)
    with pytest.raises(PluginResultError, match="U-Net.s prediction at timestep 999 .* `uav weights verify`"):
        sched.predict_x0(sample * float("nan"), 999, sample)


@pytest.mark.parametrize("how, words", [("none", "returned NoneType, not a str"), ("empty", "an empty caption")])
def test_captioner_results(upscaler, tmp_path, how, words):
    message = _refused(upscaler, tmp_path, f"captioner 'bad-{how}' (plugin 'hostile')", prompt="auto",
                       captioner=f"bad-{how}")
    assert words in message


def test_good_plugins_still_write(upscaler, tmp_path):
    out = upscaler.upscale(CLIP, output=tmp_path / "ok.mp4", **RUN)
    assert out.exists()


# ---------------------------------------------------------------------------- plugins that print or exit
@pytest.fixture
def rude_plugins(tmp_path, monkeypatch):
    """Three installed plugins: one prints at import, one calls sys.exit at import, one in a hook."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_plugins_registry import make_distribution

    tag = uuid.uuid4().hex[:8]
    mods = {kind: f"uav_rude_{kind}_{tag}" for kind in ("prints", "exits", "hookexit")}
    make_distribution(tmp_path, f"uav-rude-{tag}", "1.0", {f"{k}-{tag}": m for k, m in mods.items()}, {
        f"{mods['prints']}.py": '''
            print("hello from a chatty plugin")
            from uav.registry import hookimpl

            @hookimpl
            def register_color_correctors(register):
                print("registering!")
                register("chatty", lambda **kw: (lambda out, ref: out))
        ''',
        f"{mods['exits']}.py": '''
            import sys
            sys.exit(3)
        ''',
        f"{mods['hookexit']}.py": '''
            import sys
            from uav.registry import hookimpl

            @hookimpl
            def register_tiling_strategies(register):
                sys.exit(4)
        ''',
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("UAV_BLOCK_PLUGINS", raising=False)
    yield tag
    for m in mods.values():
        sys.modules.pop(m, None)


def test_plugins_that_print_or_exit_do_not_break_commands(rude_plugins, tmp_path):
    from typer.testing import CliRunner

    import uav.cli
    from uav.cli.app import app

    uav.cli._load_commands()
    res = CliRunner().invoke(app, ["plugins", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)  # the plugin's print went to stderr
    assert "hello from a chatty plugin" in res.stderr and "registering!" in res.stderr
    status = {p["name"]: p for p in report["plugins"]}
    assert status[f"prints-{rude_plugins}"]["status"] == "ok"
    assert "chatty" in report["components"]["color"]
    assert status[f"exits-{rude_plugins}"]["status"] == "failed"
    assert status[f"exits-{rude_plugins}"]["errors"] == ["SystemExit: the plugin called sys.exit(3)"]
    assert status[f"hookexit-{rude_plugins}"]["status"] == "failed"
    assert "SystemExit: the plugin called sys.exit(4)" in status[f"hookexit-{rude_plugins}"]["errors"][0]

    clip = tmp_path / "c.mp4"
    from uav.io import write_video

    write_video(clip, moving_pattern(frames=2, height=12, width=16), fps=24)
    res = CliRunner().invoke(app, ["upscale", str(clip), "--self-check", "--dry-run", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True, res.output


def test_a_factory_that_exits_is_one_line_naming_it():
    from uav.registry import PluginExitError

    class Exiting:
        @hookimpl
        def register_color_correctors(self, register: Any) -> None:
            register("quitter", lambda **kw: sys.exit(5))

    pm = build_plugin_manager(load_entrypoints=False, blocked=[])
    pm.register(Exiting(), name="exiting")
    with pytest.raises(PluginExitError, match=r"colour corrector 'quitter' \(plugin 'exiting'\) called sys.exit\(5\)"):
        Registry(pm).get("color", "quitter")
