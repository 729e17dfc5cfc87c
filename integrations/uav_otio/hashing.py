"""The stable hash that names a job's settings and an output's provenance.

Its own module so that planning (which hashes settings) and rendering (which hashes
settings plus the model) share it without importing each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["compute_settings_hash"]


def compute_settings_hash(data: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-serialisable data (key order does not matter)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
