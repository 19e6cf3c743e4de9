"""Audio front-ends of the audio experts: VGGish's log-mel examples, streamed audio blocks, checkpoint reading.

VGGish input (``vggish_input.waveform_to_examples`` of the official release / torchvggish), all in float64:
16 kHz mono; 25 ms (400-sample) periodic-Hann frames every 10 ms (160 samples); |rfft| with 512 points; 64 HTK-mel
bands from 125 to 7500 Hz (triangles on the mel scale, DC bin zeroed); ``log(mel + 0.01)``; non-overlapping examples
of 96 frames (0.96 s), a partial last example dropped as in the official code. Example ``i`` covers samples
``[15360 i, 15360 i + 15600)``; its row time is ``[0.96 i, 0.96 (i + 1))`` seconds (end clipped to the audio).
Audio shorter than one example (0.975 s) is zero-padded to one example, so a short clip gives one row, not none.

Long tracks are streamed in blocks (``AudioBlocks``) so memory stays bounded whatever the duration.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy._core import multiarray as np_multiarray

from extractors.base import Prepared
from extractors.weights import one_line_error
from pipeline.errors import NoAudioError, WeightsError

VGGISH_SAMPLE_RATE = 16000
VGGISH_FRAME = 400  # samples: 25 ms
VGGISH_HOP = 160  # samples: 10 ms
VGGISH_FFT = 512
VGGISH_MELS = 64
VGGISH_FMIN = 125.0
VGGISH_FMAX = 7500.0
VGGISH_LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames
EXAMPLE_HOP_SAMPLES = EXAMPLE_FRAMES * VGGISH_HOP  # 15360
EXAMPLE_SPAN_SAMPLES = (EXAMPLE_FRAMES - 1) * VGGISH_HOP + VGGISH_FRAME  # 15600: samples one example reads
EXAMPLE_SECONDS = EXAMPLE_HOP_SAMPLES / VGGISH_SAMPLE_RATE  # 0.96


def hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``1127 ln(1 + hz / 700)`` (float64)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def vggish_mel_matrix(
    num_mel_bins: int = VGGISH_MELS,
    num_spectrogram_bins: int = VGGISH_FFT // 2 + 1,
    sample_rate: int = VGGISH_SAMPLE_RATE,
    lower_hz: float = VGGISH_FMIN,
    upper_hz: float = VGGISH_FMAX,
) -> np.ndarray:
    """(num_spectrogram_bins, num_mel_bins) float64 triangular weights, as ``mel_features.spectrogram_to_mel_matrix``."""
    bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


_MEL = vggish_mel_matrix()
_HANN = 0.5 - 0.5 * np.cos(2.0 * np.pi / VGGISH_FRAME * np.arange(VGGISH_FRAME))  # periodic Hann


def vggish_log_mel(wave: np.ndarray) -> np.ndarray:
    """16 kHz mono wave (n,) in [-1, 1] -> log-mel (T, 64) float64, ``T = 1 + (n - 400) // 160`` (0 if n < 400)."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if len(wave) < VGGISH_FRAME:
        return np.zeros((0, VGGISH_MELS))
    frames = np.lib.stride_tricks.sliding_window_view(wave, VGGISH_FRAME)[::VGGISH_HOP]
    spectrum = np.abs(np.fft.rfft(frames * _HANN, VGGISH_FFT, axis=1))
    return np.log(spectrum @ _MEL + VGGISH_LOG_OFFSET)


