"""The memory model: a run's peak GPU memory, predicted on the CPU before anything loads.

The networks are built from their configs on *fake* tensors
(:class:`torch._subclasses.fake_tensor.FakeTensorMode`: shapes and dtypes, no storage,
no compute), and one U-Net call and one decode piece of the run's real sizes are traced
under a dispatch mode that adds up every tensor alive at each moment (a second each).
Attention is traced as the fused kernels a GPU runs it (flash / memory-efficient: the
output is all they keep), which a machine without a GPU cannot select for itself.

What the trace does not see — the CUDA libraries' workspaces, the caching allocator's
rounding, the loop's own copies around each call — was measured once on an H200
(``benchmarks/results/bench_h200.json``, torch 2.11): the measured working sets over the
traced ones are the calibration factors below, from three U-Net and four decoder cases
(measured with the batched, published block structure; ``benchmarks/memory_check.py``
re-measures them on a lent GPU). Activations grow linearly with frames x area (the traces
at 192x352 and 270x480 scale exactly), so the advice for smaller tiles scales the traced
numbers.

With ``offload`` (the default on CUDA) the clip-length state lives on the host and the
GPU holds the weights plus one U-Net call or one decode piece at a time, so the peak
does not depend on the clip's length.

Each network is traced once per config and dtype (:func:`network_costs`, cached): the
traced working set is the same number of bytes per frame x latent pixel to 0.1 % from
64x64 to 320x384 latents (fused attention keeps it linear), so every shape the planner
(:mod:`uav.memory_plan`) considers is a multiplication, not another trace. In batch size
it is affine by parts: the U-Net's up path runs one batch item at a time
(:mod:`uav.models.batching`), and the tracker counts one item's tensors apart from those
that carry the batch (:class:`NetworkCosts`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_iter

from uav.settings import UpscaleSettings

__all__ = ["DECODE_CALIBRATION", "UNET_CALIBRATION", "MemoryEstimate", "NetworkCosts", "Placement", "estimate_memory",
           "network_costs", "traced_working_set"]

GIB = 2**30
#: measured / traced working set of one U-Net call (H200, bf16; 10.13/8.14, 30.28/24.41, 54.11/46.80 GiB)
UNET_CALIBRATION = 1.20
#: measured / traced working set of one decode piece (H200; vae_3d bf16 7.81/4.64, fp32 15.56/9.29,
#: vae_video bf16 14.98/8.91, fp32 29.81/17.81 GiB)
DECODE_CALIBRATION = 1.68
#: bytes per latent pixel and frame of the clip-length state the loop keeps on its device
#: (fp32: latents 4 + noisy clip 3 + merged guided prediction 8 + x0 4 + merge weight 1 + flows 4 channels)
CLIP_STATE_BYTES = 4 * 24


@dataclass(frozen=True)
class Placement:
    """Where the networks wait while they are not running.

    ``text_encoder``: ``"device"`` or ``"host"`` (moved off once the prompt is encoded).
    ``vae``: ``"device"`` or ``"host"`` (on the device only while decoding; the U-Net
    leaves for the host meanwhile). ``unet``: ``"device"`` or ``"blocks"`` (block-level
    offload, :mod:`uav.offload`: the device holds its small parts and two blocks at a time).
    """

    text_encoder: str = "device"
    vae: str = "device"
    unet: str = "device"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted GPU memory of a run, in GiB.

    ``peak_gib`` = clip state + the larger of the two stages: the weights resident while
    denoising (``resident_gib["denoise"]``) + ``denoise_gib`` (one U-Net call), or those
    resident while decoding + ``decode_gib`` (one decode piece); ``peak_stage`` says which.
    """

    weights_gib: dict[str, float]
    denoise_gib: float
    decode_gib: float
    clip_state_gib: float
    peak_gib: float
    peak_stage: str
    #: the traced shapes: ``unet`` (B, C, T, h, w) and ``decode`` latents (1, 4, t, h, w)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    #: weights on the device during each stage (all of them unless a :class:`Placement` moves some)
    resident_gib: dict[str, float] = field(default_factory=dict)
    placement: dict[str, str] = field(default_factory=lambda: Placement().to_dict())
    #: one U-Net call of one window (both halves of guidance): what ``--window-batch 1`` leaves
    #: (two windows cost less than twice one: an item's transients are not batched)
    window_gib: float = 0.0

    def fits(self, card_gib: float) -> bool:
        """Whether the predicted peak fits a card with ``card_gib`` GiB."""
        return self.peak_gib <= card_gib

    def to_dict(self) -> dict[str, Any]:
        # GiB to the KiB: tiny test networks stay visible
        out = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        for key in ("weights_gib", "resident_gib"):
            out[key] = {k: round(v, 6) for k, v in getattr(self, key).items()}
        return out

    def advice(self, card_gib: float) -> list[str]:
        """Settings that bring the peak under ``card_gib``, most effective first (empty when it fits).

        Scales the traced working sets linearly (batch x frames x area); each line names
        the option and the peak it predicts.
        """
        if self.fits(card_gib):
            return []
        weights = sum(self.weights_gib.values())
        out: list[str] = []
        if self.clip_state_gib > 0:
            out.append(f"offload=True (the default on CUDA) keeps the clip on the host "
                       f"(-{self.clip_state_gib:.1f} GiB)")
        out += self._denoise_advice(card_gib - self.resident_gib.get("denoise", weights))
        out += self._decode_advice(card_gib - self.resident_gib.get("decode", weights))
        if not out or weights >= card_gib:
            out.append(f"a card with more memory: the weights alone take {weights:.1f} GiB")
        return out

    def _denoise_advice(self, budget: float) -> list[str]:
        if self.denoise_gib <= budget:
            return []
        _, _, _, h, w = self.shapes["unet"]
        window = self.window_gib or self.denoise_gib
        # one window per call (both halves of guidance) first, then latent tiles
        first = ("--window-batch 1", window) if window < self.denoise_gib else None
        return _advice(budget, window / (h * w), (h, w), first, "--tile-mode latent --tile-size", "one U-Net call")

    def _decode_advice(self, budget: float) -> list[str]:
        if self.decode_gib <= budget:
            return []
        _, _, t, dh, dw = self.shapes["decode"]
        per_px = self.decode_gib / (t * dh * dw)
        first = ("--decode-chunk 1", per_px * dh * dw) if t > 1 else None
        return _advice(budget, per_px, (dh, dw), first, "--decode-chunk 1 --decode-tile", "one decode piece")


