"""HDF5 feature shards (DESIGN.md §3.2): one file per (expert, shard), written atomically.

Layout of ``features/<expert>/<fingerprint>/shard-NNNNN.h5``:

- ``video_ids`` (N,) str, ``offsets`` (N+1,) int64: rows of video i are ``features[offsets[i]:offsets[i+1]]``
- ``features`` (R, D) float16/float32 (chunked, gzip+shuffle or lzf), ``timestamps`` (R, 2) float32 seconds
- ``status`` (N,) int8 (0 ok, 1 empty, 2 failed), ``error`` (N,) str
- ``tokens`` (R,) str for token-level experts (the word of each row)

Attributes: ``expert``, ``fingerprint``, ``schema_version``, ``config`` (canonical JSON), ``weights_sha256``,
``members_digest`` (from the shard plan, "" if none), ``package_versions`` (JSON), ``created_at`` (UTC ISO
8601), and at commit ``n_ok``, ``n_empty``, ``n_failed``, ``n_rows`` (so summaries never read the datasets; shards
written before these existed are counted from their small ``status``/``offsets`` datasets).

The writer streams rows (in blocks of a few MB) into resizable datasets of a temp file in the same folder
(``data_manifest.atomic``: ``.<name>.<pid>.<random>.tmp``) and publishes it onto the final name on commit, so
readers never see half a shard. Temp files left by dead writers are removed when that shard is written again.

Integrity: the numeric datasets (``features``, ``timestamps``, ``offsets``, ``status``) carry HDF5's fletcher32
checksum filter (after shuffle + gzip, so a flipped byte in compressed data fails before decompression); a
failing chunk is an OSError from HDF5, which readers turn into a ShardError naming the shard. HDF5 allows no
filters on variable-length strings, so ``video_ids``, ``error`` and ``tokens`` have none. Readers also check
``offsets`` (start 0, non-decreasing, end = rows), ``status`` codes and dataset lengths (:func:`index_problems`,
:func:`status_problems`, :func:`length_problems`); :func:`verify_shard` reads every byte of a shard, and
:func:`read_shard_index` everything but the rows. Shards written before the checksum was added read as before
(no checksum to verify).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import h5py
import numpy as np

from data_manifest.atomic import disk_error, publish, remove_stale_temps, temp_path
from pipeline.errors import ShardError
from pipeline.features.fingerprint import canonical_json
from pipeline.features.verified import record_verified

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
_VERIFY_ROWS = 16 * _CHUNK_ROWS
_REQUIRED = ("video_ids", "offsets", "features", "timestamps", "status", "error")
CORRUPT_HINT = "t2v features check --repair moves it aside, t2v extract rebuilds it"


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
        clash = _RESERVED_ATTRS & set(extra_attrs or {})
        if clash:
            raise ShardError(f"{path}: extra_attrs may not replace {sorted(clash)}")
        self.path = Path(path)
        self.dim = dim
        self.token_level = token_level
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        self.tmp_path = temp_path(self.path)
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
        try:
            self._h5 = h5py.File(self.tmp_path, "w")
            f = self._h5
            f.create_dataset(
                "features",
                (0, dim),
                dtype=dtype,
                maxshape=(None, dim),
                chunks=(_CHUNK_ROWS, dim),
                fletcher32=True,
                **comp,
            )
            f.create_dataset(
                "timestamps",
                (0, 2),
                dtype=np.float32,
                maxshape=(None, 2),
                chunks=(_CHUNK_ROWS, 2),
                fletcher32=True,
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
        except BaseException as err:
            self._fail(err)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._fail(exc)
        elif not self._done:
            self.commit()

    def _fail(self, err: BaseException) -> NoReturn:
        """Delete the temp file after ``err`` and raise it; a failed disk write (full, read-only) as an OSError
        naming the shard, not its temp file (``data_manifest.atomic.disk_error``)."""
        failed = disk_error(err, self.path)  # before the temp file's blocks are freed
        self._done = True
        # closing what a failed write left fails again; the file is deleted anyway
        with contextlib.suppress(Exception):
            self._h5.close()
        self.tmp_path.unlink(missing_ok=True)
        if failed is None:
            raise err
        raise failed from err

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

    def add_attrs(self, attrs: Mapping[str, str | int | float | bool]) -> None:
        """Scalar attributes known only at the end (e.g. the extraction's timings), written now."""
        clash = set(attrs) & _RESERVED_ATTRS
        if clash:
            raise ShardError(f"{self.path}: attributes may not replace {sorted(clash)}")
        self._h5.attrs.update(dict(attrs))

    def _write_index(self) -> None:
        f = self._h5
        f.create_dataset("video_ids", data=np.asarray(self._ids, dtype=object), dtype=_STR)
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype=np.int64), fletcher32=True)
        f.create_dataset("status", data=np.asarray(self._status, dtype=np.int8), fletcher32=True)
        f.create_dataset("error", data=np.asarray(self._errors, dtype=object), dtype=_STR)
        for code, name in STATUS_NAMES.items():
            f.attrs[f"n_{name}"] = self._status.count(code)
        f.attrs["n_rows"] = self._offsets[-1]

    def commit(self) -> Path:
        """Close the temp file and rename it onto ``path`` (atomic). Returns ``path``."""
        if self._done:
            raise ShardError(f"{self.path}: commit() after commit/abort")
        self._done = True
        try:
            self._flush()
            self._write_index()
            self._h5.close()
        except BaseException as err:
            self._fail(err)
        publish(self.tmp_path, self.path)
        record_verified(self.path)  # written just now: extract need not read it back
        return self.path

    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""
        self._done = True
        try:
            self._h5.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


