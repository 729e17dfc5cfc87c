"""Scene-aware splitting of long files (docs/scenes.md).

* :mod:`uav.scenes.detect`: :class:`Scene`, finding cuts with a ``scenes`` plugin;
* :mod:`uav.scenes.lists`: scene lists as TOML shot lists and timelines, written and read;
* :mod:`uav.scenes.settings`: each scene's settings over the run's;
* :mod:`uav.scenes.run`: scenes as resumable jobs on any executor, segments in a hidden folder;
* :mod:`uav.scenes.join`: the segments joined into one output by a packet copy.
"""

from uav.scenes.detect import DEFAULT_DETECTOR, DEFAULT_MIN_SCENE, Scene, SceneError, detect_cuts, detect_scenes

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_MIN_SCENE", "Scene", "SceneError", "detect_cuts", "detect_scenes"]