def _advice(budget: float, per_px: float, size: tuple[int, int], first: tuple[str, float] | None, tile_flags: str,
            what: str) -> list[str]:
    """Advice lines for one stage: ``first`` (flags, GiB) when given, then the largest tile that
    fits ``budget`` when the stage's working set over ``size`` (h, w) does not."""
    out = [] if first is None else [f"{first[0]} ({what}: about {first[1]:.1f} GiB)"]
    tile = _largest_side(per_px, budget, max(size)) if per_px * size[0] * size[1] > budget else None
    if tile:
        out.append(f"{tile_flags} {tile} ({what}: about {per_px * tile * tile:.1f} GiB)")
    return out


def _largest_side(per_px: float, budget: float, current: int) -> int | None:
    """The largest tile side (a multiple of 64, at least 64, below ``current``) whose working set fits."""
    side = min(current - 1, int(math.sqrt(max(budget, 0.0) / per_px))) // 64 * 64 if per_px > 0 else 0
    return side if side >= 64 else None


@dataclass(frozen=True)
class NetworkCosts:
    """What one release's networks cost per unit of work, traced once on fake tensors.

    Working sets are *traced* bytes (multiply by the calibration factors for the GPU's);
    work is FLOPs. A U-Net call of ``b`` batch items, ``t`` frames and ``h`` x ``w`` latent
    pixels keeps ``t * h * w * max(a * b + c for a, c in unet_act)`` bytes: ``a`` is what
    carries the batch from block to block, ``c`` what a block makes for the one item it
    works on (:mod:`uav.models.batching`), at the moments either could be the peak; a
    decode piece of ``t`` frames keeps ``vae_act_per_px * t * h * w``. The decoder's work
    has a quadratic part: its mid-block attention spans a whole frame (or tile).
    """

    unet_bytes: int
    vae_bytes: int
    #: parameter bytes of each U-Net part block offload moves (in call order)
    unet_block_bytes: tuple[int, ...]
    #: ``(bytes per item x frame x pixel, bytes per frame x pixel)`` pairs (see above)
    unet_act: tuple[tuple[float, float], ...]
    vae_act_per_px: float
    unet_flops_per_px: float
    vae_flops_per_px: float
    #: decoder FLOPs per frame that grow with the square of its pixel count
    vae_flops_per_px2: float

    def unet_activations(self, batch: int, frames: int, h: int, w: int) -> float:
        """Calibrated bytes of one U-Net call."""
        return max(a * batch + c for a, c in self.unet_act) * frames * h * w * UNET_CALIBRATION

    def decode_activations(self, frames: int, h: int, w: int) -> float:
        """Calibrated bytes of one decode piece."""
        return self.vae_act_per_px * frames * h * w * DECODE_CALIBRATION

    def decode_flops(self, frames: int, h: int, w: int) -> float:
        return frames * (self.vae_flops_per_px * h * w + self.vae_flops_per_px2 * (h * w) ** 2)


