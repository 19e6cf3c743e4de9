"""`t2v features info | check | failures | export-mmt | import`: inspect, verify, exchange shards."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from data_manifest.display import json_text, printable
from data_manifest.probe import read_probed_copy
from data_manifest.schema import VideoRecord
from data_manifest.validate import load_manifest
from pipeline.features.inspect import check_features, failures, fingerprint_dirs, summaries
from pipeline.features.interop import export_mmt, import_features, read_source
from pipeline.features.reader import shard_files
from workflows.tasks_extract import probed_manifest_path

__all__ = ["register"]


def _print_summary(info: dict[str, Any]) -> None:
    for key, value in info.items():
        if key == "attrs":
            print("attributes:")
            for name, attr in sorted(value.items()):
                print(f"  {printable(name)}: {printable(attr)}")
        else:
            print(f"{key}: {printable(value)}")


def _info(args: argparse.Namespace) -> int:
    infos = summaries(Path(args.path))
    if args.json:
        print(json_text(infos if len(infos) > 1 else infos[0], indent=1, default=str))
        return 0
    for i, info in enumerate(infos):
        if i:
            print()
        _print_summary(info)
    return 0


def _check_records(manifest: Path, features: Path) -> list[VideoRecord]:
    """The manifest's records as ``t2v extract`` planned them: a video's record from the probed copy extract made
    of this manifest under the features root (the shards' ``members_digest`` covers its probed content hash), the
    manifest's own for a video not extracted yet. A probed copy given as ``--manifest`` is used as it is."""
    records = load_manifest(manifest, check_paths=False)
    probed: dict[str, VideoRecord] = {}
    for root in sorted({folder.parent.parent for folder in fingerprint_dirs(features)}):
        copy = probed_manifest_path(manifest, root)
        if copy.is_file():
            probed.update({r.video_id: r for r in read_probed_copy(copy)})
    return [probed.get(r.video_id, r) for r in records]


def _check(args: argparse.Namespace) -> int:
    records = _check_records(Path(args.manifest), Path(args.features))
    problems, notes = check_features(records, Path(args.features), repair=args.repair)
    for note in notes:
        print(f"note: {printable(note)}")
    for problem in problems:
        print(printable(problem))
    if problems:
        print(f"t2v features check: {len(problems)} problem(s)")
        return 1
    print(f"{args.features}: ok")
    return 0


def _failures(args: argparse.Namespace) -> int:
    rows = failures(Path(args.path))
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
    for folder in fingerprint_dirs(Path(args.features)):
        written, skipped = export_mmt(folder, args.out, expert=args.expert, records=records, flat=args.flat)
        total += written
        note = f" ({skipped} without a caption in {args.manifest} skipped: MMT needs one)" if skipped else ""
        print(f"{folder}: exported{note}")
    print(f"{args.out}: {total} video entries written")
    return 0


def _import(args: argparse.Namespace) -> int:
    videos, digest = read_source(Path(args.source), args.format, args.expert, trust_pickle=args.trust_pickle)
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
    p.add_argument(
        "--manifest",
        required=True,
        help="manifest JSONL the features were extracted for (its probed copy under the features root is used)",
    )
    p.add_argument("--features", required=True, help="fingerprint folder, expert folder or features root")
    p.add_argument(
        "--repair",
        action="store_true",
        help="move shards whose data is damaged aside (<shard>.corrupt); t2v extract then rebuilds them",
    )
    p.set_defaults(func=_check)

    p = fsub.add_parser(
        "failures", help="videos with status empty or failed, or ok with a decoding warning, and why"
    )
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
    p.add_argument("--format", choices=("mmt", "ce"), required=True, help="MMT HDF5 files or a CE pickle")
    p.add_argument(
        "--expert", required=True, help="expert name (MMT dataset features.<expert>; output folder)"
    )
    p.add_argument("--out", required=True, help="features root: writes <out>/<expert>/<fingerprint>/")
    p.add_argument("--manifest", help="shard by the plan of this manifest (missing videos: status empty)")
    p.add_argument("--shard-size", type=int, default=256, help="videos per shard (default 256)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float32", help="stored precision")
    p.add_argument("--trust-pickle", action="store_true", help="allow unpickling (runs code from the file)")
    p.set_defaults(func=_import)
