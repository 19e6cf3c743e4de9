"""Fingerprints of feature folders (DESIGN.md §3.3) and the canonical JSON they hash.

``fingerprint = sha256(canonical JSON of [expert, version, config, weights_sha256])[:12]``. Any change of the
expert's name, its extractor version, its config or its weights gives a new
``features/<expert>/<fingerprint>/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pipeline.errors import ConfigError

FINGERPRINT_LEN = 12


def _normalise(obj: Any, where: str) -> Any:
    """``obj`` as plain JSON types (tuples -> lists, numpy scalars -> Python); reject what JSON can't hold."""
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ConfigError(f"config value at {where or '<root>'} is not finite: {obj!r}")
        return obj
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ConfigError(f"config key at {where or '<root>'} is not a string: {key!r}")
            out[key] = _normalise(value, f"{where}.{key}" if where else key)
        return out
    if isinstance(obj, list | tuple):
        return [_normalise(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    item = getattr(obj, "item", None)  # numpy scalars
    if callable(item):
        return _normalise(item(), where)
    raise ConfigError(f"config value at {where or '<root>'} is not JSON-serialisable: {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, floats as Python ``repr``, non-ASCII kept as is.

    Tuples become lists and numpy scalars plain numbers, so equal configs give equal text. Raises ConfigError
    for NaN/inf or values JSON can't represent.
    """
    return json.dumps(
        _normalise(obj, ""), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def fingerprint(expert: str, version: str, config: dict[str, Any], weights_sha256: str) -> str:
    """The 12-hex fingerprint of an expert's outputs: sha256 of the canonical JSON of the four items."""
    text = canonical_json([expert, version, config, weights_sha256])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_LEN]