def vggish_examples(wave: np.ndarray, pad_short: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz mono wave -> examples float32 (N, 96, 64) and timestamps float32 (N, 2) [start, end) seconds.

    A partial last example is dropped (official behaviour). With ``pad_short``, a non-empty wave shorter than one
    example is zero-padded to one example (its row time stays ``[0, duration)``). An empty wave gives N = 0.
    """
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = len(wave)
    if pad_short and 0 < n < EXAMPLE_SPAN_SAMPLES:
        wave = np.pad(wave, (0, EXAMPLE_SPAN_SAMPLES - n))
    log_mel = vggish_log_mel(wave)
    count = len(log_mel) // EXAMPLE_FRAMES
    examples = (
        log_mel[: count * EXAMPLE_FRAMES].reshape(count, EXAMPLE_FRAMES, VGGISH_MELS).astype(np.float32)
    )
    starts = np.arange(count) * EXAMPLE_SECONDS
    ends = np.minimum(starts + EXAMPLE_SECONDS, n / VGGISH_SAMPLE_RATE)
    return examples, np.stack([starts, ends], 1).astype(np.float32).reshape(count, 2)


class AudioBlocks:
    """Consecutive audio chunks regrouped into ``(offset, samples, last)`` blocks: samples
    ``[offset, offset + block + overlap)``, offsets advancing by ``block``. The last block (``finish``) holds what
    is left (possibly fewer than ``overlap`` samples, or none for an empty track)."""

    def __init__(self, block: int, overlap: int = 0):
        self.block, self.overlap = block, overlap
        self._pending: list[np.ndarray] = []
        self._buffered = 0
        self._offset = 0

    def push(self, chunk: np.ndarray) -> list[tuple[int, np.ndarray, bool]]:
        """The blocks completed by ``chunk`` (float32 mono)."""
        self._pending.append(chunk)
        self._buffered += len(chunk)
        if self._buffered < self.block + self.overlap:
            return []
        data = np.concatenate(self._pending)
        out = []
        while len(data) >= self.block + self.overlap:
            out.append((self._offset, data[: self.block + self.overlap], False))
            data = data[self.block :]
            self._offset += self.block
        self._pending, self._buffered = [data], len(data)
        return out

    def finish(self) -> tuple[int, np.ndarray, bool]:
        """The last block."""
        tail = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        return self._offset, tail, True


class AudioBlockPreparer:
    """The ``Preparer`` of an audio expert: the track's chunks regrouped into ``AudioBlocks``, each turned into a
    part by ``make_part(offset, samples, last)`` (None: no part). NoAudioError for a track without samples."""

    def __init__(
        self,
        path: Path,
        block: int,
        overlap: int,
        make_part: Callable[[int, np.ndarray, bool], Prepared | None],
    ):
        self.path = path
        self.blocks = AudioBlocks(block, overlap)
        self.make_part = make_part

    def _parts(self, blocks: list[tuple[int, np.ndarray, bool]]) -> list[Prepared]:
        return [part for block in blocks if (part := self.make_part(*block)) is not None]

    def push(self, chunk: np.ndarray) -> list[Prepared]:
        return self._parts(self.blocks.push(chunk))

    def finish(self) -> list[Prepared]:
        offset, samples, last = self.blocks.finish()
        if offset == 0 and len(samples) == 0:
            raise NoAudioError(f"{self.path}: audio track has no samples")
        return self._parts([(offset, samples, last)])


_NUMPY_ARRAY_GLOBALS: list = [
    np.ndarray,
    np.dtype,
    np.dtypes.Float32DType,
    np.dtypes.Float64DType,
    np.dtypes.Int64DType,
    np.dtypes.Int32DType,
    np.dtypes.UInt32DType,
    (np_multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    np_multiarray._reconstruct,
    (np_multiarray.scalar, "numpy.core.multiarray.scalar"),
    np_multiarray.scalar,
]


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` on CPU that also accepts plain numpy arrays and scalars.

    Some official audio checkpoints (torchvggish's PCA parameters, PANN training checkpoints) hold numpy arrays;
    only numpy's array/scalar reconstruction is allowlisted, so no code from the file can run. WeightsError when the
    file can't be read or is not a dict.
    """
    try:
        with torch.serialization.safe_globals(_NUMPY_ARRAY_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise WeightsError(
            f"{path}: cannot read as a weights-only torch checkpoint: {one_line_error(err)}"
        ) from err
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict, got {type(obj).__name__}")
    return obj


def as_float_tensor(value: object, path: Path, key: str) -> torch.Tensor:
    """A checkpoint entry (tensor or numpy array) as a float32 tensor; WeightsError naming the key otherwise."""
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return torch.from_numpy(np.asarray(value, dtype=np.float32))
    raise WeightsError(f"{path}: entry {key!r} is {type(value).__name__}, expected a numeric tensor or array")
