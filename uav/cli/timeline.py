"""``uav timeline``: the OpenTimelineIO integration's commands (see :mod:`uav_otio.cli`).

Attached through the ``uav.cli`` entry-point group the integration registers, so the
core package never imports ``uav_otio`` (which itself builds on :mod:`uav.cli`).
"""

from uav.cli.app import attach_extension

if not attach_extension("timeline"):
    raise ImportError("no 'timeline' entry point in the uav.cli group: reinstall uav (pip install -e .) to get the "
                      "OpenTimelineIO integration")
