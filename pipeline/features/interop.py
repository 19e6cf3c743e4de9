"""Exchange features with the reference codebases: MMT per-video HDF5 files and Collaborative-Experts pickles.

MMT layout (gabeur/mmt): one HDF5 file per video, ``<v[0]>/<v[1]>/<v[2]>/<video_id>.h5`` under the data folder
(or flat ``<video_id>.h5``), holding for each expert ``features.<expert>`` (R, D) and ``features_t.<expert>``
(R, 2) start/end seconds; a missing expert is a single NaN row. Captions are ``raw_captions.<i>`` word arrays.

Export writes what MMT's reader accepts: every file has the video's captions (MMT asserts at least one, so videos
without captions in the manifest are skipped, and a re-export drops captions the manifest no longer has), and
every time is finite (MMT's temporal embedding cannot take NaN): a missing expert's NaN row gets times (0, 0), and
rows whose times are unknown (imported from a CE pickle) get the video's duration split evenly over its rows.

Collaborative Experts: one pickle per expert mapping ``video_id -> array`` ((D,) or (R, D)); NaN arrays and a bare
NaN float mean "missing". Pickles can run arbitrary code when loaded, so they are only read with
``trust_pickle=True``.

Import keeps ``features_t`` aligned with the rows it keeps: NaN feature rows are dropped from both, extra time rows
beyond the features are ignored, and a NaN time row stays NaN for its row only; without ``features_t`` times are NaN.

An MMT dataset's declared size is checked against the bytes the file holds for it before it is read: a few-KB
file declaring gigabytes (unwritten chunks read back as fill values, external or virtual storage) is an error,
not an allocation. Deflate expands data at most ~1032-fold, so ``MAX_EXPANSION`` times the stored bytes bounds
what a real file can hold.

Imported features get their own fingerprint: expert name, version ``import-1``, config ``{"imported_from":
fmt}`` and the sha256 of the source bytes in place of the weights hash.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from data_manifest.atomic import atomic_path
from data_manifest.hashing import update_from_file
from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError, ShardError
from pipeline.features.fingerprint import fingerprint
from pipeline.features.plan import ShardPlan, default_plan_path
from pipeline.features.reader import FeatureReader
from pipeline.features.shards import STATUS_EMPTY, STATUS_OK, ShardWriter, shard_name

IMPORT_VERSION = "import-1"
MAX_EXPANSION = 1100
_PLAIN_LAYOUTS = (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED)
_STR = h5py.string_dtype("utf-8")


def mmt_path(root: str | Path, video_id: str, flat: bool = False) -> Path:
    """Where MMT expects a video's file: ``root/a/b/c/abc….h5`` (``flat``: ``root/<id>.h5``)."""
    if flat or len(video_id) < 3:
        return Path(root) / f"{video_id}.h5"
    return Path(root) / video_id[0] / video_id[1] / video_id[2] / f"{video_id}.h5"