# what extraction records per shard (extractors.engine): wall time, time the models waited for decoded input, time in
# the models, and on CUDA the share of the wall time the GPU was busy
TIMING_ATTRS = ("wall_s", "input_wait_s", "model_s", "gpu_busy")

_RESERVED_ATTRS = frozenset(
    {"expert", "fingerprint", "schema_version", "config", "weights_sha256", "members_digest"}
)


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


def shard_attr(path: str | Path, name: str) -> Any:
    """One attribute of a shard (None when absent), without reading the others. Raises ShardError if it can't be
    opened."""
    try:
        with h5py.File(path, "r") as f:
            return attr_value(f.attrs[name]) if name in f.attrs else None
    except OSError as err:
        raise ShardError(f"{path}: cannot open shard: {err}") from err


def shard_counts(path: str | Path) -> dict[str, int]:
    """Videos ok / empty / failed and rows of a shard, from its count attributes (older shards: from the small
    ``status`` and ``offsets`` datasets). Raises ShardError if it can't be read."""
    return {k: int(v) for k, v in shard_summary(path).items() if k not in TIMING_ATTRS}


def shard_summary(path: str | Path) -> dict[str, float]:
    """``shard_counts`` plus the extraction timings the shard recorded (those of ``TIMING_ATTRS`` it has: none for
    imported or older shards), in one open. Raises ShardError if it can't be read."""
    try:
        with h5py.File(path, "r") as f:
            keys = [f"n_{name}" for name in STATUS_NAMES.values()] + ["n_rows"]
            timings = {k: float(f.attrs[k]) for k in TIMING_ATTRS if k in f.attrs}
            if all(k in f.attrs for k in keys):
                return {**{k[2:]: int(f.attrs[k]) for k in keys}, **timings}
            status = f["status"][()]
            out: dict[str, float] = {name: int((status == code).sum()) for code, name in STATUS_NAMES.items()}
            out["rows"] = int(f["offsets"][-1])
            return {**out, **timings}
    except (OSError, KeyError) as err:
        raise ShardError(f"{path}: cannot read shard: {err}") from err


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
    token_level: bool
    attrs: dict[str, Any] = field(default_factory=dict)


def read_shard_index(path: str | Path) -> ShardIndex:
    """Read everything of a shard but its rows. Raises ShardError (naming the file) if it is unreadable."""
    path = Path(path)
    with open_shard(path) as f:
        try:
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
                token_level="tokens" in f,
                attrs={k: attr_value(v) for k, v in f.attrs.items()},
            )
        except KeyError as err:
            raise ShardError(f"{path}: cannot read shard: missing dataset {err}") from err
        except (OSError, ValueError) as err:
            raise corrupt(path, "index", err) from err


def index_problems(path: Path, num_ids: int, offsets: np.ndarray, rows: int) -> list[str]:
    """Problems of a shard's ``offsets`` for ``num_ids`` videos and ``rows`` feature rows (empty = sound)."""
    if len(offsets) != num_ids + 1:
        return [f"{path}: offsets: {len(offsets)} entries for {num_ids} videos (expected {num_ids + 1})"]
    out = []
    if int(offsets[0]) != 0:
        out.append(f"{path}: offsets: start at {int(offsets[0])}, not 0")
    down = np.flatnonzero(np.diff(offsets) < 0)
    if len(down):
        i = int(down[0])
        out.append(f"{path}: offsets: decrease at video {i + 1} ({int(offsets[i])} -> {int(offsets[i + 1])})")
    if int(offsets[-1]) != rows:
        out.append(f"{path}: offsets: end at {int(offsets[-1])}, but features has {rows} rows")
    return out


