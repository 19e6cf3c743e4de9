"""The file target of every t2v task: a ``luigi.LocalTarget`` whose ``temporary_path()`` is ``data_manifest.atomic``.

Luigi's own ``temporary_path`` shares no name between writers but refuses to replace an existing output (tasks
that rewrite theirs, e.g. a store that grows, would fail), does not fsync and leaves its temp behind on failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import luigi

from data_manifest.atomic import atomic_path


class AtomicTarget(luigi.LocalTarget):
    """A local file written through a unique temp file, fsync and rename (the old file stays on failure)."""

    @contextmanager
    def temporary_path(self) -> Iterator[str]:  # type: ignore[override]
        """Yield a temp path to write into; it replaces the target on a clean exit, and is removed otherwise."""
        with atomic_path(self.path) as tmp:
            yield str(tmp)
