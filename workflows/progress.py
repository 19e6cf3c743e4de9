"""One aggregated progress display for an extraction run: videos done / total per expert, rate, ETA, failures.

It reads the shared features root rather than the workers (shards are committed by forked task processes, or by
other hosts against one luigid), so it shows the whole run wherever it is started: every ``interval`` seconds a
stat per planned shard, and the count attributes of shards that appeared since the last look.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from pipeline.errors import ShardError
from pipeline.features.plan import shard_is_current
from pipeline.features.shards import shard_counts, shard_name
from workflows.tasks_extract import FeatureSet, load_plan_specs


@dataclass
class _ExpertProgress:
    """What one expert's finished shards hold: per shard file (its stat, videos, failed videos)."""

    seen: dict[Path, tuple[tuple[int, int], int, int]] = field(default_factory=dict)
    total: int = 0
    done_at_start: int | None = None

    def done(self) -> int:
        return sum(v for _, v, _ in self.seen.values())

    def failed(self) -> int:
        return sum(f for _, _, f in self.seen.values())


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunProgress:
    """Context manager printing one progress line for the whole run every ``interval`` seconds to ``stream``."""

    def __init__(self, tasks: list[FeatureSet], *, interval: float = 10.0, stream: TextIO = sys.stderr):
        self.tasks = tasks
        self.interval = interval
        self.stream = stream
        self.experts = {t.expert: _ExpertProgress() for t in tasks}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="t2v-progress", daemon=True)
        self._start = time.monotonic()

    def __enter__(self) -> RunProgress:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        """Print until stopped, or until every expert has all its videos (``t2v run`` goes on training)."""
        while not self._stop.wait(self.interval):
            line = self.line()
            if line:
                print(line, file=self.stream, flush=True)
            if self.finished():
                return

    def finished(self) -> bool:
        """Whether every expert's planned videos are all in current shards (as of the last ``line()``)."""
        states = self.experts.values()
        return bool(states) and all(s.total and s.done() == s.total for s in states)

    def _update(self, task: FeatureSet, state: _ExpertProgress) -> None:
        probed = task.probed()
        if not probed.exists():
            return
        specs = load_plan_specs(probed, task.features_root, task.shard_size, save=False)
        state.total = sum(len(s.video_ids) for s in specs)
        folder = task.feature_dir()
        for spec in specs:
            path = folder / shard_name(spec.index)
            try:
                st = path.stat()
            except OSError:
                state.seen.pop(path, None)
                continue
            key = (st.st_size, st.st_mtime_ns)
            if path in state.seen and state.seen[path][0] == key:
                continue
            try:
                if shard_is_current(path, spec):
                    state.seen[path] = (key, len(spec.video_ids), shard_counts(path)["failed"])
            except ShardError:
                continue
        if state.done_at_start is None:
            state.done_at_start = state.done()

    def line(self) -> str:
        """The current progress line ("" before the probe has finished)."""
        elapsed = max(time.monotonic() - self._start, 1e-9)
        parts = []
        for task in self.tasks:
            state = self.experts[task.expert]
            self._update(task, state)
            if not state.total:
                continue
            done = state.done()
            rate = (done - (state.done_at_start or 0)) / elapsed
            eta = _clock((state.total - done) / rate) if rate > 0 else "?"
            parts.append(
                f"{task.expert} {done}/{state.total} videos ({100 * done / state.total:.0f}%), "
                f"{rate:.1f}/s, ETA {eta}, failed {state.failed()}"
            )
        return f"extract [{_clock(elapsed)}] " + " | ".join(parts) if parts else ""