def status_problems(path: Path, status: np.ndarray, first: int = 0) -> list[str]:
    """Problems of a shard's ``status`` codes (each must be 0, 1 or 2); ``status[0]`` is video ``first``."""
    bad = np.flatnonzero(~np.isin(status, list(STATUS_NAMES)))
    if not len(bad):
        return []
    i = int(bad[0])
    return [
        f"{path}: status: invalid code {int(status[i])} at video {first + i} ({len(bad)} invalid; allowed 0, 1, 2)"
    ]


def length_problems(path: Path, num_ids: int, rows: int, lengths: Mapping[str, int]) -> list[str]:
    """Problems of dataset lengths (``lengths``: name -> length of those present): ``status`` and ``error`` need
    one entry per video, ``timestamps`` and ``tokens`` one per feature row."""
    out = []
    for name, n in lengths.items():
        if name in ("status", "error") and n != num_ids:
            out.append(f"{path}: {name}: {n} entries for {num_ids} videos")
        elif name in ("timestamps", "tokens") and n != rows:
            out.append(f"{path}: {name}: {n} rows, but features has {rows}")
    return out


def corrupt(path: Path, name: str, err: Exception) -> ShardError:
    """The one-line ShardError for data HDF5 cannot read back (checksum failure, damaged chunk)."""
    reason = " ".join(str(err).split())
    return ShardError(f"{path}: {name}: corrupt data ({reason}); {CORRUPT_HINT}")


def _read_through(path: Path, dset: h5py.Dataset) -> None:
    """Read every element of ``dset`` in blocks (bounded memory), so that HDF5 verifies each chunk; strings are
    decoded, so that damaged UTF-8 is found too."""
    view = dset.asstr() if h5py.check_string_dtype(dset.dtype) else dset
    for start in range(0, max(len(dset), 1), _VERIFY_ROWS):
        try:
            view[start : start + _VERIFY_ROWS]
        except (OSError, ValueError) as err:
            raise corrupt(path, dset.name.lstrip("/"), err) from err


def move_aside(path: Path) -> Path:
    """Rename a damaged shard to ``<name>.corrupt`` (kept for inspection, no longer a shard: extract rebuilds it)."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    return aside


def verify_shard(path: str | Path) -> list[str]:
    """Every problem found by reading all of a shard: checksum or read failures, offsets, status codes and
    dataset lengths, each as one ``PATH: ...`` line (empty list = sound). Costs a full read of the shard."""
    path = Path(path)
    try:
        f = open_shard(path)
    except ShardError as err:
        return [str(err)]
    with f:
        missing = [
            name for name in _REQUIRED if not isinstance(f.get(name), h5py.Dataset) or not f[name].ndim
        ]
        if missing:
            return [f"{path}: missing or scalar dataset(s) {', '.join(missing)}"]
        problems = []
        for name in (*_REQUIRED, "tokens"):
            if isinstance(f.get(name), h5py.Dataset) and f[name].ndim:
                try:
                    _read_through(path, f[name])
                except ShardError as err:
                    problems.append(str(err))
        if problems:
            return problems
        num_ids, rows = len(f["video_ids"]), len(f["features"])
        problems += index_problems(path, num_ids, f["offsets"][()], rows)
        problems += status_problems(path, f["status"][()])
        lengths = {n: len(f[n]) for n in ("status", "error", "timestamps", "tokens") if n in f and f[n].ndim}
        problems += length_problems(path, num_ids, rows, lengths)
        return problems


def open_shard(path: Path) -> h5py.File:
    """Open a shard read-only; ShardError naming it when HDF5 cannot open it (not HDF5, truncated header)."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ShardError(f"{path}: cannot read shard: {' '.join(str(err).split())}") from err


def read_shard(path: str | Path) -> ShardData:
    """Read a whole shard. Raises ShardError (naming the file) if it is unreadable, corrupt or inconsistent."""
    path = Path(path)
    with open_shard(path) as f:
        try:
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
        except KeyError as err:
            raise ShardError(f"{path}: cannot read shard: missing dataset {err}") from err
        except OSError as err:
            raise corrupt(path, "data", err) from err
    problems = index_problems(path, len(ids), offsets, len(data.features))
    lengths = {"status": len(data.status), "error": len(data.error), "timestamps": len(data.timestamps)}
    if data.tokens is not None:
        lengths["tokens"] = len(data.tokens)
    problems += length_problems(path, len(ids), len(data.features), lengths)
    problems += status_problems(path, data.status)
    if problems:
        raise ShardError(problems[0])
    return data
