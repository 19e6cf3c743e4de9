"""HDF5 feature shards (DESIGN.md §3.2): one file per (expert, shard), written atomically.

Layout of ``features/<expert>/<fingerprint>/shard-NNNNN.h5``:

- ``video_ids`` (N,) str, ``offsets`` (N+1,) int64: rows of video i are ``features[offsets[i]:offsets[i+1]]``
- ``features`` (R, D) float16/float32 (chunked, gzip+shuffle or lzf), ``timestamps`` (R, 2) float32 seconds
- ``status`` (N,) int8 (0 ok, 1 empty, 2 failed), ``error`` (N,) str
- ``tokens`` (R,) str for token-level experts (the word of each row)

Attributes: ``expert``, ``fingerprint``, ``schema_version``, ``config`` (canonical JSON), ``weights_sha256``,
``members_digest`` (from the shard plan, "" if none), ``package_versions`` (JSON), ``created_at`` (UTC ISO
8601).

The writer streams rows (in blocks of a few MB) into resizable datasets of ``<name>.tmp-<pid>`` in the same
folder and ``os.replace``-s it onto the final name on commit, so readers never see half a shard. Temp files
left by dead writers are removed when that shard is written again.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import ShardError
from pipeline.features.fingerprint import canonical_json

log = logging.getLogger(__name__)

STATUS_OK = 0
STATUS_EMPTY = 1
STATUS_FAILED = 2
STATUS_NAMES = {STATUS_OK: "ok", STATUS_EMPTY: "empty", STATUS_FAILED: "failed"}
SCHEMA_VERSION = 1
SHARD_GLOB = "shard-*.h5"
_STR = h5py.string_dtype("utf-8")
_CHUNK_ROWS = 256
_FLUSH_ROWS = 4 * _CHUNK_ROWS
_FLUSH_BYTES = 8 * 1024 * 1024


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00012.h5``."""
    return f"shard-{index:05d}.h5"


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the features (read from metadata; nothing is imported)."""
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "numpy", "h5py", "av", "decord", "t2v"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(path: Path) -> list[Path]:
    """Remove ``<path>.tmp-<pid>`` files whose writer process is gone (or is this process). Returns them."""
    removed = []
    for tmp in path.parent.glob(path.name + ".tmp-*"):
        pid_text = tmp.name.rsplit(".tmp-", 1)[1]
        pid = int(pid_text) if pid_text.isdigit() else -1
        if pid == os.getpid() or not _pid_alive(pid):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class ShardWriter:
    """Stream one shard to disk; ``commit()`` (or leaving the ``with`` block cleanly) publishes it atomically.

    An exception inside the ``with`` block, or ``abort()``, deletes the temp file: nothing appears at
    ``path``. ``features`` rows are stored as ``dtype`` ("float16" or "float32"); ``compression`` is "gzip"
    (with shuffle), "lzf" or None. ``extra_attrs`` adds scalar attributes (e.g. a retry token); they can't
    replace the standard ones.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        expert: str,
        fingerprint: str,
        config: dict[str, Any],
        weights_sha256: str,
        dim: int,
        dtype: str = "float16",
        token_level: bool = False,
        members_digest: str = "",
        compression: str | None = "gzip",
        extra_attrs: Mapping[str, str | int | float | bool] | None = None,
    ):
        if dtype not in ("float16", "float32"):
            raise ShardError(f"{path}: dtype must be float16 or float32, got {dtype!r}")
        if dim < 1:
            raise ShardError(f"{path}: dim must be >= 1, got {dim}")
        if compression not in ("gzip", "lzf", None):
            raise ShardError(f"{path}: compression must be gzip, lzf or None, got {compression!r}")
        reserved = {"expert", "fingerprint", "schema_version", "config", "weights_sha256", "members_digest"}
        clash = reserved & set(extra_attrs or {})
        if clash:
            raise ShardError(f"{path}: extra_attrs may not replace {sorted(clash)}")
        self.path = Path(path)
        self.dim = dim
        self.token_level = token_level
        self.path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(self.path)
        self.tmp_path = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._status: list[int] = []
        self._errors: list[str] = []
        self._offsets: list[int] = [0]
        self._buf: list[tuple[np.ndarray, np.ndarray, list[str]]] = []
        self._buf_rows = 0
        self._written = 0
        self._done = False
        comp: dict[str, Any] = {}
        if compression == "gzip":
            comp = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
        elif compression == "lzf":
            comp = {"compression": "lzf", "shuffle": True}
        self._h5 = h5py.File(self.tmp_path, "w")
        try:
            f = self._h5
            f.create_dataset(
                "features", (0, dim), dtype=dtype, maxshape=(None, dim), chunks=(_CHUNK_ROWS, dim), **comp
            )
            f.create_dataset(
                "timestamps", (0, 2), dtype=np.float32, maxshape=(None, 2), chunks=(_CHUNK_ROWS, 2)
            )
            if token_level:
                f.create_dataset("tokens", (0,), dtype=_STR, maxshape=(None,), chunks=(_CHUNK_ROWS,))
            f.attrs.update(
                {
                    "expert": expert,
                    "fingerprint": fingerprint,
                    "schema_version": SCHEMA_VERSION,
                    "config": canonical_json(config),
                    "weights_sha256": weights_sha256,
                    "members_digest": members_digest,
                    "token_level": bool(token_level),
                    "package_versions": json.dumps(package_versions(), sort_keys=True),
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    **(extra_attrs or {}),
                }
            )
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.commit()

    def _check(
        self, video_id: str, features: np.ndarray, timestamps: np.ndarray, status: int, tokens: Any
    ) -> None:
        where = f"{self.path}: {video_id}"
        if not video_id:
            raise ShardError(f"{self.path}: empty video_id")
        if video_id in self._id_set:
            raise ShardError(f"{where}: added twice")
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ShardError(f"{where}: features shape {features.shape}, expected (R, {self.dim})")
        if timestamps.shape != (features.shape[0], 2):
            raise ShardError(
                f"{where}: timestamps shape {timestamps.shape}, expected ({features.shape[0]}, 2)"
            )
        if status not in STATUS_NAMES:
            raise ShardError(f"{where}: status must be 0, 1 or 2, got {status}")
        if not np.isfinite(features).all():
            raise ShardError(f"{where}: features contain NaN or inf")
        if self.token_level and len(tokens if tokens is not None else ()) != features.shape[0]:
            raise ShardError(f"{where}: token-level shard needs one token per row ({features.shape[0]})")
        if not self.token_level and tokens is not None:
            raise ShardError(f"{where}: tokens given to a shard that is not token-level")

    def add(
        self,
        video_id: str,
        features: np.ndarray,
        timestamps: np.ndarray,
        status: int = STATUS_OK,
        error: str = "",
        tokens: list[str] | None = None,
    ) -> None:
        """Append one video: ``features`` (R, D), ``timestamps`` (R, 2) s, ``tokens`` (R,) if token-level.

        Rows are buffered up to a few MB, then appended to disk; the per-video index (ids, offsets, status,
        error) is kept in memory (small) and written on commit. Raises ShardError for wrong shapes,
        duplicates, NaN/inf.
        """
        if self._done:
            raise ShardError(f"{self.path}: add() after commit/abort")
        features = np.asarray(features)
        timestamps = np.asarray(timestamps, dtype=np.float32)
        if features.size == 0:
            features = features.reshape(0, self.dim)
            timestamps = timestamps.reshape(0, 2)
        self._check(video_id, features, timestamps, int(status), tokens)
        self._ids.append(video_id)
        self._id_set.add(video_id)
        self._status.append(int(status))
        self._errors.append(" ".join(str(error).split()))
        self._offsets.append(self._offsets[-1] + features.shape[0])
        if features.shape[0]:
            toks = [str(t) for t in tokens] if tokens is not None and self.token_level else []
            self._buf.append((features.astype(self._h5["features"].dtype), timestamps, toks))
            self._buf_rows += features.shape[0]
            if self._buf_rows * self.dim * features.itemsize >= _FLUSH_BYTES or self._buf_rows >= _FLUSH_ROWS:
                self._flush()

    def _flush(self) -> None:
        """Append the buffered rows to the resizable row datasets (a few MB at a time)."""
        if not self._buf:
            return
        f, r0, r = self._h5, self._written, self._buf_rows
        f["features"].resize((r0 + r, self.dim))
        f["features"][r0:] = np.concatenate([b[0] for b in self._buf])
        f["timestamps"].resize((r0 + r, 2))
        f["timestamps"][r0:] = np.concatenate([b[1] for b in self._buf])
        if self.token_level:
            f["tokens"].resize((r0 + r,))
            f["tokens"][r0:] = np.asarray([t for b in self._buf for t in b[2]], dtype=object)
        self._written += r
        self._buf, self._buf_rows = [], 0

    def _write_index(self) -> None:
        f = self._h5
        f.create_dataset("video_ids", data=np.asarray(self._ids, dtype=object), dtype=_STR)
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype=np.int64))
        f.create_dataset("status", data=np.asarray(self._status, dtype=np.int8))
        f.create_dataset("error", data=np.asarray(self._errors, dtype=object), dtype=_STR)

    def commit(self) -> Path:
        """Close the temp file and rename it onto ``path`` (atomic). Returns ``path``."""
        if self._done:
            raise ShardError(f"{self.path}: commit() after commit/abort")
        self._done = True
        try:
            self._flush()
            self._write_index()
            self._h5.close()
            with open(self.tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.tmp_path, self.path)
        except BaseException:
            self.tmp_path.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""
        self._done = True
        try:
            self._h5.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


