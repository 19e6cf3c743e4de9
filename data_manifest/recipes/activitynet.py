"""ActivityNet Captions (Krishna et al., 2017): YouTube videos with dense, timed sentences (paragraph retrieval).

Annotations: ``train.json`` (train) and ``val_1.json`` (test, as in CE / MMT / CLIP4Clip), each an object
{video id: {duration, timestamps: [[start, end], ...], sentences: [...]}}; ``val_2.json`` (a second annotation
of the validation videos) is optional and used as the test set instead when ``split="val_2"``.
The caption is the paragraph of the video's sentences; the sentences and their [start, end) seconds are kept
under ``meta["sentences"]``, the annotated duration under ``meta["annotated_duration"]``.

Videos are ``v_XXXXXXXXXXX.mp4`` (any video extension), also found without the ``v_`` prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_manifest.errors import ManifestError
from data_manifest.recipes._common import (
    annotation_dir,
    expect,
    find_optional,
    locate_videos,
    raise_problems,
    read_json,
    select_split,
)
from data_manifest.schema import VideoRecord


def _is_span(t: Any) -> bool:
    return isinstance(t, list) and len(t) == 2 and all(isinstance(x, int | float) for x in t)


def _read(path: Path, split: str) -> list[VideoRecord]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ManifestError([f"{path}: (top): expected an object {{video id: annotation}}"])
    problems: list[str] = []
    records = []
    for vid, ann in data.items():
        where = f"{path}: {vid}"
        if not expect(isinstance(ann, dict), problems, f"{where}: expected an object"):
            continue
        sents, stamps = ann.get("sentences"), ann.get("timestamps")
        ok = expect(
            isinstance(sents, list) and bool(sents) and all(isinstance(s, str) and s.strip() for s in sents),
            problems,
            f"{where}.sentences: expected a non-empty array of non-empty strings",
        )
        ok &= expect(
            isinstance(stamps, list) and all(_is_span(t) for t in stamps),
            problems,
            f"{where}.timestamps: expected an array of [start, end] seconds",
        )
        if ok and len(stamps) != len(sents):
            problems.append(f"{where}: {len(stamps)} timestamps for {len(sents)} sentences")
            continue
        if not ok:
            continue
        meta: dict[str, Any] = {
            "benchmark": "activitynet",
            "sentences": [
                {"text": s.strip(), "start": t[0], "end": t[1]} for s, t in zip(sents, stamps, strict=True)
            ],
        }
        if isinstance(ann.get("duration"), int | float):
            meta["annotated_duration"] = ann["duration"]
        paragraph = " ".join(s.strip() for s in sents)
        records.append(VideoRecord(video_id=vid, path="", captions=[paragraph], split=split, meta=meta))
    raise_problems(problems)
    return records


def prepare_activitynet(
    annotations: Path, videos_dir: Path | None, split: str | None = None, keep_missing: bool = False
) -> list[VideoRecord]:
    """ActivityNet Captions records: train from ``train.json``, test from ``val_1.json``.

    ``split`` keeps only ``train`` or ``test``; ``val_2`` takes the test set from ``val_2.json`` instead.
    """
    annotations = Path(annotations)
    test_name = "val_2.json" if split == "val_2" else "val_1.json"
    train = find_optional(annotations, ("train.json",))
    test = find_optional(annotations, (test_name,))
    if test is None and (train is None or split == "val_2"):
        need = test_name if train else f"train.json or {test_name}"
        raise ManifestError([f"{annotation_dir(annotations)}: annotations: activitynet needs {need}"])
    records = (_read(train, "train") if train else []) + (_read(test, "test") if test else [])
    seen: set[str] = set()
    for rec in records:
        if rec.video_id in seen:
            raise ManifestError([f"{test}: {rec.video_id}: video is also in {train}"])
        seen.add(rec.video_id)
    if split != "val_2":
        records = select_split(records, split, ("train", "test", "val_2"), "activitynet")

    def names(rec: VideoRecord) -> list[str]:
        vid = rec.video_id
        return [vid, vid[2:]] if vid.startswith("v_") else [vid, f"v_{vid}"]

    return locate_videos(
        "activitynet", records, videos_dir, keep_missing, names, lambda r: f"{r.video_id}.mp4"
    )
