"""Tolerant decoding: packets a decoder rejects are skipped (as ffmpeg does), counted per stream, and reported.

Rule (one for audio and video, the same 5 % as the video truncation check, ``readers.TRUNCATION_TOLERANCE``): a
stream fails (``MediaError``) only when the packets that could not be decoded cover more than ``LOSS_TOLERANCE``
of its duration; below that the video keeps its features and the loss is a warning. Each lost packet counts once
(keyed by its timestamp), however often a reader seeks back over it. Audio keeps its sample timeline: the span of a
lost packet, and any timestamp gap, is filled with silence (zeros) of the same length, so later windows keep their
times. Video keeps the real frame times; a frame whose packet was lost is shown as the next decodable frame.

Decoders report into the ``DecodeLog`` of the current ``recording()`` context (one per video, opened by the
extraction engine around an expert's decoding); ``DecodeLog.warning()`` is the one line stored in the shard's
``error`` column of a video whose status stays ok. Without a recording context losses are only logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import MediaError

log = logging.getLogger(__name__)

LOSS_TOLERANCE = 0.05  # share of a stream's duration that may be lost before the stream fails
WARNING_PREFIX = "warning: "
STREAMS = ("audio", "video")


@dataclass
class StreamLoss:
    """What one stream lost: seconds per undecodable packet (keyed by its timestamp), silence-filled gaps, and
    how far the stream ends before the file does."""

    packets: dict[int, float] = field(default_factory=dict)
    gap_s: float = 0.0
    short_by_s: float = 0.0

    @property
    def lost_s(self) -> float:
        return sum(self.packets.values())

    def describe(self) -> str:
        """One phrase, '' when nothing happened."""
        parts = []
        if self.packets:
            parts.append(f"{len(self.packets)} undecodable packet(s) skipped ({self.lost_s:.3f} s)")
        if self.gap_s > 0:
            parts.append(f"timestamp gap(s) of {self.gap_s:.3f} s")
        if self.short_by_s > 0:
            parts.append(f"ends {self.short_by_s:.3f} s before the file")
        return ", ".join(parts)


@dataclass
class DecodeLog:
    """The glitches met while decoding one video, per stream (``audio`` / ``video``)."""

    streams: dict[str, StreamLoss] = field(default_factory=lambda: {s: StreamLoss() for s in STREAMS})

    def warning(self) -> str:
        """``warning: audio: ...; video: ...`` (one line), or '' for a clean decode."""
        parts = [f"{name}: {text}" for name, loss in self.streams.items() if (text := loss.describe())]
        return WARNING_PREFIX + "; ".join(parts) if parts else ""


_CURRENT: ContextVar[DecodeLog | None] = ContextVar("decode_log", default=None)


@contextmanager
def recording() -> Iterator[DecodeLog]:
    """Collect the glitches that decoding reports in this context (this thread) into a fresh ``DecodeLog``."""
    current = DecodeLog()
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


def _stream(stream: str) -> StreamLoss:
    current = _CURRENT.get()
    return (current or DecodeLog()).streams[stream]


def lost_packet(
    path: Path, stream: str, key: int, seconds: float, duration: float | None, reason: str
) -> None:
    """Count one undecodable packet (``key``: its timestamp) of ``seconds``; MediaError naming the file once the
    stream's lost packets exceed ``LOSS_TOLERANCE`` of its ``duration`` (seconds; None: unknown, never fails)."""
    loss = _stream(stream)
    if key in loss.packets:
        return
    loss.packets[key] = seconds
    log.debug("%s: %s packet at %d undecodable (%s), skipped", path, stream, key, reason)
    if duration and loss.lost_s > LOSS_TOLERANCE * duration:
        raise MediaError(
            f"{path}: {stream}: {len(loss.packets)} undecodable packet(s), {loss.lost_s:.2f} s of {duration:.2f} s "
            f"(more than {LOSS_TOLERANCE:.0%}); last: {' '.join(reason.split())}"
        )


def timestamp_gap(stream: str, seconds: float) -> None:
    """Count a jump in the stream's timestamps of ``seconds`` (filled with silence for audio)."""
    _stream(stream).gap_s += seconds


def ends_early(stream: str, seconds: float) -> None:
    """Record that the stream ends ``seconds`` before the file's duration."""
    loss = _stream(stream)
    loss.short_by_s = max(loss.short_by_s, seconds)
