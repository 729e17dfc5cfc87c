"""What plugins hand back, checked where the core receives it.

A plugin's colour corrector, flow estimator, tiling or segment plan, scheduler step or
caption is code uav did not write. Each result is checked once, where the pipeline
takes it (type, shape, dtype, finiteness: a few reductions per decode chunk or step,
nothing per element on the host), so a plugin that returns fewer frames, NaN, integers,
``None`` or a NumPy array stops the run with one line naming the plugin, instead of
writing a wrong file or failing later with an internal error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from uav.protocols import SegmentPlan, Tile

__all__ = ["PluginResultError", "CheckedScheduler", "check_clip", "check_flows", "check_segment_plan",
           "check_tiles", "check_timesteps", "describe_component"]

Tensor = torch.Tensor

#: each kind in words, for the error line
_KIND_WORDS = {"color": "colour corrector", "flow": "flow estimator", "tiling": "tiling strategy",
               "segments": "segment strategy", "scheduler": "scheduler", "captioner": "captioner"}


class PluginResultError(ValueError):
    """A plugin returned something the pipeline cannot use; the message names the plugin."""


def describe_component(kind: str, name: str, registry: Any = None) -> str:
    """``colour corrector 'wavelet' (plugin 'color')``: how error lines name a component."""
    owner = None
    if registry is not None and hasattr(registry, "owner"):
        owner = registry.owner(kind, name)
    text = f"{_KIND_WORDS.get(kind, kind)} {name!r}"
    return f"{text} (plugin {owner!r})" if owner else text


def _what(value: Any) -> str:
    if value is None:
        return "None"
    if torch.is_tensor(value):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    shape = getattr(value, "shape", None)
    kind = type(value)
    name = f"{kind.__module__.split('.')[0]}.{kind.__name__}" if kind.__module__ != "builtins" else kind.__name__
    return f"a {name}" + (f" of shape {tuple(shape)}" if shape is not None else "")


def _fail(who: str, what: str) -> PluginResultError:
    return PluginResultError(f"{who} {what}; fix or update that plugin, or choose another one")


def check_tensor(value: Any, shape: Sequence[int], who: str, what: str) -> Tensor:
    """``value`` if it is a finite floating-point tensor of ``shape``."""
    expected = tuple(int(n) for n in shape)
    if not torch.is_tensor(value):
        raise _fail(who, f"returned {_what(value)} as {what}; expected a torch tensor of shape {expected}")
    if tuple(value.shape) != expected:
        raise _fail(who, f"returned {what} of shape {tuple(value.shape)}; expected {expected}")
    if not value.is_floating_point():
        raise _fail(who, f"returned {what} as {str(value.dtype).replace('torch.', '')} values; expected floating "
                         "point")
    if not bool(torch.isfinite(value).all()):
        raise _fail(who, f"returned NaN or infinite values in {what}")
    return value


def check_clip(value: Any, like: Tensor, who: str) -> Tensor:
    """A corrected clip: the frames given back, as many and as large, finite floats."""
    if torch.is_tensor(value) and value.ndim == like.ndim and value.shape[0] != like.shape[0]:
        raise _fail(who, f"returned {value.shape[0]} frames for the {like.shape[0]} it was given")
    return check_tensor(value, like.shape, who, "frames")


def check_flows(value: Any, shape: Sequence[int], who: str) -> tuple[Tensor, Tensor]:
    """``(forward, backward)`` flows, each of ``shape``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _fail(who, f"returned {_what(value)}; expected a (forward, backward) pair of tensors")
    return (check_tensor(value[0], shape, who, "the forward flow"),
            check_tensor(value[1], shape, who, "the backward flow"))