def _replace_datasets(path: Path, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` into ``path`` keeping its other datasets except captions (``raw_captions.*``, which ``data``
    replaces as a whole); atomic (temp copy, then rename)."""
    try:
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
            if path.exists():
                with h5py.File(path, "r") as old:
                    for name in old:
                        if name not in data and not name.startswith("raw_captions."):
                            old.copy(old[name], out, name)
            for name, value in data.items():
                out.create_dataset(name, data=value)
    except OSError as err:
        raise ShardError(f"{path}: cannot write MMT file: {err}") from err


def _row_times(times: np.ndarray, record: VideoRecord, source: Path) -> np.ndarray:
    """(R, 2) finite start/end seconds: ``times`` when all known, else the duration split evenly over the rows."""
    if np.isfinite(times).all():
        return times
    if not record.duration:
        raise ShardError(
            f"{source}: {record.video_id}: row times unknown and the manifest has no duration "
            "(run t2v manifest probe first)"
        )
    edges = np.linspace(0.0, float(record.duration), len(times) + 1)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def export_mmt(
    feature_dir: str | Path,
    out_dir: str | Path,
    *,
    records: list[VideoRecord],
    expert: str | None = None,
    flat: bool = False,
) -> tuple[int, int]:
    """Write the captioned videos of a fingerprint folder into MMT per-video files (see the module docstring;
    other experts' datasets are kept). Returns (videos written, videos skipped for want of a caption)."""
    reader = FeatureReader(feature_dir)
    name = expert or str(reader.attrs.get("expert") or Path(feature_dir).parent.name)
    by_id = {r.video_id: r for r in records if r.captions}
    ids = [v for v in reader.video_ids if v in by_id]
    for start in range(0, len(ids), 256):
        batch = reader.get_many(ids[start : start + 256])
        for vid, vf in batch.items():
            feats, times = vf.features, vf.timestamps.astype(np.float64)
            if vf.status != STATUS_OK or len(feats) == 0:
                feats = np.full((1, reader.dim), np.nan, np.float32)
                times = np.zeros((1, 2))
            else:
                times = _row_times(times, by_id[vid], Path(feature_dir))
            data = {f"features.{name}": feats, f"features_t.{name}": times}
            for i, cap in enumerate(by_id[vid].captions):
                data[f"raw_captions.{i}"] = np.asarray(cap.split(), dtype=_STR)
            _replace_datasets(mmt_path(out_dir, vid, flat), data)
    return len(ids), len(reader.video_ids) - len(ids)


@dataclass
class ImportedVideo:
    """One video read from a foreign format: rows (R, D), times (R, 2) (NaN = unknown), status."""

    video_id: str
    features: np.ndarray
    timestamps: np.ndarray
    status: int
    error: str = ""


def _as_rows(video_id: str, value: object, source: str, times: object = None) -> ImportedVideo:
    """Rows of one foreign video: NaN rows dropped (with their times); no row left, or a bare NaN: missing."""
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 0 and not np.isfinite(arr):
        arr = np.zeros((0, 0), np.float32)
    elif arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ShardError(f"{source}: {video_id}: expected a (D,) or (R, D) array, got shape {arr.shape}")
    keep = np.isfinite(arr).all(axis=1)
    stamps = np.full((len(arr), 2), np.nan, np.float32)
    if times is not None:
        t = np.asarray(times, np.float32)
        if t.ndim == 2 and t.shape[1] == 2 and len(t) >= len(arr):
            stamps = t[: len(arr)]
    arr, stamps = arr[keep], stamps[keep]
    if len(arr) == 0:
        return ImportedVideo(video_id, arr, stamps, STATUS_EMPTY, f"missing in {source}")
    return ImportedVideo(video_id, arr, stamps, STATUS_OK)


def _read_bounded(dset: h5py.Dataset, path: Path, file_size: int) -> np.ndarray:
    """A numeric dataset's values, after checking that the file holds enough bytes for its declared size."""
    name = dset.name.lstrip("/")
    if dset.dtype.kind not in "fiu":
        raise ShardError(f"{path}: {name}: expected numbers, got dtype {dset.dtype}")
    plist = dset.id.get_create_plist()
    if plist.get_layout() not in _PLAIN_LAYOUTS or plist.get_external_count():
        raise ShardError(f"{path}: {name}: data stored outside the file (external or virtual) is not read")
    stored = min(dset.id.get_storage_size(), file_size)
    if dset.nbytes > stored * MAX_EXPANSION:
        raise ShardError(
            f"{path}: {name}: declares shape {dset.shape} ({dset.nbytes} bytes) but the file holds "
            f"{stored} bytes of it; corrupt or hostile file"
        )
    return dset[()]


def read_mmt(root: str | Path, expert: str) -> Iterator[ImportedVideo]:
    """Videos (sorted by id) of an MMT folder (nested or flat) or file that hold ``features.<expert>``."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(root.rglob("*.h5"), key=lambda p: p.stem)
    for path in files:
        try:
            size = path.stat().st_size
            with h5py.File(path, "r") as f:
                if f"features.{expert}" not in f:
                    continue
                times = (
                    _read_bounded(f[f"features_t.{expert}"], path, size)
                    if f"features_t.{expert}" in f
                    else None
                )
                item = _as_rows(
                    path.stem, _read_bounded(f[f"features.{expert}"], path, size), str(path), times
                )
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
                    feats = item.features if item.features.size else np.zeros((0, dim), np.float32)
                    writer.add(vid, feats, item.timestamps, item.status, item.error)
    return folder
