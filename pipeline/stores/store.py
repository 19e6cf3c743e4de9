"""Embedding stores (DESIGN.md §3.4): a trained head's video side in HDF5 plus a faiss index, grown incrementally.

A store is a folder ``STORE/`` holding versions: ``embeddings-<n>.h5`` and ``index-<n>.faiss``, and ``CURRENT``, the
number n of the published version (a store written before versions has ``embeddings.h5`` and ``index.faiss``: version
0). A version is never changed once published: an encode copies the current one to temp files in the folder
(``data_manifest.atomic``), changes the copy, publishes it as n + 1 and switches ``CURRENT`` with one atomic rename,
then removes the versions before n. Readers open read-only without HDF5 file locking, so a search keeps working on
the version it opened while an encode runs (and after it, until the encode after next); a killed or failed encode
(kill -9, full disk) leaves only temp files, which the next encode removes. Every write first checks that the disk
has room for it plus 64 MiB for HDF5's caches (``HDF5_CACHES``), else it is an ENOSPC StoreError: HDF5 meeting a
full disk itself cannot close the file and crashes the process at exit. ``embeddings-<n>.h5``:

| dataset          | shape / type        | meaning                                                            |
|------------------|---------------------|--------------------------------------------------------------------|
| `video_ids`      | (N,) str            | manifest ids, in the order they were encoded                       |
| `captions`       | (N,) str            | JSON list of the video's captions (may be `[]`)                    |
| `paths`, `splits`, `content_hash` | (N,) str | absolute media path, split, the manifest's content hash     |
| `available`      | (N, E) bool         | expert e had usable rows (columns: attribute `experts`)            |
| `complete`       | (N,) bool           | the head's inner product is its exact score for this video         |
| `emb/<field>`    | (N, ...) f32 / bool | every tensor of the head's video ``Embedding`` (ragged dims padded) |
| `vectors`        | (N, P) float16      | ``ivfpq-rerank`` only: the index vectors, chunks of one row, read by the exact re-rank |

Attributes: ``format_version``, ``num_videos`` (rows committed; rows past it, in stores written in place before
versions, are a killed append and are dropped by the next one), ``head``, ``run_dir``, ``checkpoint``,
``checkpoint_sha256``, ``text_model_digest``, ``run_config`` (JSON), ``feature_fingerprints`` and ``feature_dirs``
(JSON), ``experts`` (JSON), ``manifest``, ``index`` (JSON: the ``IndexSpec`` used, the ``num_videos`` it covers,
``indexed``, ``dim``, ``trained_on`` (vectors at its last training), ``auto`` (kind chosen by size), ``sha256`` (of
the index file, checked each time the index is loaded: a mismatch is a StoreError, and ``encode_store`` then builds
the index again), ``recall_at_10`` (and ``recall_queries``, ``fp16_max_score_error`` for re-ranked kinds) measured
when it was last filled).

A data file never chooses the code that runs: the ``emb/`` rows are rebuilt into the ``video_embedding`` class of
the registered head named by ``head`` (``pipeline.heads.registry``); a name the registry does not know is a
one-line StoreError naming the file. Stores written before this rule also hold an ``embedding_class`` attribute
("module:Class"); it is ignored, so they open as before through their ``head`` attribute.

The index holds ``index_vectors``: ``head.video_vectors`` of the *complete* videos for inner-product heads (T2VLAD,
CRET; the other videos are scored by the head itself at search time), and a query-independent proxy of every
video for text-conditioned heads (MGFI: the frame values with uniform attention, refined as the head does, plus the
audio vector). Vectors are float32: see ``pipeline.stores.index`` for the bytes per video of each index kind; the
HDF5 file costs 4 bytes per float of the embedding (T2VLAD: (N_experts + K)·C floats, e.g. 14·768·4 = 43 kB).

Incremental encoding: manifest videos not yet in the store are encoded and appended, videos whose content hash
changed are re-encoded in place, the others are never touched; a video missing from some expert's features (not
extracted yet) is skipped and reported, so a later run picks it up. Videos no longer in the manifest (any split) are
removed: the later rows move up. The index is appended to; refilled (kept training, lists emptied, every vector
added again) when rows were re-encoded or removed; trained again when another kind is asked for or chosen by size,
or when the retraining trigger fires (``pipeline.stores.index``: appends since training > 50 % of the vectors it was
trained on). Index vectors are computed block by block (an IVF/PQ index trains on a sample), so encoding never holds
every vector in memory except for a flat index, which is in memory anyway.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from data_manifest.atomic import exclusive_lock, publish, remove_stale_temps, temp_path, write_text
from data_manifest.hashing import sha256_file
from data_manifest.schema import VideoRecord
from pipeline.errors import ConfigError, StoreError
from pipeline.features.reader import FeatureReader, latest_feature_dir
from pipeline.features.shards import STATUS_OK, attr_value
from pipeline.heads import Embedding, RetrievalHead, head_class
from pipeline.runs.record import BEST
from pipeline.runs.trained import TrainedRun, load_trained_run
from pipeline.stores.index import (
    RECALL_QUERIES,
    IndexSpec,
    add_to_index,
    choose_spec,
    exact_top,
    needs_retraining,
    read_index,
    recall_at,
    rerank,
    search_index,
    train_index,
    training_sample_size,
    write_index,
)
from pipeline.stores.vectors import complete_mask, index_vectors
from pipeline.training.dataset import VideoSample, collate, row_caps, uniform_rows

FORMAT_VERSION = 1
STORE_FILE = "embeddings.h5"
INDEX_FILE = "index.faiss"
CURRENT_FILE = "CURRENT"
LOCK_FILE = "encode.lock"
CHUNK_BYTES = 1 << 18  # HDF5 chunks of whole rows, ~256 kB: reading one video touches one chunk per field
# Free space a write leaves for what HDF5 holds in memory and writes later: its metadata cache (32 MiB at most)
# and a chunk cache of 1 MiB per open dataset (see ``_room_for``).
HDF5_CACHES = 64 << 20
_META = ("video_ids", "captions", "paths", "splits", "content_hash")
__all__ = [
    "EmbeddingStore",
    "TrainedRun",
    "encode_store",
    "load_trained_run",
    "append_embeddings",
    "rebuild_index",
]


# ----- versions -----
def version_files(out: Path, version: int) -> tuple[Path, Path]:
    """The (embeddings, index) files of ``version`` of the store ``out`` (0: a store written before versions)."""
    if version == 0:
        return out / STORE_FILE, out / INDEX_FILE
    return out / f"embeddings-{version}.h5", out / f"index-{version}.faiss"


def current_version(out: Path) -> int | None:
    """The published version of the store ``out`` (``CURRENT``; 0 for a store written before versions), None when
    the folder holds no store."""
    pointer = out / CURRENT_FILE
    if pointer.is_file():
        text = pointer.read_text(encoding="utf-8").strip()
        if not text.isdigit():
            raise StoreError(f"{pointer}: not a store version number ({text[:40]!r})")
        return int(text)
    return 0 if (out / STORE_FILE).is_file() else None


@contextmanager
def _store_lock(out: Path) -> Iterator[None]:
    """Hold ``out/encode.lock`` exclusively: one encode writes a store at a time (a second is a StoreError)."""
    busy = StoreError(
        f"{out}: another t2v encode is writing this store (holds {LOCK_FILE}); wait for it to finish"
    )
    with exclusive_lock(out / LOCK_FILE, busy):
        yield


@contextmanager
def _new_version(out: Path, base: int | None) -> Iterator[tuple[Path, Path]]:
    """Yield temp (embeddings, index) files holding a copy of version ``base``, the one the caller read (a new
    empty HDF5 file and no index when None), to change in place; on a clean exit publish them as the next version,
    switch ``CURRENT`` to it and remove the versions before the previous one. On any error the temps are deleted
    and the store keeps its current version; a write error (full disk, read-only folder) is a one-line
    StoreError, and so is another encode that holds the store or has published since ``base`` was read."""
    temps: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        with _store_lock(out):
            for name in (STORE_FILE, INDEX_FILE, CURRENT_FILE):
                remove_stale_temps(out / name)
            if current_version(out) != base:
                raise StoreError(
                    f"{out}: another encode published version {current_version(out)} after this one read "
                    f"version {base}; re-run t2v encode"
                )
            new = (base or 0) + 1
            h5_tmp, index_tmp = temp_path(out / STORE_FILE), temp_path(out / INDEX_FILE)
            temps += [h5_tmp, index_tmp]
            index_tmp.unlink()
            if base is None:
                _room_for(h5_tmp, 0)
                _open(h5_tmp, "w").close()
            else:
                old_h5, old_index = version_files(out, base)
                _room_for(
                    h5_tmp, old_h5.stat().st_size + (old_index.stat().st_size if old_index.is_file() else 0)
                )
                shutil.copyfile(old_h5, h5_tmp)
                if old_index.is_file():
                    shutil.copyfile(old_index, index_tmp)
            yield h5_tmp, index_tmp
            new_h5, new_index = version_files(out, new)
            publish(h5_tmp, new_h5)
            if index_tmp.is_file():
                publish(index_tmp, new_index)
            write_text(out / CURRENT_FILE, f"{new}\n")
            keep = {*version_files(out, new), *version_files(out, new - 1)}
            for old in [
                out / STORE_FILE,
                out / INDEX_FILE,
                *out.glob("embeddings-*.h5"),
                *out.glob("index-*.faiss"),
            ]:
                if old not in keep:
                    old.unlink(missing_ok=True)
    except (OSError, RuntimeError) as err:
        reason = _write_failure(err)
        if reason is None:
            raise
        kept = "no store was written" if base is None else f"the store keeps version {base}"
        raise StoreError(f"{out}: could not write a new store version ({reason}); {kept}") from err
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


_HDF5_IO_ERROR = re.compile(r"errno = (\d+), error message = '([^']*)'")
_FAISS_WRITE_ERROR = re.compile(r"write error in .*: \d+ != \d+ \(([^)]*)\)")
_ERRNO_OF = {os.strerror(code): code for code in errno.errorcode}


def _write_failure(err: BaseException) -> str | None:
    """The one-line reason when ``err`` is a failed write: an OSError, the RuntimeError h5py raises when a flush or
    close fails (its message, or that of the error it interrupted, names the errno), or faiss's failed
    ``write_index`` (its message ends with the OS reason); None for anything else."""
    chain: BaseException | None = err
    while chain is not None:
        if isinstance(chain, OSError):
            return (
                f"[Errno {chain.errno}] {chain.strerror}" if chain.strerror else " ".join(str(chain).split())
            )
        found = _HDF5_IO_ERROR.search(str(chain))
        if found:
            return f"[Errno {found[1]}] {found[2]}"
        found = _FAISS_WRITE_ERROR.search(str(chain))
        if found and found[1] in _ERRNO_OF:
            return f"[Errno {_ERRNO_OF[found[1]]}] {found[1]}"
        chain = chain.__context__
    return None


# ----- reading -----
def _strings(ds: h5py.Dataset, n: int) -> list[str]:
    return list(ds.asstr()[:n]) if n else []


class EmbeddingStore:
    """Read side of a store folder's current version (or of ``files``, the (embeddings, index) an encode is
    writing): metadata in memory, embeddings read by rows, the index on demand."""

    def __init__(self, path: str | Path, files: tuple[Path, Path] | None = None):
        self.path = Path(path)
        self.version: int | None = None  # the published version read (None: ``files`` given)
        if files is None:
            self.version = current_version(self.path)
            if self.version is None:
                raise StoreError(
                    f"{self.path}: no embedding store here ({STORE_FILE} missing; run t2v encode)"
                )
            files = version_files(self.path, self.version)
        self.h5_path, self.index_path = files
        if not self.h5_path.is_file():
            raise StoreError(f"{self.h5_path}: embedding store file missing (re-run t2v encode)")
        try:
            with _open(self.h5_path) as f:
                self.attrs = {k: attr_value(v) for k, v in f.attrs.items()}
                n = int(self.attrs.get("num_videos", 0))
                meta = {name: _strings(f[name], n) for name in _META}
                self.available = f["available"][:n] if n else np.zeros((0, len(self.experts)), bool)
                self.complete = f["complete"][:n] if n else np.zeros(0, bool)
        except (OSError, KeyError) as err:
            raise StoreError(f"{self.h5_path}: unreadable embedding store ({err})") from err
        if self.attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.h5_path}: store format {self.attrs.get('format_version')} != {FORMAT_VERSION}"
            )
        self.video_ids: list[str] = meta["video_ids"]
        self.captions: list[list[str]] = [json.loads(c) for c in meta["captions"]]
        self.paths, self.splits, self.content_hash = meta["paths"], meta["splits"], meta["content_hash"]
        self.row_of = {v: i for i, v in enumerate(self.video_ids)}
        try:
            self.embedding_class: type[Embedding] = head_class(self.head_name).video_embedding
        except ConfigError as err:
            raise StoreError(f"{self.h5_path}: {err}") from err

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def head_name(self) -> str:
        """The registry name of the head that encoded the store."""
        return str(self.attrs.get("head", ""))

    @property
    def experts(self) -> list[str]:
        return json.loads(self.attrs["experts"])

    @property
    def index_spec(self) -> IndexSpec:
        return IndexSpec.from_dict(json.loads(self.attrs["index"]))

    def embeddings(self, rows: np.ndarray | slice, device: str | torch.device = "cpu") -> Embedding:
        """The head's video Embedding of ``rows`` (a slice, or row numbers in any order)."""
        order = None
        if not isinstance(rows, slice):
            rows = np.asarray(rows, np.int64)
            uniq, order = np.unique(rows, return_inverse=True)
            rows = uniq
        values: dict[str, torch.Tensor | None] = {}
        with _open(self.h5_path) as f:
            for fld in fields(self.embedding_class):
                name = f"emb/{fld.name}"
                if name not in f:
                    values[fld.name] = None
                    continue
                data = _read_rows(f[name], rows)
                tensor = torch.from_numpy(np.ascontiguousarray(data))
                values[fld.name] = (tensor if order is None else tensor[torch.from_numpy(order)]).to(device)
        return self.embedding_class(**values)

    def index(self) -> Any:
        """The faiss index (StoreError when it does not cover the committed rows or its sha256 does not match)."""
        info = json.loads(self.attrs["index"])
        if int(info.get("num_videos", -1)) != len(self):
            raise StoreError(
                f"{self.path}: index covers {info.get('num_videos')} of {len(self)} videos; re-run t2v encode"
            )
        return read_index(self.index_path, self.index_spec, info.get("sha256"))


