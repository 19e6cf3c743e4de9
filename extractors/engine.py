"""Extract one shard: decode on worker threads, run the model on batches of videos, write an HDF5 shard atomically.

Flow: each video's ``expert.iter_prepare`` runs on a thread of a pool and feeds its parts into that video's own
small queue (at most ``QUEUE_PARTS`` parts waiting, at most ``workers + 2`` videos in flight, so memory is bounded
whatever the video length). The calling thread walks the videos in shard order, gathers parts of consecutive videos
until ``config.batch_size`` rows are pending, calls ``expert.forward`` on them, and writes finished videos to the
``ShardWriter`` in order. Decoding the next videos thus overlaps the model on the current ones.

Failures: a ``MediaError`` becomes status failed (``NoAudioError``: empty) with its one-line message; glitches that
decoding survived (``pipeline.media.glitches``: skipped packets, timestamp gaps, a stream ending early) leave the
status ok and put a ``warning: ...`` line in the video's ``error``; a model error
on a batch is retried video by video so that only the offending video is marked failed. Anything else is a bug and
propagates (the temp file is removed, no partial shard appears).

``previous``: an existing shard of the same fingerprint whose rows are copied instead of recomputed — all its videos,
or all but the failed ones with ``retry_failed``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_manifest.schema import VideoRecord
from extractors.base import Expert, ExpertOutput, Prepared, one_line, with_warning
from pipeline.errors import MediaError, ShardError
from pipeline.features.shards import STATUS_EMPTY, STATUS_FAILED, STATUS_OK, ShardWriter, read_shard
from pipeline.media.glitches import DecodeLog, recording
from pipeline.threads import threads_per_process

log = logging.getLogger(__name__)

QUEUE_PARTS = 2
_END = object()
_POLL_S = 0.1


@dataclass
class ShardSummary:
    """Outcome of one shard: videos by status, feature rows written, wall seconds; ``reused`` videos copied from
    ``previous``; ``decode_wait_s``: time the model thread waited for decoded input; ``forward_s``: time in forward."""

    ok: int = 0
    empty: int = 0
    failed: int = 0
    rows: int = 0
    seconds: float = 0.0
    reused: int = 0
    decode_wait_s: float = 0.0
    forward_s: float = 0.0

    @property
    def videos(self) -> int:
        return self.ok + self.empty + self.failed

    def count(self, status: int, rows: int) -> None:
        if status == STATUS_OK:
            self.ok += 1
        elif status == STATUS_EMPTY:
            self.empty += 1
        else:
            self.failed += 1
        self.rows += rows


def default_workers(device: str = "cpu", budget: int | None = None) -> int:
    """Decode threads within the process's thread ``budget`` (default: the whole machine): on CPU 1 per 2 threads
    up to 2 (the model keeps the rest; decoders thread internally too), for a GPU model up to 8, since decoding is
    then the bottleneck."""
    cores = budget or threads_per_process(1)
    if device.startswith("cuda"):
        return max(1, min(8, cores - 1))
    return max(1, min(2, cores // 2))


def model_threads(budget: int | None = None) -> int:
    """Torch intra-op threads on CPU within the process's thread ``budget`` (default: the whole machine): all but
    one, which is left to decoding."""
    return max(1, (budget or threads_per_process(1)) - 1)


def _previous_outputs(
    previous: Path | None, fingerprint: str, wanted: set[str], retry_failed: bool
) -> dict[str, ExpertOutput]:
    """Rows of ``previous`` for the ``wanted`` videos to copy (all, or all but failed ones with ``retry_failed``)."""
    if previous is None or not Path(previous).is_file():
        return {}
    data = read_shard(previous)
    if data.attrs.get("fingerprint") != fingerprint:
        raise ShardError(f"{previous}: fingerprint {data.attrs.get('fingerprint')} is not {fingerprint}")
    out = {}
    for i, vid in enumerate(data.video_ids):
        status = int(data.status[i])
        if vid not in wanted or (retry_failed and status == STATUS_FAILED):
            continue
        rows = data.rows(i)
        tokens = data.tokens[rows] if data.tokens is not None else None
        out[vid] = ExpertOutput(
            data.features[rows].astype(np.float32), data.timestamps[rows], status, data.error[i], tokens
        )
    return out


def _produce(expert: Expert, path: Path, record: VideoRecord, q: queue.Queue, stop: threading.Event) -> None:
    """Decode one video into ``q``: its parts, then its ``DecodeLog`` if decoding met glitches or a MediaError if
    it failed, then ``_END`` (always)."""

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    try:
        if stop.is_set():
            return
        with recording() as glitches:
            for part in expert.iter_prepare(path, record):
                put(part)
                if stop.is_set():
                    return
        if glitches.warning():
            put(glitches)
    except MediaError as err:
        put(err)
    finally:
        put(_END)


def _no_silent_nothing(out: ExpertOutput, expert: Expert) -> ExpertOutput:
    """An 'ok' output without rows is recorded as empty, with a reason, never as a silent success."""
    if out.status == STATUS_OK and len(out.features) == 0:
        return ExpertOutput.empty(expert.dim, out.error or "expert produced no rows", expert.token_level)
    return out


class _Runner:
    """State of one ``extract_shard`` call (see module docstring)."""

    def __init__(self, expert: Expert, summary: ShardSummary, bar: tqdm, writer: ShardWriter):
        self.expert = expert
        self.summary = summary
        self.bar = bar
        self.writer = writer
        self.pending: list[tuple[str, Prepared]] = []
        self.parts: dict[str, list[ExpertOutput]] = {}
        self.done: dict[str, ExpertOutput] = {}
        self.warnings: dict[str, str] = {}

    def _checked(self, vid: str, out: ExpertOutput) -> ExpertOutput:
        dim = self.expert.dim
        if (
            out.features.ndim != 2
            or out.features.shape[1] != dim
            or out.timestamps.shape != (len(out.features), 2)
        ):
            raise ShardError(
                f"expert {self.expert.name}: {vid}: output shapes {out.features.shape} / {out.timestamps.shape} "
                f"do not fit dim {dim}"
            )
        if not np.isfinite(out.features).all():
            return ExpertOutput.failed(dim, f"{vid}: model produced NaN or inf", self.expert.token_level)
        return out

    def _forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        try:
            return self.expert.forward(items)
        except (RuntimeError, ValueError) as err:
            if len(items) > 1:
                return [out for item in items for out in self._forward([item])]
            reason = f"model failed: {one_line(str(err))[:300]}"
            return [ExpertOutput.failed(self.expert.dim, reason, self.expert.token_level)]

    def flush(self) -> None:
        if not self.pending:
            return
        t0 = time.perf_counter()
        outs = self._forward([p for _, p in self.pending])
        self.summary.forward_s += time.perf_counter() - t0
        for (vid, _), out in zip(self.pending, outs, strict=True):
            self.parts[vid].append(self._checked(vid, out))
        self.pending = []

    def drop(self, vid: str, err: MediaError) -> None:
        """A decode error ends the video: its pending parts are dropped and its output is the error's status."""
        self.pending = [(v, p) for v, p in self.pending if v != vid]
        self.parts[vid] = [ExpertOutput.from_media_error(self.expert.dim, err, self.expert.token_level)]

    def add_part(self, vid: str, part: Prepared) -> None:
        self.pending.append((vid, part))
        if sum(p.rows for _, p in self.pending) >= self.expert.config.batch_size:
            self.flush()

    def write_ready(self, order: Sequence[str], cursor: int, finished: set[str]) -> int:
        """Write, in shard order, every video whose output is complete; returns the new cursor."""
        pending_ids = {vid for vid, _ in self.pending}
        while cursor < len(order):
            vid = order[cursor]
            if vid not in self.done:
                if vid not in finished or vid in pending_ids:
                    break
                merged = self.expert.merge(self.parts.pop(vid))
                self.done[vid] = _no_silent_nothing(
                    with_warning(merged, self.warnings.pop(vid, "")), self.expert
                )
            out = self.done.pop(vid)
            self.writer.add(vid, out.features, out.timestamps, out.status, out.error, out.tokens)
            self.summary.count(out.status, len(out.features))
            self.bar.update(1)
            cursor += 1
        return cursor


