"""Helpers shared by the dataset recipes: finding annotation files, strict readers, video lookup, ids.

Readers raise :class:`ManifestError` naming the file and line (``FILE:LINE: field: problem``); problems in
the structure of a JSON document, which has no useful line, are named by their JSON path
(``FILE: [3].video: problem``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from data_manifest.errors import ManifestError
from data_manifest.schema import VIDEO_ID_RE, VideoRecord

log = logging.getLogger("data_manifest.recipes")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv")
_BAD_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_SHOW_MISSING = 5


def annotation_dir(annotations: Path) -> Path:
    """The folder holding a dataset's annotation files (``annotations`` itself, or a file's folder)."""
    return annotations if annotations.is_dir() else annotations.parent


def find_optional(annotations: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` that exists: ``annotations`` itself if it is such a file, else in its folder."""
    names = tuple(names)
    if annotations.is_file() and annotations.name in names:
        return annotations
    if not annotations.exists():
        raise ManifestError([f"{annotations}: annotations: no such file or folder"])
    folder = annotation_dir(annotations)
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_annotation(annotations: Path, names: Iterable[str], dataset: str) -> Path:
    """Like :func:`find_optional`, but one of ``names`` must exist."""
    names = tuple(names)
    found = find_optional(annotations, names)
    if found is None:
        raise ManifestError(
            [f"{annotation_dir(annotations)}: annotations: {dataset} needs one of {', '.join(names)}"]
        )
    return found


