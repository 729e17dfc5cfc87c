"""``UpscaleSettings``: every sampling knob, its type, default and rules, in one place.

Defaults are those of the published inference script (SPEC §7.1), not of its
pipeline class: 30 steps, guidance 6, noise level 120, no propagation, ``vae_3d``.

The settings are data: the constructor takes typed values (``noise_level=60``,
``propagation_steps=(24, 26, 28)``, ``tile=True``) and checks them, never reading text.
Text is read once, at the edge, by :meth:`UpscaleSettings.from_mapping` (whole mappings:
the command line, JSON, TOML) or :meth:`UpscaleSettings.parse_value` (one value: a shot
list's, a marker's), so a value means the same thing, and is refused for the same reason,
wherever it is typed. How a value is read and checked is :mod:`uav.knobs`.

The rules that were once written differently per caller, settled here:

* ``guidance_scale`` is a finite number > 0; values below 1 turn classifier-free
  guidance off, so they need ``negative_prompt=""`` (otherwise the negative prompt
  would be silently ignored);
* ``seed`` is ``None`` (draw one) or an integer in ``[0, 2**64)``, the range of the
  torch generator it seeds;
* component names (``flow``, ``scheduler``, ``segments``, ``tiling``, ``color_fix``)
  are whatever the plugin registry offers, never a fixed list; they are resolved by
  :mod:`uav.components`, the one module that asks the registry.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from uav.knobs import ComponentError, Frame, Knob, Memory, Name, Options, SettingsError, Steps, parse_value, setting
from uav.models import MAX_NOISE_LEVEL

__all__ = [
    "AUTO_PROMPT",
    "ComponentError",
    "MEMORY_FIELDS",
    "DEFAULT_CAPTIONER",
    "Knob",
    "MAX_NOISE_LEVEL",
    "SEED_LIMIT",
    "SettingsError",
    "UpscaleSettings",
    "combination_errors",
    "is_auto_prompt",
    "parse_int_list",
]

#: seeds seed a torch ``Generator``, which takes unsigned 64-bit values
SEED_LIMIT = 2**64

#: the ``prompt`` that asks for an automatic one: a captioner describes a frame of the clip
AUTO_PROMPT = "auto"
#: the captioner used for ``prompt="auto"`` when none is named (the paper's kind, LLaVA)
DEFAULT_CAPTIONER = "llava-local"


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
        captioner_options: its options as sorted ``(key, value)`` pairs (a mapping or pairs are
            accepted; text ``KEY=VALUE;...`` through :meth:`from_strings`), e.g.
            ``{"model": "/models/llava"}``.
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
        color_fix: ``"none"``, ``"wavelet"`` or ``"adain"`` (or a plugin's name).
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
        decode_overlap: frames neighbouring decode chunks share and cross-fade (``0``: none,
            as published). With it, shorter chunks and spatial decode tiles (feathered) decode
            without a seam in time or space.
        decode_tile: decode in overlapping spatial tiles of this many low-res pixels (``None``:
            whole frames, as published). The VAE's mid-block attention costs the square of a
            frame's pixel count; on a CPU, 64-128 keeps large frames practical.
        fuse_scale: propagation fusion weight beta (0.5 as published).
        offload: keep the whole-clip denoising state (latents, low-res clip, merged
            predictions) in host memory and move one group of windows at a time to the
            accelerator; ``None`` = automatic (on for CUDA). Same numbers; GPU memory then
            does not grow with the clip length.
        memory: the GPU memory the run may use, in GiB, or ``"auto"`` (the device's free
            memory; on a CPU no GPU budget at all). Before anything runs, the memory model
            (:mod:`uav.memory_plan`) chooses the settings that shape memory — ``window_batch``,
            latent tiling, ``decode_chunk``, ``decode_tile`` — and where the text encoder, the
            VAE and the U-Net's blocks wait while unused, so the predicted peak stays within
            90 % of it. Fields set explicitly (:attr:`given`) are never changed; the published
            values are kept wherever they fit.
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

    prompt: str = setting("", help="What the video shows; guides the generated texture. auto: a captioner describes "
                                   "a frame (--captioner, --caption-frame).")
    added_prompt: str = setting("best quality, extremely detailed", help="Quality words appended to the prompt.")
    negative_prompt: str = setting("blur, worst quality", help="What to steer away from.")
    noise_level: int = setting(120, lo=0, hi=MAX_NOISE_LEVEL, metavar="0-350", help=(
        "Noise added to the input, 0-350: higher = more generated detail, less fidelity."))
    guidance_scale: float = setting(6.0, lo=0, lo_open=True, metavar="G", help=(
        "Classifier-free guidance; 1 turns it off (and halves the work)."))
    num_inference_steps: int = setting(30, lo=1, metavar="N", help="Denoising (DDIM) steps.")
    propagation_steps: Steps = setting((), metavar="I,J,..", help=(
        "0-based steps at which flow-guided latent propagation runs, e.g. 24,26,28 (of 30)."))
    color_fix: Name = setting("none", lower=True, metavar="NAME", help=(
        "Colour correction towards the input: none, wavelet or adain (or a plugin's, see `uav plugins`)."))
    seed: int | None = setting(None, lo=0, hi=SEED_LIMIT, hi_open=True, metavar="N", help=(
        "Random seed; printed in the summary when drawn at random."))
    w_lr: float = setting(1.0)
    eta: float = setting(0.0, lo=0)
    flow: Name = setting("auto", metavar="NAME", help=(
        "Optical flow for propagation: auto (RAFT if its weights are in the release, else dis), dis, farneback, "
        "raft."))
    scheduler: Name = setting("ddim-official", metavar="NAME", help=(
        "Sampler: ddim-official (published) or a plugin scheduler (see `uav plugins`)."))
    segments: Name = setting("official")
    window: int = setting(8, lo=1, hi=1024)
    window_batch: int = setting(1, lo=1, hi=1024, metavar="N", help=(
        "8-frame windows per U-Net call: same result, faster on GPUs with memory to spare."))
    tiling: Name = setting("official", metavar="NAME", help=(
        "Tiling strategy: official (hard paste, published) or feather."))
    tile: bool | None = setting(None, metavar="auto|on|off", help=(
        "Spatial tiling: auto (when the input has >= 384x384 pixels), on or off."))
    tile_mode: Literal["pipeline", "latent"] = setting("pipeline", metavar="pipeline|latent", help=(
        "pipeline (published: each tile runs the whole pipeline) or latent (U-Net predictions averaged over "
        "overlapping latent tiles each step; frames decode whole)."))
    tile_size: int = setting(256, lo=8, hi=1 << 16, metavar="PX", help="Tile side in input pixels.")
    tile_overlap: int = setting(64, lo=0, hi=(1 << 16) - 1, metavar="PX", help="Tile overlap in input pixels.")
    tile_threshold: int = setting(384 * 384, lo=1, hi=1 << 40)
    decode_chunk: int = setting(3, lo=1, hi=1024, metavar="N", help=(
        "Frames per VAE decode call; fewer = less memory (changes the numbers slightly)."))
    decode_overlap: int = setting(0, lo=0, hi=1023, metavar="N", help=(
        "Frames neighbouring decode chunks share, cross-faded: no step in time between chunks (0 as published; "
        "costs decode time)."))
    decode_tile: int | None = setting(None, lo=8, hi=1 << 16, metavar="PX", help=(
        "Decode in overlapping tiles of this many input pixels (bounds the VAE's attention cost on large frames; "
        "changes the numbers slightly)."))
    offload: bool | None = setting(None)
    memory: Memory = setting("auto", metavar="GIB|auto", help=(
        "GPU memory the run may use, GiB; auto: the device's free memory (none on a CPU). Memory-shaping settings "
        "not given explicitly (window batch, tiling, decode chunk and tile, offload) are chosen to keep the "
        "predicted peak within 90 % of it."))
    fuse_scale: float = setting(0.5, lo=0, hi=1)
    downscale_large: bool = setting(False)
    captioner: Name = setting(DEFAULT_CAPTIONER, metavar="NAME", help=(
        "Captioner for --prompt auto: llava-local (as the paper), blip-local or a plugin's (see `uav plugins`)."))
    captioner_options: Options = setting(())
    caption_frame: Frame = setting("first", metavar="first|middle|N", help=(
        "Frame --prompt auto captions: first (as the paper), middle or an index N of the clip."))
    preset: Literal["default", "fast"] = setting("default", lower=True, metavar="default|fast", help=(
        "default (the published method) or fast (about 9x fewer U-Net FLOPs: DPM-Solver++ 10 steps, guidance "
        "reused on late steps, step caching; different numbers). Fills the settings left at their defaults."))
    step_cache: Literal["none", "deepcache"] = setting("none", lower=True, metavar="none|deepcache", help=(
        "Step caching: deepcache runs the whole U-Net every --step-cache-interval steps and only its finest skip "
        "branch in between (different numbers)."))
    step_cache_interval: int = setting(3, lo=2, hi=1000, metavar="N", help=(
        "With --step-cache deepcache: a full U-Net call every N steps."))
    guidance_reuse_from: int | None = setting(None, lo=0, hi=1 << 20, metavar="STEP", help=(
        "From this 0-based step on, only the conditional half of guidance runs; the last guidance difference is "
        "reused (halves those steps; different numbers)."))
    compile: bool | None = setting(None, metavar="auto|on|off", help=(
        "torch.compile the networks' repeated blocks: auto (on a GPU when the clip is long enough to repay the "
        "compile time), on or off."))

    def __post_init__(self) -> None:
        self.validate()

    def _fill_preset(self) -> None:
        """Give the fields left at their defaults the values of :attr:`preset` (:mod:`uav.presets`)."""
        from uav.presets import preset_values

        for k, v in preset_values(self.preset, self.__dict__, _field_defaults()).items():
            object.__setattr__(self, k, v)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field's type and bounds (bringing typed values to their canonical form:
        ``3`` -> ``3.0``, a list -> a tuple), then the rules that tie fields together.

        Raises:
            SettingsError: naming the first invalid setting.
        """
        for name, rule in _knobs().items():
            object.__setattr__(self, name, rule.check(name, getattr(self, name)))
        self._fill_preset()  # the preset's values are checked by the rules below, like given ones
        for message, name, reason in combination_errors(self.to_dict()):
            raise SettingsError(message, field=name, reason=reason)

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
    def given(self) -> frozenset[str]:
        """The fields set explicitly: constructor keywords, :meth:`replace` changes, the keys
        of a parsed mapping. The others hold their defaults, which ``memory`` may change."""
        return self.__dict__.get("_given", frozenset())

    def replace(self, **changes: Any) -> "UpscaleSettings":
        """A copy with some fields changed (typed values, checked); the changed fields count as given."""
        unknown = set(changes) - set(_knobs())
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(_knobs())}")
        new = dataclasses.replace(self, **changes)
        object.__setattr__(new, "_given", self.given | frozenset(changes))
        return new

    @classmethod
    def field_names(cls) -> list[str]:
        return list(_knobs())

    @classmethod
    def knob(cls, name: str) -> Knob:
        """The :class:`Knob` (type, bounds and help) of field ``name``."""
        return _knobs()[name]

    @classmethod
    def parse_value(cls, name: str, value: Any, *, text: bool = False, label: str | None = None) -> Any:
        """One field's value, read (strings too when ``text``) and checked on its own.

        Raises:
            SettingsError: naming ``label`` (default: the field), with ``expected`` set.
        """
        if name not in _knobs():
            raise SettingsError(f"unknown setting {name!r}; known: {sorted(_knobs())}")
        return parse_value(_knobs()[name], name, value, text=text, label=label)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, text: bool = False,
                     labels: Mapping[str, str] | None = None) -> "UpscaleSettings":
        """Build from plain data: JSON/TOML (typed) or, with ``text``, strings from the
        command line, markers or NLE metadata. ``steps`` is accepted for
        ``num_inference_steps``; ``None`` values mean "the default".

        Args:
            data: field name -> value.
            text: also convert strings (``"60"``, ``"24,26,28"``, ``"on"``).
            labels: field -> name to use in error messages (e.g. ``--noise-level``).

        Raises:
            SettingsError: an unknown key, or a bad value (the message names it).
        """
        data = dict(data)
        if "steps" in data:
            data["num_inference_steps"] = data.pop("steps")
        unknown = set(data) - set(_knobs())
        if unknown:
            raise SettingsError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(_knobs())}")
        labels = labels or {}
        values = {}
        for name, value in data.items():
            if value is None:
                continue
            rule = _knobs()[name]
            try:
                values[name] = rule.read(value, text=text)
            except ValueError:
                raise rule.error(name, value, labels.get(name)) from None
        return cls(**values)  # the constructor checks what was read

    @classmethod
    def from_strings(cls, data: Mapping[str, Any], **options: Any) -> "UpscaleSettings":
        """:meth:`from_mapping` with ``text=True``: values as typed on a command line or a marker."""
        return cls.from_mapping(data, text=True, **options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UpscaleSettings":
        """Build from typed data (e.g. JSON/TOML); ``steps`` is accepted for ``num_inference_steps``."""
        return cls.from_mapping(data)

    def to_dict(self, *, given_only: bool = False) -> dict[str, Any]:
        """Plain data (JSON-ready). ``given_only``: only the :attr:`given` fields, which
        :meth:`from_dict` turns back into settings with the same values *and* the same
        given fields (what a worker needs to choose the rest for its own card)."""
        out = dataclasses.asdict(self)
        out["propagation_steps"] = list(self.propagation_steps)
        out["captioner_options"] = dict(self.captioner_options)
        if given_only:
            out = {k: v for k, v in out.items() if k in self.given}
        return out


def _record_given(cls: type) -> type:
    """Wrap the generated ``__init__`` so each instance knows which fields it was given."""
    generated = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        generated(self, *args, **kwargs)
        # not a dataclass field: equality, hashing and to_dict() see only the values
        object.__setattr__(self, "_given", frozenset(names[:len(args)]) | frozenset(kwargs))

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


_record_given(UpscaleSettings)

#: the fields :attr:`UpscaleSettings.memory` may choose when they are not given
MEMORY_FIELDS: tuple[str, ...] = ("window_batch", "tile", "tiling", "tile_mode", "tile_size", "tile_overlap",
                                  "decode_chunk", "decode_tile", "offload")


def is_auto_prompt(prompt: Any) -> bool:
    """Whether ``prompt`` is :data:`AUTO_PROMPT` (any case, surrounding spaces ignored)."""
    return isinstance(prompt, str) and prompt.strip().lower() == AUTO_PROMPT


@functools.lru_cache(maxsize=1)
def _field_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(UpscaleSettings)}