def extract_shard(
    expert: Expert,
    records: Sequence[VideoRecord],
    manifest_dir: str | Path,
    out_path: str | Path,
    *,
    fingerprint: str,
    weights_sha256: str,
    device: str = "auto",
    progress: bool = True,
    previous: Path | None = None,
    retry_failed: bool = False,
    weights_dir: str | Path | None = None,
    workers: int | None = None,
    threads: int | None = None,
    dtype: str = "float16",
    members_digest: str = "",
    extra_attrs: dict[str, str] | None = None,
) -> ShardSummary:
    """Extract ``records`` with ``expert`` into the shard ``out_path`` (written atomically); never fails on bad media.

    ``expert`` is loaded on ``device`` ("auto": cuda if available) from ``weights_dir`` unless already loaded — before
    any video is decoded, so missing weights fail fast. ``workers``: decode threads (``default_workers``);
    ``threads``: this process's CPU thread budget (``pipeline.threads``; default the whole machine), of which a
    CPU model takes all but one (``model_threads``). ``dtype``: how features are stored (float16 or float32).
    """
    start = time.perf_counter()
    out_path = Path(out_path)
    order = [r.video_id for r in records]
    if len(set(order)) != len(order):
        raise ShardError(f"{out_path}: duplicate video ids in the shard's records")
    summary = ShardSummary()
    reused = _previous_outputs(previous, fingerprint, set(order), retry_failed)
    summary.reused = len(reused)
    todo = [r for r in records if r.video_id not in reused]
    if todo and not expert.loaded:
        expert.load(device, weights_dir)
    workers = workers or default_workers(expert.device, threads)
    threads_before = torch.get_num_threads()
    if expert.device == "cpu":
        torch.set_num_threads(model_threads(threads))
    stop = threading.Event()
    bar = tqdm(total=len(order), desc=f"{expert.name} {out_path.name}", unit="video", disable=not progress)
    writer = ShardWriter(
        out_path,
        expert=expert.name,
        fingerprint=fingerprint,
        config=expert.config_dict(),
        weights_sha256=weights_sha256,
        dim=expert.dim,
        dtype=dtype,
        token_level=expert.token_level,
        members_digest=members_digest,
        extra_attrs=extra_attrs,
    )
    try:
        with (
            writer,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"decode-{expert.name}") as pool,
        ):
            runner = _Runner(expert, summary, bar, writer)
            runner.done.update(reused)
            feeds: list[tuple[VideoRecord, queue.Queue, Future]] = []
            finished: set[str] = set()
            next_submit, cursor = 0, 0
            manifest_dir = Path(manifest_dir)
            try:
                for i, rec in enumerate(todo):
                    while next_submit < len(todo) and next_submit < i + workers + 2:
                        q: queue.Queue = queue.Queue(maxsize=QUEUE_PARTS)
                        nxt = todo[next_submit]
                        fut = pool.submit(_produce, expert, nxt.resolve(manifest_dir), nxt, q, stop)
                        feeds.append((nxt, q, fut))
                        next_submit += 1
                    _, q, fut = feeds[i]
                    runner.parts[rec.video_id] = []
                    cursor = runner.write_ready(order, cursor, finished)
                    while True:
                        t0 = time.perf_counter()
                        item = q.get()
                        summary.decode_wait_s += time.perf_counter() - t0
                        if item is _END:
                            fut.result()  # re-raises a non-media exception of the decode thread
                            break
                        if isinstance(item, MediaError):
                            runner.drop(rec.video_id, item)
                        elif isinstance(item, DecodeLog):
                            runner.warnings[rec.video_id] = item.warning()
                        else:
                            runner.add_part(rec.video_id, item)
                    finished.add(rec.video_id)
                runner.flush()
                cursor = runner.write_ready(order, cursor, finished)
            finally:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
            if cursor != len(order):
                raise ShardError(f"{out_path}: wrote {cursor} of {len(order)} videos")
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
    summary.seconds = time.perf_counter() - start
    log.info(
        "%s: %d ok, %d empty, %d failed, %d rows in %.1f s (%d reused)",
        out_path,
        summary.ok,
        summary.empty,
        summary.failed,
        summary.rows,
        summary.seconds,
        summary.reused,
    )
    return summary
