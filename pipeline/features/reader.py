"""Reading feature shards: ``FeatureReader`` over ``features/<expert>/<fingerprint>/``, and folder helpers.

The reader builds its id → (shard, row range) index from the small ``video_ids`` / ``offsets`` datasets of
each shard only (no feature data is read for that). Temp files of writers
(``.shard-*.h5.<pid>.<random>.tmp``) are never read. Features are returned as float32 whatever the stored dtype.

Corruption is an error, never different features: each shard's ``offsets`` are checked when the index is built,
the ``status`` codes of the videos read are checked when they are read, and a chunk that fails its HDF5
checksum is a ShardError naming the shard and how to rebuild it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ShardError
from pipeline.features.shards import (
    CORRUPT_HINT,
    SHARD_GLOB,
    attr_value,
    corrupt,
    index_problems,
    open_shard,
    read_index,
    status_problems,
)


@dataclass
class VideoFeatures:
    """One video's rows: ``features`` float32 (R, D), ``timestamps`` float32 (R, 2) seconds, ``status`` 0/1/2,
    ``error`` text, ``tokens`` (R,) words for token-level experts else None."""

    features: np.ndarray
    timestamps: np.ndarray
    status: int
    error: str
    tokens: list[str] | None


@dataclass(frozen=True)
class _Loc:
    shard: int
    index: int
    start: int
    stop: int


def shard_files(folder: str | Path) -> list[Path]:
    """Committed shard files of a fingerprint folder, sorted by name."""
    return sorted(p for p in Path(folder).glob(SHARD_GLOB) if p.is_file())


class FeatureReader:
    """Random access to the features of one expert fingerprint folder (``features/<expert>/<fingerprint>/``).

    Raises ShardError if the folder has no shard, a shard is unreadable, shards disagree on fingerprint or
    dim, or a video appears in two shards.
    """

    def __init__(self, expert_dir: str | Path):
        self.expert_dir = Path(expert_dir)
        self.shards = shard_files(self.expert_dir)
        if not self.shards:
            raise ShardError(f"{self.expert_dir}: no feature shards (shard-*.h5)")
        self._locs: dict[str, _Loc] = {}
        self.attrs: dict[str, Any] = {}
        self.dim = 0
        for s, path in enumerate(self.shards):
            with open_shard(path) as f:
                try:
                    ids, offsets = read_index(f)
                    attrs = {k: attr_value(v) for k, v in f.attrs.items()}
                    rows, dim = (int(n) for n in f["features"].shape)
                except (KeyError, ValueError) as err:
                    raise ShardError(f"{path}: cannot read shard index: {err}; {CORRUPT_HINT}") from err
                except OSError as err:
                    raise corrupt(path, "index", err) from err
            problems = index_problems(path, len(ids), offsets, rows)
            if problems:
                raise ShardError(f"{problems[0]}; {CORRUPT_HINT}")
            if s == 0:
                self.attrs, self.dim = attrs, dim
            elif attrs.get("fingerprint") != self.attrs.get("fingerprint") or dim != self.dim:
                raise ShardError(
                    f"{path}: fingerprint/dim {attrs.get('fingerprint')}/{dim} differ from "
                    f"{self.shards[0].name}'s {self.attrs.get('fingerprint')}/{self.dim}"
                )
            for i, vid in enumerate(ids):
                if vid in self._locs:
                    other = self.shards[self._locs[vid].shard].name
                    raise ShardError(f"{path}: video {vid} is also in {other}")
                self._locs[vid] = _Loc(s, i, int(offsets[i]), int(offsets[i + 1]))
        self.video_ids = list(self._locs)
        self.token_level = bool(self.attrs.get("token_level", False))

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._locs

    def __len__(self) -> int:
        return len(self._locs)

    def get(self, video_id: str) -> VideoFeatures:
        """The rows of one video. Raises ShardError if it is not in this folder."""
        return self.get_many([video_id])[video_id]

    def get_many(self, video_ids: list[str]) -> dict[str, VideoFeatures]:
        """Rows of many videos: one open per shard, neighbouring videos read as one contiguous range."""
        missing = [v for v in video_ids if v not in self._locs]
        if missing:
            raise ShardError(
                f"{self.expert_dir}: no features for {len(missing)} video(s), e.g. {missing[:3]}"
            )
        by_shard: dict[int, list[_Loc]] = defaultdict(list)
        for vid in dict.fromkeys(video_ids):
            by_shard[self._locs[vid].shard].append(self._locs[vid])
        out: dict[str, VideoFeatures] = {}
        for s, locs in by_shard.items():
            out.update(self._read_shard_locs(self.shards[s], sorted(locs, key=lambda loc: loc.index)))
        return out

    def _read_shard_locs(self, path: Path, locs: list[_Loc]) -> dict[str, VideoFeatures]:
        runs: list[list[_Loc]] = []
        for loc in locs:
            if runs and runs[-1][-1].index + 1 == loc.index:
                runs[-1].append(loc)
            else:
                runs.append([loc])
        out = {}
        try:
            with open_shard(path) as f:
                ids = f["video_ids"].asstr()
                status, error = f["status"], f["error"].asstr()
                tokens_ds = f["tokens"].asstr() if "tokens" in f else None
                for run in runs:
                    lo, hi = run[0].start, run[-1].stop
                    feats = f["features"][lo:hi].astype(np.float32)
                    times = f["timestamps"][lo:hi]
                    toks = list(tokens_ds[lo:hi]) if tokens_ds is not None and hi > lo else []
                    i0, i1 = run[0].index, run[-1].index + 1
                    run_ids, run_status, run_err = ids[i0:i1], status[i0:i1], error[i0:i1]
                    problems = status_problems(path, run_status, first=i0)
                    if problems:
                        raise ShardError(f"{problems[0]}; {CORRUPT_HINT}")
                    for k, loc in enumerate(run):
                        a, b = loc.start - lo, loc.stop - lo
                        out[str(run_ids[k])] = VideoFeatures(
                            features=feats[a:b],
                            timestamps=times[a:b],
                            status=int(run_status[k]),
                            error=str(run_err[k]),
                            tokens=toks[a:b] if tokens_ds is not None else None,
                        )
        except (KeyError, ValueError) as err:
            raise ShardError(f"{path}: cannot read features: {err}; {CORRUPT_HINT}") from err
        except OSError as err:
            raise corrupt(path, "features", err) from err
        return out


@dataclass(frozen=True)
class FingerprintDir:
    """One ``features/<expert>/<fingerprint>/`` folder: shard count and newest shard mtime (s since epoch)."""

    fingerprint: str
    path: Path
    num_shards: int
    newest_mtime: float


def list_fingerprints(features_root: str | Path, expert: str) -> list[FingerprintDir]:
    """Fingerprint folders of an expert that hold at least one shard, oldest first (by newest shard mtime)."""
    base = Path(features_root) / expert
    found = []
    for folder in sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []:
        shards = shard_files(folder)
        if shards:
            newest = max(p.stat().st_mtime for p in shards)
            found.append(FingerprintDir(folder.name, folder, len(shards), newest))
    return sorted(found, key=lambda d: (d.newest_mtime, d.fingerprint))


def latest_feature_dir(features_root: str | Path, expert: str) -> Path:
    """The fingerprint folder of ``expert`` with the newest shard. Raises ShardError if there is none."""
    found = list_fingerprints(features_root, expert)
    if not found:
        raise ShardError(f"{Path(features_root) / expert}: no feature shards for expert {expert!r}")
    return found[-1].path