def _open(path: Path, mode: str = "r") -> h5py.File:
    """``path`` without HDF5 file locking: published versions never change and the copy an encode writes is its
    own temp file, so no lock is needed, and readers never wait for (or block) an encode."""
    return h5py.File(path, mode, locking=False)


def _read_rows(ds: h5py.Dataset, rows: np.ndarray | slice, block: int = 8192) -> np.ndarray:
    """``ds[rows]`` for a slice or sorted unique rows. h5py's point selection is far slower than slicing, so a
    few rows are read one by one and many rows as contiguous blocks."""
    if isinstance(rows, slice):
        return ds[rows]
    if len(rows) <= 64:
        return np.stack([ds[int(r)] for r in rows]) if len(rows) else ds[:0]
    parts = []
    for a in range(int(rows[0]), int(rows[-1]) + 1, block):
        chunk = rows[(rows >= a) & (rows < a + block)]
        if len(chunk):
            parts.append(ds[a : int(chunk[-1]) + 1][chunk - a])
    return np.concatenate(parts)


# ----- writing -----
@dataclass
class EncodeSummary:
    """What ``encode_store`` did."""

    store: Path
    num_videos: int
    added: int
    reencoded: int
    skipped: list[str] = field(default_factory=list)
    index: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    removed: int = 0