@dataclass
class ShardData:
    """A whole shard in memory (``features`` as stored: float16 or float32)."""

    path: Path
    video_ids: list[str]
    offsets: np.ndarray
    features: np.ndarray
    timestamps: np.ndarray
    status: np.ndarray
    error: list[str]
    tokens: list[str] | None
    attrs: dict[str, Any] = field(default_factory=dict)

    def rows(self, i: int) -> slice:
        """Row slice of the i-th video."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


def attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def shard_attrs(path: str | Path) -> dict[str, Any]:
    """The attributes of a shard as plain Python values. Raises ShardError if it can't be opened."""
    try:
        with h5py.File(path, "r") as f:
            return {k: attr_value(v) for k, v in f.attrs.items()}
    except OSError as err:
        raise ShardError(f"{path}: cannot open shard: {err}") from err


def read_index(f: h5py.File) -> tuple[list[str], np.ndarray]:
    """``video_ids`` and ``offsets`` of an open shard (the small datasets only)."""
    return list(f["video_ids"].asstr()[()]), f["offsets"][()]


@dataclass
class ShardIndex:
    """A shard without its rows: the per-video index, row count/shape and attributes (cheap to read)."""

    path: Path
    video_ids: list[str]
    offsets: np.ndarray
    status: np.ndarray
    error: list[str]
    rows: int
    dim: int
    dtype: str
    compression: str | None
    timestamp_rows: int
    token_level: bool
    attrs: dict[str, Any] = field(default_factory=dict)


