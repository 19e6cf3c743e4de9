"""Manifest validation and loading (DESIGN.md §3.1).

Every problem of a manifest is collected in one pass and reported as ``FILE:LINE: field: problem``.
Line-level problems (bytes that are not UTF-8, malformed JSON, a line that is not an object) use the field
names ``encoding`` and ``json``. :func:`load_manifest` is what the rest of the system uses to read manifests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from data_manifest.errors import ManifestError
from data_manifest.schema import REQUIRED_FIELDS, VIDEO_ID_RE, VideoRecord

SPLITS = ("train", "val", "test", "unlabelled")
_SPLIT_SET = frozenset(SPLITS)
_HEX = frozenset("0123456789abcdef")
_RECORD_FIELDS = frozenset(f.name for f in fields(VideoRecord))


def _type_name(value: Any) -> str:
    """JSON-flavoured name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_hex(v: Any) -> bool:
    return isinstance(v, str) and bool(v) and set(v) <= _HEX


# Optional fields: name -> (accepts, what is expected). ``null`` is always accepted.
_OPTIONAL_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "duration": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (seconds)"),
    "fps": (lambda v: _is_number(v) and v > 0, "a number > 0 (frames per second)"),
    "num_frames": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "width": (lambda v: _is_int(v) and v > 0, "an integer > 0 (pixels)"),
    "height": (lambda v: _is_int(v) and v > 0, "an integer > 0 (pixels)"),
    "has_audio": (lambda v: isinstance(v, bool), "true or false"),
    "codec": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "content_hash": (_is_hex, "a lowercase hex string"),
    "probe_error": (lambda v: isinstance(v, str), "a string"),
    "file_size": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (bytes)"),
    "file_mtime": (_is_number, "a number (seconds since the epoch)"),
    "meta": (lambda v: isinstance(v, dict), "an object"),
}


def _check_record(obj: dict[str, Any], where: str, problems: list[str]) -> None:
    """Field checks that need no context beyond the object itself (ids, types, captions, split)."""
    for name in REQUIRED_FIELDS:
        if name not in obj:
            problems.append(f"{where}: {name}: missing required field")
    vid = obj.get("video_id")
    if "video_id" in obj:
        if not isinstance(vid, str):
            problems.append(f"{where}: video_id: expected a string, got {_type_name(vid)}")
        elif not VIDEO_ID_RE.match(vid):
            problems.append(
                f"{where}: video_id: {vid!r} must be non-empty and use only letters, digits and ._-"
            )
    if "path" in obj:
        path = obj["path"]
        if not isinstance(path, str):
            problems.append(f"{where}: path: expected a string, got {_type_name(path)}")
        elif not path:
            problems.append(f"{where}: path: empty path")
    if "captions" in obj:
        caps = obj["captions"]
        if not isinstance(caps, list):
            problems.append(f"{where}: captions: expected an array of strings, got {_type_name(caps)}")
        elif not all(type(c) is str and c.strip() for c in caps):
            for i, cap in enumerate(caps):
                if not isinstance(cap, str):
                    problems.append(f"{where}: captions[{i}]: expected a string, got {_type_name(cap)}")
                elif not cap.strip():
                    problems.append(f"{where}: captions[{i}]: empty caption")
    if "split" in obj:
        split = obj["split"]
        if not isinstance(split, str):
            problems.append(f"{where}: split: expected a string, got {_type_name(split)}")
        elif split not in _SPLIT_SET:
            problems.append(f"{where}: split: unknown split {split!r} (allowed: {', '.join(SPLITS)})")
    for name, value in obj.items():
        check = _OPTIONAL_CHECKS.get(name)
        if check is None or value is None:
            continue
        accepts, expected = check
        if not accepts(value):
            shown = repr(value) if len(repr(value)) <= 60 else _type_name(value)
            problems.append(f"{where}: {name}: expected {expected}, got {shown}")


def _parse(path: Path, check_paths: bool) -> tuple[list[VideoRecord], list[str]]:
    """Read and check a manifest; returns the records of the valid lines and every problem found."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return [], [f"{path}:0: file: cannot read manifest: {err.strerror or err}"]
    manifest_dir = path.parent
    problems: list[str] = []
    records: list[VideoRecord] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(
                f"{where}: encoding: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
            )
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{where}: json: malformed JSON: {err.msg} (column {err.colno})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: json: expected a JSON object, got {_type_name(obj)}")
            continue
        n_before = len(problems)
        _check_record(obj, where, problems)
        vid = obj.get("video_id")
        if isinstance(vid, str):
            if vid in first_line:
                problems.append(f"{where}: video_id: duplicate {vid!r} (first on line {first_line[vid]})")
            else:
                first_line[vid] = lineno
        p = obj.get("path")
        if check_paths and isinstance(p, str) and p:
            full = p if os.path.isabs(p) else os.path.join(manifest_dir, p)
            if not os.path.isfile(full):
                problems.append(f"{where}: path: file does not exist: {full}")
        if len(problems) == n_before:
            if "meta" in obj and obj["meta"] is None:
                del obj["meta"]
            records.append(VideoRecord(**obj) if obj.keys() <= _RECORD_FIELDS else VideoRecord.from_dict(obj))
    if not records and not problems and not data.strip():
        problems.append(f"{path}:1: file: empty manifest (no videos)")
    return records, problems


def load_manifest(path: str | Path, *, check_paths: bool = True) -> list[VideoRecord]:
    """Read a manifest into records, in file order; raises :class:`ManifestError` listing every problem."""
    records, problems = _parse(Path(path), check_paths)
    if problems:
        raise ManifestError(problems)
    return records


def summarize(records: list[VideoRecord]) -> str:
    """One line: videos per split (in the canonical split order) and the number of captions."""
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec.split] = counts.get(rec.split, 0) + 1
    per_split = ", ".join(f"{s} {counts[s]}" for s in SPLITS if s in counts)
    n_caps = sum(len(r.captions) for r in records)
    return f"{len(records)} videos ({per_split or 'none'}), {n_caps} captions"
