"""The manifest record (DESIGN.md §3.1): one video per JSONL line, typed.

Required: ``video_id`` (letters, digits, ``._-``), ``path`` (relative to the manifest's folder or absolute),
``captions`` (list of non-empty strings, may be empty), ``split``. Probing fills the optional media fields.

Input limits, so that whatever validates can be stored and processed later with bounded memory: a line holds
at most ``MAX_LINE_BYTES`` bytes (longer lines are reported without being read whole), a caption at most
``MAX_CAPTION_CHARS`` characters, and no string anywhere in a record (keys included) holds NUL (U+0000, which
HDF5 strings cannot hold) or a lone surrogate (U+D800..U+DFFF from a JSON ``\\u`` escape, which UTF-8 cannot
encode).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from data_manifest.atomic import atomic_path

VIDEO_ID_RE = re.compile(r"\A[A-Za-z0-9._-]+\Z")  # \Z: "$" would also accept a trailing newline
MAX_LINE_BYTES = 1 << 20
MAX_CAPTION_CHARS = 16384
REQUIRED_FIELDS = ("video_id", "path", "captions", "split")
PROBED_FIELDS = ("duration", "fps", "num_frames", "width", "height", "has_audio", "codec", "content_hash")


@dataclass
class VideoRecord:
    """One video of a manifest. Times in seconds; ``content_hash`` is a hex sha256 prefix of the file bytes."""

    video_id: str
    path: str
    captions: list[str]
    split: str
    duration: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    has_audio: bool | None = None
    codec: str | None = None
    content_hash: str | None = None
    probe_error: str | None = None
    file_size: int | None = None
    file_mtime: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def resolve(self, manifest_dir: str | Path) -> Path:
        """Absolute path of the media file (``path`` is relative to the manifest's folder unless absolute)."""
        p = Path(self.path)
        return p if p.is_absolute() else Path(manifest_dir) / p

    def to_json(self) -> str:
        """One canonical JSONL line: keys in field order, unset optional fields left out."""
        out = {k: v for k, v in asdict(self).items() if k in REQUIRED_FIELDS or v not in (None, {})}
        return json.dumps(out, ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoRecord:
        """Build from an already validated dict; unknown keys are kept under ``meta['extra']``."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        if extra:
            kwargs.setdefault("meta", {})
            kwargs["meta"] = {**kwargs["meta"], "extra": extra}
        return cls(**kwargs)


def write_manifest(path: str | Path, records: list[VideoRecord]) -> None:
    """Write records as JSONL atomically (temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(rec.to_json() + "\n")
