"""Tolerant decoding: packets a decoder rejects are skipped (as ffmpeg does), counted per stream, and reported.

Rule (one for audio and video, the same 5 % as the video truncation check, ``readers.TRUNCATION_TOLERANCE``): a
stream fails (``MediaError``) only when the packets that could not be decoded cover more than ``LOSS_TOLERANCE``
of its duration; below that the video keeps its features and the loss is a warning. Each lost packet counts once
(keyed by its timestamp), however often a reader seeks back over it. Audio keeps its sample timeline: the span of a
lost packet, and any timestamp gap, is filled with silence (zeros) of the same length, so later windows keep their
times. Video keeps the real frame times; a frame whose packet was lost is shown as the next decodable frame.
The same 5 % makes a truncated file fail: video with too few frames (``readers``), audio that stops more than 5 %
short of its own declared duration (``audio``); audio that merely ends before the file (more than 0.5 s and 5 %
of it: a shorter audio track) is a warning.

Each decoding pass counts its own losses (``track``) and fails on its own count; passes started inside a
``recording()`` context (one per video, opened by the extraction engine around an expert's decoding) are also
collected in its ``DecodeLog``, whose ``warning()`` is the one line stored in the shard's ``error`` column of a
video whose status stays ok.
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
    """What one decoding pass over a stream lost: seconds per undecodable packet (keyed by its timestamp),
    silence-filled timestamp gaps, and how far the stream ends before the file does."""

    stream: str
    packets: dict[int, float] = field(default_factory=dict)
    gap_s: float = 0.0
    short_by_s: float = 0.0

    @property
    def lost_s(self) -> float:
        return sum(self.packets.values())

    def lost_packet(self, path: Path, key: int, seconds: float, duration: float | None, reason: str) -> None:
        """Count one undecodable packet (``key``: its timestamp) of ``seconds``; MediaError naming the file once
        the lost packets exceed ``LOSS_TOLERANCE`` of the stream's ``duration`` (s; None: unknown, never fails)."""
        if key in self.packets:
            return
        self.packets[key] = seconds
        log.debug("%s: %s packet at %d undecodable (%s), skipped", path, self.stream, key, reason)
        if duration and self.lost_s > LOSS_TOLERANCE * duration:
            raise MediaError(
                f"{path}: {self.stream}: {len(self.packets)} undecodable packet(s), {self.lost_s:.2f} s of "
                f"{duration:.2f} s (more than {LOSS_TOLERANCE:.0%}); last: {' '.join(reason.split())}"
            )


def describe(passes: list[StreamLoss]) -> str:
    """One phrase for the passes over one stream ('' when nothing happened): packets counted once across passes
    (a reader that seeks back meets the same packet again), gaps and early end as the largest pass saw them."""
    packets = {key: s for loss in passes for key, s in loss.packets.items()}
    gap = max((loss.gap_s for loss in passes), default=0.0)
    short = max((loss.short_by_s for loss in passes), default=0.0)
    parts = []
    if packets:
        parts.append(f"{len(packets)} undecodable packet(s) skipped ({sum(packets.values()):.3f} s)")
    if gap > 0:
        parts.append(f"timestamp gap(s) of {gap:.3f} s")
    if short > 0:
        parts.append(f"ends {short:.3f} s before the file")
    return ", ".join(parts)


@dataclass
class DecodeLog:
    """The decoding passes over one video's streams (``audio`` / ``video``) and what they lost."""

    passes: list[StreamLoss] = field(default_factory=list)

    def stream(self, name: str) -> list[StreamLoss]:
        """The passes over stream ``name``."""
        return [loss for loss in self.passes if loss.stream == name]

    def warning(self, *streams: str) -> str:
        """``warning: audio: ...; video: ...`` (one line) over ``streams`` (default: all), or '' for a clean
        decode."""
        parts = [f"{name}: {text}" for name in streams or STREAMS if (text := describe(self.stream(name)))]
        return WARNING_PREFIX + "; ".join(parts) if parts else ""


_CURRENT: ContextVar[DecodeLog | None] = ContextVar("decode_log", default=None)


@contextmanager
def recording() -> Iterator[DecodeLog]:
    """Collect the decoding passes started in this context (this thread) into a fresh ``DecodeLog``."""
    current = DecodeLog()
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


def track(stream: str) -> StreamLoss:
    """A new decoding pass over ``stream`` ("audio" / "video"), reported to the current recording if any."""
    loss = StreamLoss(stream)
    current = _CURRENT.get()
    if current is not None:
        current.passes.append(loss)
    return loss
