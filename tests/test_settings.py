"""``UpscaleSettings`` as the one schema: text and typed parsing, the settled rules, components
through the registry, and the facade's ``check_inputs`` before any frame is read."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uav import SettingsError, UpscaleSettings, VideoUpscaler
from uav.components import check_components
from uav.settings import MAX_NOISE_LEVEL, SEED_LIMIT, ComponentError, parse_int_list

sys.path.insert(0, str(Path(__file__).parent))


# ---------------------------------------------------------------------------- parsing
def test_text_values_are_converted_and_typed_values_kept():
    s = UpscaleSettings.from_strings({"noise_level": "60", "guidance_scale": "7.5", "steps": "20",
                                      "propagation_steps": "[17, 18 19]", "tile": "on", "color_fix": "AdaIN",
                                      "seed": "7", "decode_tile": "none"})
    assert (s.noise_level, s.guidance_scale, s.num_inference_steps) == (60, 7.5, 20)
    assert (s.propagation_steps, s.tile, s.color_fix, s.seed, s.decode_tile) == ((17, 18, 19), True, "adain", 7, None)
    typed = UpscaleSettings.from_mapping({"noise_level": 60, "propagation_steps": [17, 18, 19], "tile": False})
    assert (typed.noise_level, typed.propagation_steps, typed.tile) == (60, (17, 18, 19), False)
    assert UpscaleSettings(guidance_scale=3).guidance_scale == 3.0 and isinstance(UpscaleSettings(guidance_scale=3)
                                                                                  .guidance_scale, float)


@pytest.mark.parametrize("data", [{"noise_level": "60"}, {"propagation_steps": "1,2"}, {"downscale_large": "yes"}])
def test_typed_sources_do_not_take_strings_for_numbers_lists_or_booleans(data):
    with pytest.raises(SettingsError, match=next(iter(data))):
        UpscaleSettings.from_mapping(data)


@pytest.mark.parametrize("text", [",,", "24,,26", "24,", "24,x", "-1"])
def test_malformed_step_lists_are_errors_not_no_propagation(text):
    with pytest.raises(SettingsError, match="propagation_steps must be a list of integer step indices"):
        UpscaleSettings.from_strings({"propagation_steps": text})
    with pytest.raises(SettingsError, match="--propagation-steps must be"):
        parse_int_list(text, "--propagation-steps")
    assert parse_int_list("") == () and parse_int_list(" 24, 26 ,28 ") == (24, 26, 28)


@pytest.mark.parametrize("seed", [SEED_LIMIT, 2**80, -1])
def test_seed_must_fit_the_generator(seed):
    with pytest.raises(SettingsError, match=r"seed must be in \[0, 2\*\*64\)"):
        UpscaleSettings(seed=seed)
    with pytest.raises(SettingsError, match="seed"):
        UpscaleSettings.from_strings({"seed": str(seed)})
    assert UpscaleSettings(seed=SEED_LIMIT - 1).seed == SEED_LIMIT - 1
    torch.Generator().manual_seed(SEED_LIMIT - 1)  # the largest accepted seed really seeds it


def test_seed_written_as_an_expression_is_refused():
    with pytest.raises(SettingsError, match=r"seed must be an integer in \[0, 2\*\*64\), got '2\*\*80'"):
        UpscaleSettings.from_strings({"seed": "2**80"})


def test_one_guidance_rule():
    assert not UpscaleSettings(guidance_scale=0.5, negative_prompt="").do_classifier_free_guidance
    with pytest.raises(SettingsError, match="negative_prompt"):
        UpscaleSettings(guidance_scale=0.5)
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(SettingsError, match="guidance_scale"):
            UpscaleSettings(guidance_scale=bad, negative_prompt="")


def test_errors_carry_what_was_expected_for_other_wordings():
    with pytest.raises(SettingsError) as info:
        UpscaleSettings.from_strings({"noise_level": str(MAX_NOISE_LEVEL + 1)})
    assert str(info.value) == "noise_level must be in [0, 350], got 351"
    assert info.value.located("noise_level", "a marker") == \
        "noise_level from a marker: expected an integer in [0, 350], got 351"
    with pytest.raises(SettingsError, match=r"--noise-level must be an integer in \[0, 350\], got '1.5'"):
        UpscaleSettings.from_strings({"noise_level": "1.5"}, labels={"noise_level": "--noise-level"})


def test_the_constructor_takes_typed_values_only():
    # text is refused alike for every field: the constructor reads nothing
    for text in ({"propagation_steps": "24,26,28"}, {"noise_level": "60"}, {"tile": "on"}, {"seed": "7"},
                 {"downscale_large": "yes"}):
        with pytest.raises(SettingsError, match=next(iter(text))):
            UpscaleSettings(**text)
    # one spelling per value: no colour fix is "none", and names are stored as they are looked up
    assert UpscaleSettings().color_fix == "none" and UpscaleSettings().to_dict()["color_fix"] == "none"
    with pytest.raises(SettingsError, match="color_fix must be a non-empty lower-case name, got None"):
        UpscaleSettings(color_fix=None)
    with pytest.raises(SettingsError, match="color_fix"):
        UpscaleSettings(color_fix="AdaIN")
    assert UpscaleSettings.from_strings({"color_fix": " AdaIN "}).color_fix == "adain"  # the edge normalises
    # typed values are brought to their canonical form
    assert UpscaleSettings(propagation_steps=[3, 1], tile_size=96.0).propagation_steps == (3, 1)


def test_text_is_read_once_at_the_edge(monkeypatch):
    from uav.knobs import Knob

    reads: list[object] = []
    real = Knob.read

    def counted(self, value, *, text):
        reads.append(value)
        return real(self, value, text=text)

    monkeypatch.setattr(Knob, "read", counted)
    s = UpscaleSettings.from_strings({"color_fix": "AdaIN", "noise_level": "60", "propagation_steps": "1,2"})
    assert sorted(reads) == ["1,2", "60", "AdaIN"] and (s.color_fix, s.noise_level) == ("adain", 60)
    reads.clear()
    s.replace(seed=3)
    UpscaleSettings(noise_level=61, propagation_steps=(1,))
    assert reads == []  # the constructor and replace only check typed values


# ---------------------------------------------------------------------------- components
@pytest.mark.parametrize("field, value, pattern", [
    ("scheduler", "diffusers:__class__", "unknown diffusers scheduler class '__class__'"),
    ("scheduler", "diffusers:NoSuchScheduler", "unknown diffusers scheduler class 'NoSuchScheduler'"),
    ("scheduler", "nope", "unknown scheduler 'nope'; installed: .*ddim-official"),
    ("flow", "magic", "unknown flow estimator 'magic'; installed: dis, farneback, raft"),
    ("color_fix", "wavlet", "unknown colour corrector 'wavlet'; installed: adain, none, wavelet"),
    ("tiling", "spiral", "unknown tiling strategy 'spiral'"),
    ("segments", "random", "unknown segment strategy 'random'"),
])
def test_component_names_are_checked_against_the_registry(field, value, pattern):
    settings = UpscaleSettings(**{field: value})  # a name is only a string until it is resolved
    with pytest.raises(ComponentError, match=pattern) as info:
        check_components(settings)
    assert info.value.field == field and isinstance(info.value, KeyError)
    with pytest.raises(ComponentError):
        check_components(UpscaleSettings.from_strings({field: value}))


def test_scheduler_is_asked_for_the_steps():
    with pytest.raises(SettingsError, match="num_inference_steps: .*1000"):
        check_components(UpscaleSettings(num_inference_steps=5000))
    check_components(UpscaleSettings(scheduler="diffusers:DDIMScheduler", color_fix="wavelet", tiling="feather"))


def test_the_schema_and_the_planner_load_no_torch():
    # MAX_NOISE_LEVEL comes from uav.models, whose networks load lazily
    import subprocess

    code = "import sys, uav.settings, uav.components, uav_otio.shots; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


class _CountingRegistry:
    """The shared registry, counting each lookup of a component by name."""

    def __init__(self):
        from uav.registry import default_registry

        self.inner, self.lookups = default_registry(), []

    def factory(self, kind, name):
        self.lookups.append((kind, name))
        return self.inner.factory(kind, name)

    def names(self, kind, *, sort=True):
        return self.inner.names(kind, sort=sort)


def test_each_component_is_looked_up_once_per_run():
    from uav.components import resolve_components
    from uav_schedulers.adapter import DEFAULT_SCHEDULER_CONFIG

    registry = _CountingRegistry()
    settings = UpscaleSettings.from_strings({"color_fix": "Wavelet", "propagation_steps": "1", "flow": "dis"})
    check_components(settings, registry)  # the command line's preflight, before any model loads
    comps = resolve_components(settings, registry, scheduler=dict(DEFAULT_SCHEDULER_CONFIG))
    comps.flow()
    comps.flow()
    assert sorted(registry.lookups) == [("color", "wavelet"), ("flow", "dis"), ("scheduler", "ddim-official"),
                                        ("segments", "official"), ("tiling", "official")]


def test_only_uav_components_resolves_a_settings_component():
    # the field -> kind table and the registry lookup live in one module; eval's E*warp picks
    # its own flow estimator (an evaluation option, not a run setting)
    import ast

    from uav.components import COMPONENT_FIELDS

    root = Path(__file__).parents[1]
    allowed = {"uav/components.py", "uav/eval/ewarp.py"}
    kinds = set(COMPONENT_FIELDS.values())
    found = []
    for path in [*root.glob("uav/**/*.py"), *root.glob("integrations/**/*.py"), *root.glob("plugins/**/*.py")]:
        rel = path.relative_to(root).as_posix()
        if rel.startswith("uav/registry/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # a lookup of a settings kind, or of a kind only known at run time
            if not (isinstance(node, ast.Call) and node.args) or (isinstance(node.args[0], ast.Constant)
                                                                  and node.args[0].value not in kinds):
                continue
            func = ast.unparse(node.func)
            if (func == "get_component" or (func.endswith((".get", ".factory")) and "registry" in func)) \
                    and rel not in allowed:
                found.append(f"{rel}:{node.lineno}: {func}")
    assert found == []


# ---------------------------------------------------------------------------- the facade
class _Untouchable:
    """A video that fails the test if anything reads it."""

    def __iter__(self):
        raise AssertionError("the video was read before the settings were checked")


@pytest.fixture(scope="module")
def bare_upscaler():
    from uav_schedulers.adapter import DEFAULT_SCHEDULER_CONFIG

    net = torch.nn.Linear(1, 1)
    return VideoUpscaler.from_components(unet=net, vae=net, scheduler=dict(DEFAULT_SCHEDULER_CONFIG),
                                         low_res_scheduler={})


@pytest.mark.parametrize("knobs, error", [
    ({"color_fix": "wavlet"}, ComponentError),
    ({"scheduler": "diffusers:__class__"}, ComponentError),
    ({"segments": "nope"}, ComponentError),
    ({"flow": "raft", "propagation_steps": (1,)}, SettingsError),  # no RAFT weights in this upscaler
    ({"num_inference_steps": 2000}, SettingsError),
])
def test_check_inputs_fails_before_any_frame_is_read(bare_upscaler, knobs, error):
    with pytest.raises(error):
        bare_upscaler.check_inputs(**knobs)
    with pytest.raises(error):
        bare_upscaler.upscale(_Untouchable(), **knobs)


def test_check_inputs_resolves_the_defaults_through_the_registry(bare_upscaler):
    from uav.protocols import DenoisingScheduler, SegmentStrategy, TilingStrategy
    from uav.sampling.schedulers import OfficialDDIM

    comps = bare_upscaler.check_inputs()
    assert isinstance(comps.scheduler, OfficialDDIM) and isinstance(comps.scheduler, DenoisingScheduler)
    assert isinstance(comps.segments, SegmentStrategy) and isinstance(comps.tiling, TilingStrategy)
    assert comps.color is None and comps.flow is None  # color_fix none; no propagation, no flow
    comps = bare_upscaler.check_inputs(color_fix="wavelet", propagation_steps=(1,), scheduler="dpmsolver++",
                                       num_inference_steps=4)
    assert callable(comps.color) and comps.flow is not None and comps.flow() is comps.flow()
    assert type(comps.scheduler).__name__ == "DiffusersSchedulerAdapter"


# ---------------------------------------------------------------------------- loop and schedulers
class _TinyUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.1))

    def forward(self, sample, t, cond, encoder_hidden_states=None, class_labels=None):
        return sample * self.w + cond.mean() * 0.0


def _run_loop(scheduler, generator):
    from uav.protocols import SegmentPlan

    latents = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    low_res = torch.zeros(1, 3, 2, 4, 4)
    plan = SegmentPlan(windows=((0, 2),), weights=torch.ones(1, 2))
    timesteps = [int(t) for t in scheduler.set_timesteps(3)]
    from uav.sampling.loop import denoise

    return denoise(_TinyUNet(), scheduler, latents, low_res, torch.zeros(1, 2, 8), noise_level=20,
                   guidance_scale=1.0, plan=plan, timesteps=timesteps, generator=generator)


def test_stochastic_plugin_schedulers_receive_the_run_seed():
    from uav.registry import default_registry

    def run(seed):
        return _run_loop(default_registry().get("scheduler", "euler-a"), torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_loop_does_not_hide_type_errors_of_a_scheduler():
    from uav.registry import default_registry

    class Broken:
        def __init__(self):
            self.inner = default_registry().get("scheduler", "ddim-official")
            self.init_noise_sigma = 1.0

        def set_timesteps(self, n, device=None):
            return self.inner.set_timesteps(n, device)

        def predict_x0(self, v, t, x):
            return self.inner.predict_x0(v, t, x)

        def step(self, v, t, x, x0, *, generator=None):
            raise TypeError("a bug inside step")

    with pytest.raises(TypeError, match="a bug inside step"):
        _run_loop(Broken(), torch.Generator().manual_seed(0))


def test_builtin_plugin_missing_is_a_clear_error():
    from uav.registry.discovery import _import_builtin

    with pytest.raises(ModuleNotFoundError, match="is not installed: reinstall uav"):
        _import_builtin("uav_no_such_builtin")


def test_core_never_imports_the_timeline_integration():
    root = Path(__file__).parents[1] / "uav"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "import uav_otio" in p.read_text(encoding="utf-8")
                 or "from uav_otio" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_float_frames_still_convert(bare_upscaler):
    from uav.frames import frames_to_tensor, to_uint8

    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(frames_to_tensor(frames)), frames)