#: the reference shapes of the traces (latent pixels): big enough for every downsampling level
_REF = (64, 64)
_REF_SMALL = (32, 32)


def network_costs(unet_config: Mapping[str, Any], vae_config: Mapping[str, Any], *,
                  unet_dtype: torch.dtype = torch.float16, vae_dtype: torch.dtype = torch.float32,
                  published: bool = False) -> NetworkCosts:
    """The :class:`NetworkCosts` of these configs in these dtypes (traced once per process).

    ``published``: trace the published, out-of-place residual blocks
    (:func:`uav.models.layers.published_structure`), which the H200 calibration measured.
    """
    return _network_costs(_config_key(unet_config), _config_key(vae_config), str(unet_dtype), str(vae_dtype),
                          published)


def _config_key(config: Mapping[str, Any]) -> str:
    # the loaded model's config carries diffusers' bookkeeping keys; the networks ignore them
    return json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, sort_keys=True, default=list)


def _network_costs(unet_key: str, vae_key: str, unet_dtype: str, vae_dtype: str, published: bool) -> NetworkCosts:
    unet = _unet_costs(unet_key, unet_dtype, published)
    vae = _vae_costs(vae_key, vae_dtype, published)
    return NetworkCosts(unet_bytes=unet.params, vae_bytes=vae.params, unet_block_bytes=unet.blocks,
                        unet_act=unet.act_points, vae_act_per_px=vae.act_per_px,
                        unet_flops_per_px=unet.flops_per_px, vae_flops_per_px=vae.flops_per_px,
                        vae_flops_per_px2=vae.flops_per_px2)


@dataclass(frozen=True)
class _PerPixel:
    params: int
    act_per_px: float
    flops_per_px: float
    flops_per_px2: float = 0.0
    blocks: tuple[int, ...] = ()
    act_points: tuple[tuple[float, float], ...] = ()


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.split(".")[-1])


@functools.lru_cache(maxsize=8)
def _unet_costs(key: str, dtype: str, published: bool) -> _PerPixel:
    from uav.models import UNetVideoModel

    h, w = _REF
    b, t = 2, 8
    traced = _trace(UNetVideoModel, json.loads(key), _dtype(dtype), [_unet_call(b, t, h, w, _dtype(dtype))],
                    blocks=True, published=published)
    (flops, peak), = traced.calls
    px = t * h * w
    points = tuple((batch / (b * px), item / px) for batch, item in _frontier(traced.points[0]))
    return _PerPixel(traced.params, peak / (b * px), flops / (b * px), blocks=traced.blocks, act_points=points)


