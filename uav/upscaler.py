"""``VideoUpscaler``: the public facade over models, sampling loop, decoding and I/O.

Data walks one way: settings checked and every component resolved through the
registry (:meth:`VideoUpscaler.check_inputs`, :mod:`uav.components`) -> source ->
low-res clip -> :func:`uav.pipeline.generate` (flows, denoising per tile, chunked decode,
tile blend, colour fix) -> frames handed out chunk by chunk or written. Only low-res
state (clip, latents) is held for the whole video; 4x frames exist a chunk at a time.
Frame conversions live in :mod:`uav.frames`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from uav.components import Components, merge_settings, resolve_components
from uav.frames import InputError, frames_to_tensor, to_uint8
from uav.overlap import Consumer, Deferred
from uav.pipeline import generate
from uav.settings import SettingsError, UpscaleSettings

if TYPE_CHECKING:
    from uav.captioning import Caption

__all__ = ["VideoUpscaler", "Components", "ClipInfo", "InputError", "default_dtypes", "frames_to_tensor",
           "to_uint8", "torch_dtype"]

Tensor = torch.Tensor
log = logging.getLogger("uav")
ProgressCallback = Callable[[dict[str, Any]], None]

#: the published code downscales inputs whose sides are both >= this (SPEC §7.2)
LARGE_INPUT_SIDE = 1280


@dataclass(frozen=True)
class ClipInfo:
    """What is known of the input beyond its pixels (filled when it came from a file)."""

    path: Path | None = None
    fps: Any = None
    start_frame: int = 0
    #: the reader's :class:`~uav.io.reader.VideoInfo` of a file input (timecode, colour, aspect, audio)
    video: Any = None


class VideoUpscaler:
    """Temporally consistent diffusion video super-resolution (Upscale-A-Video), x4.

    Build with :meth:`from_pretrained` (a release folder) or :meth:`from_components`
    (your own models and schedulers), then call :meth:`upscale`::

        up = VideoUpscaler.from_pretrained("pretrained_models/upscale_a_video", device="cuda")
        up.upscale("in.mp4", output="out.mp4", prompt="a cat", propagation_steps=(24, 26, 28))
    """

    def __init__(
        self,
        *,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        low_res_scheduler: Any,
        text_encoder: Any = None,
        tokenizer: Any = None,
        flow: Any = None,
        raft_weights: str | os.PathLike[str] | None = None,
        registry: Any = None,
        source: str | None = None,
    ) -> None:
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.low_res_scheduler = low_res_scheduler
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.flow = flow
        self.raft_weights = Path(raft_weights) if raft_weights else None
        self._registry = registry
        self.source = source
        self._prompt_cache: dict[str, Tensor] = {}
        #: the caption the last ``prompt="auto"`` run used (``None``: it had a prompt)
        self.last_caption: Caption | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_components(cls, **parts: Any) -> "VideoUpscaler":
        """Assemble an upscaler from ready-made parts: the constructor's keywords
        (``unet``, ``vae``, ``scheduler``, ``low_res_scheduler``, ``text_encoder``,
        ``tokenizer``, ``flow``, ``registry``, ``raft_weights``).

        ``scheduler`` may be a diffusers ``DDIMScheduler`` (always run with the published
        DDIM rule), an :class:`~uav.sampling.schedulers.OfficialDDIM`, or any
        :class:`~uav.protocols.DenoisingScheduler`; ``low_res_scheduler`` a diffusers
        ``DDPMScheduler`` (or its config). ``flow`` is a flow estimator object or name.
        """
        return cls(**{"source": "components", **parts})

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        vae: Literal["3d", "video"] = "3d",
        vae_dtype: torch.dtype | str | None = None,
        load_text_encoder: bool = True,
        flow: Any = None,
        registry: Any = None,
    ) -> "VideoUpscaler":
        """Load a release folder (official layout, see :mod:`uav.weights`).

        Args:
            path: the folder (``pretrained_models/upscale_a_video``).
            device: where the networks run (default: CUDA when available, else CPU).
            dtype: U-Net/text-encoder compute dtype (default fp16 on CUDA, fp32 on CPU).
            vae: ``"3d"`` (published default) or ``"video"`` (temporal, LR-conditioned decoder).
            vae_dtype: VAE dtype (default fp32, as published; bf16 halves decode memory).
            load_text_encoder: set False when you always pass prompt embeddings.
        """
        from uav.weights import release

        if not Path(path).exists():
            raise release.ReleaseError(
                f"weights folder {path} does not exist; download the Upscale-A-Video release "
                "(see docs/weights.md) or pass its folder"
            )
        rel = release.find_release(path)
        missing = rel.missing(vae=vae, need_text=load_text_encoder)
        if missing:
            raise release.ReleaseError(f"{rel.root} is missing: {', '.join(missing)}")
        device = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        default_unet, default_vae = default_dtypes(device)
        dtype = torch_dtype(dtype, "dtype") or default_unet
        vae_dtype = torch_dtype(vae_dtype, "vae_dtype") or default_vae
        unet = release.load_unet(rel, device=device, dtype=dtype)
        vae_model = release.load_vae(rel, vae, device=device, dtype=vae_dtype)
        ddim, ddpm = release.load_schedulers(rel)
        tokenizer = text_encoder = None
        if load_text_encoder:
            tokenizer, text_encoder = release.load_text_encoder(rel, device=device, dtype=dtype)
        return cls(unet=unet, vae=vae_model, scheduler=ddim, low_res_scheduler=ddpm, text_encoder=text_encoder,
                   tokenizer=tokenizer, flow=flow, registry=registry, raft_weights=rel.raft_weights,
                   source=str(rel.root))

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from uav.registry import default_registry

            self._registry = default_registry()
        return self._registry

    @property
    def upscale_factor(self) -> int:
        return int(getattr(self.vae, "upscale_factor", 4))

    # ------------------------------------------------------------------ prompts
    def encode_prompt(self, text: str) -> Tensor:
        """CLIP ``last_hidden_state`` of ``text`` padded to the tokenizer's max length (cached)."""
        if text in self._prompt_cache:
            return self._prompt_cache[text]
        if self.text_encoder is None or self.tokenizer is None:
            raise InputError(
                "prompt: this upscaler has no text encoder; pass prompt_embeds and negative_prompt_embeds "
                "(or load the release's text_encoder/ and tokenizer/)"
            )
        enc_device = next(self.text_encoder.parameters()).device
        ids = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        mask = ids.attention_mask.to(enc_device) if getattr(self.text_encoder.config, "use_attention_mask", False) \
            else None
        with torch.no_grad():
            out = self.text_encoder(ids.input_ids.to(enc_device), attention_mask=mask)[0]
        out = out.detach()
        self._prompt_cache[text] = out
        return out

    # ------------------------------------------------------------------ main entry points
    def upscale(
        self,
        video: Any,
        *,
        output: str | os.PathLike[str] | None = None,
        output_type: Literal["np", "pt"] = "np",
        settings: UpscaleSettings | None = None,
        callback: ProgressCallback | None = None,
        prompt_embeds: Tensor | None = None,
        negative_prompt_embeds: Tensor | None = None,
        latents: Tensor | None = None,
        low_res_noise: Tensor | None = None,
        flows: tuple[Tensor, Tensor] | None = None,
        trace: dict[str, Tensor] | None = None,
        writer_options: Mapping[str, Any] | None = None,
        start: int | str | None = None,
        end: int | str | None = None,
        **knobs: Any,
    ) -> Any:
        """Upscale a video x4.

        Args:
            video: a file path (read with :mod:`uav.io`), frames as a numpy array ``(T, H, W, 3)``
                (uint8, uint16 or float in [0, 1]), a torch tensor ``(1, 3, T, H, W)`` or
                ``(T, 3, H, W)`` in [-1, 1], or an iterable of ``(H, W, 3)`` frames.
            output: write the result to this path (codec from ``writer_options``) and return the path.
            output_type: without ``output``: ``"np"`` -> uint8 ``(T, 4H, 4W, 3)``; ``"pt"`` ->
                ``(1, 3, T, 4H, 4W)`` float in [-1, 1].
            settings: an :class:`UpscaleSettings`; keyword ``knobs`` (``prompt=``, ``noise_level=``,
                ``guidance_scale=``, ``num_inference_steps=``, ``propagation_steps=``, ``color_fix=``,
                ``seed=``, ``w_lr=`` ...) override its fields.
            callback: receives progress dicts (``stage``: ``caption``/``flow``/``denoise``/``decode``,
                ``index``, ``total`` ...); with ``prompt="auto"`` the ``caption`` event carries
                ``caption``, ``captioner`` and ``frame``, and :attr:`last_caption` keeps it.
            prompt_embeds, negative_prompt_embeds: explicit text embeddings ``(1, L, D)``; they
                override the text prompts (defaults included) and need no text encoder.
            latents: initial ``x_T`` ``(1, 4, T, h, w)``; low_res_noise: the augmentation noise
                ``(1, 3, T, h, w)``; flows: ``(forward, backward)`` ``(1, 2, T-1, h, w)`` at the
                low-res size. All three are what the parity fixtures record.
            trace: a dict that receives per-step tensors (see :func:`uav.sampling.loop.denoise`).
            start, end: frame range of a file input (``end`` exclusive; ints or timecodes).
        """
        comps = self.check_inputs(settings, **knobs)
        # the input decodes on a worker thread while the prompt is captioned and encoded
        loading = Deferred(lambda: self._load_video(video, start=start, end=end), name="uav-decode")
        comps = self._with_caption(comps, video, prompt_embeds, callback, start=start, end=end)
        s = comps.settings
        text = self._text_embeddings(s, prompt_embeds, negative_prompt_embeds)
        lr, info = loading.result()
        lr = self._maybe_downscale(lr, s)
        chunks = self._generate(lr, comps, text, callback=callback, latents=latents, low_res_noise=low_res_noise,
                                flows=flows, trace=trace)
        if output is not None:
            return self._write(chunks, Path(output), lr, info, writer_options or {})
        if output_type == "pt":
            return torch.cat([c for _, c in chunks], dim=2)
        if output_type == "np":
            return np.concatenate([to_uint8(c) for _, c in chunks], axis=0)
        raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")

    def upscale_iter(self, video: Any, *, settings: UpscaleSettings | None = None,
                     callback: ProgressCallback | None = None, start: int | str | None = None,
                     end: int | str | None = None, prompt_embeds: Tensor | None = None,
                     negative_prompt_embeds: Tensor | None = None, **kwargs: Any) -> Iterator[np.ndarray]:
        """Stream the result: yields uint8 frames ``(t, 4H, 4W, 3)`` a decode chunk at a time."""
        knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in UpscaleSettings.field_names() or k == "steps"}
        comps = self.check_inputs(settings, **knobs)
        comps = self._with_caption(comps, video, prompt_embeds, callback, start=start, end=end)
        text = self._text_embeddings(comps.settings, prompt_embeds, negative_prompt_embeds)
        lr, _ = self._load_video(video, start=start, end=end)
        lr = self._maybe_downscale(lr, comps.settings)
        for _, chunk in self._generate(lr, comps, text, callback=callback, **kwargs):
            yield to_uint8(chunk)

    # ------------------------------------------------------------------ automatic prompts
    def caption(self, video: Any, settings: UpscaleSettings | None = None, *, start: int | str | None = None,
                end: int | str | None = None, **knobs: Any) -> Caption:
        """Caption ``video`` as ``prompt="auto"`` would: ``settings.captioner`` (with its
        ``captioner_options``) describes frame ``caption_frame`` of ``[start, end)``.

        The captioner is built, used once and freed before this returns, so the memory
        it took is back for upscaling.

        Raises:
            uav.captioning.CaptionError: unknown captioner or option, missing folder,
                wrong model type, frame out of range (one line).
        """
        from uav.captioning import caption_clip

        s = merge_settings(settings, knobs)
        return caption_clip(video, s.captioner, dict(s.captioner_options), frame=s.caption_frame, start=start,
                            end=end, registry=self.registry)

    def _with_caption(self, comps: Components, video: Any, prompt_embeds: Tensor | None,
                      callback: ProgressCallback | None, *, start: int | str | None,
                      end: int | str | None) -> Components:
        """``comps`` with ``prompt="auto"`` replaced by the clip's caption (reported as a
        ``caption`` event and kept in :attr:`last_caption`)."""
        self.last_caption = None
        s = comps.settings
        if not s.auto_prompt or prompt_embeds is not None:
            return comps  # explicit embeddings override every text prompt, "auto" included
        caption = self.caption(video, s, start=start, end=end)
        self.last_caption = caption
        log.info("prompt from %s (frame %d): %s", caption.captioner, caption.frame, caption.text)
        if callback is not None:
            callback({"stage": "caption", "index": 1, "total": 1, **caption.to_dict()})
        return dataclasses.replace(comps, settings=s.replace(prompt=caption.text))

    # ------------------------------------------------------------------ validation
    def check_inputs(self, settings: UpscaleSettings | None = None, **knobs: Any) -> Components:
        """Validate the settings and resolve every component they name, before any frame is read.

        Every component goes through the registry, the defaults (``ddim-official``,
        ``none``, ``official``, ``auto`` flow) included, so a misspelt name
        (``color_fix="wavlet"``) or a scheduler that cannot run the requested steps
        fails here, in a second, not after the whole clip has been denoised.

        Args:
            settings: an :class:`UpscaleSettings` (default: the published defaults).
            **knobs: field overrides, as for :meth:`upscale`.

        Returns:
            The resolved :class:`Components` (the flow estimator is built on first use).

        Raises:
            SettingsError: a bad setting; :class:`~uav.settings.ComponentError` (also a
                ``KeyError``) for a component name the registry does not offer.
        """
        return resolve_components(merge_settings(settings, knobs), self.registry, scheduler=self.scheduler,
                                  flow=self.flow, raft_weights=self.raft_weights, device=self.device)

    # ------------------------------------------------------------------ the pipeline
    def _generate(self, lr: Tensor, comps: Components, text: Tensor, **options: Any) -> Iterator[tuple[int, Tensor]]:
        """:func:`uav.pipeline.generate` on this upscaler's networks (``options``: its keywords)."""
        return generate(self.unet, self.vae, self.low_res_scheduler, lr, comps, text, **options)

    # ------------------------------------------------------------------ prompts and input
    def _text_embeddings(self, s: UpscaleSettings, cond: Tensor | None, uncond: Tensor | None) -> Tensor:
        if cond is None:
            cond = self.encode_prompt(s.full_prompt)
        cond = _embeds("prompt_embeds", cond)
        if not s.do_classifier_free_guidance:
            return cond
        if uncond is None:
            if self.text_encoder is None:
                raise InputError(
                    "negative_prompt_embeds: guidance_scale > 1 needs the negative embeddings too "
                    "(or a text encoder to encode negative_prompt)"
                )
            uncond = self.encode_prompt(s.negative_prompt)
        uncond = _embeds("negative_prompt_embeds", uncond)
        if uncond.shape != cond.shape:
            raise InputError(f"negative_prompt_embeds shape {tuple(uncond.shape)} differs from prompt_embeds "
                             f"{tuple(cond.shape)}")
        return torch.cat([uncond, cond])

    def _maybe_downscale(self, lr: Tensor, s: UpscaleSettings) -> Tensor:
        h, w = lr.shape[-2:]
        if h >= LARGE_INPUT_SIDE and w >= LARGE_INPUT_SIDE:
            if s.downscale_large:
                log.warning("input %dx%d: downscaling by 1/4 (area) before upscaling x4 (downscale_large=True)", w, h)
                frames = lr[0].permute(1, 0, 2, 3)
                small = F.interpolate(frames, size=(h // 4, w // 4), mode="area")
                return small.permute(1, 0, 2, 3)[None]
            log.warning("input %dx%d is large: the output will be %dx%d. The published code would have downscaled "
                        "it by 1/4 first; pass downscale_large=True for that.", w, h, 4 * w, 4 * h)
        return lr

    # ------------------------------------------------------------------ input / output
    def _load_video(self, video: Any, *, start: int | str | None = None,
                    end: int | str | None = None) -> tuple[Tensor, ClipInfo]:
        info = ClipInfo()
        if isinstance(video, (str, os.PathLike)):
            from uav.io import reader

            path = Path(video)
            vi = reader.probe(path)
            frames = reader.read_frames(path, start=start, end=end)
            info = ClipInfo(path=path, fps=vi.fps, video=vi,
                            start_frame=reader.parse_frame_position(start, vi.fps, vi.start_timecode) or 0)
            lr = frames_to_tensor(frames, "video")
        else:
            if start is not None or end is not None:
                raise InputError("start/end: only a file input can be trimmed; slice the frames instead")
            lr = frames_to_tensor(video, "video")
        return lr, info

    def _write(self, chunks: Iterable[tuple[int, Tensor]], path: Path, lr: Tensor, info: ClipInfo,
               options: Mapping[str, Any]) -> Path:
        from fractions import Fraction

        from uav.io.metadata import carry_over
        from uav.io.writer import VideoWriter

        options = dict(options)
        fps = options.pop("fps", None) or info.fps or Fraction(24)
        scale = self.upscale_factor
        height, width = lr.shape[-2] * scale, lr.shape[-1] * scale
        if info.video is not None:
            # the output shows the same frames, so it carries the source's metadata over
            options = {**carry_over(info.video, info.start_frame, lr.shape[2]), **options}
        writer = VideoWriter(path, fps=Fraction(fps), width=width, height=height, **options)
        # frames encode on a worker thread (two chunks queued at most) while the next chunk decodes
        encoder: Consumer[Tensor] = Consumer(lambda chunk: [writer.write(f) for f in to_uint8(chunk)], maxsize=2,
                                             name="uav-encode")
        try:
            for _, chunk in chunks:
                encoder.submit(chunk)
            encoder.close()
        except BaseException:
            encoder.abort()
            writer.abort()
            raise
        return writer.close()


# ---------------------------------------------------------------------------- helpers
def default_dtypes(device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """``(U-Net and text encoder, VAE)`` dtypes :meth:`VideoUpscaler.from_pretrained` picks
    on ``device``: fp16 and fp32 on CUDA, as published (the fp32 VAE keeps the decoder's
    parity); fp32 and fp32 on the CPU, whose half-precision kernels are slow or missing."""
    return (torch.float16 if device.type == "cuda" else torch.float32), torch.float32


def torch_dtype(value: torch.dtype | str | None, name: str) -> torch.dtype | None:
    """``value`` as a torch dtype (``fp16``, ``bfloat16``, ... or a dtype); ``None`` stays ``None``."""
    if value is None or isinstance(value, torch.dtype):
        return value
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if value not in table:
        raise SettingsError(f"{name} must be one of {sorted(table)}, got {value!r}")
    return table[value]


def _embeds(name: str, t: Any) -> Tensor:
    if not torch.is_tensor(t) or t.ndim != 3 or t.shape[0] != 1:
        got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
        raise InputError(f"{name}: expected a (1, L, D) tensor, got {got}")
    if not torch.isfinite(t).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    return t
