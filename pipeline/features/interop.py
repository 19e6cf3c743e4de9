"""Exchange features with the reference codebases: MMT per-video HDF5 files and Collaborative-Experts pickles.

MMT layout (gabeur/mmt): one HDF5 file per video, ``<v[0]>/<v[1]>/<v[2]>/<video_id>.h5`` under the data folder
(or flat ``<video_id>.h5``), holding for each expert ``features.<expert>`` (R, D) and ``features_t.<expert>``
(R, 2) start/end seconds; a missing expert is a single NaN row. Captions, when exported, are
``raw_captions.<i>`` word arrays.

Collaborative Experts: one pickle per expert mapping ``video_id -> array`` ((D,) or (R, D)); NaN arrays mean
"missing". Pickles can run arbitrary code when loaded, so they are only read with ``trust_pickle=True``.

Imported features get their own fingerprint: expert name, version ``import-1``, config ``{"imported_from":
fmt}`` and the sha256 of the source bytes in place of the weights hash. Unknown row times are stored as NaN.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data_manifest.hashing import update_from_file
from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError, ShardError
from pipeline.features.fingerprint import fingerprint
from pipeline.features.plan import ShardPlan, default_plan_path
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import STATUS_EMPTY, STATUS_OK, ShardWriter, shard_name

IMPORT_VERSION = "import-1"
_STR = h5py.string_dtype("utf-8")


def mmt_path(root: str | Path, video_id: str, flat: bool = False) -> Path:
    """Where MMT expects a video's file: ``root/a/b/c/abc….h5`` (``flat``: ``root/<id>.h5``)."""
    if flat or len(video_id) < 3:
        return Path(root) / f"{video_id}.h5"
    return Path(root) / video_id[0] / video_id[1] / video_id[2] / f"{video_id}.h5"


