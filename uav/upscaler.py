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
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from uav.arguments import (
    LARGE_INPUT_SIDE,
    is_large_input,
    check_device,
    check_embeds,
    default_dtypes,
    output_size,
    torch_dtype,
    writer_options as _writer_options,
)
from uav.components import Components, merge_settings, registry_or_default, resolve_components
from uav.events import Event, EventCallback
from uav.frames import InputError, frames_to_tensor, to_uint8
from uav.overlap import Deferred
from uav.pipeline import generate
from uav.sampling.store import frame_chunks
from uav.settings import SettingsError, UpscaleSettings

if TYPE_CHECKING:
    from uav.captioning import Caption
    from uav.memory_plan import MemoryPlan

__all__ = ["VideoUpscaler", "Components", "ClipInfo", "InputError", "check_device", "default_dtypes",
           "frames_to_tensor", "output_size", "to_uint8", "torch_dtype"]

Tensor = torch.Tensor
log = logging.getLogger("uav")



@dataclass(frozen=True)
class ClipInfo:
    """What is known of the input beyond its pixels (filled when it came from a file)."""

    path: Path | None = None
    fps: Any = None
    start_frame: int = 0
    #: the reader's :class:`~uav.io.reader.VideoInfo` of a file input (timecode, colour, aspect, audio)
    video: Any = None
    #: where the run's clip-length tensors live (:class:`~uav.sampling.store.ClipStore`)
    store: Any = None


