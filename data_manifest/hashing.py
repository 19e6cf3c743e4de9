"""Streaming sha256 of files, shared by probing, weights checks, stores and media fetching."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def update_from_file(digest: Any, path: str | Path) -> Any:
    """Feed a file's bytes into a hashlib object in 1 MiB chunks (never the whole file in memory)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return update_from_file(hashlib.sha256(), path).hexdigest()
