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
traced ones are the calibration factors below, from three U-Net and four decoder cases.
Activations grow linearly with batch x frames x area (the traces at 192x352 and 270x480
scale exactly), so the advice for smaller tiles scales the traced numbers.

With ``offload`` (the default on CUDA) the clip-length state lives on the host and the
GPU holds the weights plus one U-Net call or one decode piece at a time, so the peak
does not depend on the clip's length.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_iter

from uav.settings import UpscaleSettings

__all__ = ["DECODE_CALIBRATION", "UNET_CALIBRATION", "MemoryEstimate", "estimate_memory", "traced_working_set"]

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
class MemoryEstimate:
    """Predicted GPU memory of a run, in GiB.

    ``peak_gib`` = weights + clip state + the larger of ``denoise_gib`` (one U-Net call)
    and ``decode_gib`` (one decode piece); ``peak_stage`` says which.
    """

    weights_gib: dict[str, float]
    denoise_gib: float
    decode_gib: float
    clip_state_gib: float
    peak_gib: float
    peak_stage: str
    #: the traced shapes: ``unet`` (B, C, T, h, w) and ``decode`` latents (1, 4, t, h, w)
    shapes: dict[str, list[int]] = field(default_factory=dict)

    def fits(self, card_gib: float) -> bool:
        """Whether the predicted peak fits a card with ``card_gib`` GiB."""
        return self.peak_gib <= card_gib

    def to_dict(self) -> dict[str, Any]:
        # GiB to the KiB: tiny test networks stay visible
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()} | {
            "weights_gib": {k: round(v, 6) for k, v in self.weights_gib.items()}}

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
        budget = card_gib - weights
        b, _, _, h, w = self.shapes["unet"]
        if self.denoise_gib > budget:
            per_px = self.denoise_gib / (h * w)
            if b > 2:  # one window per call (both halves of guidance)
                per_px = per_px * 2 / b
                out.append(f"--window-batch 1 (one U-Net call: about {per_px * h * w:.1f} GiB)")
            side = _largest_side(per_px, budget, max(h, w)) if per_px * h * w > budget else None
            if side:
                out.append(f"--tile-mode latent --tile-size {side} (one U-Net call: about {per_px * side * side:.1f} "
                           "GiB)")
        _, _, t, dh, dw = self.shapes["decode"]
        if self.decode_gib > budget:
            per_px = self.decode_gib / (t * dh * dw)
            if t > 1:
                out.append(f"--decode-chunk 1 (one decode piece: about {per_px * dh * dw:.1f} GiB)")
            side = _largest_side(per_px, budget, max(dh, dw)) if per_px * dh * dw > budget else None
            if side:
                out.append(f"--decode-chunk 1 --decode-tile {side} (one decode piece: about "
                           f"{per_px * side * side:.1f} GiB)")
        if not out or weights >= card_gib:
            out.append(f"a card with more memory: the weights alone take {weights:.1f} GiB")
        return out


