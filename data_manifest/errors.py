"""Base error type shared by all t2v packages (lives here because data_manifest is the bottom layer)."""

from __future__ import annotations


class T2VError(Exception):
    """An expected failure caused by input (files, options, data); the CLI prints ``str(err)`` and exits 1."""


class ManifestError(T2VError):
    """A manifest or annotation file is invalid. ``problems`` holds every ``FILE:LINE: field: problem`` line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        head = self.problems[0] if self.problems else "invalid manifest"
        more = f" (+{len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(head + more)
