"""LSMDC (Rohrbach et al., 2017): movie clips with audio-description sentences.

Annotations: tab-separated files without header, one sentence per line:
``clip_id \\t start \\t end \\t start_aligned \\t end_aligned \\t sentence``. Splits as in CE / CLIP4Clip:
train = ``LSMDC16_annos_training.csv``, val = ``LSMDC16_annos_val.csv``, test =
``LSMDC16_challenge_1000_publictect.csv`` (the 1,000-clip retrieval test set), else ``LSMDC16_annos_test.csv``.
Sentences of the same clip become its captions. A clip is ``<movie>/<clip_id>.avi`` where ``movie`` is the
clip id without its ``_HH.MM.SS.mmm-HH.MM.SS.mmm`` suffix (also found anywhere under the videos folder).
"""

from __future__ import annotations

import re
from pathlib import Path

from data_manifest.errors import ManifestError
from data_manifest.recipes._common import (
    annotation_dir,
    find_optional,
    locate_videos,
    raise_problems,
    read_lines,
    sanitize_ids,
    select_split,
)
from data_manifest.schema import VideoRecord

SPLIT_FILES = {
    "train": ("LSMDC16_annos_training.csv",),
    "val": ("LSMDC16_annos_val.csv",),
    "test": ("LSMDC16_challenge_1000_publictect.csv", "LSMDC16_annos_test.csv"),
}
_CLIP_TIME_RE = re.compile(r"^(?P<movie>.+)_\d{2}\.\d{2}\.\d{2}\.\d{3}-\d{2}\.\d{2}\.\d{2}\.\d{3}$")
_COLUMNS = 6


def movie_of(clip_id: str) -> str:
    """The movie folder of a clip id (the id itself if it has no time suffix)."""
    m = _CLIP_TIME_RE.match(clip_id)
    return m.group("movie") if m else clip_id


def _read(path: Path, split: str, records: dict[str, VideoRecord], where_seen: dict[str, str]) -> None:
    problems: list[str] = []
    for line, text in read_lines(path):
        cols = text.split("\t", _COLUMNS - 1)
        if len(cols) != _COLUMNS or not cols[0].strip() or not cols[5].strip():
            problems.append(f"{path}:{line}: row: expected 6 tab-separated columns ending in a sentence")
            continue
        clip = cols[0].strip()
        rec = records.get(clip)
        if rec is None:
            meta = {
                "benchmark": "lsmdc",
                "movie": movie_of(clip),
                "start": cols[1].strip(),
                "end": cols[2].strip(),
            }
            records[clip] = VideoRecord(video_id=clip, path="", captions=[], split=split, meta=meta)
            where_seen[clip] = f"{path}:{line}"
            rec = records[clip]
        elif rec.split != split:
            problems.append(
                f"{path}:{line}: clip_id: {clip!r} is also in the {rec.split} split ({where_seen[clip]})"
            )
            continue
        rec.captions.append(cols[5].strip())
    raise_problems(problems)


def prepare_lsmdc(
    annotations: Path, videos_dir: Path | None, split: str | None = None, keep_missing: bool = False
) -> list[VideoRecord]:
    """LSMDC records (split train / val / test; ``split`` keeps only that one)."""
    annotations = Path(annotations)
    found = {s: find_optional(annotations, names) for s, names in SPLIT_FILES.items()}
    if not any(found.values()):
        names = ", ".join(n for ns in SPLIT_FILES.values() for n in ns)
        raise ManifestError([f"{annotation_dir(annotations)}: annotations: lsmdc needs one of {names}"])
    records: dict[str, VideoRecord] = {}
    where_seen: dict[str, str] = {}
    for s, path in found.items():
        if path is not None:
            _read(path, s, records, where_seen)
    ids = sanitize_ids(records, "lsmdc")
    for clip, rec in records.items():
        if ids[clip] != clip:
            rec.video_id = ids[clip]
            rec.meta["clip_id"] = clip
    selected = select_split(list(records.values()), split, tuple(SPLIT_FILES), "lsmdc")
    return locate_videos(
        "lsmdc",
        selected,
        videos_dir,
        keep_missing,
        lambda r: [r.meta.get("clip_id", r.video_id)],
        lambda r: f"{r.meta['movie']}/{r.meta.get('clip_id', r.video_id)}.avi",
    )
