"""The published release's network configs, shipped as package data (``*.json`` beside this
file); :mod:`uav.memory` and ``uav doctor --memory`` read them when no weights folder is at hand."""