def read_shard_index(path: str | Path) -> ShardIndex:
    """Read everything of a shard but its rows. Raises ShardError (naming the file) if it is unreadable."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            ids, offsets = read_index(f)
            feats = f["features"]
            return ShardIndex(
                path=path,
                video_ids=ids,
                offsets=offsets,
                status=f["status"][()],
                error=list(f["error"].asstr()[()]),
                rows=int(feats.shape[0]),
                dim=int(feats.shape[1]),
                dtype=str(feats.dtype),
                compression=feats.compression,
                timestamp_rows=int(f["timestamps"].shape[0]),
                token_level="tokens" in f,
                attrs={k: attr_value(v) for k, v in f.attrs.items()},
            )
    except (OSError, KeyError) as err:
        raise ShardError(f"{path}: cannot read shard: {err}") from err


def index_problems(
    path: Path, ids: list[str], offsets: np.ndarray, rows: int, n_status: int, n_error: int, n_times: int
) -> list[str]:
    """Ways a shard's index disagrees with its rows (offsets, status/error/timestamps lengths); [] if none."""
    out = []
    if len(offsets) != len(ids) + 1 or int(offsets[-1]) != rows or np.any(np.diff(offsets) < 0):
        out.append(f"{path}: offsets do not match video_ids/features")
    if not (n_status == n_error == len(ids)) or n_times != rows:
        out.append(f"{path}: status/error/timestamps lengths do not match")
    return out


def read_shard(path: str | Path) -> ShardData:
    """Read a whole shard. Raises ShardError (naming the file) if it is unreadable or inconsistent."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            ids, offsets = read_index(f)
            data = ShardData(
                path=path,
                video_ids=ids,
                offsets=offsets,
                features=f["features"][()],
                timestamps=f["timestamps"][()],
                status=f["status"][()],
                error=list(f["error"].asstr()[()]),
                tokens=list(f["tokens"].asstr()[()]) if "tokens" in f else None,
                attrs={k: attr_value(v) for k, v in f.attrs.items()},
            )
    except (OSError, KeyError) as err:
        raise ShardError(f"{path}: cannot read shard: {err}") from err
    problems = index_problems(
        path, ids, offsets, len(data.features), len(data.status), len(data.error), len(data.timestamps)
    )
    if problems:
        raise ShardError(problems[0])
    return data
