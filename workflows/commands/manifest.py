"""`t2v manifest import | validate | probe`: thin wrappers over ``data_manifest``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from data_manifest.display import printable
from data_manifest.errors import ManifestError
from data_manifest.probe import probe_manifest_summary
from data_manifest.recipes import get_recipe, recipe_names
from data_manifest.schema import VideoRecord, write_manifest
from data_manifest.validate import load_manifest, summarize


def _report_problems(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print every problem of a ManifestError on its own stderr line (not just the first) and return 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ManifestError as err:
            for problem in err.problems:
                print(printable(problem), file=sys.stderr)
            n = len(err.problems)
            print(f"t2v manifest {args.manifest_command}: {n} problem{'s' * (n != 1)}", file=sys.stderr)
            return 1

    return run


@_report_problems
def _validate(args: argparse.Namespace) -> int:
    records = load_manifest(args.file, check_paths=not args.no_check_paths)
    print(f"{args.file}: valid: {summarize(records)}")
    return 0


@_report_problems
def _probe(args: argparse.Namespace) -> int:
    _records, summary = probe_manifest_summary(
        args.file, workers=args.workers, out=args.out, progress=not args.no_progress
    )
    print(f"{args.out or args.file}: {summary.line()}")
    return 0


def _relative_to_manifest(records: list[VideoRecord], manifest_dir: Path) -> None:
    """Make absolute paths that lie inside the manifest's folder relative to it (portable manifests)."""
    base = os.path.abspath(manifest_dir)
    for rec in records:
        if os.path.isabs(rec.path) and os.path.commonpath([base, rec.path]) == base:
            rec.path = os.path.relpath(rec.path, base)


@_report_problems
def _import(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.dataset)
    videos = Path(args.videos) if args.videos else None
    records = recipe(Path(args.annotations), videos, args.split, args.keep_missing)
    if not records:
        raise ManifestError(
            [f"{args.annotations}: {args.dataset}: no videos to write (see the warnings above)"]
        )
    out = Path(args.out)
    _relative_to_manifest(records, out.parent)
    write_manifest(out, records)
    print(f"{out}: wrote {summarize(records)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``t2v manifest`` with its ``import``, ``validate`` and ``probe`` actions."""
    group = sub.add_parser("manifest", help="import, validate and probe video manifests (JSONL)")
    actions = group.add_subparsers(dest="manifest_command", required=True, metavar="ACTION")

    p = actions.add_parser("validate", help="report every problem of a manifest as FILE:LINE: field: problem")
    p.add_argument("file", help="manifest (JSONL)")
    p.add_argument("--no-check-paths", action="store_true", help="do not check that video files exist")
    p.set_defaults(func=_validate)

    p = actions.add_parser(
        "probe", help="fill duration, fps, frames, size, audio, codec and hash of each video"
    )
    p.add_argument("file", help="manifest (JSONL); written back in place unless --out is given")
    p.add_argument("--workers", type=int, default=2, help="parallel probe processes (default 2)")
    p.add_argument("--out", help="write the probed manifest here instead")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_probe)

    p = actions.add_parser("import", help="build a manifest from a dataset's published annotation files")
    p.add_argument("dataset", choices=recipe_names(), help="dataset recipe")
    p.add_argument(
        "--annotations", required=True, help="annotation file, or the folder holding the dataset's files"
    )
    p.add_argument("--videos", help="folder searched (recursively) for the video files")
    p.add_argument(
        "--split",
        help="msrvtt: benchmark split 1k-A, 1k-B or full (default); generic: split to assign; others: keep only "
        "this split (activitynet: val_2 uses val_2.json as the test set)",
    )
    p.add_argument("--keep-missing", action="store_true", help="keep videos whose file is not found")
    p.add_argument("--out", required=True, help="manifest to write (JSONL)")
    p.set_defaults(func=_import)
