"""Probing of media files with PyAV: duration, frame rate, frame count, size, audio, codec, content hash.

Probing is parallel (a process pool fed through a bounded window, so 1.2M files never sit in memory as pending
work), resumable (each result is appended to a side journal as it completes; an interrupted probe reuses the
results of files whose size and mtime still match) and cheap in content identity: by default the content hash
covers the whole file only up to 2 MiB and otherwise its size plus its first and last MiB (``full_hash`` hashes
every byte).

A probe never raises for bad media: missing, empty, unreadable and truncated files get a one-line
``probe_error`` instead. Truncation is found by demuxing every video packet and comparing what is present with
what the container declares (only the first frame is decoded, for its display rotation): a faststart mp4 cut
half-way opens without error but holds only part of its declared frames; an mp4 whose ``moov`` box was at the
end does not open at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import av
from tqdm import tqdm

from data_manifest.errors import ManifestError
from data_manifest.hashing import CHUNK, sha256_file
from data_manifest.schema import VideoRecord, write_manifest
from data_manifest.validate import load_manifest

log = logging.getLogger(__name__)

HASH_HEX_CHARS = 16
PARTIAL_HASH_EDGE = CHUNK  # bytes hashed at each end of a file larger than twice this
PROBE_FIELDS = (
    "duration",
    "fps",
    "num_frames",
    "width",
    "height",
    "has_audio",
    "codec",
    "content_hash",
    "probe_error",
    "file_size",
    "file_mtime",
)


def content_hash(path: str | Path, *, full: bool = False) -> str:
    """First 16 hex digits of a sha256 identifying a file's content.

    Files up to 2 MiB (and every file with ``full``) hash all their bytes; larger ones hash their size and their
    first and last MiB, which reads 2 MiB per file whatever its length (a re-encoded or truncated video changes
    its size or its ends; an edit confined to the middle of a same-sized file is missed unless ``full``).
    """
    size = os.path.getsize(path)
    if full or size <= 2 * PARTIAL_HASH_EDGE:
        return sha256_file(path)[:HASH_HEX_CHARS]
    digest = hashlib.sha256(b"partial:%d:" % size)
    with open(path, "rb") as fh:
        digest.update(fh.read(PARTIAL_HASH_EDGE))
        fh.seek(size - PARTIAL_HASH_EDGE)
        digest.update(fh.read(PARTIAL_HASH_EDGE))
    return digest.hexdigest()[:HASH_HEX_CHARS]


def _empty_result() -> dict[str, Any]:
    return dict.fromkeys(PROBE_FIELDS)


def _declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The video stream's declared duration in seconds (stream header, Matroska tag, then container)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            pass
    if container.duration:
        return container.duration / 1_000_000
    return None


def _first_frame_rotation(stream: av.VideoStream, packet: av.Packet) -> tuple[int, bool]:
    """Feed one packet to the decoder: (display rotation in degrees, whether a frame is still needed).

    A packet the decoder rejects ends the search with rotation 0: only demuxing decides truncation.
    """
    try:
        frames = stream.codec_context.decode(packet)
    except av.FFmpegError:
        return 0, False
    if not frames:
        return 0, True
    return int(getattr(frames[0], "rotation", 0) or 0), False


def _scan_video(
    container: av.container.InputContainer, stream: av.VideoStream
) -> tuple[int, float, int, str]:
    """Demux all video packets; decode only the first frame (for its rotation).

    Returns (packets present, seconds covered by their timestamps, rotation in degrees, demux error or "").
    """
    tb = stream.time_base or Fraction(1, 1)
    count, first, last, rotation, error = 0, None, None, 0, ""
    need_frame = True
    try:
        for packet in container.demux(stream):
            if packet.pts is None and packet.size == 0:
                continue
            count += 1
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is not None:
                end = pts + (packet.duration or 0)
                first = pts if first is None else min(first, pts)
                last = end if last is None else max(last, end)
            if need_frame and packet.size:
                rotation, need_frame = _first_frame_rotation(stream, packet)
    except av.FFmpegError as err:
        error = f"{err.strerror or err} after {count} packets"
    span = float((last - first) * tb) if first is not None and last is not None else 0.0
    return count, span, rotation, error


def _truncation(
    declared_frames: int, present: int, declared_s: float | None, span_s: float, fps: float
) -> str:
    """A ``truncated: ...`` reason when fewer frames or seconds are present than declared, else ""."""
    if declared_frames > 0 and present < declared_frames - 2:
        return f"truncated: {present} of {declared_frames} frames present"
    tolerance = max(3.0 / fps if fps > 0 else 0.0, 0.5)
    if declared_s is not None and span_s < declared_s - tolerance:
        return f"truncated: {span_s:.2f} s of {declared_s:.2f} s present"
    return ""


def _probe_media(path: str, out: dict[str, Any]) -> None:
    """Fill the media fields of ``out`` from the file, or set its ``probe_error``."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as err:
        out["probe_error"] = f"unreadable: {err.strerror or err} (not a media file, or truncated)"
        return
    with container:
        if not container.streams.video:
            out["probe_error"] = "no video stream"
            return
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        declared_s = _declared_duration(container, stream)
        declared_frames = int(stream.frames or 0)
        out["has_audio"] = bool(container.streams.audio)
        out["codec"] = ctx.name
        out["fps"] = round(fps, 6) if fps > 0 else None
        present, span_s, rotation, demux_error = _scan_video(container, stream)
        width, height = ctx.width, ctx.height
        if rotation % 180:
            width, height = height, width
        out["width"] = width or None
        out["height"] = height or None
        out["num_frames"] = present
        reason = _truncation(declared_frames, present, declared_s, span_s, fps)
        if reason:
            out["duration"] = round(span_s, 6)
            out["probe_error"] = reason
        else:
            duration = declared_s if declared_s is not None else span_s
            out["duration"] = round(duration, 6) if duration else None
            if demux_error:
                out["probe_error"] = f"corrupt: {demux_error}"
            elif present == 0:
                out["probe_error"] = "no video frames"


