"""Settings chosen for the card: the memory model picks what shapes a run's memory.

Before a run loads anything, :func:`plan_memory` takes the GPU memory it may use
(:attr:`~uav.settings.UpscaleSettings.memory`: GiB, or ``auto`` = the device's free
memory; on a CPU no budget, so the published settings) and chooses, from the memory
model's per-pixel working sets (:func:`uav.memory.network_costs`):

* ``window_batch``: the most windows per U-Net call that fit (same numbers, fewer calls);
* where the text encoder, the VAE and the U-Net's blocks wait while unused
  (:class:`~uav.memory.Placement`; same numbers);
* when one U-Net call of the published tiling does not fit: latent MultiDiffusion tiles
  (``tile_mode="latent"``, ``tiling="feather"``, an eighth of a tile's side overlapping)
  nearly as large as fit (at least :data:`LARGE_TILE` of the largest: the fastest grid);
* when one decode piece does not fit: a shorter ``decode_chunk``, then ``decode_tile``.

The predicted peak stays within :data:`HEADROOM` of the budget: the other 10 % cover the
model's error (within 4 % on the H200 measurements) and the allocator's fragmentation.
Settings the user gave (:attr:`UpscaleSettings.given`) are never changed, and among the
plans that fit, the one closest to the published numerics wins, then the fastest by the
throughput model of :mod:`uav.memory_cost`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch

from uav.components import registry_or_default
from uav.memory import (CLIP_STATE_BYTES, GIB, MemoryEstimate, NetworkCosts, Placement, assemble_estimate,
                        network_costs, run_shapes)
from uav.memory_cost import predicted_seconds, unet_seconds, window_count
from uav.settings import MEMORY_FIELDS, UpscaleSettings

__all__ = ["HEADROOM", "MAX_WINDOW_BATCH", "Budget", "MemoryPlan", "plan_memory", "plan_for_configs",
           "resolve_budget", "settings_by_hand"]

log = logging.getLogger("uav")

#: the predicted peak a plan allows, as a fraction of the budget
HEADROOM = 0.9
#: more windows per call save under 3 % more (the per-call cost is amortised; docs/performance.md)
MAX_WINDOW_BATCH = 8
#: latent and decode tile sides are multiples of this (the U-Net downsamples three times)
TILE_STEP = 8
#: the smallest tiles a plan uses, in latent pixels
MIN_TILE = 32
#: latent tiles are at least this fraction of the largest side that fits (the fastest of them wins)
LARGE_TILE = 0.5
#: the tiling fields a plan changes together (any one given keeps the user's tiling)
TILING_FIELDS = ("tile", "tiling", "tile_mode", "tile_size", "tile_overlap")
#: each step down the placements must win this much predicted time (moves have costs the model does not see)
MOVE_PENALTY = 0.02
#: placements to try, least movement first
PLACEMENTS = (Placement(), Placement(text_encoder="host"), Placement(text_encoder="host", vae="host"),
              Placement(text_encoder="host", vae="host", unet="blocks"))


@dataclass(frozen=True)
class Budget:
    """The GPU memory a run may use: ``gib`` (``None``: no GPU budget) and where it came from."""

    gib: float | None
    source: str

    @property
    def limit_gib(self) -> float | None:
        """The peak a plan may predict: :data:`HEADROOM` of the budget."""
        return None if self.gib is None else HEADROOM * self.gib


def resolve_budget(memory: str | float, device: torch.device | str | None = None, *,
                   own_bytes: int = 0) -> Budget:
    """The :class:`Budget` of ``memory`` (``"auto"`` or GiB) on ``device``.

    ``auto`` on CUDA is the device's free memory plus ``own_bytes`` (uav's networks already
    on it, which the plan counts itself); elsewhere there is no GPU budget.
    """
    if memory != "auto":
        return Budget(float(memory), f"memory={float(memory):g} GiB")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cuda":
        return Budget(None, f"{dev.type}: no GPU memory budget, the published settings")
    free, _ = torch.cuda.mem_get_info(dev)
    own = f" + {own_bytes / GIB:.1f} GiB of uav's networks on it" if own_bytes else ""
    return Budget((free + own_bytes) / GIB, f"{dev}: {free / GIB:.1f} GiB free{own}")


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`plan_memory` chose for one clip on one budget.

    Attributes:
        settings: the run's settings, with the chosen memory fields filled in (they count
            as given, so planning them again changes nothing).
        placement: where the networks wait while unused.
        estimate: the predicted GPU memory of ``settings`` with ``placement`` (``None``
            without a budget: nothing was predicted).
        fits: whether the predicted peak is within :attr:`Budget.limit_gib`.
        changed: the ``chosen`` keys whose value differs from a run without a budget (the
            settings as given, all networks resident).
        throughput_cost: predicted run time / the time with unlimited memory, minus 1.
        notes: what the plan could not do (a given setting that does not fit ...).
    """

    settings: UpscaleSettings
    budget: Budget
    placement: Placement = field(default_factory=Placement)
    estimate: MemoryEstimate | None = None
    fits: bool = True
    changed: tuple[str, ...] = ()
    throughput_cost: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def chosen(self) -> dict[str, Any]:
        """The memory-shaping settings the run uses and where the networks wait."""
        out: dict[str, Any] = {name: getattr(self.settings, name) for name in MEMORY_FIELDS}
        return out | {f"{k}_placement": v for k, v in self.placement.to_dict().items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the ``--json`` summaries."""
        return {"budget_gib": None if self.budget.gib is None else round(self.budget.gib, 3),
                "limit_gib": None if self.budget.limit_gib is None else round(self.budget.limit_gib, 3),
                "source": self.budget.source, "fits": self.fits, "chosen": self.chosen, "changed": list(self.changed),
                "predicted_peak_gib": None if self.estimate is None else round(self.estimate.peak_gib, 4),
                "throughput_cost": None if self.throughput_cost is None else round(self.throughput_cost, 4),
                "estimate": None if self.estimate is None else self.estimate.to_dict(), "notes": list(self.notes)}

    def describe(self) -> str:
        """One line for the log and the console."""
        if self.budget.gib is None:
            return f"memory: {self.budget.source}"
        changes = ", ".join(f"{k}={self.chosen[k]}" for k in self.changed) or "nothing changed"
        peak = "" if self.estimate is None else f"; predicted peak {_gib(self.estimate.peak_gib)} GiB"
        cost = "" if self.throughput_cost is None else f", {100 * self.throughput_cost:+.0f} % time vs unlimited memory"
        verdict = "" if self.fits else " (DOES NOT FIT: " + "; ".join(self.notes) + ")"
        return (f"memory: {_gib(self.budget.gib)} GiB ({self.budget.source}), limit "
                f"{_gib(self.budget.limit_gib or 0.0)} GiB: {changes}{peak}{cost}{verdict}")


def _gib(value: float) -> str:
    # tenths for cards, three digits for the tiny test networks
    return f"{value:.1f}" if value >= 1 else f"{value:.3g}"


def plan_for_configs(unet_config: Mapping[str, Any], vae_config: Mapping[str, Any], *, height: int, width: int,
                     frames: int, settings: UpscaleSettings, budget: Budget, unet_dtype: torch.dtype = torch.float16,
                     vae_dtype: torch.dtype = torch.float32, text_encoder_params: int = 0,
                     registry: Any = None) -> MemoryPlan:
    """:func:`plan_memory` for a release's configs (traced once per process and dtype; nothing
    is traced without a budget)."""
    if budget.gib is None:
        return MemoryPlan(settings=settings, budget=budget)
    costs = network_costs(unet_config, vae_config, unet_dtype=unet_dtype, vae_dtype=vae_dtype)
    te_bytes = text_encoder_params * torch.finfo(unet_dtype).bits // 8
    return plan_memory(costs, height=height, width=width, frames=frames, settings=settings, budget=budget,
                       text_encoder_bytes=te_bytes, registry=registry)


@dataclass(frozen=True)
class _Problem:
    costs: NetworkCosts
    height: int
    width: int
    frames: int
    settings: UpscaleSettings
    te_bytes: int
    registry: Any


@dataclass(frozen=True)
class _Candidate:
    changes: dict[str, Any]
    placement: Placement
    estimate: MemoryEstimate
    rank: int
    seconds: float


def plan_memory(costs: NetworkCosts, *, height: int, width: int, frames: int, settings: UpscaleSettings,
                budget: Budget, text_encoder_bytes: int = 0, registry: Any = None) -> MemoryPlan:
    """Choose the memory-shaping settings of upscaling a ``frames``-long ``width`` x ``height``
    clip within ``budget`` (see the module docstring for the order of preference)."""
    p = _Problem(costs, height, width, frames, settings, text_encoder_bytes, registry_or_default(registry))
    if budget.gib is None:
        return MemoryPlan(settings=settings, budget=budget)
    limit = budget.limit_gib or 0.0
    fitting = [c for c in _candidates(p, limit) if c.estimate.peak_gib <= limit]
    reference = _unlimited(p)
    if fitting:
        best = min(fitting, key=lambda c: (c.rank, c.seconds * (1 + MOVE_PENALTY * PLACEMENTS.index(c.placement))))
        notes: tuple[str, ...] = ()
    else:
        best, notes = _fallback(p, limit)
    chosen = settings.replace(**best.changes) if best.changes else settings
    return MemoryPlan(settings=chosen, budget=budget, placement=best.placement, estimate=best.estimate,
                      fits=bool(fitting), changed=_changed(chosen, best.placement, settings),
                      throughput_cost=best.seconds / reference.seconds - 1.0, notes=notes)


def _changed(chosen: UpscaleSettings, placement: Placement, original: UpscaleSettings) -> tuple[str, ...]:
    """The ``chosen`` keys that differ from the run without a budget (the settings as given)."""
    keys = [name for name in MEMORY_FIELDS if getattr(chosen, name) != getattr(original, name)]
    keys += [f"{k}_placement" for k, v in placement.to_dict().items() if v != getattr(Placement(), k)]
    return tuple(keys)


def _unlimited(p: _Problem) -> _Candidate:
    """What the run would be with unlimited memory: the published settings, the most windows per call."""
    changes = {} if "window_batch" in p.settings.given else {"window_batch": _window_cap(p)}
    return _evaluate(p, changes, Placement(), rank=0)


def _candidates(p: _Problem, limit: float) -> Iterator[_Candidate]:
    for placement in PLACEMENTS:
        for den_changes, den_rank in _denoise_options(p, placement, limit):
            s = _apply(p.settings, den_changes)
            for dec_changes, dec_rank in _decode_options(p, s, placement, limit):
                yield _evaluate(p, den_changes | dec_changes, placement, den_rank + dec_rank)


def _apply(s: UpscaleSettings, changes: dict[str, Any]) -> UpscaleSettings:
    return s.replace(**changes) if changes else s


def _evaluate(p: _Problem, changes: dict[str, Any], placement: Placement, rank: int) -> _Candidate:
    s = _apply(p.settings, changes)
    estimate = _estimate(p, s, placement)
    return _Candidate(changes, placement, estimate, rank, predicted_seconds(p.costs, s, placement, height=p.height,
                                                                            width=p.width, frames=p.frames,
                                                                            te_bytes=p.te_bytes, registry=p.registry))


def _estimate(p: _Problem, s: UpscaleSettings, placement: Placement) -> MemoryEstimate:
    unet_shape, decode_shape = run_shapes(p.height, p.width, p.frames, s, p.registry)
    b, _, t, th, tw = unet_shape
    _, _, c, dh, dw = decode_shape
    # the clip-length state stays on the host unless the user keeps it on the device
    clip = p.frames * p.height * p.width * CLIP_STATE_BYTES / GIB if s.offload is False else 0.0
    return assemble_estimate(p.costs, p.te_bytes, placement, clip, p.costs.unet_activations(b, t, th, tw) / GIB,
                             p.costs.decode_activations(c, dh, dw) / GIB, {"unet": unet_shape, "decode": decode_shape},
                             window_gib=p.costs.unet_activations(b // s.window_batch, t, th, tw) / GIB)


def _resident(p: _Problem, placement: Placement, stage: str) -> float:
    est = assemble_estimate(p.costs, p.te_bytes, placement, 0.0, 0.0, 0.0, {})
    return est.resident_gib[stage]


def _window_cap(p: _Problem) -> int:
    return max(1, min(MAX_WINDOW_BATCH, window_count(p.registry, p.settings.segments, p.frames, p.settings.window)))


def _denoise_options(p: _Problem, placement: Placement, limit: float) -> Iterator[tuple[dict[str, Any], int]]:
    """The denoising settings that fit, least change first: the given/published tiling with
    the most windows per call, else latent tiles of the largest size that fits."""
    s, given = p.settings, p.settings.given
    budget = (limit - _resident(p, placement, "denoise")) * GIB
    cfg = 2 if s.do_classifier_free_guidance else 1
    frames = min(s.window, p.frames)
    unet_shape, _ = run_shapes(p.height, p.width, p.frames, s.replace(window_batch=1), p.registry)
    th, tw = unet_shape[3:]
    wb = _most_windows(p, budget, cfg, frames, th * tw)
    if wb is not None:
        yield ({} if "window_batch" in given else {"window_batch": wb}), 0
        return
    if given & set(TILING_FIELDS):
        return
    options = []
    sides = _tile_sides(lambda a: p.costs.unet_activations(cfg * _given_batch(s), frames, *a) <= budget,
                        p.height, p.width)
    for side in (x for x in sides if x >= LARGE_TILE * sides[0]):
        wb = _most_windows(p, budget, cfg, frames, min(side, p.height) * min(side, p.width)) or 1
        change = _latent_tiles(side) | ({} if "window_batch" in given else {"window_batch": wb})
        seconds = unet_seconds(p.costs, _apply(s, change), placement, height=p.height, width=p.width,
                               frames=p.frames, registry=p.registry)
        options.append((seconds, -side, change))
    if options:
        # large tiles see the most of the frame; among them the fastest (overlaps are recomputed)
        yield min(options, key=lambda o: o[:2])[2], 1


def _latent_tiles(side: int) -> dict[str, Any]:
    return {"tile": True, "tile_mode": "latent", "tiling": "feather", "tile_size": side,
            "tile_overlap": max(2 * TILE_STEP, side // 8 // TILE_STEP * TILE_STEP)}


def _given_batch(s: UpscaleSettings) -> int:
    return s.window_batch if "window_batch" in s.given else 1


def _most_windows(p: _Problem, budget: float, cfg: int, frames: int, area: int) -> int | None:
    s = p.settings
    choices = [s.window_batch] if "window_batch" in s.given else range(_window_cap(p), 0, -1)
    for wb in choices:
        if p.costs.unet_activations(cfg * wb, frames, area, 1) <= budget:
            return wb
    return None


def _tile_sides(fits: Any, height: int, width: int) -> list[int]:
    """Tile sides (multiples of :data:`TILE_STEP`, at least :data:`MIN_TILE`, below the
    frame's longer side) whose ``(min(side, h), min(side, w))`` area fits, largest first."""
    top = (max(height, width) - 1) // TILE_STEP * TILE_STEP
    return [side for side in range(top, MIN_TILE - 1, -TILE_STEP) if fits((min(side, height), min(side, width)))]


def _decode_options(p: _Problem, s: UpscaleSettings, placement: Placement,
                    limit: float) -> Iterator[tuple[dict[str, Any], int]]:
    """The decode settings that fit, least change first: the given/published chunk, shorter
    chunks, then spatial decode tiles at one frame per piece."""
    given = s.given
    budget = (limit - _resident(p, placement, "decode")) * GIB
    _, decode_shape = run_shapes(p.height, p.width, p.frames, s.replace(decode_tile=None), p.registry)
    dh, dw = decode_shape[3:]
    if "decode_tile" in given and s.decode_tile:
        dh, dw = min(dh, s.decode_tile), min(dw, s.decode_tile)
    chunks = [s.decode_chunk] if "decode_chunk" in given else \
        list(range(min(s.decode_chunk, p.frames), s.decode_overlap, -1))
    for rank, chunk in enumerate(chunks):
        if p.costs.decode_activations(chunk, dh, dw) <= budget:
            yield ({} if "decode_chunk" in given else {"decode_chunk": chunk}), rank
            return
    if "decode_tile" in given:
        return
    chunk = chunks[-1]
    sides = _tile_sides(lambda a: p.costs.decode_activations(chunk, *a) <= budget, dh, dw)
    if sides:
        yield ({} if "decode_chunk" in given else {"decode_chunk": chunk}) | {"decode_tile": sides[0]}, len(chunks) + 1


def _fallback(p: _Problem, limit: float) -> tuple[_Candidate, tuple[str, ...]]:
    """Nothing fits: the smallest settings the plan may choose, and why they are not enough."""
    s, given = p.settings, p.settings.given
    changes: dict[str, Any] = {}
    if not given & set(TILING_FIELDS):
        changes |= _latent_tiles(MIN_TILE)
    if "window_batch" not in given:
        changes["window_batch"] = 1
    if "decode_chunk" not in given:
        changes["decode_chunk"] = 1
    if "decode_tile" not in given:
        changes["decode_tile"] = MIN_TILE
    best = _evaluate(p, changes, PLACEMENTS[-1], rank=99)
    weights = sum(best.estimate.weights_gib.values())
    why = [f"the smallest settings it may choose predict {best.estimate.peak_gib:.1f} GiB > {limit:.1f} GiB"]
    fixed = sorted(given & {"window_batch", "decode_chunk", "decode_tile", *TILING_FIELDS})
    if fixed:
        why.append(f"given explicitly: {', '.join(fixed)}")
    if weights > limit:
        why.append(f"the weights alone take {weights:.1f} GiB")
    return best, tuple(why)


def settings_by_hand(plan: MemoryPlan) -> dict[str, Any]:
    """The plan's changed settings as keywords: what a user would type to get the same run."""
    return {name: getattr(plan.settings, name) for name in MEMORY_FIELDS if name in plan.changed}
