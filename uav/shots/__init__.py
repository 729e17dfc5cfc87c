"""Per-shot settings, read by the timeline integration and by ``uav upscale --scenes``.

:mod:`uav.shots.settings` is the per-shot schema (the keys a shot sets, checked by
:class:`uav.settings.UpscaleSettings`), :mod:`uav.shots.shot_list` reads ``uav:``
markers and TOML shot lists, :mod:`uav.shots.layers` layers them for one clip. They
live in the core so that ``uav upscale`` reads the very same files as ``uav timeline``
(the integration re-exports them under their first names, ``uav_otio.shots`` ...).
"""
