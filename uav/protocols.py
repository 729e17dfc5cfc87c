"""The small typed interfaces every swappable component implements.

The core pipeline only talks to these Protocols; built-in components (in ``plugins/``)
and third-party plugins implement them and register factories through the hooks in
:mod:`uav.registry.hookspecs`. Conventions shared by all of them:

* video tensors handed to components are ``(T, C, H, W)`` float tensors in ``[-1, 1]``
  unless a docstring says otherwise (the diffusion models themselves use
  ``(B, C, T, H, W)``);
* flows are ``(1, 2, T-1, h, w)`` float32, channel 0 the x (width) displacement and
  channel 1 the y displacement, in pixels of the resolution they are given at.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
import importlib
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - annotations only: importing this module costs no torch
    import torch
    from torch import Tensor

__all__ = [
    "FlowEstimator",
    "ColorCorrector",
    "DenoisingScheduler",
    "Tile",
    "TilingStrategy",
    "SegmentPlan",
    "SegmentStrategy",
    "Captioner",
    "ArgumentTypeError",
    "int_arg",
    "lazy_attributes",
]


@runtime_checkable
class FlowEstimator(Protocol):
    """Turns a clip into bidirectional optical flow between neighbouring frames."""

    def __call__(self, frames: Tensor, *, size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Estimate ``(forward, backward)`` flows.

        Args:
            frames: ``(T, 3, H, W)`` float in ``[-1, 1]``, ``T >= 2``.
            size: ``(h, w)`` of the returned flows; ``None`` means ``(H, W)``. Flow
                vectors are expressed in pixels of the returned resolution (so a
                resize also rescales the vectors, x by ``w/W`` and y by ``h/H``).

        Returns:
            ``forward`` and ``backward``, each ``(1, 2, T-1, h, w)`` float32;
            ``forward[:, :, k]`` maps frame ``k`` to ``k+1`` and ``backward[:, :, k]``
            maps frame ``k+1`` to ``k``.
        """
        ...


@runtime_checkable
class ColorCorrector(Protocol):
    """Maps an upscaled clip and its low-res source to a colour-corrected clip."""

    def __call__(self, output: Tensor, reference: Tensor) -> Tensor:
        """``output`` ``(T, 3, H, W)`` and low-res ``reference`` ``(T, 3, h, w)``, both in
        ``[-1, 1]``; returns the corrected ``(T, 3, H, W)``."""
        ...


@runtime_checkable
class DenoisingScheduler(Protocol):
    """The diffusion update split the way the published loop uses it.

    The loop asks the scheduler for the predicted clean sample ``x0`` of the
    network output, may edit that ``x0`` (flow-guided propagation), then asks for
    the previous sample given the (possibly edited) ``x0``.
    """

    #: the timesteps of the current schedule, set by :meth:`set_timesteps`
    timesteps: Tensor
    #: the scale of the initial noise ``x_T`` (1 for DDIM); the loop multiplies by it
    init_noise_sigma: float

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> Tensor:
        """Prepare a schedule of ``num_inference_steps`` steps and return its timesteps."""
        ...

    def predict_x0(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor) -> Tensor:
        """The clean sample the network output implies at ``timestep``."""
        ...

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, x0: Tensor, *,
             generator: torch.Generator | None = None) -> Tensor:
        """The sample at the next (less noisy) timestep, built from ``x0``.

        ``generator`` is the run's seeded generator: a stochastic scheduler draws its
        noise from it (deterministic ones ignore it), so a seed reproduces the run.
        """
        ...


@dataclass(frozen=True)
class Tile:
    """One spatial tile of a tiling plan.

    ``region`` is the ``(y0, y1, x0, x1)`` box (end exclusive) of the low-res frame
    the pipeline runs on for this tile. ``weight`` is the blend weight of that
    region's output at output scale, shape ``((y1-y0)*scale, (x1-x0)*scale)``;
    outputs are merged as ``sum(w_i * out_i) / sum(w_i)``.
    """

    region: tuple[int, int, int, int]
    weight: Tensor


@runtime_checkable
class TilingStrategy(Protocol):
    """Plans overlapping spatial tiles and their blend weights."""

    def plan(self, height: int, width: int, *, tile_size: int, overlap: int, scale: int = 4) -> list[Tile]:
        """Tiles covering a ``height x width`` low-res frame; every output pixel must
        get a positive total weight."""
        ...


@dataclass(frozen=True)
class SegmentPlan:
    """Temporal windows and how their predictions merge.

    ``windows`` are the unique ``[start, end)`` frame ranges the network runs on, in
    processing order. ``weights[k, f]`` is the weight of window ``k``'s prediction for
    frame ``f`` (0 outside the window); every column sums to 1. ``calls`` lists the
    window ranges in the order a naive implementation of the rule would run them,
    duplicates included (for baselines and for counting).

    ``band`` (optional) holds the same weights inside each window only: ``band[k, j]`` is
    window ``k``'s weight for frame ``start_k + j``. The dense ``weights`` grow with the
    square of the clip's length (40 GB for two hours at 24 fps), so plans of long clips
    give ``band`` and a ``weights`` on the ``meta`` device (its shape, no values);
    :meth:`window_weights` reads whichever is there.
    """

    windows: tuple[tuple[int, int], ...]
    weights: Tensor
    calls: tuple[tuple[int, int], ...] = ()
    band: Tensor | None = None

    def window_weights(self, k: int) -> Tensor:
        """Window ``k``'s weights over its own frames, ``(end - start,)``."""
        s, e = self.windows[k]
        if self.band is not None:
            return self.band[k, :e - s]
        return self.weights[k, s:e]


@runtime_checkable
class SegmentStrategy(Protocol):
    """Plans the temporal windows of a clip and their merge weights."""

    def plan(self, num_frames: int, window: int = 8) -> SegmentPlan:
        ...


@runtime_checkable
class Captioner(Protocol):
    """Describes a clip in words, to be used as the positive prompt."""

    def __call__(self, frames: Tensor) -> str:
        """``frames`` ``(T, 3, H, W)`` in ``[-1, 1]``; returns a caption."""
        ...


@runtime_checkable
class SceneDetector(Protocol):
    """Finds the hard cuts of a clip (kind ``"scenes"``).

    Called with the clip's frames in order (``(H, W, 3)`` uint8 RGB arrays, an
    iterator read once) and its frame rate; returns the indices of the frames that
    start a new scene, counted from the first frame given, increasing, never 0.
    """

    def __call__(self, frames: Iterable[Any], fps: Fraction) -> list[int]: ...


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type; also a ``ValueError``, so callers that validate input
    catch it with the out-of-range errors."""


def int_arg(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` of at least ``minimum`` (``bool`` is not an int here): the one
    check the sampling functions and the built-in components share, so they word it alike.

    Raises:
        ArgumentTypeError: not an integer. ValueError: below ``minimum``.
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def lazy_attributes(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``names[name]`` (a module path) on
    first use of ``name`` and keeps it in ``module``, so that importing a package does not
    pay for torch until one of those names is needed."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