def probe_file(path: str | Path, full_hash: bool = False) -> dict[str, Any]:
    """Probe one media file; returns the probed :class:`VideoRecord` fields plus ``probe_error``.

    ``duration`` in seconds, ``fps`` frames per second, ``num_frames`` the video packets present,
    ``width``/``height`` in pixels as displayed (rotation applied), ``file_mtime`` seconds since the epoch.
    ``probe_error`` is None for a good file, else a one-line reason; never raises for bad media. ``full_hash``:
    see :func:`content_hash`.
    """
    out = _empty_result()
    path = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        out["probe_error"] = "missing: file not found"
        return out
    except OSError as err:
        out["probe_error"] = f"unreadable: {err.strerror or err}"
        return out
    out["file_size"] = st.st_size
    out["file_mtime"] = st.st_mtime
    if st.st_size == 0:
        out["probe_error"] = "empty file (0 bytes)"
        return out
    try:
        out["content_hash"] = content_hash(path, full=full_hash)
    except OSError as err:
        out["probe_error"] = f"unreadable: {err.strerror or err}"
        return out
    _probe_media(path, out)
    return out


@dataclass
class ProbeSummary:
    """Outcome of probing a manifest: counts of videos and the wall time in seconds."""

    probed: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line summary printed at the end of ``t2v manifest probe``."""
        return (
            f"probed {self.probed} videos: {self.ok} ok, {self.failed} failed; "
            f"{self.skipped} unchanged skipped; {self.seconds:.1f} s"
        )


def unchanged_since_probe(rec: VideoRecord, full: Path) -> bool:
    """True if the record was probed before and the file still has the recorded size and mtime."""
    if (
        rec.file_size is None
        or rec.file_mtime is None
        or (rec.content_hash is None and rec.probe_error is None)
    ):
        return False
    try:
        st = full.stat()
    except OSError:
        return False
    return st.st_size == rec.file_size and st.st_mtime == rec.file_mtime


def _mp_context() -> BaseContext:
    """A fork server where available: a plain fork of a process that already runs threads (torch's OpenMP pool,
    Luigi's, a DataLoader's) can deadlock in the child on a lock held by a thread that was not copied."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else None)


def _probe_isolated(path: str, full_hash: bool) -> dict[str, Any]:
    """Probe in a one-off worker process; if the worker dies, that is recorded as the file's ``probe_error``."""
    with ProcessPoolExecutor(max_workers=1, mp_context=_mp_context()) as pool:
        try:
            return pool.submit(probe_file, path, full_hash).result()
        except BrokenProcessPool:
            out = _empty_result()
            with contextlib.suppress(OSError):
                st = os.stat(path)
                out["file_size"], out["file_mtime"] = st.st_size, st.st_mtime
            out["probe_error"] = "probe crashed: the demuxer killed its worker process"
            return out


def _results(paths: list[str], workers: int, full_hash: bool) -> Iterator[dict[str, Any]]:
    """:func:`probe_file` results in the order of ``paths``, from ``workers`` processes when > 1.

    At most ``16 × workers`` files are in flight at once. A file that crashes the demuxer (a native crash, not an
    exception) breaks the pool; the files not yet done are then probed one process each, so only the culprit is
    marked. Daemon processes (which may not have children) probe in-process.
    """
    if workers <= 1 or len(paths) <= 1 or multiprocessing.current_process().daemon:
        yield from (probe_file(p, full_hash) for p in paths)
        return
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(paths)), mp_context=_mp_context()) as pool:
            window: deque = deque()
            for path in paths:
                window.append(pool.submit(probe_file, path, full_hash))
                if len(window) >= 16 * workers:
                    yield window.popleft().result()
                    done += 1
            while window:
                yield window.popleft().result()
                done += 1
    except BrokenProcessPool:
        log.warning("a probe worker died; probing the %d remaining files one process each", len(paths) - done)
        for path in paths[done:]:
            yield _probe_isolated(path, full_hash)


