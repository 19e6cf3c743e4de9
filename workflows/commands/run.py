"""`t2v` commands of the 'run' group (filled in by its owner)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands."""
