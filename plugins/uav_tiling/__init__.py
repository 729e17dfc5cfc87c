"""Built-in uav plugin: spatial tiling strategies ``official`` and ``feather``.

Thin registrations of :mod:`uav.sampling.tiling`, registered through the ``uav``
entry-point group (name ``tiling``) like any third-party plugin.

* ``official``: the published hard-cut tiling (SPEC §7.3): each tile runs on its
  core padded by ``overlap`` LR pixels, only the core is pasted, overlaps are
  discarded (visible seams are possible).
* ``feather``: overlapping tiles blended with smooth, strictly positive weights, so
  there are no seams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uav.protocols import Tile, int_arg
from uav.registry import hookimpl


class PlanTiling:
    """A :class:`uav.protocols.TilingStrategy` backed by a plan function.

    ``tile_size`` and ``overlap`` given to the factory become the defaults of
    :meth:`plan` (LR pixels; the published defaults are 256 and 64).
    """

    def __init__(self, name: str, plan_fn: Callable[..., list[Tile]], *, tile_size: int = 256, overlap: int = 64) -> None:
        self.name = name
        self._plan_fn = plan_fn
        self.tile_size = int_arg("tile_size", tile_size, 1)
        self.overlap = int_arg("overlap", overlap, 0)

    def plan(
        self, height: int, width: int, *, tile_size: int | None = None, overlap: int | None = None, scale: int = 4
    ) -> list[Tile]:
        """Tiles covering a ``height x width`` LR frame and their output-scale weights."""
        return self._plan_fn(
            height,
            width,
            tile_size=self.tile_size if tile_size is None else tile_size,
            overlap=self.overlap if overlap is None else overlap,
            scale=scale,
        )

    def __repr__(self) -> str:
        return f"PlanTiling({self.name!r}, tile_size={self.tile_size}, overlap={self.overlap})"


def official(**options: Any) -> PlanTiling:
    """Published hard-cut tiling: core regions pasted, padded overlaps discarded; options: tile_size, overlap."""
    from uav.sampling.tiling import official_tile_plan

    return PlanTiling("official", official_tile_plan, **options)


def feather(**options: Any) -> PlanTiling:
    """Overlapping tiles with smooth positive blend weights (no seams); options: tile_size, overlap."""
    from uav.sampling.tiling import feather_tile_plan

    return PlanTiling("feather", feather_tile_plan, **options)


@hookimpl
def register_tiling_strategies(register: Any) -> None:
    """Register ``official`` and ``feather``."""
    register("official", official)
    register("feather", feather)