def _frontier(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ``(batch bytes, item bytes)`` moments that are the peak for some batch size: those no
    other moment exceeds in both."""
    out: list[tuple[int, int]] = []
    for batch, item in sorted(set(points), key=lambda p: (-p[0], -p[1])):
        if not out or item > out[-1][1]:
            out.append((batch, item))
    return out


@functools.lru_cache(maxsize=8)
def _vae_costs(key: str, dtype: str, published: bool) -> _PerPixel:
    from uav.models import AutoencoderKLVideo

    small, ref = _REF_SMALL[0] * _REF_SMALL[1], _REF[0] * _REF[1]
    traced = _trace(AutoencoderKLVideo, json.loads(key), _dtype(dtype),
                    [_decode_call(1, *_REF_SMALL, _dtype(dtype)), _decode_call(1, *_REF, _dtype(dtype))],
                    published=published)
    (flops_small, _), (flops, peak) = traced.calls
    # two sizes: the linear and the quadratic part of the decoder's work (its mid-block attention)
    quad = (flops / ref - flops_small / small) / (ref - small)
    return _PerPixel(traced.params, peak / ref, flops / ref - quad * ref, quad)


def _unet_call(batch: int, frames: int, h: int, w: int, dtype: torch.dtype,
               noise_level: int = 120) -> Callable[[Any, torch.device], Any]:
    return lambda m, dev: m(
        torch.zeros(batch, 4, frames, h, w, device=dev, dtype=dtype), 500,
        torch.zeros(batch, 3, frames, h, w, device=dev, dtype=dtype),
        encoder_hidden_states=torch.zeros(batch, 77, m.config.cross_attention_dim, device=dev, dtype=dtype),
        class_labels=noise_level)


def _decode_call(frames: int, h: int, w: int, dtype: torch.dtype, w_lr: float = 1.0) -> Callable[[Any, torch.device], Any]:
    return lambda m, dev: m.decode(torch.zeros(1, 4, frames, h, w, device=dev, dtype=dtype),
                                   torch.zeros(1, 3, frames, h, w, device=dev, dtype=dtype), w_lr)


def estimate_memory(
    unet_config: Mapping[str, Any],
    vae_config: Mapping[str, Any],
    *,
    height: int,
    width: int,
    frames: int,
    settings: UpscaleSettings | None = None,
    unet_dtype: torch.dtype = torch.float16,
    vae_dtype: torch.dtype = torch.float32,
    text_encoder_params: int = 0,
    offload: bool | None = None,
    placement: Placement | None = None,
    registry: Any = None,
    published: bool = False,
) -> MemoryEstimate:
    """Predict the peak GPU memory of upscaling a ``frames``-long ``width`` x ``height``
    clip with ``settings``, on the CPU (seconds for the first call per release and dtype,
    then instant; nothing is allocated).

    Args:
        unet_config, vae_config: the release's network configs (``unet_video_config.json``,
            ``vae_3d_config.json`` / ``vae_video_config.json``).
        unet_dtype, vae_dtype: as the run loads them (:func:`uav.upscaler.default_dtypes`).
        text_encoder_params: parameters of the text encoder (loaded in ``unet_dtype``).
        offload: where the clip-length state lives; ``None``: ``settings.offload``, and
            on (the default on CUDA) when that is unset.
        placement: where the networks wait while unused (default: all on the device).
        registry: the plugin registry the tiling strategy comes from.
        published: trace the published block structure (see :func:`network_costs`).
    """
    costs = network_costs(unet_config, vae_config, unet_dtype=unet_dtype, vae_dtype=vae_dtype, published=published)
    s = settings or UpscaleSettings()
    unet_shape, decode_shape = run_shapes(height, width, frames, s, registry)
    te_bytes = text_encoder_params * torch.finfo(unet_dtype).bits / 8
    on_host = offload if offload is not None else (s.offload if s.offload is not None else True)
    clip_state = 0.0 if on_host else frames * height * width * CLIP_STATE_BYTES / GIB
    b, _, t, th, tw = unet_shape
    _, _, c, dh, dw = decode_shape
    return assemble_estimate(costs, te_bytes, placement or Placement(), clip_state,
                             costs.unet_activations(b, t, th, tw) / GIB, costs.decode_activations(c, dh, dw) / GIB,
                             {"unet": unet_shape, "decode": decode_shape},
                             window_gib=costs.unet_activations(b // s.window_batch, t, th, tw) / GIB)


def run_shapes(height: int, width: int, frames: int, s: UpscaleSettings,
               registry: Any = None) -> tuple[list[int], list[int]]:
    """The largest U-Net call ``(B, 4, T, h, w)`` and decode piece ``(1, 4, t, h, w)`` of a run."""
    unet_regions, decode_regions = tile_regions(height, width, s, registry)
    th, tw = max(unet_regions, key=lambda hw: hw[0] * hw[1])
    dh, dw = max(decode_regions, key=lambda hw: hw[0] * hw[1])
    if s.decode_tile:
        dh, dw = min(dh, s.decode_tile), min(dw, s.decode_tile)
    batch = (2 if s.do_classifier_free_guidance else 1) * s.window_batch
    return [batch, 4, min(s.window, frames), th, tw], [1, 4, min(s.decode_chunk, frames), dh, dw]


def tile_regions(height: int, width: int, s: UpscaleSettings,
                 registry: Any = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The ``(h, w)`` of every region one U-Net call and one decode cover, as
    :func:`uav.pipeline.generate` cuts the frame (pipeline tiles; latent tiles for the U-Net
    and whole frames for the decoder in ``tile_mode="latent"``)."""
    frame = [(height, width)]
    if not (s.tile if s.tile is not None else height * width >= s.tile_threshold):
        return frame, frame
    tiles = _plan_regions(registry, s.tiling, height, width, s.tile_size, s.tile_overlap)
    if s.tile_mode == "latent" and len(tiles) > 1:
        return tiles, frame
    return tiles, tiles


