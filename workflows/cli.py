"""The ``t2v`` command line: every command group's module (``workflows/commands/<group>.py``) adds its parsers."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from data_manifest.display import printable
from data_manifest.errors import T2VError
from workflows.luigi_runner import DISK_ERRNOS, failure_line

DESCRIPTION = (
    "Offline text-video retrieval: prepare a video manifest, extract expert features, train an alignment head "
    "(T2VLAD, CRET or MGFI), evaluate it, and search your videos by text. `t2v run` does it all from one file."
)
EPILOG = "Run `t2v COMMAND --help` for the options of a command."
COMMAND_MODULES = ("sample", "manifest", "weights", "features", "extract", "train", "store", "run")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; every command module adds its sub-commands to it."""
    parser = argparse.ArgumentParser(prog="t2v", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"workflows.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run the command's ``func(args)``, turn expected errors (T2VError, and OSError on a full,
    read-only or forbidden disk) into one line + exit 1."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except T2VError as err:
        # one line per problem (a config error lists all of them), each made safe for the terminal
        lines = [printable(line) for line in str(err).splitlines()] or [""]
        print(f"t2v {args.command}: error: " + "\n".join(lines), file=sys.stderr)
        return 1
    except OSError as err:
        if err.errno not in DISK_ERRNOS:
            raise
        # a full, read-only or forbidden output: the path and the reason, where the write happened
        print(f"t2v {args.command}: error: {printable(failure_line(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"t2v {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