def check_tiles(tiles: Any, height: int, width: int, scale: int, who: str) -> list[Tile]:
    """A tiling plan: tiles inside the frame, weights at output scale, every pixel covered."""
    if not isinstance(tiles, (list, tuple)) or not tiles:
        raise _fail(who, f"returned {_what(tiles)} as its plan; expected a non-empty list of Tile")
    cover = torch.zeros(height * scale, width * scale)
    for k, tile in enumerate(tiles):
        region = getattr(tile, "region", None)
        if not isinstance(region, (tuple, list)) or len(region) != 4 or not all(isinstance(v, int) for v in region):
            raise _fail(who, f"returned tile {k} without a (y0, y1, x0, x1) region of ints: {_what(tile)}")
        y0, y1, x0, x1 = region
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise _fail(who, f"returned tile {k} with region {tuple(region)} outside the {width}x{height} frame")
        weight = check_tensor(getattr(tile, "weight", None), ((y1 - y0) * scale, (x1 - x0) * scale), who,
                              f"the weight of tile {k}")
        if bool((weight < 0).any()):
            raise _fail(who, f"returned negative weights for tile {k}")
        cover[y0 * scale:y1 * scale, x0 * scale:x1 * scale] += weight.float().cpu()
    if bool((cover <= 0).any()):
        raise _fail(who, "returned tiles that leave part of the frame without weight")
    return list(tiles)


def check_segment_plan(plan: Any, num_frames: int, who: str) -> SegmentPlan:
    """Windows inside the clip whose in-window weights sum to 1 for every frame."""
    windows, weights = getattr(plan, "windows", None), getattr(plan, "weights", None)
    if windows is None or weights is None:
        raise _fail(who, f"returned {_what(plan)}; expected a SegmentPlan")
    try:
        pairs = [(int(s), int(e)) for s, e in windows]
    except (TypeError, ValueError):
        raise _fail(who, "returned windows that are not (start, end) pairs") from None
    if not pairs or any(not 0 <= s < e <= num_frames for s, e in pairs):
        raise _fail(who, f"returned windows {pairs[:4]} outside the clip's {num_frames} frames")
    weights = check_tensor(weights, (len(pairs), num_frames), who, "window weights")
    total = torch.zeros(num_frames, dtype=torch.float64)
    for k, (s, e) in enumerate(pairs):
        total[s:e] += weights[k, s:e].double()
    if not torch.allclose(total, torch.ones_like(total), atol=1e-4):
        frame = int((total - 1).abs().argmax())
        raise _fail(who, f"returned weights that sum to {float(total[frame]):.4g} for frame {frame}; every frame's "
                         "window weights must sum to 1")
    return plan


def check_timesteps(value: Any, who: str) -> list[int]:
    """A schedule: a non-empty sequence of whole, non-negative timesteps."""
    try:
        steps = [float(t) for t in value]
    except (TypeError, ValueError):
        raise _fail(who, f"returned {_what(value)} from set_timesteps; expected its timesteps") from None
    if not steps or any(not t >= 0 or t != int(t) for t in steps):
        raise _fail(who, f"returned timesteps {steps[:4]}; expected a non-empty list of whole numbers >= 0")
    return [int(t) for t in steps]


class CheckedScheduler:
    """A scheduler whose ``predict_x0`` and ``step`` results are checked (attributes pass through)."""

    def __init__(self, scheduler: Any, who: str) -> None:
        self._scheduler = scheduler
        self._who = who

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler, name)

    def set_timesteps(self, num_inference_steps: int, *args: Any, **kwargs: Any) -> list[int]:
        return check_timesteps(self._scheduler.set_timesteps(num_inference_steps, *args, **kwargs), self._who)

    def predict_x0(self, model_output: Tensor, timestep: Any, sample: Tensor) -> Tensor:
        return self._checked(self._scheduler.predict_x0(model_output, timestep, sample), sample, model_output,
                             timestep, "x0")

    def step(self, model_output: Tensor, timestep: Any, sample: Tensor, x0: Tensor, **kwargs: Any) -> Tensor:
        return self._checked(self._scheduler.step(model_output, timestep, sample, x0, **kwargs), sample,
                             model_output, timestep, "the next sample")

    def _checked(self, value: Any, sample: Tensor, model_output: Tensor, timestep: Any, what: str) -> Tensor:
        if torch.is_tensor(value) and value.shape == sample.shape and value.is_floating_point() \
                and not bool(torch.isfinite(value).all()) \
                and not bool(torch.isfinite(model_output).all() and torch.isfinite(sample).all()):
            # NaN in, NaN out: the network's prediction is broken, not the scheduler
            raise PluginResultError(f"the U-Net's prediction at timestep {int(timestep)} holds NaN or infinite "
                                    "values; check the weights with `uav weights verify`")
        return check_tensor(value, sample.shape, self._who, f"{what} at timestep {int(timestep)}")