def _largest_side(per_px: float, budget: float, current: int) -> int | None:
    """The largest tile side (a multiple of 64, at least 64, below ``current``) whose working set fits."""
    side = min(current - 1, int(math.sqrt(max(budget, 0.0) / per_px))) // 64 * 64 if per_px > 0 else 0
    return side if side >= 64 else None


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
    registry: Any = None,
) -> MemoryEstimate:
    """Predict the peak GPU memory of upscaling a ``frames``-long ``width`` x ``height``
    clip with ``settings``, on the CPU (seconds; nothing is allocated).

    Args:
        unet_config, vae_config: the release's network configs (``unet_video_config.json``,
            ``vae_3d_config.json`` / ``vae_video_config.json``).
        unet_dtype, vae_dtype: as the run loads them (:func:`uav.upscaler.default_dtypes`).
        text_encoder_params: parameters of the text encoder (loaded in ``unet_dtype``).
        offload: where the clip-length state lives; ``None``: ``settings.offload``, and
            on (the default on CUDA) when that is unset.
        registry: the plugin registry the tiling strategy comes from.
    """
    from uav.models import AutoencoderKLVideo, UNetVideoModel
    from uav.pipeline import spatial_tiles

    s = settings or UpscaleSettings()
    if registry is None:
        from uav.registry import default_registry

        registry = default_registry()
    strategy = registry.get("tiling", s.tiling)
    scale = 4
    tiles = spatial_tiles(height, width, s, strategy, scale)
    unet_tiles = tiles
    if s.tile_mode == "latent" and len(tiles) > 1:
        unet_tiles = strategy.plan(height, width, tile_size=s.tile_size, overlap=s.tile_overlap, scale=1)
        tiles = spatial_tiles(height, width, s.replace(tile=False), strategy, scale)
    th, tw = _largest(unet_tiles)
    dh, dw = _largest(tiles)
    if s.decode_tile:
        dh, dw = min(dh, s.decode_tile), min(dw, s.decode_tile)
    batch = (2 if s.do_classifier_free_guidance else 1) * s.window_batch
    window = min(s.window, frames)
    chunk = min(s.decode_chunk, frames)

    unet, unet_act = traced_working_set(UNetVideoModel, unet_config, unet_dtype, lambda m, dev: m(
        torch.zeros(batch, 4, window, th, tw, device=dev, dtype=unet_dtype), 500,
        torch.zeros(batch, 3, window, th, tw, device=dev, dtype=unet_dtype),
        encoder_hidden_states=torch.zeros(batch, 77, m.config.cross_attention_dim, device=dev, dtype=unet_dtype),
        class_labels=torch.full((batch,), s.noise_level)))
    vae, vae_act = traced_working_set(AutoencoderKLVideo, vae_config, vae_dtype, lambda m, dev: m.decode(
        torch.zeros(1, 4, chunk, dh, dw, device=dev, dtype=vae_dtype),
        torch.zeros(1, 3, chunk, dh, dw, device=dev, dtype=vae_dtype), s.w_lr))
    weights = {"unet": unet / GIB, "vae": vae / GIB}
    if text_encoder_params:
        weights["text_encoder"] = text_encoder_params * torch.finfo(unet_dtype).bits / 8 / GIB
    on_host = offload if offload is not None else (s.offload if s.offload is not None else True)
    clip_state = 0.0 if on_host else frames * height * width * CLIP_STATE_BYTES / GIB
    denoise = unet_act * UNET_CALIBRATION / GIB
    decode = vae_act * DECODE_CALIBRATION / GIB
    stage = "denoise" if denoise >= decode else "decode"
    return MemoryEstimate(weights_gib=weights, denoise_gib=denoise, decode_gib=decode, clip_state_gib=clip_state,
                          peak_gib=sum(weights.values()) + clip_state + max(denoise, decode), peak_stage=stage,
                          shapes={"unet": [batch, 4, window, th, tw], "decode": [1, 4, chunk, dh, dw]})


def _largest(tiles: Any) -> tuple[int, int]:
    sizes = [(t.region[1] - t.region[0], t.region[3] - t.region[2]) for t in tiles]
    return max(sizes, key=lambda hw: hw[0] * hw[1])


def traced_working_set(cls: Any, config: Mapping[str, Any], dtype: torch.dtype,
                       call: Callable[[Any, torch.device], Any]) -> tuple[int, int]:
    """``(parameter bytes, peak bytes of the tensors the call creates)`` of ``call(model,
    device)`` on a fake-tensor ``cls`` built from ``config`` in ``dtype``, with fused attention."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    device = torch.device("cuda", 0)
    with FakeTensorMode(allow_non_fake_inputs=True), _fused_attention(), _default_dtype(dtype):
        with device:
            model = cls.from_config(dict(config))
        model.eval()
        tracker = _LiveBytes(device)
        with tracker, torch.no_grad():
            call(model, device)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return params, tracker.peak


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages alive on ``device`` that ops created under this mode, and their peak.

    A storage counts once however many tensors view it, and stops counting when the last
    of them is gone (the same bookkeeping as ``torch.distributed._tools.mem_tracker``,
    without its per-module hooks, which made a trace 10x slower).
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = {}
        # ids, not a WeakSet: an in-place op returns a tensor already seen, and a WeakSet would
        # compare two live tensors with == (elementwise) to find it
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int, tensor_id: int) -> None:
        self._seen.discard(tensor_id)
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_iter(out):
            if isinstance(t, torch.Tensor) and t.device == self.device and id(t) not in self._seen:
                storage = t.untyped_storage()
                key, nbytes = storage._cdata, storage.nbytes()
                self._seen.add(id(t))
                if key not in self._refs:
                    self._refs[key] = 0
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
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
def _fused_attention() -> Iterator[None]:
    """SDPA as a fused kernel keeps it: only the output (a fake GPU cannot pick a kernel)."""
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention

    def fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return query.new_empty(query.shape[:-1] + value.shape[-1:])

    F.scaled_dot_product_attention = fused  # type: ignore[assignment]
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real  # type: ignore[assignment]
