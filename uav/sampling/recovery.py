"""Recovery from GPU faults during denoising and decoding: out of memory and non-finite values.

**Out of memory** (``torch.OutOfMemoryError``): the failing call is retried with a smaller
setting, one step at a time, in this order (see docs/reliability.md):

Decode (per chunk; already decoded frames are kept):
  1. halve ``decode_chunk`` down to 1 (changes the numbers slightly: GroupNorm and the 3-D
     convolutions see fewer frames);
  2. then decode in spatial tiles (``decode_tile``), halving them down to
     :data:`MIN_DECODE_TILE` (changes the numbers slightly: attention sees one tile).

Denoise (per pipeline tile):
  1. halve ``window_batch`` down to 1, in place, no step is lost (numbers unchanged);
  2. then split every U-Net call into overlapping latent tiles (``tile_mode="latent"``),
     halving them down to :data:`MIN_LATENT_TILE`; the tile's denoising restarts from its
     first step with the random generator rewound (changes the numbers slightly).

The policy is logged once; every step is reported to the progress callback as
``{"stage": "recovery", "event": "out_of_memory", ...}``. When the smallest setting does not
fit, :class:`GPUMemoryError` (a ``ValueError``: a user error, exit 2 in the CLI) says so on
one line with the memory model's advice.

**Non-finite values**: in fp16 runs every U-Net group's output and every decode chunk is
checked with one ``isfinite().all()`` reduction; a non-finite one is recomputed by a bf16
copy of the network (fp32 where the device has no bf16), built once per run, and the user
is told once. The U-Net's flag travels to the host with its prediction and is read when
the loop merges it, a group later (:mod:`uav.sampling.loop`: no sync of its own); a decode
chunk's (:meth:`Recovery.finite`, fp16 VAEs only, not the default) costs one host sync.
"""

from __future__ import annotations

import copy
import gc
import logging
from typing import Any, Callable, Sequence

import torch

from uav.events import Event
from uav.protocols import Tile

__all__ = ["Recovery", "GPUMemoryError", "NonFiniteError", "is_out_of_memory", "OUT_OF_MEMORY",
           "MIN_DECODE_TILE", "MIN_LATENT_TILE", "CHECKED_DTYPES"]

log = logging.getLogger("uav")
Tensor = torch.Tensor

#: the exceptions that mean "the accelerator ran out of memory" (one class since torch 2.5)
OUT_OF_MEMORY: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError})
#: smallest decode tile, in low-res pixels, the policy tries before giving up
MIN_DECODE_TILE = 64
#: smallest latent tile, in low-res pixels, the policy tries before giving up
MIN_LATENT_TILE = 64
#: compute dtypes whose outputs are checked for non-finite values (fp16's range is 65504)
CHECKED_DTYPES: tuple[torch.dtype, ...] = (torch.float16,)

POLICY = ("out of GPU memory: retrying with smaller settings, one step at a time (decode: halve decode_chunk "
          "to 1, then decode_tile down to {dt}; denoise: halve window_batch to 1 (same numbers), then latent "
          "tiles down to {lt}); steps other than window_batch change the numbers slightly")
ADVICE = ("see docs/performance.md (memory model: the whole-clip state costs about 27 MiB of GPU memory per "
          "frame per tile on top of ~7.5 GB): keep offload on, upscale shorter ranges (--start/--end), "
          "use --tile on with a smaller --tile-size, or --vae-dtype bf16")


class GPUMemoryError(ValueError):
    """Out of GPU memory even at the policy's smallest setting (a user error: the clip or frame is too large)."""


class NonFiniteError(ValueError):
    """A network produced NaN/inf even when recomputed in a wider dtype (the weights or inputs are at fault)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the accelerator's out-of-memory error."""
    return isinstance(exc, OUT_OF_MEMORY)