@functools.lru_cache(maxsize=1024)
def _plan_regions(registry: Any, tiling: str, height: int, width: int, size: int, overlap: int) -> list[tuple[int, int]]:
    from uav.components import build

    # regions do not depend on the scale: plan at 1 (no output-size weights to build)
    plan = build("tiling", tiling, registry).plan(height, width, tile_size=size, overlap=overlap, scale=1)
    return [(t.region[1] - t.region[0], t.region[3] - t.region[2]) for t in plan]


def assemble_estimate(costs: NetworkCosts, te_bytes: float, placement: Placement, clip_state_gib: float,
                      denoise_gib: float, decode_gib: float, shapes: dict[str, list[int]],
                      window_gib: float = 0.0) -> MemoryEstimate:
    """A :class:`MemoryEstimate` from the stages' working sets and where the weights wait
    (``window_gib``: one U-Net call of one window)."""
    weights = {"unet": costs.unet_bytes / GIB, "vae": costs.vae_bytes / GIB}
    if te_bytes:
        weights["text_encoder"] = te_bytes / GIB
    te = weights.get("text_encoder", 0.0) if placement.text_encoder == "device" else 0.0
    unet = weights["unet"] if placement.unet == "device" else blocks_resident(costs) / GIB
    swapped = placement.vae == "host"
    resident = {"denoise": unet + te + (0.0 if swapped else weights["vae"]),
                "decode": weights["vae"] + te + (0.0 if swapped else unet)}
    den, dec = resident["denoise"] + denoise_gib, resident["decode"] + decode_gib
    return MemoryEstimate(weights_gib=weights, denoise_gib=denoise_gib, decode_gib=decode_gib,
                          clip_state_gib=clip_state_gib, peak_gib=clip_state_gib + max(den, dec),
                          peak_stage="denoise" if den >= dec else "decode", shapes=shapes, resident_gib=resident,
                          placement=placement.to_dict(), window_gib=window_gib)


def blocks_resident(costs: NetworkCosts) -> float:
    """Bytes block offload keeps on the device: the U-Net's small parts and its two largest blocks
    (the running one and the next, being prefetched)."""
    blocks = sorted(costs.unet_block_bytes, reverse=True)
    return costs.unet_bytes - sum(blocks) + sum(blocks[:2])


@dataclass
class _Traced:
    params: int
    #: ``(FLOPs, peak bytes)`` of each call
    calls: list[tuple[float, int]]
    blocks: tuple[int, ...] = ()
    #: each call's ``(batch bytes, item bytes)`` after every allocation (:class:`_LiveBytes`)
    points: list[list[tuple[int, int]]] = field(default_factory=list)


