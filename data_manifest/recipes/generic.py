"""Any folder of videos plus a caption table: CSV with header ``video_id,caption[,split]`` or a JSON array of
{video_id, caption[, split]} objects. Several rows per video are several captions; a row with an empty caption
only lists its video. Videos of the folder without any row are kept with no captions.

A row's ``video_id`` names a file under the videos folder (default: the caption file's folder) by its path
relative to that folder, with or without extension, or by a file name / stem that is unique in the folder.
Manifest ids are the row's ``video_id`` without a video extension (for videos without rows: the relative path
without extension), sanitised to letters, digits and ``._-``; collisions are logged and made unique.

Split of a video: its rows' ``split`` column if present, else ``split`` if given, else ``train`` for a captioned
video and ``unlabelled`` for one without captions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_manifest.errors import ManifestError
from data_manifest.recipes._common import (
    VIDEO_EXTENSIONS,
    annotation_dir,
    find_optional,
    raise_problems,
    read_csv,
    read_json,
    report_missing,
    sanitize_ids,
)
from data_manifest.schema import VideoRecord
from data_manifest.validate import SPLITS

CAPTION_FILES = ("captions.csv", "captions.json", "annotations.csv", "annotations.json")


@dataclass
class _Row:
    where: str
    video: str
    caption: str
    split: str | None


@dataclass
class _Video:
    raw_id: str
    name: str
    file: Path | None
    captions: list[str] = field(default_factory=list)
    split: str | None = None
    split_where: str = ""


def _read_rows(path: Path) -> list[_Row]:
    problems: list[str] = []
    rows: list[_Row] = []
    if path.suffix.lower() == ".json":
        data = read_json(path)
        if not isinstance(data, list):
            raise ManifestError([f"{path}: (top): expected an array of {{video_id, caption}} objects"])
        items: list[tuple[str, Any]] = [(f"{path}: [{i}]", item) for i, item in enumerate(data)]
    else:
        items = [(f"{path}:{line}", row) for line, row in read_csv(path, ("video_id", "caption"))]
    for where, item in items:
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object with video_id and caption")
            continue
        vid, cap, split = item.get("video_id"), item.get("caption", ""), item.get("split") or None
        if not isinstance(vid, str) or not vid.strip():
            problems.append(f"{where}: video_id: expected a non-empty string")
        elif not isinstance(cap, str):
            problems.append(f"{where}: caption: expected a string")
        elif split is not None and split not in SPLITS:
            problems.append(f"{where}: split: unknown split {split!r} (allowed: {', '.join(SPLITS)})")
        else:
            rows.append(_Row(where, vid.strip(), cap.strip(), split))
    raise_problems(problems)
    return rows


def _strip_ext(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in VIDEO_EXTENSIONS else name


class _Files:
    """Video files under a folder, keyed by their path relative to it (posix separators, with extension)."""

    def __init__(self, videos_dir: Path):
        self.paths: dict[str, Path] = {}
        for folder, _dirs, names in os.walk(videos_dir):
            for name in names:
                if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                    path = Path(folder) / name
                    self.paths[path.relative_to(videos_dir).as_posix()] = path
        self.paths = dict(sorted(self.paths.items()))
        self.no_ext: dict[str, list[str]] = {}
        self.stem: dict[str, list[str]] = {}
        for key in self.paths:
            self.no_ext.setdefault(_strip_ext(key), []).append(key)
            self.stem.setdefault(os.path.basename(_strip_ext(key)), []).append(key)

    def raw_id(self, key: str) -> str:
        """The id source of a file: its relative path without extension, with it if that is ambiguous."""
        return _strip_ext(key) if len(self.no_ext[_strip_ext(key)]) == 1 else key

    def match(self, raw: str, where: str) -> str | None:
        """The file a row's video id names (None if none); an ambiguous name raises ManifestError."""
        raw = raw.replace("\\", "/")
        if raw in self.paths:
            return raw
        for table, name in ((self.no_ext, _strip_ext(raw)), (self.stem, os.path.basename(_strip_ext(raw)))):
            candidates = table.get(name, [])
            if len(candidates) > 1:
                raise ManifestError(
                    [f"{where}: video_id: {raw!r} matches several files: {', '.join(candidates[:5])}"]
                )
            if candidates:
                return candidates[0]
        return None


def prepare_generic(
    annotations: Path, videos_dir: Path | None, split: str | None = None, keep_missing: bool = False
) -> list[VideoRecord]:
    """Records for a folder of videos and a caption table (see the module docstring for ids and splits)."""
    annotations = Path(annotations)
    if split is not None and split not in SPLITS:
        raise ManifestError([f"generic: split: unknown split {split!r} (allowed: {', '.join(SPLITS)})"])
    table = annotations if annotations.is_file() else find_optional(annotations, CAPTION_FILES)
    if table is None:
        raise ManifestError(
            [f"{annotations}: annotations: generic needs a caption table ({', '.join(CAPTION_FILES)})"]
        )
    videos_dir = Path(videos_dir) if videos_dir is not None else annotation_dir(annotations)
    if not videos_dir.is_dir():
        raise ManifestError([f"{videos_dir}: videos: no such folder"])
    files = _Files(videos_dir)
    videos: dict[str, _Video] = {}
    missing: list[str] = []
    problems: list[str] = []
    for row in _read_rows(table):
        key = files.match(row.video, row.where)
        if key is None:
            key = "missing:" + _strip_ext(row.video)
            if key not in videos:
                missing.append(row.video)
                videos[key] = _Video(_strip_ext(row.video), row.video, None)
        elif key not in videos:
            videos[key] = _Video(_strip_ext(row.video), key, files.paths[key])
        video = videos[key]
        if row.caption:
            video.captions.append(row.caption)
        if row.split is not None:
            if video.split is not None and video.split != row.split:
                problems.append(
                    f"{row.where}: split: {row.split!r} but {video.split!r} at {video.split_where}"
                )
            video.split, video.split_where = row.split, row.where
    raise_problems(problems)
    for key, path in files.paths.items():
        videos.setdefault(key, _Video(files.raw_id(key), key, path))
    report_missing("generic", missing, len(videos), videos_dir, keep_missing)
    kept = [v for v in videos.values() if v.file is not None or keep_missing]
    uses: dict[str, int] = {}
    for v in kept:
        uses[v.raw_id] = uses.get(v.raw_id, 0) + 1
    for v in kept:
        if uses[v.raw_id] > 1 and v.file is not None:
            v.raw_id = v.name
    ids = sanitize_ids((v.raw_id for v in kept), "generic")
    if len(set(ids.values())) != len(kept):
        raise ManifestError(
            [f"{table}: video_id: several videos share an id; name them by their relative paths"]
        )
    root = videos_dir.absolute()
    records = []
    for v in kept:
        rec_split = v.split or split or ("train" if v.captions else "unlabelled")
        if v.file is not None:
            path = v.file.absolute()
        else:
            path = root / (v.name if _strip_ext(v.name) != v.name else v.name + ".mp4")
        meta = {"name": v.name} if ids[v.raw_id] != v.raw_id else {}
        records.append(VideoRecord(ids[v.raw_id], str(path), v.captions, rec_split, meta=meta))
    return records