def free_memory() -> None:
    """Drop what the failed attempt left behind before the next try."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _wider_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16


class Recovery:
    """One run's fault-recovery state: the current (possibly reduced) settings and the once-only notices.

    Shared by every pipeline tile's denoising and decoding, so a reduction learnt on one
    tile is kept for the others.

    Args:
        window_batch, decode_chunk, decode_tile: the run's settings to start from.
        notify: the progress callback (receives ``stage="recovery"`` events), or ``None``.
    """

    def __init__(self, *, window_batch: int = 1, decode_chunk: int = 3, decode_tile: int | None = None,
                 notify: Callable[[Event], None] | None = None) -> None:
        self.window_batch = window_batch
        self.decode_chunk = decode_chunk
        self.decode_tile = decode_tile
        self.latent_tile: int | None = None
        self.notify = notify
        self._told: set[str] = set()
        self._wider: dict[int, torch.nn.Module] = {}

    # -------------------------------------------------------------- telling the user
    def _event(self, event: str, **info: Any) -> None:
        if self.notify is not None:
            self.notify(Event.of("recovery", event=event, **info))

    def tell_once(self, kind: str, message: str) -> None:
        """Warn (logging) once per run and kind."""
        if kind not in self._told:
            self._told.add(kind)
            log.warning("%s", message)

    def _reduced(self, setting: str, value: Any, changes_numbers: bool) -> None:
        self.tell_once("out_of_memory", POLICY.format(dt=MIN_DECODE_TILE, lt=MIN_LATENT_TILE))
        log.info("out of GPU memory: retrying with %s=%s", setting, value)
        self._event("out_of_memory", setting=setting, value=value, changes_numbers=changes_numbers)
        free_memory()

    # -------------------------------------------------------------- out of memory
    def shrink_window_batch(self, failed: int) -> None:
        """After an OOM on a group of ``failed`` windows (> 1): halve the batch."""
        self.window_batch = max(1, failed // 2)
        self._reduced("window_batch", self.window_batch, False)

    def shrink_latent_tile(self, h: int, w: int, start: int) -> int:
        """Next latent tile size after an OOM at ``window_batch=1``; raises at the floor."""
        side = max(h, w)
        size = (start if self.latent_tile is None else self.latent_tile // 2) // 8 * 8
        size = _at_least(min(size, (side - 1) // 8 * 8), MIN_LATENT_TILE,
                         f"denoising even with window_batch=1 and latent tiles of {self.latent_tile or side} px")
        self.latent_tile = size
        self._reduced("latent_tile", size, True)
        return size

    def shrink_decode(self, h: int, w: int) -> None:
        """Next decode setting after an OOM; raises :class:`GPUMemoryError` at the floor."""
        if self.decode_chunk > 1:
            self.decode_chunk = max(1, self.decode_chunk // 2)
            self._reduced("decode_chunk", self.decode_chunk, True)
            return
        side = max(h, w)
        size = ((side // 2) if self.decode_tile is None or self.decode_tile >= side else self.decode_tile // 2)
        size = _at_least(size // 8 * 8, MIN_DECODE_TILE,
                         f"decoding even with decode_chunk=1 and decode_tile={self.decode_tile or side}")
        self.decode_tile = size
        self._reduced("decode_tile", size, True)

    def denoise(self, run: Callable[[Sequence[Tile] | None], Tensor], spatial_tiles: Sequence[Tile] | None, *,
                size: tuple[int, int], start_tile: int, plan: Callable[[int], Sequence[Tile]],
                restart: Callable[[], None], generator: torch.Generator | None = None) -> Tensor:
        """Run ``run(spatial_tiles)`` (one pipeline tile's whole denoising), restarting it with
        smaller latent tiles (``plan(size)``) while it runs out of memory at ``window_batch=1``.

        ``restart`` resets the scheduler; the generator is rewound so a retry draws what the
        first try drew.
        """
        state = generator.get_state() if generator is not None else None
        tiles = spatial_tiles
        if self.latent_tile is not None:
            tiles = plan(self.latent_tile)  # learnt on an earlier pipeline tile
        while True:
            try:
                return run(tiles)
            except OUT_OF_MEMORY:
                pass  # retried outside the handler, which holds the failed call's frames
            free_memory()
            tiles = plan(self.shrink_latent_tile(*size, start=start_tile))
            if generator is not None:
                generator.set_state(state)
            restart()

    # -------------------------------------------------------------- non-finite values
    def checks(self, dtype: torch.dtype) -> bool:
        """Whether outputs computed in ``dtype`` are checked for NaN/inf."""
        return dtype in CHECKED_DTYPES

    def wider(self, net: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``net`` in bf16 (fp32 where the device lacks bf16), built once per run."""
        key = id(net)
        if key not in self._wider:
            device = next(net.parameters()).device
            wider = copy.deepcopy(net)
            for module in wider.modules():
                # a block-offloaded network's hooks move *its* blocks: the copy runs resident
                module._forward_pre_hooks.clear()
                module._forward_hooks.clear()
            self._wider[key] = wider.to(device=device, dtype=_wider_dtype(device))
        return self._wider[key]

    def finite(self, call: Callable[[torch.nn.Module], Tensor], net: torch.nn.Module, *, where: str,
               network: str) -> Tensor:
        """``call(net)``; when ``net`` runs in a checked dtype and the result holds NaN/inf,
        recomputed by :meth:`wider` (told once as ``where``).

        Raises:
            NonFiniteError: the wider copy gives NaN/inf too (``network`` names it).
        """
        out = call(net)
        if not self.checks(next(net.parameters()).dtype) or bool(torch.isfinite(out).all()):
            return out
        del out  # frees the broken result before the wider copy runs
        wider = self.wider(net)
        self.non_finite(where, next(wider.parameters()).dtype)
        out = call(wider)
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteError(f"the {network} gives NaN/inf even in a wider dtype: the weights or inputs are broken "
                                 "(try `uav weights verify`)")
        return out

    def non_finite(self, where: str, dtype: torch.dtype) -> None:
        """Tell the user (once per run) that a non-finite result is being recomputed."""
        if "non_finite" in self._told:
            return
        wider = "bf16" if dtype == torch.bfloat16 else "fp32"
        self.tell_once("non_finite", f"non-finite values (fp16 overflow) in the {where}; recomputing the affected "
                                     f"windows/chunks in {wider} (reported once)")
        self._event("non_finite", where=where, dtype=wider)


def _at_least(size: int, floor: int, tried: str) -> int:
    """``size`` when it is at least ``floor``; otherwise the run is out of ways to save memory."""
    if size < floor:
        raise GPUMemoryError(f"out of GPU memory while {tried} (the smallest tried); {ADVICE}")
    return size