@dataclass(frozen=True)
class _Run:
    """A prepared run (:meth:`VideoUpscaler._prepare`): the low-res clip, what is known of
    it, the resolved components (settings after caption and memory plan) and the text embeddings."""

    lr: Tensor
    info: ClipInfo
    comps: Components
    text: Tensor


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
        if isinstance(flow, str):
            # a misspelt name fails here, not at the first clip that propagates
            from uav.components import check_component

            check_component("flow", flow, self.registry)
        elif flow is not None and not callable(flow):
            raise InputError(f"flow: expected a registered flow estimator's name or a flow estimator, got "
                             f"{type(flow).__name__}")
        self.source = source
        self._prompt_cache: dict[str, Tensor] = {}
        #: the caption the last ``prompt="auto"`` run used (``None``: it had a prompt)
        self.last_caption: Caption | None = None
        #: the memory plan of the last run (:mod:`uav.memory_plan`): what ``memory`` chose
        self.last_memory_plan: MemoryPlan | None = None

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

        if not isinstance(path, (str, os.PathLike)):
            raise release.ReleaseError(f"path: expected the weights folder (a str or Path), got {path!r}; download "
                                       "the Upscale-A-Video release (see docs/weights.md) and pass its folder")
        if not Path(path).exists():
            raise release.ReleaseError(
                f"weights folder {path} does not exist; download the Upscale-A-Video release "
                "(see docs/weights.md) or pass its folder"
            )
        rel = release.find_release(path)
        missing = rel.missing(vae=vae, need_text=load_text_encoder)
        if missing:
            raise release.ReleaseError(f"{rel.root} is missing: {', '.join(missing)}")
        device = check_device(device) if device is not None else (
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
        self._registry = registry_or_default(self._registry)
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
        callback: EventCallback | None = None,
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
            writer_options: :class:`~uav.io.writer.VideoWriter` keywords for ``output``
                (``codec``, ``pix_fmt``, ``compression``...); ``start_number`` may also be
                ``"source"`` or ``"timecode"`` (:func:`uav.io.metadata.resolve_start_number`),
                and ``provenance`` adds keys to the record every output carries
                (:meth:`provenance`). Outputs deeper than 8 bits get the decoder's float
                frames, quantised once to their own depth.
        """
        if output_type not in ("np", "pt"):
            raise InputError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        if output is not None:
            from uav.io.paths import refuse_output_onto_input

            refuse_output_onto_input(video, output)
            writer_options = _writer_options(writer_options)
        run = self._prepare(video, settings, knobs, callback=callback, start=start, end=end,
                            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
        chunks = self._generate(run, callback=callback, latents=latents, low_res_noise=low_res_noise, flows=flows,
                                trace=trace)
        if output is not None:
            from uav.writing import write_output

            return write_output(self, chunks, Path(output), run.lr, run.info, writer_options or {},
                                run.comps.settings)
        if output_type == "pt":
            return torch.cat([c for _, c in chunks], dim=2)
        return np.concatenate([to_uint8(c) for _, c in chunks], axis=0)

    def upscale_iter(self, video: Any, *, settings: UpscaleSettings | None = None,
                     callback: EventCallback | None = None, start: int | str | None = None,
                     end: int | str | None = None, prompt_embeds: Tensor | None = None,
                     negative_prompt_embeds: Tensor | None = None, **kwargs: Any) -> Iterator[np.ndarray]:
        """Stream the result: yields uint8 frames ``(t, 4H, 4W, 3)`` a decode chunk at a time.

        Takes :meth:`upscale`'s arguments but ``output``, ``output_type`` and ``writer_options``."""
        knobs = {k: kwargs.pop(k) for k in list(kwargs) if k in UpscaleSettings.field_names() or k == "steps"}
        run = self._prepare(video, settings, knobs, callback=callback, start=start, end=end,
                            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
        for _, chunk in self._generate(run, callback=callback, **kwargs):
            yield to_uint8(chunk)

    def _prepare(self, video: Any, settings: UpscaleSettings | None, knobs: Mapping[str, Any], *,
                 callback: EventCallback | None, start: int | str | None, end: int | str | None,
                 prompt_embeds: Tensor | None, negative_prompt_embeds: Tensor | None) -> _Run:
        """Everything a run needs before its first denoising step, shared by :meth:`upscale`
        and :meth:`upscale_iter`: settings and components checked, the caption of
        ``prompt="auto"``, the text embeddings, the clip loaded (and downscaled) and the
        memory plan."""
        comps = self.check_inputs(settings, **knobs)
        # the input decodes on a worker thread while the prompt is captioned and encoded
        loading = Deferred(lambda: self._load_video(video, start=start, end=end, settings=comps.settings),
                           name="uav-decode")
        comps = self._with_caption(comps, video, prompt_embeds, callback, start=start, end=end)
        text = self._text_embeddings(comps.settings, prompt_embeds, negative_prompt_embeds)
        lr, info = loading.result()
        lr = self._maybe_downscale(lr, comps.settings)
        return _Run(lr, info, self._plan_memory(comps, lr), text)

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
                      callback: EventCallback | None, *, start: int | str | None,
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
            callback(Event.of("caption", 1, 1, **caption.to_dict()))
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
    def plan_memory(self, shape: tuple[int, ...], settings: UpscaleSettings | None = None) -> MemoryPlan:
        """The settings a run of a low-res clip of ``shape`` ``(1, 3, T, h, w)`` chooses for this
        device (``settings.memory``; see :mod:`uav.memory_plan`); nothing runs or moves."""
        from uav.placement import plan_run

        return plan_run(self, tuple(shape), settings or UpscaleSettings())

    def _plan_memory(self, comps: Components, lr: Tensor) -> Components:
        """``comps`` with the memory-shaping settings chosen for this clip (logged once)."""
        plan = self.plan_memory(lr.shape, comps.settings)
        self.last_memory_plan = plan
        (log.info if plan.fits else log.warning)("%s", plan.describe())
        if plan.settings is comps.settings:
            return comps
        # the plan may name another tiling strategy: resolve the components again
        return dataclasses.replace(self.check_inputs(plan.settings), settings=plan.settings)

    def _generate(self, run: _Run, **options: Any) -> Iterator[tuple[int, Tensor]]:
        """:func:`uav.pipeline.generate` of a prepared run on this upscaler's networks
        (``options``: its keywords), with the networks placed as the last memory plan says."""
        from uav.placement import placed

        plan = self.last_memory_plan
        args = (self.unet, self.vae, self.low_res_scheduler, run.lr, run.comps, run.text)
        if plan is None or plan.budget.gib is None:
            yield from generate(*args, store=run.info.store, **options)
            return
        with placed(self, plan) as stage:
            yield from generate(*args, stage=stage, store=run.info.store, **options)

    # ------------------------------------------------------------------ prompts and input
    def _text_embeddings(self, s: UpscaleSettings, cond: Tensor | None, uncond: Tensor | None) -> Tensor:
        if cond is None:
            cond = self.encode_prompt(s.full_prompt)
        cond = check_embeds("prompt_embeds", cond)
        if not s.do_classifier_free_guidance:
            return cond
        if uncond is None:
            if self.text_encoder is None:
                raise InputError(
                    "negative_prompt_embeds: guidance_scale > 1 needs the negative embeddings too "
                    "(or a text encoder to encode negative_prompt)"
                )
            uncond = self.encode_prompt(s.negative_prompt)
        uncond = check_embeds("negative_prompt_embeds", uncond)
        if uncond.shape != cond.shape:
            raise InputError(f"negative_prompt_embeds shape {tuple(uncond.shape)} differs from prompt_embeds "
                             f"{tuple(cond.shape)}")
        return torch.cat([uncond, cond])

    def _maybe_downscale(self, lr: Tensor, s: UpscaleSettings) -> Tensor:
        h, w = lr.shape[-2:]
        if is_large_input(w, h):
            if s.downscale_large:
                log.warning("input %dx%d: downscaling by 1/4 (area) before upscaling x4 (downscale_large=True)", w, h)
                # frame by frame (area): a chunk at a time gives the same frames
                parts = [F.interpolate(lr[0, :, a:b].permute(1, 0, 2, 3), size=(h // 4, w // 4), mode="area")
                         .permute(1, 0, 2, 3)[None] for a, b in frame_chunks(lr.shape[2], 64)]
                return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
            log.warning("input %dx%d is large: the output will be %dx%d. The published code would have downscaled "
                        "it by 1/4 first; pass downscale_large=True for that.", w, h, 4 * w, 4 * h)
        return lr

    # ------------------------------------------------------------------ input / output
    def _load_video(self, video: Any, *, start: int | str | None = None, end: int | str | None = None,
                    settings: UpscaleSettings | None = None) -> tuple[Tensor, ClipInfo]:
        """The clip as ``(1, 3, T, h, w)`` in [-1, 1], and what is known of it. A clip whose run
        needs more host memory than :func:`uav.host_memory.stream_above` is read a chunk of
        frames at a time into memory-mapped files (``info.store``)."""
        from uav.host_memory import stack_frames, store_for

        s = settings or UpscaleSettings()
        if isinstance(video, (str, os.PathLike)):
            from uav.io import reader

            path = Path(video)
            vi = reader.probe(path)
            info = ClipInfo(path=path, fps=vi.fps, video=vi,
                            start_frame=reader.parse_frame_position(start, vi.fps, vi.start_timecode) or 0,
                            store=store_for(s, height=vi.height, width=vi.width, frames=vi.num_frames))
            if info.store.streamed:
                return stack_frames(reader.iter_frames(path, start=start, end=end), info.store), info
            return frames_to_tensor(reader.read_frames(path, start=start, end=end), "video"), info
        if start is not None or end is not None:
            raise InputError("start/end: only a file input can be trimmed; slice the frames instead")
        if isinstance(video, np.ndarray) and video.ndim == 4:
            store = store_for(s, height=video.shape[1], width=video.shape[2], frames=video.shape[0])
            if store.streamed:
                return stack_frames(video, store), ClipInfo(store=store)
        lr = frames_to_tensor(video, "video")
        return lr, ClipInfo(store=store_for(s, height=lr.shape[3], width=lr.shape[4], frames=lr.shape[2]))

    def provenance(self, settings: UpscaleSettings, info: ClipInfo | None = None, frames: int | None = None,
                   fps: Any = None) -> dict[str, Any]:
        """The record an output of this run carries (:mod:`uav.io.provenance`): uav's version,
        the model and its weights' identity, the settings and their hash, the prompt the
        run used (the caption's, for ``prompt="auto"``), the seed and the source range."""
        from uav import __version__
        from uav.io.provenance import settings_hash, weights_identity

        info = info or ClipInfo()
        caption = self.last_caption
        full = settings.to_dict()
        start = info.start_frame if info.path is not None else None
        return {
            "uav_version": __version__,
            "model": {"weights": weights_identity(self.source) if self.source else None, "source": self.source,
                      "unet_dtype": str(next(self.unet.parameters()).dtype).replace("torch.", ""),
                      "vae": type(self.vae).__name__, "device": str(self.device)},
            "settings_hash": settings_hash(full),
            "settings": full,
            "prompt": settings.full_prompt,
            "caption": None if caption is None else caption.to_dict(),
            "seed": settings.seed,
            "source": {"path": None if info.path is None else str(info.path), "start_frame": start,
                       "end_frame": None if start is None or frames is None else start + frames, "frames": frames,
                       "fps": None if fps is None else str(fps),
                       "timecode": getattr(info.video, "start_timecode", None)},
        }
