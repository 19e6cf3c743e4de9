"""`t2v weights list | verify`: which weights files each expert needs, whether they are in place, where they come from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from extractors.weights import WeightsStatus


def _experts(arg: str | None) -> list[str]:
    from extractors.registry import expert_class, expert_names  # lazy: importing experts loads torch

    if not arg:
        return expert_names()
    names = [n.strip() for n in arg.split(",") if n.strip()]
    if not names:
        raise ConfigError("--experts: give a comma-separated list of expert names")
    for name in names:
        expert_class(name)
    return names


def _statuses(args: argparse.Namespace) -> tuple[Path, dict[str, list[WeightsStatus]]]:
    from extractors.registry import expert_class
    from extractors.weights import default_weights_dir, verify_weights

    wdir = Path(args.weights_dir) if args.weights_dir else default_weights_dir()
    return wdir, {name: verify_weights(expert_class(name), wdir) for name in _experts(args.experts)}


def _short(status: WeightsStatus) -> str:
    kind = status.file.checksum_kind
    if kind == "none":
        return "(none published)"
    return status.file.sha256[:12] + ("… (prefix)" if kind == "prefix" else "…")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_list(args: argparse.Namespace) -> int:
    """Print expert, file, sha256, status, path and source for every expert (or ``--experts``)."""
    wdir, statuses = _statuses(args)
    rows = [["expert", "file", "sha256", "status", "path", "source"]]
    for name, sts in statuses.items():
        if not sts:
            rows.append([name, "-", "-", "ready (no weights)", "-", "-"])
        for s in sts:
            rows.append([name, s.file.filename, _short(s), s.state, str(s.path), s.file.source])
    print(_table(rows))
    missing = [s for sts in statuses.values() for s in sts if not s.ok]
    if missing:
        print(
            f"\n{len(missing)} file(s) not ready. Put them in {wdir.resolve()} (set T2V_WEIGHTS_DIR or --weights-dir):"
        )
        for s in missing:
            print(f"  {s.problem()}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every (selected) expert's files are present with the right sha256, else list problems, exit 1."""
    _, statuses = _statuses(args)
    problems = [s.problem() for sts in statuses.values() for s in sts if not s.ok]
    for name, sts in statuses.items():
        state = "ok" if all(s.ok for s in sts) else "NOT READY"
        print(f"{name}: {state}")
    for line in problems:
        print(f"t2v weights verify: {line}", file=sys.stderr)
    return 1 if problems else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``weights list`` and ``weights verify``."""
    group = sub.add_parser("weights", help="list or verify the experts' weights files")
    gsub = group.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    for name, func, help_text in (
        ("list", cmd_list, "table of every expert's files: sha256, present/missing/mismatch, source"),
        ("verify", cmd_verify, "check all files; exit 1 if any expert (of --experts) is not ready"),
    ):
        p = gsub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--weights-dir", help="weights folder (default: $T2V_WEIGHTS_DIR or ./weights)")
        p.add_argument("--experts", help="comma-separated expert names (default: all registered)")
        p.set_defaults(func=func)