def _feature_dirs(run: TrainedRun, features_root: str | Path | None) -> dict[str, Path]:
    trained = {e: d for e, d in run.saved.feature_dirs.items() if e in run.head.expert_names}
    if features_root is None:
        return trained
    dirs = {e: Path(latest_feature_dir(Path(features_root), e)) for e in trained}
    for e, d in dirs.items():
        if d.name != trained[e].name:
            raise StoreError(
                f"{d}: expert {e!r} has fingerprint {d.name}, the run was trained on {trained[e].name}"
            )
    return dirs


def _identity(run: TrainedRun, dirs: dict[str, Path]) -> dict[str, Any]:
    return {
        "head": run.head.name,
        "checkpoint_sha256": run.checkpoint_sha256,
        "text_model_digest": run.saved.text_model_digest,
        "feature_fingerprints": json.dumps({e: d.name for e, d in dirs.items()}, sort_keys=True),
    }


def _samples(
    records: list[VideoRecord], readers: dict[str, FeatureReader], max_rows: dict[str, int]
) -> list[VideoSample]:
    got = {e: r.get_many([rec.video_id for rec in records]) for e, r in readers.items()}
    samples = []
    for i, rec in enumerate(records):
        rows = {}
        for e, reader in readers.items():
            vf = got[e][rec.video_id]
            ok = int(vf.status) == STATUS_OK and len(vf.features) > 0
            rows[e] = (
                vf.features[uniform_rows(len(vf.features), max_rows[e])]
                if ok
                else np.zeros((0, reader.dim), np.float32)
            )
        samples.append(VideoSample(video_id=rec.video_id, index=i, rows=rows, caption=None))
    return samples


