"""``t2v extract``: run the extraction DAG (probe → plan → shards) for some experts."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``t2v extract``."""
    p = sub.add_parser(
        "extract", help="extract expert features of a manifest's videos (resumable, incremental)"
    )
    p.add_argument("--manifest", required=True, type=Path, help="manifest JSONL")
    p.add_argument("--experts", required=True, help="comma-separated expert names (see `t2v weights list`)")
    p.add_argument("--out", type=Path, help="features root (default: <manifest folder>/features)")
    p.add_argument("--shard-size", type=int, default=64, help="videos per shard (fixed once a plan exists)")
    p.add_argument(
        "--shards-per-task",
        type=int,
        default=16,
        help="shards one task extracts (fewer, larger tasks keep a central scheduler fast)",
    )
    p.add_argument("--workers", type=int, default=1, help="shard tasks run at once, one process each")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="model device")
    p.add_argument("--weights-dir", type=Path, help="weights folder (default: $T2V_WEIGHTS_DIR or ./weights)")
    p.add_argument("--expert-config", type=Path, help="TOML/JSON with a table of options per expert")
    p.add_argument("--retry-failed", action="store_true", help="redo only the videos recorded as failed")
    p.add_argument(
        "--scheduler-url", help="central luigid, e.g. http://127.0.0.1:8082 (default: local scheduler)"
    )
    p.set_defaults(func=_extract)


def _extract(args: argparse.Namespace) -> int:
    from workflows.extraction import load_expert_configs, run_extraction  # lazy: keeps `t2v --help` fast

    experts = [e.strip() for e in args.experts.split(",") if e.strip()]
    report = run_extraction(
        args.manifest,
        experts,
        args.out or args.manifest.parent / "features",
        shard_size=args.shard_size,
        workers=args.workers,
        device=args.device,
        weights_dir=args.weights_dir,
        expert_configs=load_expert_configs(args.expert_config),
        retry_failed=args.retry_failed,
        scheduler_url=args.scheduler_url,
        shards_per_task=args.shards_per_task,
    )
    for line in report.lines():
        print(line)
    return 0
