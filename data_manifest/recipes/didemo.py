"""DiDeMo (Hendricks et al., 2017): Flickr videos with localized sentences, used for paragraph-to-video retrieval.

Annotations: ``train_data.json`` / ``val_data.json`` / ``test_data.json``, each a list of
{annotation_id, description, video, times, ...}; ``times`` holds each annotator's [first, last] 5-second segment.
As in CE / CLIP4Clip, all sentences of a video are concatenated into one caption. Each sentence is also kept
with its span under ``meta["sentences"]``: {text, times, start, end} with ``start = mean(first) * 5`` and
``end = (mean(last) + 1) * 5`` seconds.

Video names are Flickr file names such as ``10015567@N08_3655084291_d8b58466fa.mov``; ids are those names
sanitised to letters, digits and ``._-`` (``@`` becomes ``_``), the original kept as ``meta["name"]``. Files are
found as the name itself, the name plus an extension (``NAME.mp4``), or the name's stem with any video extension.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from data_manifest.errors import ManifestError
from data_manifest.recipes._common import (
    VIDEO_EXTENSIONS,
    expect,
    find_optional,
    locate_videos,
    raise_problems,
    read_json,
    sanitize_ids,
    select_split,
)
from data_manifest.schema import VideoRecord

SPLIT_FILES = {"train": "train_data.json", "val": "val_data.json", "test": "test_data.json"}
SEGMENT_SECONDS = 5.0


def _span(times: Any) -> tuple[float, float] | None:
    """Mean annotated span in seconds, or None if ``times`` is not a list of [first, last] segments."""
    if not isinstance(times, list) or not times:
        return None
    pairs = [
        t for t in times if isinstance(t, list) and len(t) == 2 and all(isinstance(x, int | float) for x in t)
    ]
    if len(pairs) != len(times):
        return None
    first = sum(p[0] for p in pairs) / len(pairs)
    last = sum(p[1] for p in pairs) / len(pairs)
    return first * SEGMENT_SECONDS, (last + 1) * SEGMENT_SECONDS


def _read_split(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Sentences per video name, in file order."""
    data = read_json(path)
    if not isinstance(data, list):
        raise ManifestError([f"{path}: (top): expected an array of annotations"])
    problems: list[str] = []
    videos: dict[str, list[dict[str, Any]]] = {}
    for i, item in enumerate(data):
        where = f"{path}: [{i}]"
        if not expect(isinstance(item, dict), problems, f"{where}: expected an object"):
            continue
        name, text = item.get("video"), item.get("description")
        ok = expect(
            isinstance(name, str) and name != "", problems, f"{where}.video: expected a non-empty string"
        )
        ok &= expect(
            isinstance(text, str) and text.strip() != "", problems, f"{where}.description: expected text"
        )
        span = _span(item.get("times"))
        ok &= expect(span is not None, problems, f"{where}.times: expected a list of [first, last] segments")
        if ok and span is not None:
            sentence = {"text": text.strip(), "times": item["times"], "start": span[0], "end": span[1]}
            videos.setdefault(name, []).append(sentence)
    raise_problems(problems)
    return videos


def _names(name: str) -> list[str]:
    stem, ext = os.path.splitext(name)
    return [name, stem] if ext.lower() in VIDEO_EXTENSIONS else [name]


def prepare_didemo(
    annotations: Path, videos_dir: Path | None, split: str | None = None, keep_missing: bool = False
) -> list[VideoRecord]:
    """DiDeMo records (split train / val / test; ``split`` keeps only that one), one paragraph caption each."""
    annotations = Path(annotations)
    found = {s: find_optional(annotations, (name,)) for s, name in SPLIT_FILES.items()}
    if not any(found.values()):
        raise ManifestError([f"{annotations}: annotations: didemo needs {', '.join(SPLIT_FILES.values())}"])
    per_split = {s: _read_split(p) for s, p in found.items() if p is not None}
    owner: dict[str, str] = {}
    for s, videos in per_split.items():
        for name in videos:
            if name in owner:
                raise ManifestError([f"{found[s]}: video: {name!r} is also in the {owner[name]} split"])
            owner[name] = s
    ids = sanitize_ids(owner, "didemo")
    records = [
        VideoRecord(
            video_id=ids[name],
            path="",
            captions=[" ".join(sent["text"] for sent in sentences)],
            split=s,
            meta={"benchmark": "didemo", "name": name, "sentences": sentences},
        )
        for s, videos in per_split.items()
        for name, sentences in videos.items()
    ]
    records = select_split(records, split, tuple(SPLIT_FILES), "didemo")

    def default(rec: VideoRecord) -> str:
        name = rec.meta["name"]
        return name if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS else f"{name}.mp4"

    return locate_videos(
        "didemo", records, videos_dir, keep_missing, lambda r: _names(r.meta["name"]), default
    )