def _room_for(path: Path, nbytes: int) -> None:
    """Raise ENOSPC naming ``path`` unless its disk has room for ``nbytes`` (an upper bound of a write) plus
    ``HDF5_CACHES``. HDF5 must never meet a full disk itself: a failed flush leaves its cache broken, the failed
    file cannot be closed, and the process crashes at exit (rc 139) after the one-line error."""
    free, need, mib = shutil.disk_usage(path.parent).free, nbytes + HDF5_CACHES, 1 << 20
    if free < need:
        reason = f"{os.strerror(errno.ENOSPC)} ({free // mib} MiB free, writing needs {-(-need // mib)} MiB)"
        raise OSError(errno.ENOSPC, reason, str(path))


def _chunk_bytes(ds: h5py.Dataset, start: int, count: int, item_bytes: int) -> int:
    """Bytes of the chunks holding rows ``start : start + count`` of ``ds`` (``item_bytes`` per value): an upper
    bound of what writing them adds to the file."""
    rows = ds.chunks[0]
    along = -(-(start + count) // rows) - start // rows
    across = int(
        np.prod([-(-size // chunk) for size, chunk in zip(ds.shape[1:], ds.chunks[1:], strict=True)])
    )
    return along * across * int(np.prod(ds.chunks)) * item_bytes


def _put(f: h5py.File, name: str, data: np.ndarray, start: int, row_chunks: bool = False) -> None:
    """Write ``data`` at rows ``start:`` of a resizable dataset, growing every dim as needed (zero/False padded).
    Chunks hold ~``CHUNK_BYTES`` of whole rows, or one row each with ``row_chunks`` (random row reads)."""
    if name not in f:
        shape = (start + len(data),) + data.shape[1:]
        trailing = tuple(max(1, d) for d in data.shape[1:])
        rows = int(max(1, min(1024, CHUNK_BYTES // (data.dtype.itemsize * int(np.prod(trailing))))))
        rows = 1 if row_chunks else rows
        f.create_dataset(
            name, shape=shape, maxshape=(None,) * data.ndim, dtype=data.dtype, chunks=(rows, *trailing)
        )
    ds = f[name]
    shape = (max(ds.shape[0], start + len(data)),) + tuple(
        max(a, b) for a, b in zip(ds.shape[1:], data.shape[1:], strict=True)
    )
    if shape != ds.shape:
        ds.resize(shape)
    _room_for(Path(f.filename), _chunk_bytes(ds, start, len(data), data.dtype.itemsize))
    pad = [(0, 0)] + [(0, s - d) for s, d in zip(shape[1:], data.shape[1:], strict=True)]
    ds[start : start + len(data)] = np.pad(data, pad) if any(p[1] for p in pad) else data


def _put_strings(f: h5py.File, name: str, values: list[str], start: int) -> None:
    if name not in f:
        f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"), chunks=True)
    ds = f[name]
    ds.resize((max(ds.shape[0], start + len(values)),))
    heap = sum(len(v.encode()) + 16 for v in values)  # variable-length strings live in the file's global heap
    _room_for(Path(f.filename), _chunk_bytes(ds, start, len(values), 16) + heap)
    ds[start : start + len(values)] = np.array(values, dtype=object)


def _write_rows(
    f: h5py.File,
    start: int,
    records: list[VideoRecord],
    manifest_dir: Path,
    emb: Embedding,
    available: np.ndarray,
    complete: np.ndarray,
) -> None:
    """Write the rows ``start : start + len(records)`` (appending or overwriting)."""
    meta = {
        "video_ids": [r.video_id for r in records],
        "captions": [json.dumps(r.captions, ensure_ascii=False) for r in records],
        "paths": [str(r.resolve(manifest_dir)) for r in records],
        "splits": [r.split for r in records],
        "content_hash": [r.content_hash or "" for r in records],
    }
    tensors = {f"emb/{k}": v for k, v in emb._tensors().items() if v is not None}
    for name, values in meta.items():
        _put_strings(f, name, values, start)
    for name, tensor in tensors.items():
        data = tensor.detach().cpu()
        _put(f, name, (data.float() if data.is_floating_point() else data).numpy(), start)
    _put(f, "available", available, start)
    _put(f, "complete", complete, start)


def _init_attrs(
    f: h5py.File, run: TrainedRun, dirs: dict[str, Path], checkpoint: str, manifest: Path
) -> None:
    f.attrs.update(
        {
            **_identity(run, dirs),
            "format_version": FORMAT_VERSION,
            "num_videos": 0,
            "run_dir": str(run.run_dir),
            "checkpoint": checkpoint,
            "run_config": json.dumps(run.saved.config.to_dict(), sort_keys=True),
            "feature_dirs": json.dumps({e: str(d) for e, d in dirs.items()}, sort_keys=True),
            "experts": json.dumps(run.head.expert_names),
            "manifest": str(manifest),
            "index": json.dumps({"num_videos": -1}),
        }
    )


def append_embeddings(
    run: TrainedRun,
    out: str | Path,
    blocks: Iterable[tuple[list[VideoRecord], Embedding, np.ndarray]],
    *,
    manifest: Path,
    feature_dirs: dict[str, Path],
) -> int:
    """Append video embeddings computed elsewhere, ``blocks`` of (records in ``emb`` order, emb, ``available``
    (B, E) bool), to the store ``out`` (created when missing) as one new version; returns the new number of videos.
    The index is not touched: call ``rebuild_index`` afterwards."""
    with _new_version(Path(out), current_version(Path(out))) as (h5_path, _), _open(h5_path, "a") as f:
        if "format_version" not in f.attrs:
            _init_attrs(f, run, feature_dirs, run.checkpoint.name, manifest)
        for records, emb, available in blocks:
            start = int(f.attrs["num_videos"])
            _write_rows(f, start, records, manifest.parent, emb, available, complete_mask(run.head, emb))
            f.attrs["num_videos"] = start + len(records)
        return int(f.attrs["num_videos"])


def rebuild_index(
    out: str | Path, head: RetrievalHead, spec: IndexSpec | None, device: str = "cpu"
) -> dict[str, Any]:
    """Build the store's index from scratch (``spec`` None: chosen by size, see ``pipeline.stores.index``), as a
    new version; returns its parameters."""
    with _new_version(Path(out), current_version(Path(out))) as files:
        return _update_index(Path(out), files, head, spec, None, appended=0, rebuild=True, device=device)


def encode_store(
    run_dir: str | Path,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    split: str | None = None,
    features_root: str | Path | None = None,
    checkpoint: str = BEST,
    index: IndexSpec | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> EncodeSummary:
    """Encode the manifest's videos (``split`` only, when given) with the run's head into the store ``out``."""
    from data_manifest.validate import load_manifest

    t0 = time.monotonic()
    run = load_trained_run(run_dir, checkpoint, device)
    dirs = _feature_dirs(run, features_root)
    manifest_path = Path(manifest or run.saved.manifest).resolve()
    listed = load_manifest(manifest_path, check_paths=False)
    records = [r for r in listed if split is None or r.split == split]
    readers = {e: FeatureReader(dirs[e]) for e in run.head.expert_names}
    out = Path(out)
    identity = _identity(run, dirs)
    existing: dict[str, tuple[int, str]] = {}
    old_spec, old_auto, removed, keep, base = None, False, [], np.zeros(0, bool), None
    if current_version(out) is not None:
        store = EmbeddingStore(out)
        base = store.version
        for key, value in identity.items():
            if str(store.attrs.get(key)) != str(value):
                raise StoreError(
                    f"{out}: store was built with another {key} ({store.attrs.get(key)} != {value}); "
                    "use a new --out folder"
                )
        old_spec, old_auto = store.index_spec, bool(json.loads(store.attrs["index"]).get("auto"))
        in_manifest = {r.video_id for r in listed}
        keep = np.array([v in in_manifest for v in store.video_ids], bool)
        removed = [v for v, k in zip(store.video_ids, keep, strict=True) if not k]
        kept = np.flatnonzero(keep)
        existing = {store.video_ids[i]: (row, store.content_hash[i]) for row, i in enumerate(kept)}
    skipped = [r.video_id for r in records if not all(r.video_id in rd for rd in readers.values())]
    skip = set(skipped)
    new = [r for r in records if r.video_id not in existing and r.video_id not in skip]
    changed = [
        r
        for r in records
        if r.video_id in existing
        and r.video_id not in skip
        and (r.content_hash or "") != existing[r.video_id][1]
    ]
    if not existing and not new and not removed:
        raise StoreError(
            f"{manifest_path}: no video{f' of split {split!r}' if split else ''} with features to encode"
            f"{f' ({len(skipped)} not extracted yet)' if skipped else ''}"
        )
    spec = index if index is not None and index.kind != "auto" else None
    if index is None and old_spec is not None and not old_auto:
        spec = old_spec  # an explicitly asked kind stays until another is asked for
    with _new_version(out, base) as files:
        if removed:
            _remove_rows(files[0], keep)
        with _open(files[0], "a") as f:
            committed = int(f.attrs.get("num_videos", 0))
            if not existing:
                _init_attrs(f, run, dirs, checkpoint, manifest_path)
            jobs = [(existing[r.video_id][0], r) for r in changed] + [
                (committed + i, r) for i, r in enumerate(new)
            ]
            for b in range(0, len(jobs), batch_size):
                block = jobs[b : b + batch_size]
                recs = [r for _, r in block]
                batch = collate(
                    _samples(recs, readers, row_caps(run.config, readers)),
                    run.head.expert_names,
                    {e: rd.dim for e, rd in readers.items()},
                )
                with torch.no_grad():
                    emb = run.head.encode_video(batch.video.to(device))
                available, complete = batch.video.available.numpy(), complete_mask(run.head, emb)
                for j, (row, rec) in enumerate(block):  # re-encoded videos keep their (scattered) rows
                    if row < committed:
                        _write_rows(
                            f,
                            row,
                            [rec],
                            manifest_path.parent,
                            emb[j],
                            available[j : j + 1],
                            complete[j : j + 1],
                        )
                fresh = [j for j, (row, _) in enumerate(block) if row >= committed]  # consecutive new rows
                if fresh:
                    _write_rows(
                        f,
                        block[fresh[0]][0],
                        [block[j][1] for j in fresh],
                        manifest_path.parent,
                        emb[torch.tensor(fresh)],
                        available[fresh],
                        complete[fresh],
                    )
                if progress:
                    print(f"encoded {min(b + batch_size, len(jobs))}/{len(jobs)} videos", flush=True)
            f.attrs["num_videos"] = committed + len(new)
            f.flush()
        info = _update_index(
            out,
            files,
            run.head,
            spec,
            old_spec,
            appended=len(new),
            rebuild=bool(changed or removed),
            device=device,
        )
    store = EmbeddingStore(out)
    return EncodeSummary(
        out, len(store), len(new), len(changed), skipped, info, time.monotonic() - t0, len(removed)
    )


def _remove_rows(h5_path: Path, keep: np.ndarray, block: int = 4096) -> None:
    """Drop the rows where ``keep`` is False from every row dataset, moving the kept rows up in order (in place,
    in the copy an encode is writing)."""
    kept = np.flatnonzero(keep)
    with _open(h5_path, "a") as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            ds = f[name]
            for a in range(0, len(kept), block):
                rows = kept[a : a + block]
                ds[a : a + len(rows)] = ds[int(rows[0]) : int(rows[-1]) + 1][rows - rows[0]]
            ds.resize((len(kept), *ds.shape[1:]))
        f.attrs["num_videos"] = len(kept)


def _update_index(
    out: Path,
    files: tuple[Path, Path],
    head: RetrievalHead,
    spec: IndexSpec | None,
    old_spec: IndexSpec | None,
    *,
    appended: int,
    rebuild: bool,
    device: str,
    block: int = 4096,
) -> dict[str, Any]:
    """Bring the index up to the store's rows: append the new rows' vectors, refill a trained index when rows were
    re-encoded or removed, or train a new one (no index yet, another kind asked for or chosen by size, or the
    retraining trigger of ``pipeline.stores.index``), or when the index file fails its recorded sha256. Works on
    ``files``, the (embeddings, index) of the version being written. ``spec`` None: the kind chosen by
    ``choose_spec``."""
    h5_path, index_path = files
    store = EmbeddingStore(out, files)
    info = json.loads(store.attrs["index"])
    n = len(store)
    indexed_rows = np.arange(n) if head.text_conditioned else np.flatnonzero(store.complete)
    dim = (
        int(index_vectors(head, store.embeddings(slice(0, 1), device)).shape[1])
        if n
        else int(info.get("dim", 0))
    )
    auto, grown = spec is None, needs_retraining(info, len(indexed_rows))
    if spec is None:
        chosen = choose_spec(len(indexed_rows), dim)
        if old_spec is not None and info.get("auto") and old_spec.kind == chosen.kind and not grown:
            spec = old_spec
        else:
            spec = chosen
    covered = (
        int(info.get("num_videos", -1)) == n - appended
        and index_path.is_file()
        and info.get("sha256") in (None, sha256_file(index_path))  # stores before digests have none
    )
    retrain = old_spec is None or spec != old_spec or not covered or grown
    if not retrain and not rebuild and appended == 0:
        return info
    if retrain:
        sample_rows = indexed_rows
        limit = training_sample_size(spec, len(indexed_rows))
        if spec.kind != "flat" and len(indexed_rows) > limit:
            sample_rows = np.sort(np.random.default_rng(0).choice(indexed_rows, limit, False))
        sample = _vectors(store, head, sample_rows if spec.kind != "flat" else sample_rows[:0], device, dim)
        index, used = train_index(sample, spec, len(indexed_rows))
        trained_on = len(indexed_rows)
        del sample
    else:
        index, used = read_index(index_path, spec), spec
        trained_on = int(info.get("trained_on", 0))
        if rebuild:
            index.reset()  # keeps the trained quantizer and codebooks
    refill = retrain or rebuild
    start = 0 if refill else n - appended
    with _open(h5_path, "a") as f:
        if refill and "vectors" in f:
            del f["vectors"]
        for a in range(start, n, block):
            emb = store.embeddings(slice(a, min(n, a + block)), device)
            vectors = index_vectors(head, emb)
            if used.reranked:
                _put(f, "vectors", vectors.astype(np.float16), a, row_chunks=True)
            keep = np.ones(len(emb), bool) if head.text_conditioned else store.complete[a : a + len(emb)]
            add_to_index(index, vectors[keep], np.arange(a, a + len(emb))[keep])
    write_index(index, index_path)
    measured = ("recall_at_10", "recall_queries", "fp16_max_score_error")  # appends keep the last fill's
    info = {
        **used.to_dict(),
        "num_videos": n,
        "indexed": int(index.ntotal),
        "dim": dim,
        "trained_on": trained_on,
        "auto": auto,
        "sha256": sha256_file(index_path),
        **({} if refill else {k: info[k] for k in measured if k in info}),
    }
    if used.kind == "flat":
        info["recall_at_10"] = 1.0
    elif refill:
        info.update(_measure_recall(store, head, index, used, indexed_rows, dim, device, block))
    with _open(h5_path, "a") as f:
        f.attrs["index"] = json.dumps(info, sort_keys=True)
    return info


def _vectors(
    store: EmbeddingStore, head: RetrievalHead, rows: np.ndarray, device: str, dim: int
) -> np.ndarray:
    """(len(rows), P) float32 index vectors of ``rows`` (sorted), read in blocks."""
    parts = [
        index_vectors(head, store.embeddings(rows[a : a + 4096], device)) for a in range(0, len(rows), 4096)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def _measure_recall(
    store: EmbeddingStore,
    head: RetrievalHead,
    index: Any,
    spec: IndexSpec,
    indexed_rows: np.ndarray,
    dim: int,
    device: str,
    block: int,
) -> dict[str, Any]:
    """recall@10 of ``index`` against exact search, with ``RECALL_QUERIES`` of the indexed vectors as queries
    (each query's own row left out of both lists), and for re-ranked kinds the largest score error of the float16
    vectors on disk over every (query, video) pair."""
    rows = np.sort(
        np.random.default_rng(1).choice(indexed_rows, min(RECALL_QUERIES, len(indexed_rows)), False)
    )
    queries = _vectors(store, head, rows, device, dim)
    k = min(11, len(indexed_rows))
    error = [0.0]
    with _open(store.h5_path) as f:

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for a in range(0, len(indexed_rows), block):
                ids = indexed_rows[a : a + block]
                vectors = _vectors(store, head, ids, device, dim)
                if spec.reranked:
                    stored = f["vectors"][int(ids[0]) : int(ids[-1]) + 1][ids - ids[0]].astype(np.float32)
                    error[0] = max(error[0], float(np.abs(queries @ stored.T - queries @ vectors.T).max()))
                yield vectors, ids

        truth = exact_top(queries, blocks(), k)
        _, found = search_index(index, queries, spec.candidates if spec.reranked else k)
        if spec.reranked:
            _, found = rerank(queries, found, f["vectors"], k)
    recall = recall_at(_without(truth, rows), _without(found[:, :k], rows))
    result: dict[str, Any] = {"recall_at_10": round(recall, 4), "recall_queries": len(rows)}
    if spec.reranked:
        result["fp16_max_score_error"] = error[0]
    return result


def _without(ids: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Each row of ``ids`` (B, k) without its query's ``own`` row, cut to k - 1 (padded with -1)."""
    out = np.full((len(ids), ids.shape[1] - 1), -1, np.int64)
    for b, (row, r) in enumerate(zip(ids, own, strict=True)):
        kept = row[row != r][: out.shape[1]]
        out[b, : len(kept)] = kept
    return out
