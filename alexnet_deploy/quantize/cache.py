"""The scale cache: one JSON file per calibration method holding each activation's
amax and the provenance (model, images, percentile) that says when it is stale."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..files import write_text_atomic
from .int8 import INT8_MAX

# Bumped whenever a method's rule changes, so caches computed by the old rule are
# recalibrated instead of reused. 2: entropy levels start at ceil(g*n/128), NVIDIA's
# reference rule (format 1 started them at floor and moved the clip point by up to 8%).
CACHE_FORMAT = 2


@dataclass
class CalibrationCache:
    method: str
    model_sha256: str
    data_fingerprint: str
    images: int
    amax: dict[str, float]
    percentile: float | None = None  # the --percentile it was computed with (percentile method)

    @property
    def scales(self) -> dict[str, float]:
        return {name: value / INT8_MAX for name, value in self.amax.items()}


def _valid_amax(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def read_cache(path: Path) -> CalibrationCache | None:
    """The cache at ``path``, or None if it is missing or invalid in any way (not
    JSON, missing keys, an amax that is not a finite number >= 0, another
    :data:`CACHE_FORMAT`): an invalid cache is a stale one, recalibrated rather than trusted or crashed on."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != CACHE_FORMAT:
            return None
        cache = CalibrationCache(
            data["method"],
            data["model_sha256"],
            data["data_fingerprint"],
            data["images"],
            {name: entry["amax"] for name, entry in data["tensors"].items()},
            data.get("percentile"),
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    return cache if all(_valid_amax(v) for v in cache.amax.values()) else None


def write_cache(path: Path, cache: CalibrationCache) -> None:
    payload = {
        "format": CACHE_FORMAT,
        "method": cache.method,
        "model_sha256": cache.model_sha256,
        "data_fingerprint": cache.data_fingerprint,
        "images": cache.images,
        "percentile": cache.percentile,
        "tensors": {name: {"amax": cache.amax[name], "scale": cache.scales[name]} for name in cache.amax},
    }
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