def read_text(path: Path) -> str:
    """A UTF-8 text file (BOM tolerated); bad bytes are reported with their line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ManifestError(
            [f"{path}:{line}: encoding: not valid UTF-8 (byte 0x{data[err.start]:02x})"]
        ) from None


def read_json(path: Path) -> Any:
    """Parse a JSON file; syntax errors are reported with their line and column."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ManifestError(
            [f"{path}:{err.lineno}: json: malformed JSON: {err.msg} (column {err.colno})"]
        ) from None


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines as (line number, text without the line ending)."""
    return [(i, line.rstrip("\r")) for i, line in enumerate(read_text(path).split("\n"), 1) if line.strip()]


def read_id_list(path: Path) -> list[tuple[int, str]]:
    """A split list: one video id per line (the format of ``train_list_*.txt``), as (line number, id)."""
    return [(i, line.strip()) for i, line in read_lines(path)]


def read_csv(
    path: Path, required: tuple[str, ...], *, delimiter: str = ","
) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header, as (line number, row); missing columns are reported."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise ManifestError(
            [f"{path}:1: header: missing column(s) {', '.join(missing)} (found {', '.join(header)})"]
        )
    rows = []
    for row in reader:
        if any(row.get(c) is None for c in required):
            raise ManifestError([f"{path}:{reader.line_num}: row: expected columns {', '.join(required)}"])
        rows.append((reader.line_num, row))
    return rows


def expect(cond: bool, problems: list[str], message: str) -> bool:
    """Append ``message`` to ``problems`` when ``cond`` is false; returns ``cond``."""
    if not cond:
        problems.append(message)
    return cond


def raise_problems(problems: list[str]) -> None:
    """Raise :class:`ManifestError` if any problem was collected."""
    if problems:
        raise ManifestError(problems)


def sanitize_ids(raw_ids: Iterable[str], dataset: str) -> dict[str, str]:
    """Map raw names to manifest ids (letters, digits, ``._-``), deterministically.

    Runs of other characters become ``_``. When several names give the same id, the collision is logged,
    a name that was already valid keeps it and each changed name gets ``-`` plus 8 hex of its sha1.
    """
    groups: dict[str, list[str]] = {}
    for raw in dict.fromkeys(raw_ids):
        vid = raw if VIDEO_ID_RE.match(raw) else (_BAD_ID_CHARS.sub("_", raw) or "_")
        groups.setdefault(vid, []).append(raw)
    out: dict[str, str] = {}
    for vid, raws in groups.items():
        if len(raws) > 1:
            log.warning("%s: names %s all sanitise to id %r; suffixing the changed ones", dataset, raws, vid)
        for raw in raws:
            unique = len(raws) == 1 or raw == vid
            out[raw] = vid if unique else f"{vid}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return out


class VideoIndex:
    """Video files under a folder (recursive), looked up by file name or by name without extension."""

    def __init__(self, videos_dir: Path):
        self.root = videos_dir
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for folder, _dirs, files in os.walk(videos_dir):
            for name in sorted(files):
                suffix = os.path.splitext(name)[1].lower()
                if suffix not in VIDEO_EXTENSIONS:
                    continue
                path = Path(folder) / name
                self.by_name.setdefault(name, path)
                self.by_stem.setdefault(os.path.splitext(name)[0], []).append(path)
        for paths in self.by_stem.values():
            paths.sort(key=lambda p: (VIDEO_EXTENSIONS.index(p.suffix.lower()), str(p)))

    def find(self, names: Iterable[str]) -> Path | None:
        """The first file matching one of ``names`` (exact file name, else stem; by extension preference)."""
        for name in names:
            if name in self.by_name:
                return self.by_name[name]
            if name in self.by_stem:
                return self.by_stem[name][0]
        return None


def locate_videos(
    dataset: str,
    records: list[VideoRecord],
    videos_dir: Path | None,
    keep_missing: bool,
    names: Callable[[VideoRecord], list[str]],
    default_path: Callable[[VideoRecord], str],
) -> list[VideoRecord]:
    """Set each record's ``path`` to its video under ``videos_dir``; report and drop (or keep) missing ones.

    ``names`` gives the file names or stems to look for, ``default_path`` the expected path relative to
    ``videos_dir`` (used for missing videos kept with ``keep_missing``, and for all when ``videos_dir`` is
    None, in which case nothing is checked).
    """
    bad = [r.video_id for r in records if not VIDEO_ID_RE.match(r.video_id)]
    if bad:
        raise ManifestError(
            [f"{dataset}: video_id: {v!r} must use only letters, digits and ._-" for v in bad[:20]]
        )
    if videos_dir is None:
        log.warning("%s: no videos folder given; paths are expected names, not checked", dataset)
        for rec in records:
            rec.path = default_path(rec)
        return records
    if not videos_dir.is_dir():
        raise ManifestError([f"{videos_dir}: videos: no such folder"])
    index = VideoIndex(videos_dir)
    root = videos_dir.absolute()
    kept: list[VideoRecord] = []
    missing: list[str] = []
    for rec in records:
        found = index.find(names(rec))
        if found is None:
            missing.append(rec.video_id)
            if not keep_missing:
                continue
            rec.path = str(root / default_path(rec))
        else:
            rec.path = str(found.absolute())
        kept.append(rec)
    report_missing(dataset, missing, len(records), videos_dir, keep_missing)
    return kept


def report_missing(
    dataset: str, missing: list[str], total: int, videos_dir: Path, keep_missing: bool
) -> None:
    """Log how many videos were not found (with the first few ids) and what was done with them."""
    if not missing:
        return
    shown = ", ".join(missing[:_SHOW_MISSING]) + (", ..." if len(missing) > _SHOW_MISSING else "")
    action = "kept (--keep-missing)" if keep_missing else "left out (pass --keep-missing to keep them)"
    log.warning(
        "%s: %d of %d videos not found under %s: %s; %s",
        dataset,
        len(missing),
        total,
        videos_dir,
        shown,
        action,
    )


def select_split(
    records: list[VideoRecord], split: str | None, allowed: tuple[str, ...], dataset: str
) -> list[VideoRecord]:
    """Keep only the records of ``split`` when given (one of ``allowed``)."""
    if split is None:
        return records
    if split not in allowed:
        raise ManifestError([f"{dataset}: split: unknown split {split!r} (allowed: {', '.join(allowed)})"])
    return [r for r in records if r.split == split]
