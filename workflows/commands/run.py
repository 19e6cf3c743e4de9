"""``t2v run``: the whole DAG end to end from one TOML file."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path("configs/demo.toml")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``t2v run``."""
    p = sub.add_parser("run", help="run the whole pipeline (sample data → features → heads → store → report)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"run file (default {DEFAULT_CONFIG})")
    p.add_argument(
        "--scheduler-url", help="central luigid, e.g. http://127.0.0.1:8082 (default: local scheduler)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from workflows.run_all import print_results, run_pipeline
    from workflows.run_config import load_run_config

    cfg = load_run_config(args.config)
    tasks = run_pipeline(cfg, scheduler_url=args.scheduler_url)
    print_results(cfg, tasks)
    return 0