@functools.lru_cache(maxsize=1)
def _knobs() -> dict[str, Knob]:
    """Field -> its knob, typed by the field's annotation."""
    hints = typing.get_type_hints(UpscaleSettings, include_extras=True)
    return {f.name: dataclasses.replace(f.metadata["knob"], type=hints[f.name])
            for f in dataclasses.fields(UpscaleSettings)}


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
    chunk, shared = values.get("decode_chunk"), values.get("decode_overlap")
    if chunk is not None and shared and shared >= chunk:
        reason = f"must be below decode_chunk={chunk}, got {shared}"
        errors.append((f"decode_overlap {reason}", "decode_overlap", reason))
    guidance, negative = values.get("guidance_scale"), values.get("negative_prompt")
    if guidance is not None and negative and guidance < 1:
        reason = (f"expected a number >= 1, got {guidance:g} (below 1 classifier-free guidance is off, so "
                  f"negative_prompt {negative!r} would be ignored; set negative_prompt='' to turn guidance off)")
        errors.append((f"guidance_scale={guidance:g} < 1 turns classifier-free guidance off, so negative_prompt "
                       f"{negative!r} would be ignored: use guidance_scale >= 1, or negative_prompt=''",
                       "guidance_scale", reason))
    return errors


def parse_int_list(value: str | Sequence[int] | None, name: str = "value") -> tuple[int, ...]:
    """``"24,26,28"`` -> ``(24, 26, 28)``; an empty string -> ``()``; ``"24,,26"`` is an error."""
    if value is None:
        return ()
    return parse_value(_knobs()["propagation_steps"], "propagation_steps", value, text=True, label=name)
