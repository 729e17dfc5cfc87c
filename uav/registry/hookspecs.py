"""The hook specifications of the ``uav`` plugin system.

Every swappable component kind has one *registry-style* hook: the plugin manager
calls it with a ``register`` callable and the plugin registers any number of named
factories through it::

    from uav.registry import hookimpl

    @hookimpl
    def register_color_correctors(register):
        register("invert", lambda **options: InvertColours(**options))

``register(name, factory)`` records ``factory`` under ``name`` for that hook's kind.
``factory(**options)`` must build the component (an object implementing the matching
Protocol of :mod:`uav.protocols`); it is only called when the component is selected,
so factories should import heavy dependencies lazily. A name of the form
``"prefix:*"`` registers a *family*: selecting ``"prefix:Something"`` calls
``factory(variant="Something", **options)``.

Plugins are found through the ``uav`` entry-point group
(``[project.entry-points.uav]`` in a plugin's ``pyproject.toml``); the built-in
components in ``plugins/`` are registered through the very same group. A plugin may
implement any subset of these hooks, and a hook implementation may accept no
arguments at all (pluggy passes only the arguments it asks for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

#: pluggy project name, also the entry-point group plugins are discovered in
PROJECT_NAME = "uav"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: decorate plugin functions with this marker (also exported as ``uav.registry.hookimpl``)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: the signature of the ``register`` callable every hook receives
RegisterFn = Callable[[str, Callable[..., Any]], None]


@hookspec
def register_flow_estimators(register: RegisterFn) -> None:
    """Register optical-flow estimators (kind ``"flow"``).

    Each factory returns a :class:`uav.protocols.FlowEstimator`: called with a
    ``(T, 3, H, W)`` clip in ``[-1, 1]`` and an optional output ``size``, it returns
    ``(forward, backward)`` flows of shape ``(1, 2, T-1, h, w)`` in pixels of the
    returned resolution. Conventional factory options: ``weights`` (a checkpoint
    path) and ``device``. Built-ins: ``raft``, ``dis``, ``farneback``.
    """


@hookspec
def register_color_correctors(register: RegisterFn) -> None:
    """Register colour correctors (kind ``"color"``).

    Each factory returns a :class:`uav.protocols.ColorCorrector`: a callable taking
    the upscaled ``(T, 3, H, W)`` clip and its low-res ``(T, 3, h, w)`` source, both
    in ``[-1, 1]``, and returning the corrected ``(T, 3, H, W)`` clip. Built-ins:
    ``none``, ``wavelet``, ``adain``.
    """


@hookspec
def register_schedulers(register: RegisterFn) -> None:
    """Register denoising schedulers (kind ``"scheduler"``).

    Each factory returns a :class:`uav.protocols.DenoisingScheduler` (the update
    split into ``predict_x0`` and ``step(..., x0)`` so that flow-guided propagation
    can edit the predicted clean sample in between). Conventional factory options:
    ``config`` (a scheduler config mapping, a ``scheduler_config.json`` path or its
    folder, or a diffusers scheduler) and ``eta``. Built-ins: ``ddim-official`` and
    adapters for diffusers schedulers (``ddim``, ``dpmsolver++``, ``unipc``,
    ``euler``, ``euler-a``, ``heun``, ``diffusers:*``).
    """


@hookspec
def register_tiling_strategies(register: RegisterFn) -> None:
    """Register spatial tiling strategies (kind ``"tiling"``).

    Each factory returns a :class:`uav.protocols.TilingStrategy` whose ``plan``
    covers a low-res frame with :class:`uav.protocols.Tile` regions and output-scale
    blend weights. Conventional factory options: ``tile_size``, ``overlap`` (the
    defaults of ``plan``). Built-ins: ``official`` (hard paste), ``feather``.
    """


@hookspec
def register_segment_strategies(register: RegisterFn) -> None:
    """Register temporal segment (window-merge) strategies (kind ``"segments"``).

    Each factory returns a :class:`uav.protocols.SegmentStrategy` whose ``plan``
    splits a clip into the windows the network runs on and gives each window's
    per-frame merge weights (each frame's weights sum to 1). Built-ins:
    ``official`` (the published rule, SPEC §6), ``uniform``.
    """


@hookspec
def register_captioners(register: RegisterFn) -> None:
    """Register captioners (kind ``"captioner"``).

    Each factory returns a :class:`uav.protocols.Captioner`: a callable turning a
    ``(T, 3, H, W)`` clip in ``[-1, 1]`` into a text prompt. There is no heavy
    default; the built-in ``blip-local`` loads a local transformers image-to-text
    model folder (factory option ``model``) when selected.
    """


@hookspec
def register_scene_detectors(register: RegisterFn) -> None:
    """Register scene (shot) detectors (kind ``"scenes"``).

    Each factory returns a :class:`uav.protocols.SceneDetector`: called with a
    clip's uint8 RGB frames (an iterator) and its frame rate, it returns the indices
    of the frames where a new scene starts. Conventional factory options:
    ``threshold`` (the detector's own sensitivity scale) and ``min_scene`` (the
    shortest scene, in frames). Built-ins (PySceneDetect): ``adaptive`` (default),
    ``content``, ``threshold``, ``histogram``, ``hash``.
    """
