"""`t2v features info | check | failures | export-mmt | import`: inspect, verify, exchange shards."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from data_manifest.display import json_text, printable
from data_manifest.validate import load_manifest
from pipeline.errors import ConfigError, ShardError
from pipeline.features.interop import export_mmt, import_features, read_ce_pickle, read_mmt, source_digest
from pipeline.features.plan import ShardPlan
from pipeline.features.reader import shard_files
from pipeline.features.shards import SCHEMA_VERSION, STATUS_NAMES, attr_value, open_shard, verify_shard

__all__ = ["register", "shard_summary", "check_features", "list_failures"]


def _fingerprint_dirs(path: Path) -> list[Path]:
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


def shard_summary(path: Path) -> dict[str, Any]:
    """Shape, dtype, counts by status, rows and provenance of one shard file."""
    try:
        with h5py.File(path, "r") as f:
            feats = f["features"]
            status = f["status"][()]
            offsets = f["offsets"][()]
            out = {
                "path": str(path),
                "videos": int(len(status)),
                "rows": int(feats.shape[0]),
                "dim": int(feats.shape[1]),
                "dtype": str(feats.dtype),
                "compression": feats.compression,
                "token_level": "tokens" in f,
                "status": {
                    STATUS_NAMES.get(int(k), str(k)): int(v) for k, v in Counter(status.tolist()).items()
                },
                "rows_per_video": _row_stats(np.diff(offsets)),
                "bytes": path.stat().st_size,
                "attrs": {k: attr_value(v) for k, v in f.attrs.items()},
            }
    except (OSError, KeyError) as err:
        raise ShardError(f"{path}: cannot read shard: {err}") from err
    return out


def _row_stats(rows: np.ndarray) -> dict[str, float]:
    if len(rows) == 0:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": int(rows.min()), "mean": round(float(rows.mean()), 2), "max": int(rows.max())}


def _folder_summary(folder: Path) -> dict[str, Any]:
    shards = [shard_summary(p) for p in shard_files(folder)]
    status: Counter = Counter()
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


def _print_summary(info: dict[str, Any]) -> None:
    for key, value in info.items():
        if key == "attrs":
            print("attributes:")
            for name, attr in sorted(value.items()):
                print(f"  {printable(name)}: {printable(attr)}")
        else:
            print(f"{key}: {printable(value)}")


def _info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_file():
        infos = [shard_summary(path)]
    else:
        infos = [_folder_summary(d) for d in _fingerprint_dirs(path)]
    if args.json:
        print(json_text(infos if len(infos) > 1 else infos[0], indent=1, default=str))
        return 0
    for i, info in enumerate(infos):
        if i:
            print()
        _print_summary(info)
    return 0


def check_features(manifest: Path, features: Path, repair: bool = False) -> tuple[list[str], list[str]]:
    """Problems and notes: shard data reads back intact (checksums, offsets, status codes), ids ⊆ manifest,
    fingerprint = folder, plan digests. ``repair`` moves shards with damaged data aside (extract rebuilds them)."""
    records = load_manifest(manifest, check_paths=False)
    known = {r.video_id for r in records}
    problems: list[str] = []
    notes: list[str] = []
    for folder in _fingerprint_dirs(features):
        root = folder.parent.parent
        plans = {}
        for plan_path in sorted(root.glob("plan-*.json")):
            plan = ShardPlan.load(plan_path)
            if plan.shard_size is not None:
                plans[plan_path.name] = {s.index: s for s in plan.update(records, plan.shard_size)}
        seen: set[str] = set()
        for path in shard_files(folder):
            problems += _check_shard(path, folder, known, plans, seen, repair)
        missing = known - seen
        if missing:
            notes.append(
                f"{folder}: {len(missing)} manifest video(s) have no rows yet, e.g. {sorted(missing)[:3]}"
            )
    return problems, notes


def _move_aside(path: Path) -> Path:
    """Rename a damaged shard to ``<name>.corrupt`` (kept for inspection, no longer a shard: extract rebuilds it)."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    return aside


def _check_shard(
    path: Path, folder: Path, known: set[str], plans: dict, seen: set[str], repair: bool
) -> list[str]:
    """Problems of one shard: its data read in full (``verify_shard``), then attributes, ids and plan digests.

    With ``repair`` a shard whose data fails verification is moved aside, and the problem says so."""
    damaged = verify_shard(path)
    if damaged:
        if repair:
            damaged.append(f"{path}: moved aside to {_move_aside(path).name}; t2v extract rebuilds it")
        return damaged
    out = []
    with open_shard(path) as f:
        ids = list(f["video_ids"].asstr()[()])
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
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
    index = int(path.stem.split("-")[1])
    digest = attrs.get("members_digest", "")
    for plan_name, specs in plans.items():
        spec = specs.get(index)
        if digest and spec is not None and set(ids) <= set(spec.video_ids):
            if spec.members_digest != digest:
                out.append(
                    f"{path}: members_digest differs from {plan_name} (a member's content changed: stale)"
                )
    return out


def _check(args: argparse.Namespace) -> int:
    problems, notes = check_features(Path(args.manifest), Path(args.features), repair=args.repair)
    for note in notes:
        print(f"note: {printable(note)}")
    for problem in problems:
        print(printable(problem))
    if problems:
        print(f"t2v features check: {len(problems)} problem(s)")
        return 1
    print(f"{args.features}: ok")
    return 0


