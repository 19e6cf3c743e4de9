"""MSR-VTT (Xu et al., 2016): 10,000 web clips, 20 captions each, and its three retrieval benchmarks.

Annotations: ``MSRVTT_data.json`` or ``videodatainfo.json`` (``videos``: [{video_id, category, url,
"start time", "end time", split, id}], ``sentences``: [{caption, video_id, sen_id}]) plus the split lists of the
Collaborative Experts / MMT / CLIP4Clip codebases, beside it:

- ``1k-A`` (JSFusion): train = ``train_list_jsfusion.txt`` (9,000 ids; or ``MSRVTT_train.9k.csv``), all captions;
  test = the 1,000 videos of ``MSRVTT_JSFUSION_test.csv`` (key, vid_key, video_id, sentence), whose one sentence
  is the test video's only caption.
- ``1k-B`` (Miech): ``train_list_miech.txt`` (6,656) / ``test_list_miech.txt`` (1,000); a test video keeps only
  its first caption (lowest ``sen_id``).
- ``full``: ``train_list_full.txt`` / ``val_list_full.txt`` / ``test_list_full.txt`` (6,513 / 497 / 2,990),
  all captions; without these files, the ``split`` field of the videos (train / validate / test).

Videos are ``<video_id>.mp4`` anywhere under the videos folder (e.g. ``TrainValVideo/``, ``TestVideo/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_manifest.errors import ManifestError
from data_manifest.recipes._common import (
    annotation_dir,
    expect,
    find_annotation,
    locate_videos,
    raise_problems,
    read_csv,
    read_id_list,
    read_json,
)
from data_manifest.schema import VideoRecord

DATA_FILES = ("MSRVTT_data.json", "videodatainfo.json")
PROTOCOLS = ("1k-A", "1k-B", "full")
_FIELD_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}

# (video id, split, captions or None for all of the video's captions)
_Assignment = tuple[str, str, list[str] | None]


def _read_data(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Videos by id (in file order) and each video's captions ordered by ``sen_id``."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise ManifestError([f"{path}: videos: expected an object with a 'videos' array"])
    if not isinstance(data.get("sentences"), list):
        raise ManifestError([f"{path}: sentences: expected an object with a 'sentences' array"])
    problems: list[str] = []
    videos: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(data["videos"]):
        if expect(
            isinstance(v, dict) and isinstance(v.get("video_id"), str),
            problems,
            f"{path}: videos[{i}]: expected an object with a string video_id",
        ):
            videos[v["video_id"]] = v
    sentences: dict[str, list[tuple[int, int, str]]] = {}
    for i, s in enumerate(data["sentences"]):
        where = f"{path}: sentences[{i}]"
        if not expect(isinstance(s, dict), problems, f"{where}: expected an object"):
            continue
        vid, cap = s.get("video_id"), s.get("caption")
        if not expect(
            isinstance(cap, str) and cap.strip() != "",
            problems,
            f"{where}.caption: expected a non-empty string",
        ):
            continue
        if not expect(vid in videos, problems, f"{where}.video_id: {vid!r} is not one of the videos"):
            continue
        sen_id = s.get("sen_id")
        order = sen_id if isinstance(sen_id, int) else i
        sentences.setdefault(vid, []).append((order, i, cap.strip()))
    raise_problems(problems)
    captions = {vid: [c for *_, c in sorted(items)] for vid, items in sentences.items()}
    return videos, captions


def _from_lists(folder: Path, lists: dict[str, str], videos: dict[str, Any]) -> list[_Assignment]:
    """Assignments from split list files (split -> file name); ids must be videos of the data file."""
    problems: list[str] = []
    out: list[_Assignment] = []
    for split, name in lists.items():
        for line, vid in read_id_list(folder / name):
            if expect(
                vid in videos, problems, f"{folder / name}:{line}: video_id: {vid!r} is not in the data file"
            ):
                out.append((vid, split, None))
    raise_problems(problems)
    return out


def _full(folder: Path, videos: dict[str, dict[str, Any]], data_path: Path) -> list[_Assignment]:
    lists = {"train": "train_list_full.txt", "val": "val_list_full.txt", "test": "test_list_full.txt"}
    if all((folder / n).is_file() for n in lists.values()):
        return _from_lists(folder, lists, videos)
    problems: list[str] = []
    out: list[_Assignment] = []
    for vid, v in videos.items():
        split = _FIELD_SPLITS.get(str(v.get("split")))
        if split is None:
            problems.append(
                f"{data_path}: videos[{vid}].split: expected train, validate or test, got {v.get('split')!r}"
                " (or give train/val/test_list_full.txt)"
            )
        else:
            out.append((vid, split, None))
    raise_problems(problems)
    return out


def _jsfusion(folder: Path, videos: dict[str, dict[str, Any]]) -> list[_Assignment]:
    test_csv = find_annotation(folder, ("MSRVTT_JSFUSION_test.csv",), "msrvtt 1k-A")
    out: list[_Assignment]
    if (folder / "train_list_jsfusion.txt").is_file():
        out = _from_lists(folder, {"train": "train_list_jsfusion.txt"}, videos)
    else:
        train_csv = find_annotation(
            folder, ("MSRVTT_train.9k.csv",), "msrvtt 1k-A (train_list_jsfusion.txt or)"
        )
        out = [
            (row["video_id"].strip(), "train", None) for _, row in read_csv(train_csv, ("video_id",))
        ]
    problems: list[str] = []
    for line, row in read_csv(test_csv, ("key", "vid_key", "video_id", "sentence")):
        vid, sentence = row["video_id"].strip(), row["sentence"].strip()
        if expect(sentence != "", problems, f"{test_csv}:{line}: sentence: empty sentence"):
            out.append((vid, "test", [sentence]))
    raise_problems(problems)
    return out


def _miech(
    folder: Path, videos: dict[str, dict[str, Any]], captions: dict[str, list[str]]
) -> list[_Assignment]:
    out = _from_lists(folder, {"train": "train_list_miech.txt", "test": "test_list_miech.txt"}, videos)
    return [(vid, split, captions.get(vid, [])[:1] if split == "test" else None) for vid, split, _ in out]


def prepare_msrvtt(
    annotations: Path, videos_dir: Path | None, split: str | None = None, keep_missing: bool = False
) -> list[VideoRecord]:
    """MSR-VTT records for one benchmark protocol: ``split`` is ``1k-A``, ``1k-B`` or ``full`` (default).

    Records carry split train / val / test and ``meta`` {benchmark, category, url, start, end}.
    """
    protocol = split or "full"
    if protocol not in PROTOCOLS:
        raise ManifestError(
            [f"msrvtt: split: unknown benchmark split {protocol!r} (allowed: {', '.join(PROTOCOLS)})"]
        )
    annotations = Path(annotations)
    data_path = find_annotation(annotations, DATA_FILES, "msrvtt")
    folder = annotation_dir(annotations)
    videos, captions = _read_data(data_path)
    if protocol == "full":
        assignments = _full(folder, videos, data_path)
    elif protocol == "1k-A":
        assignments = _jsfusion(folder, videos)
    else:
        assignments = _miech(folder, videos, captions)
    records: list[VideoRecord] = []
    seen: set[str] = set()
    for vid, rec_split, caps in assignments:
        if vid in seen:
            raise ManifestError(
                [f"{folder}: split lists: video {vid!r} appears twice in protocol {protocol}"]
            )
        seen.add(vid)
        info = videos.get(vid, {})
        meta = {
            "benchmark": f"msrvtt-{protocol}",
            "category": info.get("category"),
            "url": info.get("url"),
            "start": info.get("start time"),
            "end": info.get("end time"),
        }
        records.append(
            VideoRecord(
                video_id=vid,
                path="",
                captions=list(captions.get(vid, [])) if caps is None else caps,
                split=rec_split,
                meta={k: v for k, v in meta.items() if v is not None},
            )
        )
    return locate_videos(
        "msrvtt", records, videos_dir, keep_missing, lambda r: [r.video_id], lambda r: f"{r.video_id}.mp4"
    )