def _replace_datasets(path: Path, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` into ``path`` keeping its other datasets; atomic (temp copy, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as out:
            if path.exists():
                with h5py.File(path, "r") as old:
                    for name in old:
                        if name not in data:
                            old.copy(old[name], out, name)
            for name, value in data.items():
                out.create_dataset(name, data=value)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ShardError(f"{path}: cannot write MMT file: {err}") from err


def export_mmt(
    feature_dir: str | Path,
    out_dir: str | Path,
    *,
    expert: str | None = None,
    records: list[VideoRecord] | None = None,
    flat: bool = False,
) -> int:
    """Write every video of a fingerprint folder into MMT per-video files (other experts' datasets are kept).

    Videos without usable rows (status empty/failed) get one NaN row, MMT's "missing" marker. With
    ``records``, their captions are written as ``raw_captions.<i>`` word arrays. Returns the number of videos
    written.
    """
    reader = FeatureReader(feature_dir)
    name = expert or str(reader.attrs.get("expert") or Path(feature_dir).parent.name)
    captions = {r.video_id: r.captions for r in records or []}
    ids = reader.video_ids
    for start in range(0, len(ids), 256):
        batch = reader.get_many(ids[start : start + 256])
        for vid, vf in batch.items():
            feats, times = vf.features, vf.timestamps.astype(np.float64)
            if vf.status != STATUS_OK or len(feats) == 0:
                feats = np.full((1, reader.dim), np.nan, np.float32)
                times = np.full((1, 2), np.nan)
            data = {f"features.{name}": feats, f"features_t.{name}": times}
            for i, cap in enumerate(captions.get(vid, [])):
                data[f"raw_captions.{i}"] = np.asarray(cap.split(), dtype=_STR)
            _replace_datasets(mmt_path(out_dir, vid, flat), data)
    return len(ids)


@dataclass
class ImportedVideo:
    """One video read from a foreign format: rows (R, D), times (R, 2) (NaN = unknown), status."""

    video_id: str
    features: np.ndarray
    timestamps: np.ndarray
    status: int
    error: str = ""


def _as_rows(video_id: str, value: object, source: str) -> ImportedVideo:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ShardError(f"{source}: {video_id}: expected a (D,) or (R, D) array, got shape {arr.shape}")
    keep = np.isfinite(arr).all(axis=1)
    arr = arr[keep]
    if len(arr) == 0:
        return ImportedVideo(
            video_id, arr, np.zeros((0, 2), np.float32), STATUS_EMPTY, f"missing in {source}"
        )
    return ImportedVideo(video_id, arr, np.full((len(arr), 2), np.nan, np.float32), STATUS_OK)


def read_mmt(root: str | Path, expert: str) -> Iterator[ImportedVideo]:
    """Videos (sorted by id) of an MMT folder (nested or flat) or file that hold ``features.<expert>``."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.rglob("*.h5"), key=lambda p: p.stem)
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                if f"features.{expert}" not in f:
                    continue
                item = _as_rows(path.stem, f[f"features.{expert}"][()], str(path))
                if item.status == STATUS_OK and f"features_t.{expert}" in f:
                    times = np.asarray(f[f"features_t.{expert}"][()], np.float32)
                    if times.shape == (len(item.features), 2):
                        item.timestamps = times
        except OSError as err:
            raise ShardError(f"{path}: cannot read MMT file: {err}") from err
        yield item


def read_ce_pickle(path: str | Path, *, trust_pickle: bool = False) -> Iterator[ImportedVideo]:
    """Videos of a Collaborative-Experts per-expert pickle (``video_id -> array``), sorted by id.

    Raises ConfigError unless ``trust_pickle``: unpickling runs code from the file.
    """
    path = Path(path)
    if not trust_pickle:
        raise ConfigError(
            f"{path}: refusing to load a pickle: unpickling can run arbitrary code from the file; "
            "pass --trust-pickle (trust_pickle=True) only for files from a source you trust"
        )
    try:
        with open(path, "rb") as fh:
            data = pickle.load(fh, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise ShardError(f"{path}: cannot read pickle: {err}") from err
    if not isinstance(data, dict):
        raise ShardError(f"{path}: expected a dict video_id -> array, got {type(data).__name__}")
    for vid in sorted(data, key=str):
        yield _as_rows(str(vid), data[vid], str(path))


def source_digest(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of the source files (sorted by path)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        update_from_file(digest, path)
    return digest.hexdigest()


def read_source(
    source: Path, fmt: str, expert: str, *, trust_pickle: bool = False
) -> tuple[Iterator[ImportedVideo], str]:
    """The videos of an MMT folder/file (``fmt`` "mmt") or CE pickle ("ce") and the sha256 of its bytes.

    Raises ConfigError if ``source`` is missing, or is a folder for "ce" (a CE pickle holds one expert).
    """
    if not source.exists():
        raise ConfigError(f"{source}: no such file or folder")
    if fmt == "ce":
        if source.is_dir():
            raise ConfigError(f"{source}: --format ce takes one pickle file (one expert)")
        return read_ce_pickle(source, trust_pickle=trust_pickle), source_digest([source])
    if fmt != "mmt":
        raise ConfigError(f"{source}: unknown import format {fmt!r} (mmt or ce)")
    digest = source_digest(source.rglob("*.h5") if source.is_dir() else [source])
    return read_mmt(source, expert), digest


def import_features(
    videos: Iterable[ImportedVideo],
    features_root: str | Path,
    *,
    expert: str,
    fmt: str,
    source_sha256: str,
    shard_size: int = 256,
    records: list[VideoRecord] | None = None,
    dtype: str = "float32",
) -> Path:
    """Write imported videos as shards of ``features_root/<expert>/<fingerprint>/``; returns that folder.

    With ``records`` (a manifest), shards follow the shard plan of ``features_root`` (videos the source lacks
    get status empty); otherwise videos are grouped in source order, ``shard_size`` per shard.
    """
    items = {v.video_id: v for v in videos}
    if not items:
        raise ShardError(f"import ({fmt}): no videos with features for expert {expert!r}")
    dims = {v.features.shape[1] for v in items.values() if v.features.size}
    if len(dims) != 1:
        raise ShardError(
            f"import ({fmt}): expert {expert!r} has rows of different or no dims: {sorted(dims)}"
        )
    dim = dims.pop()
    config = {"imported_from": fmt}
    fp = fingerprint(expert, IMPORT_VERSION, config, source_sha256)
    folder = Path(features_root) / expert / fp
    if records is not None:
        plan_path = default_plan_path(features_root, shard_size)
        plan = ShardPlan.load(plan_path)
        specs = plan.update(records, shard_size)
        plan.save(plan_path)
        groups = [(s.index, list(s.video_ids), s.members_digest) for s in specs]
    else:
        ids = list(items)
        groups = [(i // shard_size, ids[i : i + shard_size], "") for i in range(0, len(ids), shard_size)]
    for index, ids, digest in groups:
        with ShardWriter(
            folder / shard_name(index),
            expert=expert,
            fingerprint=fp,
            config=config,
            weights_sha256=source_sha256,
            dim=dim,
            dtype=dtype,
            members_digest=digest,
        ) as writer:
            for vid in ids:
                item = items.get(vid)
                if item is None:
                    empty = np.zeros((0, dim), np.float32)
                    writer.add(
                        vid, empty, np.zeros((0, 2)), STATUS_EMPTY, f"not in the imported {fmt} features"
                    )
                else:
                    writer.add(vid, item.features, item.timestamps, item.status, item.error)
    return folder
