"""``audio_stats``: a weight-free log-mel statistic, 128-d per 0.96 s window of 16 kHz mono audio.

Log-mel as VGGish computes it (25 ms periodic-Hann frames every 10 ms, 512-point FFT magnitude, 64 HTK-mel bands
125-7500 Hz, ``log(mel + 0.01)``); each non-overlapping window of 96 frames (0.96 s) gives the per-band mean and
standard deviation over its frames: row = ``[mean_1..mean_64, std_1..std_64]``. A tail shorter than a window gives
one more row from the frames it has (at least one frame: short clips are zero-padded to one frame). The track is
streamed in blocks of 64 windows (the same rows as all at once); all the work is numpy on the decode threads;
``forward`` only hands the rows over. Videos without an audio track: status empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

import numpy as np
from pydantic import model_validator

from data_manifest.schema import VideoRecord
from extractors.audio_frontend import AudioBlockPreparer
from extractors.base import Expert, ExpertConfig, ExpertOutput, Prepared, resolve_device
from extractors.registry import register_expert
from pipeline.media.audio import AudioRequest

N_MELS = 64
BLOCK_WINDOWS = 64  # windows per STFT block: bounds the temporary spectrogram memory


class AudioStatsConfig(ExpertConfig):
    """``sample_rate`` Hz, ``window_s`` seconds per row, STFT ``frame_s``/``hop_s`` in seconds, 64 mel bands
    between ``fmin`` and ``fmax`` Hz, ``log_offset`` added before the log."""

    sample_rate: int = 16000
    window_s: float = 0.96
    frame_s: float = 0.025
    hop_s: float = 0.010
    fmin: float = 125.0
    fmax: float = 7500.0
    log_offset: float = 0.01

    @model_validator(mode="after")
    def _check_audiostats(self) -> Self:
        if not 0 < self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 < fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.window_s < self.hop_s or self.frame_s <= 0 or self.hop_s <= 0:
            raise ValueError("need frame_s > 0, hop_s > 0 and window_s >= hop_s")
        return self


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(n_fft: int, sample_rate: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular HTK-mel weights (VGGish's ``spectrogram_to_mel_matrix``, DC bin zeroed)."""
    bins_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    bins_mel = hz_to_mel(bins_hz)
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights.astype(np.float32)


def log_mel_window_stats(
    wave: np.ndarray, c: AudioStatsConfig, *, first_row: int = 0, pad: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """float32 mono ``wave`` -> (rows (R, 2*N_MELS) float32, timestamps (R, 2) float32 seconds).

    ``first_row``: the index of the wave's first window in the track (its rows' times follow from it); ``pad``:
    zero-pad a wave shorter than one STFT frame to one frame (a whole track; not a track's tail block)."""
    frame = round(c.frame_s * c.sample_rate)
    hop = round(c.hop_s * c.sample_rate)
    per_window = max(1, round(c.window_s / c.hop_s))
    n_fft = 1 << (frame - 1).bit_length()
    if pad and len(wave) < frame:
        wave = np.pad(wave, (0, frame - len(wave)))
    n_frames = max(0, 1 + (len(wave) - frame) // hop)
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)).astype(np.float32)
    mel = mel_matrix(n_fft, c.sample_rate, N_MELS, c.fmin, c.fmax)
    rows = []
    block = per_window * BLOCK_WINDOWS
    for f0 in range(0, n_frames, block):
        idx = np.arange(f0, min(n_frames, f0 + block))
        frames = wave[idx[:, None] * hop + np.arange(frame)[None, :]] * hann
        spec = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)).astype(np.float32)
        logmel = np.log(spec @ mel + c.log_offset)
        for w0 in range(0, len(logmel), per_window):
            chunk = logmel[w0 : w0 + per_window]
            rows.append(np.concatenate([chunk.mean(0), chunk.std(0)]))
    duration = (first_row * per_window * hop + len(wave)) / c.sample_rate
    starts = (first_row + np.arange(len(rows))) * c.window_s
    ends = np.minimum(starts + c.window_s, duration)
    stacked = np.stack(rows) if rows else np.zeros((0, 2 * N_MELS))
    return stacked.astype(np.float32), np.stack([starts, ends], 1).astype(np.float32)


@register_expert
class AudioStatsExpert(Expert):
    """Mean and std of 64-band log-mel over 0.96 s windows (128-d); no weights."""

    name: ClassVar[str] = "audio_stats"
    version: ClassVar[str] = "1"
    input_kind: ClassVar[str] = "audio"
    dim: ClassVar[int] = 128
    Config: ClassVar[type[ExpertConfig]] = AudioStatsConfig
    config: AudioStatsConfig

    def load(
        self, device: str = "cpu", weights_dir: str | Path | None = None, *, random_init: bool = False
    ) -> None:
        """Nothing to load (no weights); records the device for symmetry."""
        self.device = resolve_device(device)

    def media_request(self) -> AudioRequest:
        return AudioRequest(self.config.sample_rate)

    def preparer(self, path: Path, record: VideoRecord) -> AudioBlockPreparer:
        """Rows of ``BLOCK_WINDOWS`` windows per part (the same rows as the whole track at once), so memory stays
        bounded by the part; NoAudioError for a track without samples."""
        c = self.config
        hop = round(c.hop_s * c.sample_rate)
        window = max(1, round(c.window_s / c.hop_s)) * hop
        overlap = round(c.frame_s * c.sample_rate) - hop

        def stats_part(offset: int, samples: np.ndarray, last: bool) -> Prepared | None:
            rows, times = log_mel_window_stats(samples, c, first_row=offset // window, pad=offset == 0)
            return Prepared(rows, times) if len(rows) else None

        return AudioBlockPreparer(path, BLOCK_WINDOWS * window, max(0, overlap), stats_part)

    def forward(self, items: list[Prepared]) -> list[ExpertOutput]:
        return [ExpertOutput(it.data, it.timestamps) for it in items]
