"""Extract one shard for several experts at once: decode each video once on worker threads, run each expert's model
on batches of videos, write each expert's HDF5 shard atomically.

Flow: each video is decoded on a thread of a pool by one shared pass (``extractors.shared_pass``: every frame any
expert needs decoded once, the audio track once) that feeds every expert's prepared parts into that video's own
small queue (at most ``QUEUE_PARTS`` parts waiting, at most ``workers + 2`` videos in flight, so memory is bounded
whatever the video length or the number of experts). The calling thread walks the videos in shard order, gathers
each expert's parts of consecutive videos until its ``config.batch_size`` rows are pending, calls its
``forward`` on them, and writes finished videos to that expert's ``ShardWriter`` in order. Decoding the next videos
thus overlaps the models on the current ones. Each shard records its timings as attributes: ``wall_s``,
``input_wait_s`` (the models waited for decoded input), ``model_s`` (in ``forward``) and on CUDA ``gpu_busy``.

Failures: a ``MediaError`` becomes status failed (``NoAudioError``: empty) with its one-line message; glitches that
decoding survived (``pipeline.media.glitches``: skipped packets, timestamp gaps, a stream ending early) leave the
status ok and put a ``warning: ...`` line in the video's ``error``; a model error
on a batch is retried video by video so that only the offending video is marked failed. Anything else is a bug and
propagates (the temp file is removed, no partial shard appears).

``ShardJob.previous``: an existing shard of the same fingerprint whose rows are copied instead of recomputed — all
its videos, or all but the failed ones with ``retry_failed``; a video is decoded only for the experts that need it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from data_manifest.schema import VideoRecord
from extractors.base import Expert, ExpertOutput, Prepared, one_line, with_warning
from extractors.shared_pass import prepare_pass
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


def _produce(
    experts: list[tuple[int, Expert]], path: Path, record: VideoRecord, q: queue.Queue, stop: threading.Event
) -> None:
    """Decode one video once for ``experts`` (job index, expert) into ``q``: ``(job, part)`` and ``(job,
    MediaError)`` items, then ``(None, DecodeLog)`` if decoding met glitches, then ``_END`` (always)."""

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
            for k, part in prepare_pass([e for _, e in experts], path, record):
                put((experts[k][0], part))
                if stop.is_set():
                    return
        if glitches.warning():
            put((None, glitches))
    finally:
        put(_END)


def _no_silent_nothing(out: ExpertOutput, expert: Expert) -> ExpertOutput:
    """An 'ok' output without rows is recorded as empty, with a reason, never as a silent success."""
    if out.status == STATUS_OK and len(out.features) == 0:
        return ExpertOutput.empty(expert.dim, out.error or "expert produced no rows", expert.token_level)
    return out


@dataclass
class ShardJob:
    """One expert's shard in an extraction: where it goes, what it is stamped with, and an existing shard of the
    same fingerprint whose rows are copied instead of recomputed (all its videos, or all but the failed ones with
    ``retry_failed``)."""

    expert: Expert
    out_path: Path
    fingerprint: str
    weights_sha256: str
    previous: Path | None = None
    retry_failed: bool = False
    extra_attrs: dict[str, str] | None = None


class _Runner:
    """One job's state in an ``extract_shards`` call (see module docstring)."""

    def __init__(self, job: ShardJob, writer: ShardWriter, reused: dict[str, ExpertOutput]):
        self.job = job
        self.expert = job.expert
        self.stream = job.expert.media_request().stream
        self.summary = ShardSummary(reused=len(reused))
        self.writer = writer
        self.pending: list[tuple[str, Prepared]] = []
        self.parts: dict[str, list[ExpertOutput]] = {}
        self.done: dict[str, ExpertOutput] = dict(reused)
        self.warnings: dict[str, str] = {}
        self.cursor = 0
        self.gpu = _GpuTimer(self.expert.device)

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
        with self.gpu:
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

    def write_ready(self, order: Sequence[str], finished: set[str]) -> None:
        """Write, in shard order, every video whose output is complete."""
        pending_ids = {vid for vid, _ in self.pending}
        while self.cursor < len(order):
            vid = order[self.cursor]
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
            self.cursor += 1

    def timing_attrs(self, wall_s: float) -> dict[str, float]:
        """The shard's extraction timings (attributes ``wall_s``, ``input_wait_s``, ``model_s``, on CUDA
        ``gpu_busy``: the share of the wall time the model's CUDA stream was working)."""
        attrs = {
            "wall_s": round(wall_s, 3),
            "input_wait_s": round(self.summary.decode_wait_s, 3),
            "model_s": round(self.summary.forward_s, 3),
        }
        if self.gpu.enabled:
            attrs["gpu_busy"] = round(self.gpu.seconds / max(wall_s, 1e-9), 4)
        return attrs


class _GpuTimer:
    """Seconds of CUDA stream time spent in the model calls it wraps (CUDA events; nothing on CPU)."""

    def __init__(self, device: str):
        self.enabled = str(device).startswith("cuda") and torch.cuda.is_available()
        self.seconds = 0.0
        self._start: Any = None

    def __enter__(self) -> None:
        if self.enabled:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            self.seconds += self._start.elapsed_time(end) / 1000.0