def _trace(cls: Any, config: Mapping[str, Any], dtype: torch.dtype,
           calls: list[Callable[[Any, torch.device], Any]], *, blocks: bool = False,
           published: bool = False) -> _Traced:
    """Build ``cls`` on fake tensors once and trace each call (FLOPs and peak bytes)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from uav.models.layers import published_structure

    device = torch.device("cuda", 0)
    results = []
    points = []
    attention_flops = [0.0]
    structure = published_structure() if published else contextlib.nullcontext()
    with FakeTensorMode(allow_non_fake_inputs=True), _fused_attention(attention_flops), _default_dtype(dtype), \
            structure:
        with device:
            model = cls.from_config(dict(config))
        model.eval()
        for call in calls:
            attention_flops[0] = 0.0
            tracker = _LiveBytes(device)
            # the tracker on top: the flop counter's own work below it is not counted as the network's
            with FlopCounterMode(display=False) as counter, tracker, torch.no_grad():
                call(model, device)
            results.append((float(counter.get_total_flops()) + attention_flops[0], tracker.peak))
            points.append(tracker.points)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    parts: tuple[int, ...] = ()
    if blocks:
        from uav.offload import offload_blocks

        parts = tuple(sum(p.numel() * p.element_size() for p in b.parameters()) for b in offload_blocks(model))
    return _Traced(params, results, parts, points)


def traced_working_set(cls: Any, config: Mapping[str, Any], dtype: torch.dtype,
                       call: Callable[[Any, torch.device], Any]) -> tuple[int, int]:
    """``(parameter bytes, peak bytes of the tensors the call creates)`` of ``call(model,
    device)`` on a fake-tensor ``cls`` built from ``config`` in ``dtype``, with fused attention."""
    traced = _trace(cls, config, dtype, [call])
    return traced.params, traced.calls[0][1]


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages alive on ``device`` that ops created under this mode, and their peak.

    A storage counts once however many tensors view it, and stops counting when the last
    of them is gone (the same bookkeeping as ``torch.distributed._tools.mem_tracker``,
    without its per-module hooks, which made a trace 10x slower).

    Storages made while a block works on one batch item
    (:func:`uav.models.batching.allocation_class`) are counted apart (``item``): they do not
    grow with the batch. ``points`` holds
    ``(batch bytes, item bytes)`` after every allocation; an item's storage that outlives
    its item would break that split, and raises.
    """

    def __init__(self, device: torch.device) -> None:
        from uav.models.batching import allocation_class

        super().__init__()
        self.device = device
        self.live = 0
        self.peak = 0
        self.item = 0
        self.points: list[tuple[int, int]] = []
        self._class = allocation_class
        self._refs: dict[int, int] = {}
        self._item_keys: set[int] = set()
        # by id: an in-place op hands back a tensor already counted, and a WeakSet would
        # compare tensors with ``==`` to find it
        self._seen: dict[int, weakref.ref[torch.Tensor]] = {}

    def _release(self, key: int, nbytes: int, tensor_id: int) -> None:
        self._seen.pop(tensor_id, None)
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= nbytes
            if key in self._item_keys:
                self._item_keys.discard(key)
                self.item -= nbytes

    def _allocated(self, key: int, nbytes: int) -> None:
        self._refs[key] = 0
        self.live += nbytes
        kind = self._class()
        if kind == "item":
            self._item_keys.add(key)
            self.item += nbytes
        elif kind == "batch" and self.item:
            raise RuntimeError(f"memory trace: {self.item} bytes made for one batch item outlived it")
        self.peak = max(self.peak, self.live)
        self.points.append((self.live - self.item, self.item))

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_iter(out):
            if not isinstance(t, torch.Tensor) or t.device != self.device:
                continue
            seen = self._seen.get(id(t))
            if seen is None or seen() is not t:
                storage = t.untyped_storage()
                key, nbytes = storage._cdata, storage.nbytes()
                self._seen[id(t)] = weakref.ref(t)
                if key not in self._refs:
                    self._allocated(key, nbytes)
                self._refs[key] += 1
                weakref.finalize(t, self._release, key, nbytes, id(t))
        return out


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    # building in the target dtype: casting fake parameters afterwards is refused
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextlib.contextmanager
def _fused_attention(flops: list[float] | None = None) -> Iterator[None]:
    """SDPA as a fused kernel keeps it: only the output (a fake GPU cannot pick a kernel).
    ``flops[0]`` adds up its work (two matmuls), which the flop counter no longer sees."""
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention

    def fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if flops is not None:
            flops[0] += 2.0 * math.prod(query.shape) * key.shape[-2] + 2.0 * math.prod(query.shape[:-1]) * \
                key.shape[-2] * value.shape[-1]
        return query.new_empty(query.shape[:-1] + value.shape[-1:])

    F.scaled_dot_product_attention = fused  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real  # type: ignore[assignment]
