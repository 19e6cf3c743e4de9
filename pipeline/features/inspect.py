"""Inspect feature folders without loading rows: summaries, consistency checks and failed videos.

Behind ``t2v features info | check | failures``; summaries and failures read ``read_shard_index``, the check
reads every shard in full with ``verify_shard`` (pipeline/features/shards.py: the same offsets, status and
length checks the readers use).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from data_manifest.schema import VideoRecord
from pipeline.errors import ShardError
from pipeline.features.plan import ShardPlan, ShardSpec
from pipeline.features.reader import shard_files
from pipeline.features.shards import (
    SCHEMA_VERSION,
    STATUS_NAMES,
    move_aside,
    read_shard_index,
    verify_shard,
)


def fingerprint_dirs(path: Path) -> list[Path]:
    """Fingerprint folders at or below ``path`` (fingerprint folder, expert folder or features root)."""
    if not path.exists():
        raise ShardError(f"{path}: no such file or folder")
    if shard_files(path):
        return [path]
    found = sorted(
        {p.parent for p in path.glob("*/shard-*.h5")} | {p.parent for p in path.glob("*/*/shard-*.h5")}
    )
    if not found:
        raise ShardError(f"{path}: no feature shards (shard-*.h5) here or in its sub-folders")
    return found


def _status_counts(status: np.ndarray) -> dict[str, int]:
    return {STATUS_NAMES.get(int(k), str(k)): int(v) for k, v in Counter(status.tolist()).items()}


def _row_stats(rows: np.ndarray) -> dict[str, float]:
    if len(rows) == 0:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": int(rows.min()), "mean": round(float(rows.mean()), 2), "max": int(rows.max())}


def shard_summary(path: Path) -> dict[str, Any]:
    """Shape, dtype, counts by status, rows and provenance of one shard file."""
    index = read_shard_index(path)
    return {
        "path": str(path),
        "videos": len(index.video_ids),
        "rows": index.rows,
        "dim": index.dim,
        "dtype": index.dtype,
        "compression": index.compression,
        "token_level": index.token_level,
        "status": _status_counts(index.status),
        "rows_per_video": _row_stats(np.diff(index.offsets)),
        "bytes": path.stat().st_size,
        "attrs": index.attrs,
    }


def folder_summary(folder: Path) -> dict[str, Any]:
    """The summaries of a fingerprint folder's shards added up (attributes of the first, creation range)."""
    shards = [shard_summary(p) for p in shard_files(folder)]
    status: Counter[str] = Counter()
    for s in shards:
        status.update(s["status"])
    attrs = dict(shards[0]["attrs"])
    created = sorted(s["attrs"].get("created_at", "") for s in shards)
    attrs["created_at"] = f"{created[0]} .. {created[-1]}" if created[0] != created[-1] else created[0]
    attrs.pop("members_digest", None)
    return {
        "path": str(folder),
        "shards": len(shards),
        "videos": sum(s["videos"] for s in shards),
        "rows": sum(s["rows"] for s in shards),
        "dim": sorted({s["dim"] for s in shards}),
        "dtype": sorted({s["dtype"] for s in shards}),
        "status": dict(status),
        "bytes": sum(s["bytes"] for s in shards),
        "temp_files": len(list(folder.glob(".shard-*.h5.*.tmp"))),
        "attrs": attrs,
    }


def summaries(path: Path) -> list[dict[str, Any]]:
    """One summary for a shard file, or one per fingerprint folder at or below ``path``."""
    if path.is_file():
        return [shard_summary(path)]
    return [folder_summary(d) for d in fingerprint_dirs(path)]


def check_features(
    records: list[VideoRecord], features: Path, repair: bool = False
) -> tuple[list[str], list[str]]:
    """Problems and notes: shard data reads back intact (checksums, offsets, status codes), ids ⊆ manifest,
    fingerprint = folder, plan digests. ``repair`` moves shards with damaged data aside (extract rebuilds them)."""
    known = {r.video_id for r in records}
    problems: list[str] = []
    notes: list[str] = []
    for folder in fingerprint_dirs(features):
        root = folder.parent.parent
        plans: dict[str, dict[int, ShardSpec]] = {}
        for plan_path in sorted(root.glob("plan-*.json")):
            plan = ShardPlan.load(plan_path)
            if plan.shard_size is not None:
                plans[plan_path.name] = {s.index: s for s in plan.update(records, plan.shard_size)}
        seen: set[str] = set()
        for path in shard_files(folder):
            problems += check_shard(path, folder, known, plans, seen, repair)
        missing = known - seen
        if missing:
            notes.append(
                f"{folder}: {len(missing)} manifest video(s) have no rows yet, e.g. {sorted(missing)[:3]}"
            )
    return problems, notes


def check_shard(
    path: Path,
    folder: Path,
    known: set[str],
    plans: dict[str, dict[int, ShardSpec]],
    seen: set[str],
    repair: bool = False,
) -> list[str]:
    """Problems of one shard of ``folder``: its data read in full (``verify_shard``), then attributes, ids outside
    ``known`` or in ``seen`` (updated), and a ``members_digest`` that differs from a plan's entry (stale).

    With ``repair`` a shard whose data fails verification is moved aside, and the problem says so."""
    damaged = verify_shard(path)
    if damaged:
        if repair:
            damaged.append(f"{path}: moved aside to {move_aside(path).name}; t2v extract rebuilds it")
        return damaged
    index = read_shard_index(path)
    ids, attrs = index.video_ids, index.attrs
    out: list[str] = []
    if attrs.get("fingerprint") != folder.name:
        out.append(
            f"{path}: fingerprint attribute {attrs.get('fingerprint')!r} is not the folder's {folder.name!r}"
        )
    if attrs.get("expert") != folder.parent.name:
        out.append(
            f"{path}: expert attribute {attrs.get('expert')!r} is not the folder's {folder.parent.name!r}"
        )
    if attrs.get("schema_version") != SCHEMA_VERSION:
        out.append(f"{path}: schema_version {attrs.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    unknown = [v for v in ids if v not in known]
    if unknown:
        out.append(f"{path}: {len(unknown)} video id(s) not in the manifest, e.g. {unknown[:3]}")
    dupes = seen & set(ids)
    if dupes:
        out.append(f"{path}: video id(s) also in another shard, e.g. {sorted(dupes)[:3]}")
    seen.update(ids)
    shard_index = int(path.stem.split("-")[1])
    digest = attrs.get("members_digest", "")
    for plan_name, specs in plans.items():
        spec = specs.get(shard_index)
        if digest and spec is not None and set(ids) <= set(spec.video_ids):
            if spec.members_digest != digest:
                out.append(
                    f"{path}: members_digest differs from {plan_name} (a member's content changed: stale)"
                )
    return out


def failures(path: Path) -> list[dict[str, str]]:
    """Videos whose status is not ok, or ok with a decoding warning in ``error``, with expert, shard, status name
    and error."""
    out = []
    files = [path] if path.is_file() else [p for d in fingerprint_dirs(path) for p in shard_files(d)]
    for shard in files:
        index = read_shard_index(shard)
        expert = str(index.attrs.get("expert", ""))
        for i in np.flatnonzero((index.status != 0) | (np.asarray(index.error) != "")):
            out.append(
                {
                    "video_id": index.video_ids[i],
                    "status": STATUS_NAMES.get(int(index.status[i]), str(index.status[i])),
                    "error": index.error[i],
                    "expert": expert,
                    "shard": shard.name,
                }
            )
    return out