def extract_shards(
    jobs: Sequence[ShardJob],
    records: Sequence[VideoRecord],
    manifest_dir: str | Path,
    *,
    device: str = "auto",
    progress: bool = True,
    weights_dir: str | Path | None = None,
    workers: int | None = None,
    threads: int | None = None,
    dtype: str = "float16",
    members_digest: str = "",
) -> list[ShardSummary]:
    """Extract ``records`` with every job's expert into that job's shard (each written atomically), decoding each
    video once for all of them; never fails on bad media. One summary per job, in order.

    Experts are loaded on ``device`` ("auto": cuda if available) from ``weights_dir`` unless already loaded — before
    any video is decoded, so missing weights fail fast. ``workers``: decode threads (``default_workers``);
    ``threads``: this process's CPU thread budget (``pipeline.threads``; default the whole machine), of which the
    CPU models take all but one (``model_threads``). ``dtype``: how features are stored (float16 or float32).
    """
    start = time.perf_counter()
    order = [r.video_id for r in records]
    if len(set(order)) != len(order):
        raise ShardError(f"{jobs[0].out_path}: duplicate video ids in the shard's records")
    if len({j.expert.name for j in jobs}) != len(jobs):
        raise ShardError(f"{jobs[0].out_path}: one job per expert")
    reused = [_previous_outputs(j.previous, j.fingerprint, set(order), j.retry_failed) for j in jobs]
    todo = [r for r in records if any(r.video_id not in got for got in reused)]
    for job, got in zip(jobs, reused, strict=True):
        if len(got) < len(order) and not job.expert.loaded:
            job.expert.load(device, weights_dir)
    model_device = jobs[0].expert.device
    workers = workers or default_workers(model_device, threads)
    threads_before = torch.get_num_threads()
    if model_device == "cpu":
        torch.set_num_threads(model_threads(threads))
    stop = threading.Event()
    names = "+".join(j.expert.name for j in jobs)
    bar = tqdm(total=len(order), desc=f"{names} {jobs[0].out_path.name}", unit="video", disable=not progress)
    try:
        with ExitStack() as stack:
            runners = []
            for job, got in zip(jobs, reused, strict=True):
                writer = stack.enter_context(_writer(job, dtype, members_digest))
                runners.append(_Runner(job, writer, got))
            pool = stack.enter_context(
                ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"decode-{names}")
            )
            _run_videos(runners, order, todo, Path(manifest_dir), pool, workers, stop, bar)
            wall = time.perf_counter() - start
            for r in runners:
                if r.cursor != len(order):
                    raise ShardError(f"{r.job.out_path}: wrote {r.cursor} of {len(order)} videos")
                r.summary.seconds = wall
                r.writer.add_attrs(r.timing_attrs(wall))
    finally:
        bar.close()
        torch.set_num_threads(threads_before)
    for r in runners:
        s = r.summary
        log.info(
            "%s: %d ok, %d empty, %d failed, %d rows in %.1f s (%d reused)",
            r.job.out_path,
            s.ok,
            s.empty,
            s.failed,
            s.rows,
            s.seconds,
            s.reused,
        )
    return [r.summary for r in runners]


def _writer(job: ShardJob, dtype: str, members_digest: str) -> ShardWriter:
    expert = job.expert
    return ShardWriter(
        job.out_path,
        expert=expert.name,
        fingerprint=job.fingerprint,
        config=expert.config_dict(),
        weights_sha256=job.weights_sha256,
        dim=expert.dim,
        dtype=dtype,
        token_level=expert.token_level,
        members_digest=members_digest,
        extra_attrs=job.extra_attrs,
    )


def _run_videos(
    runners: list[_Runner],
    order: list[str],
    todo: list[VideoRecord],
    manifest_dir: Path,
    pool: ThreadPoolExecutor,
    workers: int,
    stop: threading.Event,
    bar: tqdm,
) -> None:
    """Decode ``todo`` on ``pool`` (at most ``workers + 2`` videos in flight), feed each runner its parts, and
    write finished videos in shard order."""
    feeds: list[tuple[queue.Queue, Future]] = []
    finished: set[str] = set()
    next_submit = 0

    def advance() -> None:
        before = min(r.cursor for r in runners)
        for r in runners:
            r.write_ready(order, finished)
        bar.update(min(r.cursor for r in runners) - before)

    try:
        for i, rec in enumerate(todo):
            while next_submit < len(todo) and next_submit < i + workers + 2:
                nxt = todo[next_submit]
                wanted = [(j, r.expert) for j, r in enumerate(runners) if nxt.video_id not in r.done]
                q: queue.Queue = queue.Queue(maxsize=QUEUE_PARTS)
                feeds.append((q, pool.submit(_produce, wanted, nxt.resolve(manifest_dir), nxt, q, stop)))
                next_submit += 1
            q, fut = feeds[i]
            vid = rec.video_id
            mine = [r for r in runners if vid not in r.done]
            for r in mine:
                r.parts[vid] = []
            advance()
            while True:
                t0 = time.perf_counter()
                item = q.get()
                waited = time.perf_counter() - t0
                for r in mine:
                    r.summary.decode_wait_s += waited
                if item is _END:
                    fut.result()  # re-raises a non-media exception of the decode thread
                    break
                j, payload = item
                if isinstance(payload, DecodeLog):
                    for r in mine:
                        r.warnings[vid] = payload.warning(r.stream)
                elif isinstance(payload, MediaError):
                    runners[j].drop(vid, payload)
                else:
                    runners[j].add_part(vid, payload)
            finished.add(vid)
        for r in runners:
            r.flush()
        advance()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def extract_shard(
    expert: Expert,
    records: Sequence[VideoRecord],
    manifest_dir: str | Path,
    out_path: str | Path,
    *,
    fingerprint: str,
    weights_sha256: str,
    previous: Path | None = None,
    retry_failed: bool = False,
    extra_attrs: dict[str, str] | None = None,
    **options: Any,
) -> ShardSummary:
    """One expert's shard: ``extract_shards`` with a single job (``options`` as there)."""
    job = ShardJob(expert, Path(out_path), fingerprint, weights_sha256, previous, retry_failed, extra_attrs)
    return extract_shards([job], records, manifest_dir, **options)[0]
