"""``UpscaleSettings``: every sampling knob, its default, its parsing and its validation, in one place.

Defaults are those of the published inference script (SPEC §7.1), not of its
pipeline class: 30 steps, guidance 6, noise level 120, no propagation, ``vae_3d``.

Every other place that takes settings (the ``uav upscale`` and ``uav timeline``
options, TOML shot lists, timeline markers and NLE metadata) goes through
:meth:`UpscaleSettings.parse_value` / :meth:`UpscaleSettings.from_mapping`, so a
value means the same thing, and is refused for the same reason, wherever it is typed.

Two parsing modes exist because the sources differ: *typed* sources (the Python API,
TOML, JSON) must give each value in its own type (TOML has booleans and integers, so
``skip = "yes"`` is a mistake there), while *text* sources (command-line options,
markers, NLE metadata) carry strings, which are converted (``"60"``, ``"24,26,28"``,
``"yes"``).

The rules that were once written differently per caller, settled here:

* ``guidance_scale`` is a finite number > 0; values below 1 turn classifier-free
  guidance off, so they need ``negative_prompt=""`` (otherwise the negative prompt
  would be silently ignored);
* ``seed`` is ``None`` (draw one) or an integer in ``[0, 2**64)``, the range of the
  torch generator it seeds;
* component names (``flow``, ``scheduler``, ``segments``, ``tiling``, ``color_fix``)
  are whatever the plugin registry offers (:meth:`UpscaleSettings.check_components`),
  never a fixed list.

How one value is read and bounded (:class:`~uav.knobs.Knob`, :func:`~uav.knobs.parse_value`)
lives in :mod:`uav.knobs`; its names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from uav.knobs import ComponentError, Knob, SettingsError, parse_value
from uav.knobs import knob_field as _field

__all__ = [
    "AUTO_PROMPT",
    "COMPONENT_FIELDS",
    "ComponentError",
    "DEFAULT_CAPTIONER",
    "Knob",
    "MAX_NOISE_LEVEL",
    "SEED_LIMIT",
    "SettingsError",
    "UpscaleSettings",
    "combination_errors",
    "is_auto_prompt",
    "parse_int_list",
    "parse_value",
]

#: the U-Net refuses noise levels above this (``max_noise_level`` of the release)
MAX_NOISE_LEVEL = 350
#: seeds seed a torch ``Generator``, which takes unsigned 64-bit values
SEED_LIMIT = 2**64

#: the ``prompt`` that asks for an automatic one: a captioner describes a frame of the clip
AUTO_PROMPT = "auto"
#: the captioner used for ``prompt="auto"`` when none is named (the paper's kind, LLaVA)
DEFAULT_CAPTIONER = "llava-local"

#: settings field -> registry kind of the component it names
COMPONENT_FIELDS: dict[str, str] = {
    "flow": "flow",
    "scheduler": "scheduler",
    "segments": "segments",
    "tiling": "tiling",
    "color_fix": "color",
}


# --------------------------------------------------------------------------- the schema
@dataclass(frozen=True)
class UpscaleSettings:
    """Knobs of one upscale run. Build with keywords, or :meth:`from_mapping` / :meth:`from_strings`.

    Attributes:
        prompt: what the video shows; ``added_prompt`` is appended after ", ". ``"auto"``
            asks ``captioner`` to describe one frame of the clip (``caption_frame``) and uses
            that caption as the prompt (SPEC §7.7: the paper prompts with LLaVA's caption).
        captioner: the captioner plugin ``prompt="auto"`` uses (``llava-local``, ``blip-local``
            or a plugin's; see :mod:`uav.captioning`).
        captioner_options: its options as sorted ``(key, value)`` pairs (a mapping or
            ``KEY=VALUE`` items are accepted), e.g. ``{"model": "/models/llava"}``.
        caption_frame: which frame ``prompt="auto"`` captions: ``"first"`` (the paper's),
            ``"middle"`` or an index within the clip's range.
        added_prompt: quality words appended to every prompt (published ``--a_prompt``).
        negative_prompt: the classifier-free guidance "unconditional" text.
        noise_level: noise added to the low-res input, 0..350 (more = more generated detail,
            less fidelity); also the U-Net's class label.
        guidance_scale: classifier-free guidance weight, > 0; ``<= 1`` turns guidance off
            (below 1 only with ``negative_prompt=""``, which would otherwise be ignored).
        num_inference_steps: denoising steps (at most what the scheduler allows, 1000 for DDIM).
        propagation_steps: 0-based step indices at which flow-guided latent propagation
            edits the predicted x0 (the paper uses late steps, e.g. 24, 26, 28 of 30).
        color_fix: ``None``/``"none"``, ``"wavelet"`` or ``"adain"`` (or a plugin's name).
        seed: seed of the CPU generator for the low-res noise and the initial latents, and of
            stochastic plugin schedulers; ``None`` draws one. ``0 <= seed < 2**64``.
        w_lr: weight of the low-res SFT conditioning in the ``vae_video`` decoder.
        eta: DDIM eta (0 = deterministic, as published).
        flow: flow estimator name (``"auto"``: RAFT when its weights are present, else DIS).
        scheduler: ``"ddim-official"`` (published rule) or a plugin scheduler's name
            (``"dpmsolver++"``, ``"diffusers:<ClassName>"`` ...).
        segments: temporal window rule: ``"official"`` (published, default) or a plugin's name.
        window: frames per U-Net window (8 as trained).
        window_batch: how many windows go through the U-Net in one call (same numbers, faster on GPUs).
        tiling: spatial tiling rule (``"official"`` hard paste, ``"feather"``, or a plugin's).
        tile: ``None`` = automatic (when h*w >= tile_threshold), ``True``/``False`` to force.
        tile_mode: ``"pipeline"`` (published: each tile runs the whole pipeline on its own and the
            outputs are blended) or ``"latent"`` (MultiDiffusion-style: one run whose U-Net predictions
            are averaged over overlapping latent tiles at every step; frames decode whole).
        tile_size, tile_overlap, tile_threshold: in low-res pixels (published 256, 64, 384²).
        decode_chunk: frames per VAE decode call (3 as published; GroupNorm makes it matter).
        decode_tile: decode in overlapping spatial tiles of this many low-res pixels (``None``:
            whole frames, as published). The VAE's mid-block attention costs the square of a
            frame's pixel count; on a CPU, 64-128 keeps large frames practical.
        fuse_scale: propagation fusion weight beta (0.5 as published).
        offload: keep the whole-clip denoising state (latents, low-res clip, merged
            predictions) in host memory and move one group of windows at a time to the
            accelerator; ``None`` = automatic (on for CUDA). Same numbers; GPU memory then
            does not grow with the clip length.
        downscale_large: apply the published 1/4 area downscale to inputs whose sides are both
            >= 1280 px; never done silently.
        preset: ``"default"`` (the published method) or ``"fast"`` (about 9x fewer U-Net FLOPs,
            different numbers); a preset fills the settings left at their defaults (:mod:`uav.presets`).
        step_cache: ``"none"`` or ``"deepcache"``: between full U-Net calls every
            ``step_cache_interval`` steps, only the finest skip branch runs on reused deep
            features (:mod:`uav.sampling.stepcache`; different numbers).
        step_cache_interval: a full U-Net call every this many steps (``step_cache="deepcache"``).
        guidance_reuse_from: from this 0-based step on, only the conditional half of guidance
            runs and the last computed guidance difference is reused (``None``: never).
        compile: ``torch.compile`` the networks' repeated blocks: ``None`` = automatic (on a GPU,
            when the clip is long enough to repay the compile time, see :mod:`uav.compilation`),
            ``True``/``False`` to force. Same numbers (float rounding).
    """

    prompt: str = _field("", Knob(
        "str", help="What the video shows; guides the generated texture. auto: a captioner describes a frame "
                    "(--captioner, --caption-frame)."))
    added_prompt: str = _field("best quality, extremely detailed", Knob(
        "str", help="Quality words appended to the prompt."))
    negative_prompt: str = _field("blur, worst quality", Knob("str", help="What to steer away from."))
    noise_level: int = _field(120, Knob(
        "int", 0, MAX_NOISE_LEVEL, metavar="0-350",
        help="Noise added to the input, 0-350: higher = more generated detail, less fidelity."))
    guidance_scale: float = _field(6.0, Knob(
        "float", 0, lo_open=True, metavar="G",
        help="Classifier-free guidance; 1 turns it off (and halves the work)."))
    num_inference_steps: int = _field(30, Knob("int", 1, metavar="N", help="Denoising (DDIM) steps."))
    propagation_steps: tuple[int, ...] = _field((), Knob(
        "steps", metavar="I,J,..",
        help="0-based steps at which flow-guided latent propagation runs, e.g. 24,26,28 (of 30)."))
    color_fix: str | None = _field(None, Knob(
        "name", optional=True, lower=True, metavar="NAME",
        help="Colour correction towards the input: none, wavelet or adain (or a plugin's, see `uav plugins`)."))
    seed: int | None = _field(None, Knob("int", 0, SEED_LIMIT, hi_open=True, optional=True, metavar="N",
                                       help="Random seed; printed in the summary when drawn at random."))
    w_lr: float = _field(1.0, Knob("float"))
    eta: float = _field(0.0, Knob("float", 0))
    flow: str = _field("auto", Knob(
        "name", metavar="NAME",
        help="Optical flow for propagation: auto (RAFT if its weights are in the release, else dis), dis, "
             "farneback, raft."))
    scheduler: str = _field("ddim-official", Knob(
        "name", metavar="NAME",
        help="Sampler: ddim-official (published) or a plugin scheduler (see `uav plugins`)."))
    segments: str = _field("official", Knob("name"))
    window: int = _field(8, Knob("int", 1, 1024))
    window_batch: int = _field(1, Knob(
        "int", 1, 1024, metavar="N",
        help="8-frame windows per U-Net call: same result, faster on GPUs with memory to spare."))
    tiling: str = _field("official", Knob(
        "name", metavar="NAME", help="Tiling strategy: official (hard paste, published) or feather."))
    tile: bool | None = _field(None, Knob(
        "tristate", metavar="auto|on|off",
        help="Spatial tiling: auto (when the input has >= 384x384 pixels), on or off."))
    tile_mode: str = _field("pipeline", Knob(
        "name", choices=("pipeline", "latent"), metavar="pipeline|latent",
        help="pipeline (published: each tile runs the whole pipeline) or latent (U-Net predictions averaged "
             "over overlapping latent tiles each step; frames decode whole)."))
    tile_size: int = _field(256, Knob("int", 8, 1 << 16, metavar="PX", help="Tile side in input pixels."))
    tile_overlap: int = _field(64, Knob("int", 0, (1 << 16) - 1, metavar="PX", help="Tile overlap in input pixels."))
    tile_threshold: int = _field(384 * 384, Knob("int", 1, 1 << 40))
    decode_chunk: int = _field(3, Knob(
        "int", 1, 1024, metavar="N",
        help="Frames per VAE decode call; fewer = less memory (changes the numbers slightly)."))
    decode_tile: int | None = _field(None, Knob(
        "int", 8, 1 << 16, optional=True, metavar="PX",
        help="Decode in overlapping tiles of this many input pixels (bounds the VAE's attention cost on "
             "large frames; changes the numbers slightly)."))
    offload: bool | None = _field(None, Knob("tristate"))
    fuse_scale: float = _field(0.5, Knob("float", 0, 1))
    downscale_large: bool = _field(False, Knob("bool"))
    captioner: str = _field(DEFAULT_CAPTIONER, Knob(
        "name", metavar="NAME",
        help="Captioner for --prompt auto: llava-local (as the paper), blip-local or a plugin's (see `uav plugins`)."))
    captioner_options: tuple[tuple[str, Any], ...] = _field((), Knob("options"))
    preset: str = _field("default", Knob(
        "name", choices=("default", "fast"), metavar="default|fast",
        help="default (the published method) or fast (about 9x fewer U-Net FLOPs: DPM-Solver++ 10 steps, "
             "guidance reused on late steps, step caching; different numbers). Fills the settings left at "
             "their defaults."))
    step_cache: str = _field("none", Knob(
        "name", choices=("none", "deepcache"), metavar="none|deepcache",
        help="Step caching: deepcache runs the whole U-Net every --step-cache-interval steps and only its "
             "finest skip branch in between (different numbers)."))
    step_cache_interval: int = _field(3, Knob("int", 2, 1000, metavar="N",
                                              help="With --step-cache deepcache: a full U-Net call every N steps."))
    guidance_reuse_from: int | None = _field(None, Knob(
        "int", 0, 1 << 20, optional=True, metavar="STEP",
        help="From this 0-based step on, only the conditional half of guidance runs; the last guidance "
             "difference is reused (halves those steps; different numbers)."))
    compile: bool | None = _field(None, Knob(
        "tristate", metavar="auto|on|off",
        help="torch.compile the networks' repeated blocks: auto (on a GPU when the clip is long enough to "
             "repay the compile time), on or off."))
    caption_frame: str | int = _field("first", Knob(
        "frame", metavar="first|middle|N",
        help="Frame --prompt auto captions: first (as the paper), middle or an index N of the clip."))

    def __post_init__(self) -> None:
        if isinstance(self.propagation_steps, (str, bytes)):
            text = self.propagation_steps.decode() if isinstance(self.propagation_steps, bytes) \
                else self.propagation_steps
            object.__setattr__(self, "propagation_steps", parse_int_list(text, "propagation_steps"))
        elif isinstance(self.propagation_steps, (list, tuple)) or self.propagation_steps is None:
            object.__setattr__(self, "propagation_steps", tuple(self.propagation_steps or ()))
        if isinstance(self.color_fix, str):
            object.__setattr__(self, "color_fix", self.color_fix.strip().lower())
        self._fill_preset()
        self.validate()

    def _fill_preset(self) -> None:
        from uav.presets import PRESETS, preset_values

        name = self.preset.strip().lower() if isinstance(self.preset, str) else self.preset
        if name in PRESETS:  # an unknown name is refused by validate()
            for k, v in preset_values(name, self.__dict__, _field_defaults()).items():
                object.__setattr__(self, k, v)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first invalid setting.

        Checks every field's type and bounds, then the rules that tie fields together;
        component names are checked against the plugin registry by
        :meth:`check_components` (which needs the registry, so it is a separate step).
        """
        for f in dataclasses.fields(self):
            rule: Knob = f.metadata["knob"]
            value = getattr(self, f.name)
            # typed data only: the constructor is the API, where "60" is a mistake
            object.__setattr__(self, f.name, parse_value(rule, f.name, value, text=False))
        self.check_combination()

    def check_combination(self) -> None:
        """The rules that tie fields together (each field on its own being valid)."""
        for message, name, expected in combination_errors(self.to_dict()):
            raise SettingsError(message, field=name, reason=expected)

    # ------------------------------------------------------------------ components
    def check_components(self, registry: Any = None, *, changed_only: bool = False) -> None:
        """Resolve every component name through the plugin registry.

        ``flow`` is looked up (building RAFT needs its weights, which only the upscaler
        has); schedulers, segment and tiling strategies and colour correctors are built,
        so a ``diffusers:<Name>`` family member is checked too, and the scheduler is
        asked for a schedule of ``num_inference_steps`` steps.

        With ``changed_only``, names equal to the defaults (built-ins the upscaler resolves
        anyway) are skipped, so that checking a plan of default shots loads no plugin.

        Raises:
            ComponentError: a name the registry does not offer (message lists the installed ones).
            SettingsError: a component refuses the settings (e.g. too many steps).
        """
        defaults = _defaults()
        for name in COMPONENT_FIELDS:
            value = self.color_fix_name if name == "color_fix" else getattr(self, name)
            if (name == "flow" and value == "auto") or (changed_only and value == defaults[name]):
                continue
            self.check_component(name, value, registry, steps=self.num_inference_steps)

    @classmethod
    def check_component(cls, field: str, value: str, registry: Any = None, *, steps: int | None = None) -> None:
        """Resolve the component ``value`` of ``field`` (``flow``, ``scheduler``, ``segments``,
        ``tiling``, ``color_fix``) through ``registry`` (default: the shared one); see
        :meth:`check_components`. ``steps``: also ask a scheduler for that many steps."""
        if registry is None:
            from uav.registry import default_registry

            registry = default_registry()
        if field == "color_fix" and value is None:
            value = "none"
        _check_component(registry, COMPONENT_FIELDS[field], field, value, steps)

    # ------------------------------------------------------------------ helpers
    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def auto_prompt(self) -> bool:
        """Whether ``prompt`` asks for a caption (``"auto"``, any case) instead of being the prompt."""
        return is_auto_prompt(self.prompt)

    @property
    def full_prompt(self) -> str:
        """``prompt`` and ``added_prompt`` joined by ", " (the published code joins them with no separator)."""
        parts = [p.strip() for p in (self.prompt, self.added_prompt) if p and p.strip()]
        return ", ".join(parts)

    @property
    def color_fix_name(self) -> str:
        return self.color_fix or "none"

    def replace(self, **changes: Any) -> "UpscaleSettings":
        """A copy with some fields changed (validated)."""
        unknown = set(changes) - set(self.field_names())
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(self.field_names())}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def knob(cls, name: str) -> Knob:
        """The :class:`Knob` (parsing rule and help) of field ``name``."""
        return _knobs()[name]

    @classmethod
    def parse_value(cls, name: str, value: Any, *, text: bool = False, label: str | None = None) -> Any:
        """One field's value, converted (strings too when ``text``) and checked on its own.

        Raises:
            SettingsError: naming ``label`` (default: the field), with ``expected`` set.
        """
        if name not in _knobs():
            raise SettingsError(f"unknown setting {name!r}; known: {sorted(cls.field_names())}")
        return parse_value(_knobs()[name], name, value, text=text, label=label)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, text: bool = False, components: bool = False,
                     registry: Any = None, labels: Mapping[str, str] | None = None) -> "UpscaleSettings":
        """Build from plain data: JSON/TOML (typed) or, with ``text``, strings from the
        command line, markers or NLE metadata. ``steps`` is accepted for
        ``num_inference_steps``; ``None`` values mean "the default".

        Args:
            data: field name -> value.
            text: also convert strings (``"60"``, ``"24,26,28"``, ``"on"``).
            components: also resolve the component names (:meth:`check_components`).
            registry: the registry for that (default: the shared one).
            labels: field -> name to use in error messages (e.g. ``--noise-level``).

        Raises:
            SettingsError: an unknown key, or a bad value (the message names it).
        """
        data = dict(data)
        if "steps" in data:
            data["num_inference_steps"] = data.pop("steps")
        unknown = set(data) - set(cls.field_names())
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(cls.field_names())}")
        labels = labels or {}
        values = {k: cls.parse_value(k, v, text=text, label=labels.get(k)) for k, v in data.items()
                  if v is not None}
        settings = cls(**values)
        if components:
            settings.check_components(registry)
        return settings

    @classmethod
    def from_strings(cls, data: Mapping[str, Any], **options: Any) -> "UpscaleSettings":
        """:meth:`from_mapping` with ``text=True``: values as typed on a command line or a marker."""
        return cls.from_mapping(data, text=True, **options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UpscaleSettings":
        """Build from typed data (e.g. JSON/TOML); ``steps`` is accepted for ``num_inference_steps``."""
        return cls.from_mapping(data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["propagation_steps"] = list(self.propagation_steps)
        out["captioner_options"] = dict(self.captioner_options)
        return out


def is_auto_prompt(prompt: Any) -> bool:
    """Whether ``prompt`` is :data:`AUTO_PROMPT` (any case, surrounding spaces ignored)."""
    return isinstance(prompt, str) and prompt.strip().lower() == AUTO_PROMPT


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    lib = UpscaleSettings()
    return {**lib.to_dict(), "color_fix": lib.color_fix_name}


@functools.lru_cache(maxsize=1)
def _field_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(UpscaleSettings)}


@functools.lru_cache(maxsize=1)
def _knobs() -> dict[str, Knob]:
    return {f.name: f.metadata["knob"] for f in dataclasses.fields(UpscaleSettings)}


def combination_errors(values: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The rules that tie fields together, applied to ``values`` (field names, only those
    present are checked; ``steps`` counts as ``num_inference_steps``).

    Returns ``(message, field, reason)`` for each broken rule, where ``reason`` reads
    after the field's name and origin (``"must be below tile_size=64, got 64"``).
    """
    errors: list[tuple[str, str, str]] = []
    steps = values.get("num_inference_steps", values.get("steps"))
    prop = values.get("propagation_steps")
    if steps is not None and prop:
        bad = [s for s in prop if not 0 <= s < steps]
        if bad:
            reason = f"must be step indices in [0, {steps}) for steps={steps}, got {bad}"
            errors.append((f"propagation_steps must be step indices in [0, {steps}) "
                           f"(num_inference_steps={steps}), got {list(prop)}", "propagation_steps", reason))
    reuse = values.get("guidance_reuse_from")
    if steps is not None and reuse is not None and reuse >= steps:
        reason = f"must be a step index below num_inference_steps={steps}, got {reuse}"
        errors.append((f"guidance_reuse_from {reason}", "guidance_reuse_from", reason))
    size, overlap = values.get("tile_size"), values.get("tile_overlap")
    if size is not None and overlap is not None and overlap >= size:
        reason = f"must be below tile_size={size}, got {overlap}"
        errors.append((f"tile_overlap {reason}", "tile_overlap", reason))
    guidance, negative = values.get("guidance_scale"), values.get("negative_prompt")
    if guidance is not None and negative and guidance < 1:
        reason = (f"expected a number >= 1, got {guidance:g} (below 1 classifier-free guidance is off, so "
                  f"negative_prompt {negative!r} would be ignored; set negative_prompt='' to turn guidance off)")
        errors.append((f"guidance_scale={guidance:g} < 1 turns classifier-free guidance off, so negative_prompt "
                       f"{negative!r} would be ignored: use guidance_scale >= 1, or negative_prompt=''",
                       "guidance_scale", reason))
    return errors


@functools.lru_cache(maxsize=256)
def _check_component(registry: Any, kind: str, name: str, value: str, steps: int | None) -> None:
    # cached: a timeline resolves the same few names for every clip
    try:
        if kind == "flow":
            registry.factory(kind, value)
            return
        component = registry.get(kind, value)
    except KeyError as exc:
        reason = str(exc.args[0]) if exc.args else str(exc)
        choices = ", ".join(registry.names(kind, sort=False)) or "(none installed)"
        raise ComponentError(f"{name}: {reason}", field=name, reason=reason, expected=f"one of {choices}",
                             value=value) from None
    except (ValueError, TypeError) as exc:
        # a family member the family does not have (``diffusers:__class__``), or a factory
        # refusing to build: either way the name does not give a usable component
        raise ComponentError(f"{name}: {exc}", field=name, reason=str(exc), value=value) from None
    if kind == "scheduler" and steps is not None:
        try:
            component.set_timesteps(steps)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"num_inference_steps: {exc}", field="num_inference_steps", reason=str(exc),
                                value=steps) from None


def parse_int_list(value: str | Sequence[int] | None, name: str = "value") -> tuple[int, ...]:
    """``"24,26,28"`` -> ``(24, 26, 28)``; an empty string -> ``()``; ``"24,,26"`` is an error."""
    if value is None:
        return ()
    return parse_value(_knobs()["propagation_steps"], "propagation_steps", value, text=True, label=name)
