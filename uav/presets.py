"""Named presets: bundles of settings a user asks for by name (``preset="fast"``, ``--preset fast``).

A preset fills the settings that are left at their defaults, so ``preset="fast",
num_inference_steps=12`` keeps the 12 steps and takes the rest of ``fast``. (A value
given equal to the default is indistinguishable from one left out: to combine ``fast``
with 30 steps, spell the strategies out instead: ``step_cache="deepcache"``,
``guidance_reuse_from=...``.)

* ``default``: the published method (nothing changes).
* ``fast``: about 9x fewer U-Net FLOPs per frame than the published loop, with
  different numbers: DPM-Solver++ (the ``uav_schedulers`` adapter) in 10 steps; guidance
  computed on the first 5 and reused on the last 5 (only the conditional half of the CFG
  batch runs, the last measured guidance difference is added); DeepCache step caching:
  the U-Net runs whole every 3rd step and only its finest skip branch in between
  (:mod:`uav.sampling.stepcache`). ``benchmarks/static.py`` counts the FLOPs.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["PRESETS", "preset_values"]

#: preset name -> the settings it fills
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {
        "scheduler": "dpmsolver++",
        "num_inference_steps": 10,
        "guidance_reuse_from": 5,
        "step_cache": "deepcache",
        "step_cache_interval": 3,
    },
}


def preset_values(name: str, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The fields preset ``name`` changes: its values for the fields of ``values`` that equal ``defaults``.
    With fewer steps given than the preset's guidance reuse starts at, reuse starts half way."""
    filled = {k: v for k, v in PRESETS[name].items() if values[k] == defaults[k]}
    steps = filled.get("num_inference_steps", values["num_inference_steps"])
    if filled.get("guidance_reuse_from") is not None and filled["guidance_reuse_from"] >= steps:
        filled["guidance_reuse_from"] = steps // 2  # fewer steps given: guidance still reused on the later half
    return filled