def read_probed_copy(path: str | Path) -> list[VideoRecord]:
    """Records of a probed manifest this package wrote itself (validated when written), read without checking each
    field again: at 100k videos checking costs as much as everything else a no-op extraction does. A line that is not
    a record (a damaged file) raises ManifestError naming the file and line."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(VideoRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError, AttributeError) as err:
                raise ManifestError(
                    [f"{path}:{lineno}: not a probed record ({err}); delete the file to re-probe"]
                ) from err
    return records


def journal_path(target: str | Path) -> Path:
    """The side journal of a probe writing ``target``: ``<target>.probe-journal.jsonl``."""
    return Path(f"{target}.probe-journal.jsonl")


def _resume_from_journal(
    records: list[VideoRecord], manifest_dir: str | Path, journal: Path
) -> list[VideoRecord]:
    """Copy journaled results onto records whose file still has the journaled size and mtime; returns those."""
    if not journal.exists():
        return []
    done: dict[str, dict[str, Any]] = {}
    with open(journal, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                done[entry.pop("path")] = entry
            except (ValueError, KeyError, AttributeError):
                continue  # the line a killed probe was writing
    reused = []
    for rec in records:
        full = rec.resolve(manifest_dir)
        entry = done.get(str(full))
        if entry is None or not entry.keys() <= set(PROBE_FIELDS) or unchanged_since_probe(rec, full):
            continue
        before = {k: getattr(rec, k) for k in PROBE_FIELDS}
        for key, value in entry.items():
            setattr(rec, key, value)
        if unchanged_since_probe(rec, rec.resolve(manifest_dir)):
            reused.append(rec)
        else:
            for key, value in before.items():
                setattr(rec, key, value)
    return reused


def probe_records(
    records: list[VideoRecord],
    manifest_dir: str | Path,
    *,
    workers: int = 2,
    progress: bool = True,
    journal: str | Path | None = None,
    full_hash: bool = False,
) -> ProbeSummary:
    """Probe the records' files and update the records in place; files unchanged since their probe are skipped.

    ``workers`` > 1 probes in a process pool (started from a fork server, see :func:`_mp_context`): demuxing
    loops over packets in Python, so threads would hold the GIL. ``journal``: a JSONL file each result is appended
    to as it completes, and whose results (for files with unchanged size and mtime) are reused first, so an
    interrupted probe resumes; the caller deletes it once the probed manifest is written. ``full_hash``: see
    :func:`content_hash`.
    """
    start = time.perf_counter()
    summary = ProbeSummary()
    resumed = _resume_from_journal(records, manifest_dir, Path(journal)) if journal else []
    for rec in resumed:
        _count(rec, summary)
    todo = [r for r in records if not unchanged_since_probe(r, r.resolve(manifest_dir))]
    summary.skipped = len(records) - len(todo) - len(resumed)
    paths = [str(r.resolve(manifest_dir)) for r in todo]
    bar = tqdm(total=len(todo), unit="video", desc="probe", file=sys.stderr, disable=not progress or not todo)
    if journal and todo:
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
    log_file = open(journal, "a", encoding="utf-8") if journal and todo else None  # noqa: SIM115
    try:
        for rec, path, result in zip(todo, paths, _results(paths, workers, full_hash), strict=True):
            if log_file is not None:
                log_file.write(json.dumps({"path": path, **result}) + "\n")
                log_file.flush()
            _record_result(rec, result, summary)
            bar.update(1)
    finally:
        if log_file is not None:
            log_file.close()
    bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


def _record_result(rec: VideoRecord, result: dict[str, Any], summary: ProbeSummary) -> None:
    """Copy one probe result onto its record and count it."""
    for key, value in result.items():
        setattr(rec, key, value)
    _count(rec, summary)


def _count(rec: VideoRecord, summary: ProbeSummary) -> None:
    summary.probed += 1
    if rec.probe_error:
        summary.failed += 1
        log.debug("%s: %s", rec.video_id, rec.probe_error)
    else:
        summary.ok += 1


def probe_manifest(
    path: str | Path, workers: int = 2, out: str | Path | None = None, *, progress: bool = False
) -> list[VideoRecord]:
    """Probe every video of a manifest and write it back atomically (to ``out`` if given, else in place).

    Missing files are recorded as ``probe_error`` (paths are not required to exist). Relative paths stay
    relative when written in place; written elsewhere, they become absolute. Returns the records.
    """
    records, _ = probe_manifest_summary(path, workers=workers, out=out, progress=progress)
    return records


def probe_manifest_summary(
    path: str | Path,
    *,
    workers: int = 2,
    out: str | Path | None = None,
    progress: bool = True,
    full_hash: bool = False,
) -> tuple[list[VideoRecord], ProbeSummary]:
    """:func:`probe_manifest` that also returns the :class:`ProbeSummary` (used by the CLI); resumable through a
    journal beside the target (see :func:`probe_records`)."""
    path = Path(path)
    records = load_manifest(path, check_paths=False)
    target = Path(out) if out else path
    journal = journal_path(target)
    summary = probe_records(
        records, path.parent, workers=workers, progress=progress, journal=journal, full_hash=full_hash
    )
    if target.parent.resolve() != path.parent.resolve():
        for rec in records:
            rec.path = str(rec.resolve(path.parent.absolute()))
    write_manifest(target, records)
    journal.unlink(missing_ok=True)
    return records, summary
