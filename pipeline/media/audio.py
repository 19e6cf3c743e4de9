"""Audio decoding to mono float32 at a requested rate (PyAV's resampler, streamed), and windows over it.

Decoding is tolerant (``pipeline.media.glitches``): a packet the decoder rejects is skipped and counted, and its
span is filled with silence, like any timestamp gap, so the sample timeline stays that of the file (to within the
resampler's delay of a few samples); too much loss fails the track.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.errors import ConfigError, MediaError, NoAudioError
from pipeline.media.glitches import LOSS_TOLERANCE, StreamLoss, track

# audio ending less than this before the file is codec padding or ``-shortest``, not worth a warning
EARLY_END_S = 0.5


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _check_end(
    path: Path, container: av.container.InputContainer, stream: av.AudioStream, end: float, loss: StreamLoss
) -> None:
    """MediaError when the track stops more than ``LOSS_TOLERANCE`` short of its own declared duration (a
    truncated file, as for video); a warning when it ends more than ``EARLY_END_S`` and ``LOSS_TOLERANCE`` of
    the file's duration before the file does (audio shorter than the video)."""
    declared = _seconds(stream.duration, stream.time_base)
    start = _seconds(stream.start_time, stream.time_base) or 0.0
    if declared and end - start < (1 - LOSS_TOLERANCE) * declared:
        raise MediaError(f"{path}: truncated: decoded {end - start:.2f} s of {declared:.2f} s of audio")
    if container.duration:
        file_s = container.duration / 1e6
        short = (container.start_time or 0) / 1e6 + file_s - end
        if short > max(EARLY_END_S, LOSS_TOLERANCE * file_s):
            loss.short_by_s = short


@dataclass(frozen=True)
class AudioRequest:
    """One consumer of a shared decoding pass: the first audio track as mono float32 at ``sample_rate`` Hz."""

    sample_rate: int
    stream = "audio"


class _Resampled:
    """The track at one rate: PyAV's resampler and the samples waiting to be yielded."""

    def __init__(self, rate: int):
        self.rate = rate
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self.parts: list[np.ndarray] = []
        self.size = 0

    def add(self, samples: np.ndarray) -> None:
        self.parts.append(samples)
        self.size += samples.size

    def take(self) -> np.ndarray:
        out = np.clip(np.concatenate(self.parts), -1.0, 1.0)
        self.parts, self.size = [], 0
        return out


def iter_audio_rates(path: str | Path, rates: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """One decoding of a file's first audio track, resampled to each of ``rates`` (PyAV's resampler, streamed):
    ``(rate, chunk)`` pairs, float32 mono in [-1, 1], ~1 s per chunk; lost packets and timestamp gaps come out as
    silence. The chunks of one rate are consecutive; rates interleave in time order.

    Raises NoAudioError when the file has no audio track, MediaError when it can't be read or loses more than
    ``LOSS_TOLERANCE`` of its duration to undecodable packets.
    """
    path = Path(path)
    if not rates or min(rates) <= 0:
        raise ConfigError(f"load_audio: sample rates must be > 0, got {list(rates)}")
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise NoAudioError(f"{path}: no audio track")
            stream = container.streams.audio[0]
            tb = stream.time_base
            duration = _seconds(stream.duration, tb) or (
                container.duration / 1e6 if container.duration else None
            )
            outs = [_Resampled(rate) for rate in dict.fromkeys(rates)]
            next_t: float | None = None  # where the next frame should start (s, stream time)
            loss = track("audio")
            skipped = False  # a packet was skipped since the last decoded frame
            frame_s = 0.0  # duration of the last decoded frame: a lost packet's when it has none
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as err:
                    seconds = _seconds(packet.duration, tb) or frame_s
                    key = packet.pts if packet.pts is not None else -1 - (packet.pos or 0)
                    loss.lost_packet(path, key, seconds, duration, str(err))
                    skipped = True
                    continue
                for frame in frames:
                    start = _seconds(frame.pts, tb)
                    if start is not None and next_t is not None:
                        gap = start - next_t
                        half_frame = 0.5 * frame.samples / frame.sample_rate
                        if gap > half_frame:
                            if not skipped:
                                loss.gap_s += gap
                            for out in outs:
                                out.add(np.zeros(round(gap * out.rate), np.float32))
                    frame_s = frame.samples / frame.sample_rate
                    if start is not None:
                        next_t = start + frame_s
                    skipped = False
                    for out in outs:
                        for resampled in out.resampler.resample(frame):
                            out.add(resampled.to_ndarray().reshape(-1))
                for out in outs:
                    if out.size >= out.rate:
                        yield out.rate, out.take()
            for out in outs:
                for resampled in out.resampler.resample(None):
                    out.add(resampled.to_ndarray().reshape(-1))
                if out.parts:
                    yield out.rate, out.take()
            if next_t is not None:
                _check_end(path, container, stream, next_t, loss)
    except (av.FFmpegError, OSError) as err:
        raise MediaError(f"{path}: cannot decode audio: {err}") from err


def iter_audio(path: str | Path, sample_rate: int) -> Iterator[np.ndarray]:
    """The chunks of ``iter_audio_rates`` for one rate."""
    for _, chunk in iter_audio_rates(path, [sample_rate]):
        yield chunk


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The whole first audio track as float32 mono in [-1, 1] at ``sample_rate`` Hz, shape (num_samples,).

    Lengths are approximate (resampler and codec padding: a 10 s AAC track gives ~160125 samples at 16 kHz).
    Raises NoAudioError (no audio track) or MediaError (unreadable), both naming the file.
    """
    chunks = list(iter_audio(path, sample_rate))
    wave = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    return wave


def audio_windows(
    wave: np.ndarray, sample_rate: int, window_s: float, hop_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a mono wave into windows of ``window_s`` seconds every ``hop_s`` (default: ``window_s``).

    Returns windows float32 (n, round(window_s*sr)) and timestamps float32 (n, 2) [start, end) seconds (end
    clipped to the audio's duration). The last partial window and any audio shorter than one window are
    zero-padded, so a non-empty wave always gives at least one window; an empty wave gives (0, W) and (0, 2).
    """
    if window_s <= 0 or (hop_s is not None and hop_s <= 0):
        raise ConfigError(f"audio_windows: window_s and hop_s must be > 0, got {window_s}, {hop_s}")
    win = max(1, round(window_s * sample_rate))
    hop = max(1, round((hop_s or window_s) * sample_rate))
    n = len(wave)
    if n == 0:
        return np.zeros((0, win), np.float32), np.zeros((0, 2), np.float32)
    count = 1 + max(0, int(np.ceil((n - win) / hop)))
    padded = np.zeros((count - 1) * hop + win, np.float32)
    padded[:n] = wave
    starts = np.arange(count) * hop
    windows = np.lib.stride_tricks.sliding_window_view(padded, win)[starts].copy()
    times = np.stack([starts / sample_rate, np.minimum(starts + win, n) / sample_rate], 1)
    return windows, times.astype(np.float32)
