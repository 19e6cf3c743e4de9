"""Manifest problems as a list, for tests that assert every problem of an invalid manifest."""

from __future__ import annotations

from pathlib import Path

from data_manifest.errors import ManifestError
from data_manifest.schema import MAX_LINE_BYTES
from data_manifest.validate import load_manifest


def manifest_problems(
    path: str | Path, *, check_paths: bool = True, max_line_bytes: int = MAX_LINE_BYTES
) -> list[str]:
    """Every ``FILE:LINE: field: problem`` line ``load_manifest`` reports for ``path`` ([] when valid)."""
    try:
        load_manifest(path, check_paths=check_paths, max_line_bytes=max_line_bytes)
    except ManifestError as err:
        return err.problems
    return []
