"""Manifest validation and loading (DESIGN.md §3.1).

Every problem of a manifest is collected in one pass and reported as ``FILE:LINE: field: problem``.
Line-level problems (a line over the length limit, bytes that are not UTF-8, malformed JSON, a line that is not
an object) use the field names ``line``, ``encoding`` and ``json``. The file is streamed line by line, so memory
stays bounded by the line limit (``schema.MAX_LINE_BYTES``) plus the records kept. :func:`load_manifest` is what
the rest of the system uses to read manifests.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, BinaryIO

from data_manifest.errors import ManifestError
from data_manifest.schema import (
    MAX_CAPTION_CHARS,
    MAX_LINE_BYTES,
    REQUIRED_FIELDS,
    VIDEO_ID_RE,
    VideoRecord,
)

SPLITS = ("train", "val", "test", "unlabelled")
_SPLIT_SET = frozenset(SPLITS)
_HEX = frozenset("0123456789abcdef")
_RECORD_FIELDS = frozenset(f.name for f in fields(VideoRecord))
_SKIP_CHUNK = 1 << 16


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


def text_problem(text: str) -> str | None:
    """Why a string cannot travel through the pipeline (NUL for HDF5, a lone surrogate for UTF-8), or None."""
    if "\0" in text:
        return f"contains NUL (U+0000) at character {text.index(chr(0)) + 1}"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"contains a lone surrogate U+{ord(text[err.start]):04X} at character {err.start + 1}"
    return None


def _check_strings(value: Any, name: str, where: str, problems: list[str]) -> None:
    """Report every string (keys included) under ``value`` that :func:`text_problem` rejects, named by its path."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            problems.append(f"{where}: {name}: {problem}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{name}[{i}]", where, problems)
    elif isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key)
            if problem:
                problems.append(f"{where}: {name or 'json'}: key {problem}")
            else:
                _check_strings(item, f"{name}.{key}" if name else key, where, problems)


def _check_caption_lengths(obj: dict[str, Any], where: str, problems: list[str]) -> None:
    """Captions over ``MAX_CAPTION_CHARS`` (only lines longer than that can hold one, so only those are checked)."""
    caps = obj.get("captions")
    for i, cap in enumerate(caps if isinstance(caps, list) else ()):
        if isinstance(cap, str) and len(cap) > MAX_CAPTION_CHARS:
            problems.append(
                f"{where}: captions[{i}]: {len(cap)} characters, over the limit of {MAX_CAPTION_CHARS}"
            )


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


def iter_lines(fh: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without the newline) per line; ``None`` for a line over ``max_line_bytes``, which is
    skipped in bounded reads, never held whole."""
    lineno = 0
    while raw := fh.readline(max_line_bytes + 1):
        lineno += 1
        if raw.endswith(b"\n"):
            yield lineno, raw[:-1]
        elif len(raw) <= max_line_bytes:
            yield lineno, raw
        else:
            while (rest := fh.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield lineno, None


def _open_regular(path: Path) -> BinaryIO:
    """Open a manifest for binary reading; OSError unless it is a regular file (not a FIFO, device, folder)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"not a regular file: {path}")
    return os.fdopen(fd, "rb")


def _parse(path: Path, check_paths: bool, max_line_bytes: int) -> tuple[list[VideoRecord], list[str]]:
    """Read and check a manifest; returns the records of the valid lines and every problem found."""
    try:
        fh = _open_regular(path)
    except OSError as err:
        return [], [f"{path}:0: file: cannot read manifest: {err.strerror or err}"]
    manifest_dir = path.parent
    problems: list[str] = []
    records: list[VideoRecord] = []
    first_line: dict[str, int] = {}
    any_content = False
    with fh:
        for lineno, raw in iter_lines(fh, max_line_bytes):
            where = f"{path}:{lineno}"
            if raw is None:
                any_content = True
                problems.append(f"{where}: line: longer than the limit of {max_line_bytes} bytes (not read)")
                continue
            if not raw.strip():
                continue
            any_content = True
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
            if "\\u" in text:  # NUL and lone surrogates can only come from \u escapes in valid UTF-8 JSON
                _check_strings(obj, "", where, problems)
            _check_record(obj, where, problems)
            if len(raw) > MAX_CAPTION_CHARS:
                _check_caption_lengths(obj, where, problems)
            vid = obj.get("video_id")
            if isinstance(vid, str):
                if vid in first_line:
                    problems.append(f"{where}: video_id: duplicate {vid!r} (first on line {first_line[vid]})")
                else:
                    first_line[vid] = lineno
            p = obj.get("path")
            if check_paths and isinstance(p, str) and p and not text_problem(p):
                full = p if os.path.isabs(p) else os.path.join(manifest_dir, p)
                if not os.path.isfile(full):
                    problems.append(f"{where}: path: file does not exist: {full}")
            if len(problems) == n_before:
                if "meta" in obj and obj["meta"] is None:
                    del obj["meta"]
                records.append(
                    VideoRecord(**obj) if obj.keys() <= _RECORD_FIELDS else VideoRecord.from_dict(obj)
                )
    if not any_content:
        problems.append(f"{path}:1: file: empty manifest (no videos)")
    return records, problems


def load_manifest(
    path: str | Path, *, check_paths: bool = True, max_line_bytes: int = MAX_LINE_BYTES
) -> list[VideoRecord]:
    """Read a manifest into records, in file order; raises :class:`ManifestError` listing every problem."""
    records, problems = _parse(Path(path), check_paths, max_line_bytes)
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