def list_failures(path: Path) -> list[dict[str, str]]:
    """Videos whose status is not ok, or ok with a decoding warning in ``error``, with expert, shard, status name
    and error."""
    out = []
    files = [path] if path.is_file() else [p for d in _fingerprint_dirs(path) for p in shard_files(d)]
    for shard in files:
        try:
            with h5py.File(shard, "r") as f:
                ids = f["video_ids"].asstr()[()]
                status = f["status"][()]
                errors = f["error"].asstr()[()]
                expert = attr_value(f.attrs.get("expert", ""))
        except (OSError, KeyError, ValueError) as err:
            raise ShardError(f"{shard}: cannot read shard: {err}") from err
        for i in np.flatnonzero((status != 0) | (errors != "")):
            out.append(
                {
                    "video_id": str(ids[i]),
                    "status": STATUS_NAMES.get(int(status[i]), str(status[i])),
                    "error": str(errors[i]),
                    "expert": str(expert),
                    "shard": shard.name,
                }
            )
    return out


def _failures(args: argparse.Namespace) -> int:
    rows = list_failures(Path(args.path))
    if args.json:
        print(json_text(rows, indent=1))
        return 0
    rows = [{k: printable(v) for k, v in r.items()} for r in rows]
    if not rows:
        print(f"{args.path}: no failed, empty or warned videos")
        return 0
    width = max(len("video_id"), *(len(r["video_id"]) for r in rows))
    expert_w = max(len("expert"), *(len(r["expert"]) for r in rows))
    print(f"{'video_id':<{width}}  {'expert':<{expert_w}}  status  error")
    for r in rows:
        print(f"{r['video_id']:<{width}}  {r['expert']:<{expert_w}}  {r['status']:<6}  {r['error']}")
    return 0


def _export_mmt(args: argparse.Namespace) -> int:
    records = load_manifest(args.manifest, check_paths=False)
    total = 0
    for folder in _fingerprint_dirs(Path(args.features)):
        written, skipped = export_mmt(folder, args.out, expert=args.expert, records=records, flat=args.flat)
        total += written
        note = f" ({skipped} without a caption in {args.manifest} skipped: MMT needs one)" if skipped else ""
        print(f"{folder}: exported{note}")
    print(f"{args.out}: {total} video entries written")
    return 0


def _import(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if not source.exists():
        raise ConfigError(f"{source}: no such file or folder")
    if args.format == "ce":
        if source.is_dir():
            raise ConfigError(f"{source}: --format ce takes one pickle file (one expert)")
        videos = read_ce_pickle(source, trust_pickle=args.trust_pickle)
        digest = source_digest([source])
    else:
        digest = source_digest(source.rglob("*.h5") if source.is_dir() else [source])
        videos = read_mmt(source, args.expert)
    records = load_manifest(args.manifest, check_paths=False) if args.manifest else None
    folder = import_features(
        videos,
        args.out,
        expert=args.expert,
        fmt=args.format,
        source_sha256=digest,
        shard_size=args.shard_size,
        records=records,
        dtype=args.dtype,
    )
    print(f"{folder}: imported ({len(shard_files(folder))} shard(s))")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``features`` command group."""
    parser = sub.add_parser("features", help="inspect, check and exchange feature shards")
    fsub = parser.add_subparsers(dest="features_command", required=True, metavar="SUBCOMMAND")

    p = fsub.add_parser(
        "info", help="shape, dtype, status counts and provenance of a shard or feature folder"
    )
    p.add_argument("path", help="a shard file, a fingerprint folder, an expert folder or a features root")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)

    p = fsub.add_parser(
        "check",
        help="read every shard in full (checksums, offsets, status) and verify it against a manifest and the plan",
    )
    p.add_argument("--manifest", required=True, help="manifest JSONL the features were extracted for")
    p.add_argument("--features", required=True, help="fingerprint folder, expert folder or features root")
    p.add_argument(
        "--repair",
        action="store_true",
        help="move shards whose data is damaged aside (<shard>.corrupt); t2v extract then rebuilds them",
    )
    p.set_defaults(func=_check)

    p = fsub.add_parser("failures", help="videos with status empty or failed, or ok with a decoding warning, and why")
    p.add_argument("path", help="a shard file, a fingerprint folder, an expert folder or a features root")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_failures)

    p = fsub.add_parser(
        "export-mmt", help="write MMT per-video HDF5 files (features.<expert>, features_t.<expert>)"
    )
    p.add_argument("features", help="fingerprint folder, expert folder or features root")
    p.add_argument("--out", required=True, help="MMT data folder (files are added to / updated in place)")
    p.add_argument("--expert", help="dataset name in the MMT files (default: the shards' expert)")
    p.add_argument(
        "--manifest",
        required=True,
        help="captions written as raw_captions.<i>; durations for unknown row times",
    )
    p.add_argument("--flat", action="store_true", help="<out>/<id>.h5 instead of MMT's <a>/<b>/<c>/<id>.h5")
    p.set_defaults(func=_export_mmt)

    p = fsub.add_parser("import", help="import MMT per-video HDF5 files or a Collaborative-Experts pickle")
    p.add_argument("source", help="MMT data folder (or one .h5), or a CE pickle (video_id -> array)")
    p.add_argument("--format", choices=("mmt", "ce"), required=True)
    p.add_argument(
        "--expert", required=True, help="expert name (MMT dataset features.<expert>; output folder)"
    )
    p.add_argument("--out", required=True, help="features root: writes <out>/<expert>/<fingerprint>/")
    p.add_argument("--manifest", help="shard by the plan of this manifest (missing videos: status empty)")
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--dtype", choices=("float16", "float32"), default="float32")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling (runs code from the file)")
    p.set_defaults(func=_import)
