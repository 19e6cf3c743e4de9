"""MSVD / YouTube2Text (Chen & Dolan, 2011): 1,970 YouTube clips, about 40 English captions each.

Annotations (beside each other, or one of the caption files given directly):

- ``AllVideoDescriptions.txt``: ``#`` comment lines, then ``VIDEOID_START_END caption`` per line; or
  ``raw-captions.txt`` in the same form; or ``raw-captions.json`` ({video id: [caption or token list]}).
  ``raw-captions.pkl`` (CLIP4Clip) is a pickle and is never unpickled: convert it to JSON first.
- Split: ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` when present; otherwise the published split
  1,200 / 100 / 670 over the videos in published order (``youtube_mapping.txt``'s ``vidN`` numbering when present,
  else their order of first appearance in the caption file).

Videos are ``<video id>.avi`` anywhere under the videos folder (``YouTubeClips/``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from data_manifest.errors import ManifestError
from data_manifest.recipes._common import (
    annotation_dir,
    expect,
    find_optional,
    locate_videos,
    raise_problems,
    read_id_list,
    read_json,
    read_lines,
    select_split,
)
from data_manifest.schema import VideoRecord

log = logging.getLogger("data_manifest.recipes")

TEXT_FILES = ("AllVideoDescriptions.txt", "raw-captions.txt")
JSON_FILES = ("raw-captions.json",)
SPLIT_SIZES = (("train", 1200), ("val", 100), ("test", 670))
_LISTS = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}
_MAPPING_RE = re.compile(r"^(\S+)\s+vid(\d+)$")
_PICKLE_HINT = (
    "raw-captions.pkl is a pickle and is not read (unpickling runs code); if you trust it, convert it with "
    "python -c \"import pickle, json; json.dump(pickle.load(open('raw-captions.pkl', 'rb')), "
    "open('raw-captions.json', 'w'))\""
)


def _read_text_captions(path: Path) -> dict[str, list[str]]:
    problems: list[str] = []
    captions: dict[str, list[str]] = {}
    for line, text in read_lines(path):
        if text.lstrip().startswith("#"):
            continue
        vid, _, caption = text.strip().partition(" ")
        if expect(caption.strip() != "", problems, f"{path}:{line}: caption: expected 'VIDEOID caption'"):
            captions.setdefault(vid, []).append(caption.strip())
    raise_problems(problems)
    return captions


def _read_json_captions(path: Path) -> dict[str, list[str]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ManifestError([f"{path}: (top): expected an object {{video id: [captions]}}"])
    problems: list[str] = []
    captions: dict[str, list[str]] = {}
    for vid, caps in data.items():
        if not expect(isinstance(caps, list), problems, f"{path}: {vid}: expected an array of captions"):
            continue
        for i, cap in enumerate(caps):
            text = " ".join(cap) if isinstance(cap, list) and all(isinstance(t, str) for t in cap) else cap
            if expect(
                isinstance(text, str) and text.strip() != "",
                problems,
                f"{path}: {vid}[{i}]: expected a non-empty caption (string or list of tokens)",
            ):
                captions.setdefault(vid, []).append(text.strip())
    raise_problems(problems)
    return captions


def _published_order(folder: Path, captions: dict[str, list[str]]) -> list[str]:
    mapping = find_optional(folder, ("youtube_mapping.txt",))
    if mapping is None:
        return list(captions)
    numbered: list[tuple[int, str]] = []
    problems: list[str] = []
    for line, text in read_lines(mapping):
        m = _MAPPING_RE.match(text.strip())
        if expect(m is not None, problems, f"{mapping}:{line}: mapping: expected 'VIDEOID vidN'") and m:
            numbered.append((int(m.group(2)), m.group(1)))
    raise_problems(problems)
    order = [vid for _, vid in sorted(numbered) if vid in captions]
    mapped = set(order)
    return order + [vid for vid in captions if vid not in mapped]


def _assign_splits(folder: Path, captions: dict[str, list[str]]) -> list[tuple[str, str]]:
    if all((folder / n).is_file() for n in _LISTS.values()):
        problems: list[str] = []
        out = []
        for split, name in _LISTS.items():
            for line, vid in read_id_list(folder / name):
                if expect(
                    vid in captions, problems, f"{folder / name}:{line}: video_id: {vid!r} has no captions"
                ):
                    out.append((vid, split))
        raise_problems(problems)
        return out
    order = _published_order(folder, captions)
    if len(order) != sum(n for _, n in SPLIT_SIZES):
        log.warning("msvd: %d videos, not the published 1970; splitting 1200 / 100 / rest anyway", len(order))
    out, start = [], 0
    for split, size in SPLIT_SIZES:
        end = len(order) if split == "test" else start + size
        out += [(vid, split) for vid in order[start:end]]
        start = end
    return out


def prepare_msvd(
    annotations: Path, videos_dir: Path | None, split: str | None = None, keep_missing: bool = False
) -> list[VideoRecord]:
    """MSVD records with split train / val / test (``split`` keeps only that one)."""
    annotations = Path(annotations)
    text_file = find_optional(annotations, TEXT_FILES)
    json_file = None if text_file else find_optional(annotations, JSON_FILES)
    if text_file:
        captions = _read_text_captions(text_file)
    elif json_file:
        captions = _read_json_captions(json_file)
    elif find_optional(annotations, ("raw-captions.pkl",)):
        raise ManifestError([f"{annotation_dir(annotations)}: annotations: {_PICKLE_HINT}"])
    else:
        names = ", ".join(TEXT_FILES + JSON_FILES)
        raise ManifestError([f"{annotation_dir(annotations)}: annotations: msvd needs one of {names}"])
    records = [
        VideoRecord(video_id=vid, path="", captions=captions[vid], split=s, meta={"benchmark": "msvd"})
        for vid, s in _assign_splits(annotation_dir(annotations), captions)
    ]
    records = select_split(records, split, ("train", "val", "test"), "msvd")
    return locate_videos(
        "msvd", records, videos_dir, keep_missing, lambda r: [r.video_id], lambda r: f"{r.video_id}.avi"
    )
