"""Video decoding and frame/clip sampling with bounded memory.

Two readers, each the other's fallback when it fails to open or errors mid-stream:

- PyAV (``backend="auto"`` tries it first): frame-threaded decoding; builds a packet index (real, VFR-aware
  frame times and keyframes), seeks to the keyframe before a needed frame when that skips work, decodes
  forward, and lets the decoder skip non-reference frames that no row needs (``skip_frame=NONREF``, which
  cannot change the frames that are kept). Bit-identical frames to decord, and faster on 2 cores
  (tests/benchmarks/bench_decode.py; numbers in the README).
- decord (``backend="decord"`` tries it first): ``get_batch`` of the needed indices; its VP9 threading bug is
  retried with one thread before PyAV takes over. decord ignores rotation metadata (and returns wrongly shaped
  frames for rotated files), so rotated videos are always read with PyAV.

Sampling (``FrameSpec.kind``), all times in seconds from the first frame, rows as half-open ``[start, end)``:

- ``uniform``: ``num_frames`` frames, one at the centre of each of N equal intervals; row time = that
  interval.
- ``fps``: frames at ``fps`` per second, row time ``[t, t + 1/fps)`` (clipped to the duration).
- ``clips``: clips of ``clip_len`` frames sampled at ``fps`` (default: the video's own rate) every
  ``clip_stride_s`` seconds (default: back to back). Clips running past the end are padded by repeating their
  last real frame and flagged; a video shorter than one clip gives exactly one padded clip, never nothing.
- ``all``: every frame, with the real (VFR-aware) frame times.

Glitches: PyAV skips an undecodable packet and counts it; more than 5 % of the stream lost fails the video
(``pipeline.media.glitches``, the same share as the truncation check in ``readers``).

Frames are decoded in chunks of ``batch`` rows (fewer when a batch would exceed MAX_BATCH_BYTES, 24 MiB, e.g. HD
video), only the frames a spec needs; nothing holds a whole video. Arrays are uint8 RGB ``(n, H, W, 3)``,
resized at decode time when ``short_side`` / ``max_side`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from pipeline.errors import ConfigError, MediaError
from pipeline.media.audio import AudioRequest, audio_windows, iter_audio_rates, load_audio
from pipeline.media.readers import DecodeFailure, FrameReader, VideoInfo, open_decord, open_pyav, probe_video

log = logging.getLogger(__name__)
_T = TypeVar("_T")

KINDS = ("uniform", "fps", "clips", "all")
BACKENDS = ("auto", "decord", "pyav")
# one yielded batch of uint8 frames stays below this: under glibc's 32 MiB ceiling for serving allocations by mmap,
# so batch memory is reused from the heap instead of fresh pages faulted in for every batch (at 720p a 32-frame
# batch costs ~50x the page faults and +20 % decode time; tests/benchmarks/bench_decode.py)
MAX_BATCH_BYTES = 24 * 1024 * 1024
_EPS = 1e-6

__all__ = [
    "FrameSpec",
    "FrameRequest",
    "FrameBatch",
    "ClipBatch",
    "VideoInfo",
    "probe_video",
    "iter_frames",
    "iter_clips",
    "iter_frame_requests",
    "AudioRequest",
    "MediaRequest",
    "StreamFailed",
    "decode_pass",
    "load_audio",
    "audio_windows",
    "plan_frames",
    "plan_clips",
]


@dataclass(frozen=True)
class FrameSpec:
    """What to sample from a video (see module docstring). ``short_side``/``max_side`` resize, in pixels."""

    kind: str
    num_frames: int | None = None
    fps: float | None = None
    clip_len: int | None = None
    clip_stride_s: float | None = None
    short_side: int | None = None
    max_side: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"FrameSpec: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "uniform" and (self.num_frames is None or self.num_frames < 1):
            raise ConfigError(f"FrameSpec(uniform): num_frames must be >= 1, got {self.num_frames!r}")
        if self.kind == "fps" and (self.fps is None or self.fps <= 0):
            raise ConfigError(f"FrameSpec(fps): fps must be > 0, got {self.fps!r}")
        if self.kind == "clips":
            if self.clip_len is None or self.clip_len < 1:
                raise ConfigError(f"FrameSpec(clips): clip_len must be >= 1, got {self.clip_len!r}")
            if self.fps is not None and self.fps <= 0:
                raise ConfigError(f"FrameSpec(clips): fps must be > 0, got {self.fps!r}")
            if self.clip_stride_s is not None and self.clip_stride_s <= 0:
                raise ConfigError(f"FrameSpec(clips): clip_stride_s must be > 0, got {self.clip_stride_s!r}")
        for name in ("short_side", "max_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"FrameSpec: {name} must be >= 1, got {value!r}")


@dataclass
class FrameBatch:
    """``frames`` uint8 (n,H,W,3) RGB; ``timestamps`` float32 (n,2) [start,end) s; ``indices`` frame nos."""

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray


@dataclass
class ClipBatch:
    """``clips`` uint8 (n,L,H,W,3); ``timestamps`` float32 (n,2); ``valid`` int (n,) real frames per clip;
    ``padded`` bool (n,) True where the clip was filled by repeating its last real frame."""

    clips: np.ndarray
    timestamps: np.ndarray
    valid: np.ndarray
    padded: np.ndarray


def output_size(width: int, height: int, short_side: int | None, max_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``, the long one capped at ``max_side``."""
    scale = 1.0
    if short_side is not None:
        scale = short_side / min(width, height)
    if max_side is not None and max(width, height) * scale > max_side:
        scale = max_side / max(width, height)
    if scale == 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _required(value: _T | None, spec: FrameSpec, name: str) -> _T:
    """A field the spec's kind requires (``FrameSpec`` checks it on creation; this also narrows its type)."""
    if value is None:
        raise ConfigError(f"FrameSpec({spec.kind}): {name} is required")
    return value


def _frame_at(starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time (the last frame starting at or before it)."""
    idx = np.searchsorted(starts, np.asarray(times) + _EPS, side="right") - 1
    return np.clip(idx, 0, len(starts) - 1).astype(np.int64)


def plan_frames(spec: FrameSpec, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (R,) and row times (R,2) float32 of a frame spec, from frame start/end times (n,) s."""
    duration = float(ends[-1])
    if spec.kind == "all":
        return np.arange(len(starts), dtype=np.int64), np.stack([starts, ends], 1).astype(np.float32)
    if spec.kind == "uniform":
        edges = np.linspace(0.0, duration, _required(spec.num_frames, spec, "num_frames") + 1)
        times = np.stack([edges[:-1], edges[1:]], 1)
        return _frame_at(starts, (edges[:-1] + edges[1:]) / 2), times.astype(np.float32)
    if spec.kind == "fps":
        rate = _required(spec.fps, spec, "fps")
        step = 1.0 / rate
        count = max(1, int(np.ceil(duration * rate - _EPS)))
        t = np.arange(count) * step
        times = np.stack([t, np.minimum(t + step, duration)], 1)
        return _frame_at(starts, t), times.astype(np.float32)
    raise ConfigError(f"FrameSpec kind {spec.kind!r} gives clips: use iter_clips / plan_clips")


def plan_clips(
    spec: FrameSpec, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip frame indices (C,L), clip times (C,2) float32 and real-frame counts (C,) for a ``clips`` spec.

    Full clips start every ``clip_stride_s``; if they leave a tail uncovered, one more clip starts at the next
    stride position and is padded; a video shorter than one clip gives one padded clip.
    """
    duration = float(ends[-1])
    native_fps = len(starts) / duration if duration > 0 else 1.0
    fps = spec.fps or native_fps
    length = _required(spec.clip_len, spec, "clip_len")
    span = length / fps
    stride = spec.clip_stride_s or span
    n_full = int(np.floor((duration - span) / stride + _EPS)) + 1 if duration + _EPS >= span else 0
    starts_list = list(np.arange(n_full) * stride)
    next_start = n_full * stride
    if n_full == 0 or (next_start < duration - 0.5 / fps and starts_list[-1] + span < duration - 0.5 / fps):
        starts_list.append(next_start if n_full else 0.0)
    clip_starts = np.asarray(starts_list, dtype=np.float64)
    frame_times = clip_starts[:, None] + np.arange(length)[None, :] / fps
    real = frame_times < duration - _EPS
    real[:, 0] = True
    valid = real.sum(1)
    idx = _frame_at(starts, frame_times)
    last = idx[np.arange(len(idx)), valid - 1]
    idx = np.where(real, idx, last[:, None])
    times = np.stack([clip_starts, np.minimum(clip_starts + span, duration)], 1)
    return idx, times.astype(np.float32), valid.astype(np.int64)


class _Decoder:
    """Opens the first reader that works (PyAV / decord / decord single-threaded, in backend order) and
    moves on to the next one when it fails mid-stream. ``sizes``: the output sizes (width, height) to convert
    each needed frame to."""

    def __init__(self, path: Path, info: VideoInfo, sizes: list[tuple[int, int]], backend: str):
        if backend not in BACKENDS:
            raise ConfigError(f"decode backend must be one of {BACKENDS}, got {backend!r}")
        self.path = path
        self.info = info
        self.sizes = sizes
        decord_makers: list[tuple[str, Callable[[], FrameReader]]] = [
            ("decord", lambda: open_decord(path, self.info, sizes, threads=0)),
            ("decord-1-thread", lambda: open_decord(path, self.info, sizes, threads=1)),
        ]
        pyav_maker = ("pyav", lambda: open_pyav(path, self.info, sizes))
        if self.info.rotation != 0 or backend == "pyav":
            makers = [pyav_maker]
        elif backend == "decord":
            makers = [*decord_makers, pyav_maker]
        else:
            makers = [pyav_maker, *decord_makers]
        self._makers = makers
        self._failures: list[str] = []
        self._wanted: np.ndarray | None = None
        self.reader = self._next_reader()

    def _next_reader(self) -> FrameReader:
        while self._makers:
            name, make = self._makers.pop(0)
            try:
                return make()
            except DecodeFailure as err:
                log.debug("%s: %s failed to open: %s", self.path, name, err)
                self._failures.append(f"{name}: {err}")
        raise MediaError(f"{self.path}: cannot decode video ({'; '.join(self._failures)})")

    def read(self, indices: np.ndarray, need: np.ndarray) -> list[list[np.ndarray]]:
        """Per output size, the frames of sorted unique ``indices`` that ``need`` (k, sizes) marks, switching
        reader on a decoder error."""
        while True:
            try:
                return self.reader.read(indices, need)
            except DecodeFailure as err:
                log.debug("%s: %s failed: %s", self.path, self.reader.name, err)
                self._failures.append(f"{self.reader.name}: {err}")
                self.reader.close()
                self.reader = self._next_reader()
                if self._wanted is not None:
                    count = len(self.reader.frame_times()[0])
                    if len(self._wanted) and self._wanted[-1] >= count:
                        raise MediaError(
                            f"{self.path}: {self.reader.name} finds {count} frames, fewer than planned "
                            f"({self._wanted[-1] + 1}) after: {'; '.join(self._failures)}"
                        ) from err
                    self.reader.want(self._wanted)

    def want(self, indices: np.ndarray) -> None:
        """Tell the reader (and any fallback opened later) every frame index that will be read."""
        self._wanted = np.unique(indices)
        self.reader.want(self._wanted)

    def close(self) -> None:
        self.reader.close()


def _checked_times(decoder: _Decoder) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = decoder.reader.frame_times()
    if len(starts) == 0:
        raise MediaError(f"{decoder.path}: no decodable video frames")
    return starts, ends


@dataclass(frozen=True)
class FrameRequest:
    """One consumer of a shared decoding pass: its sampling ``spec`` and the rows per batch it receives."""

    spec: FrameSpec
    batch: int
    stream = "video"


class _Rows:
    """The rows of one request over a video: frame indices (R,) or (R, L), times, and which rows were yielded."""

    def __init__(
        self, request: FrameRequest, size: int, starts: np.ndarray, ends: np.ndarray, row_bytes: int
    ):
        spec = request.spec
        self.spec, self.size = spec, size
        self.valid: np.ndarray | None = None
        if spec.kind == "clips":
            self.idx, self.times, self.valid = plan_clips(spec, starts, ends)
        else:
            self.idx, self.times = plan_frames(spec, starts, ends)
        flat = self.idx.reshape(len(self.idx), -1)
        self.last = flat.max(1)  # non-decreasing: rows are in time order
        self.first_from = np.minimum.accumulate(flat.min(1)[::-1])[
            ::-1
        ]  # lowest index still needed from row r
        frames_per_row = flat.shape[1]
        self.step = max(1, min(request.batch, MAX_BATCH_BYTES // (row_bytes * frames_per_row)))
        self.next = 0

    def ready(self, decoded_upto: int, finished: bool) -> tuple[int, int] | None:
        """The next batch of rows whose frames are all decoded, as (start, end), or None."""
        if self.next >= len(self.idx):
            return None
        end = min(self.next + self.step, len(self.idx))
        if not finished and (end - self.next < self.step or self.last[end - 1] > decoded_upto):
            return None
        return self.next, end

    def batch(self, start: int, end: int, cache: dict[int, np.ndarray]) -> FrameBatch | ClipBatch:
        idx = self.idx[start:end]
        frames = np.stack([cache[int(i)] for i in idx.ravel()])
        self.next = end
        if self.valid is None:
            return FrameBatch(frames=frames, timestamps=self.times[start:end], indices=idx)
        valid = self.valid[start:end]
        return ClipBatch(
            clips=frames.reshape(idx.shape + frames.shape[1:]),
            timestamps=self.times[start:end],
            valid=valid,
            padded=valid < idx.shape[1],
        )

    def needed_upto(self, index: int) -> np.ndarray:
        """The frame indices up to ``index`` that rows not yet yielded still need (a cached frame is dropped once
        no request of its size needs it)."""
        end = int(np.searchsorted(self.first_from, index, side="right"))
        return self.idx[self.next : max(self.next, end)].ravel()


def iter_frame_requests(
    path: str | Path, requests: Sequence[FrameRequest], *, backend: str = "auto"
) -> Iterator[tuple[int, FrameBatch | ClipBatch]]:
    """One decoding of ``path`` for several sampling requests: ``(request index, batch)`` in time order.

    Every frame any request needs is decoded once, in order, and converted once per distinct output size that
    wants it; each request receives exactly what ``iter_frames`` / ``iter_clips`` would give it alone (the same
    rows, bit-identical frames) in batches of ``request.batch`` rows. Memory: the frames of the rows not yet
    complete, per request (bounded by its batch and clip length, not by the video). Raises MediaError naming the
    file (the caller fails every request of the pass).
    """
    path = Path(path)
    info = probe_video(path)
    sizes: list[tuple[int, int]] = []
    for r in requests:
        size = output_size(info.width, info.height, r.spec.short_side, r.spec.max_side)
        if size not in sizes:
            sizes.append(size)
    decoder = _Decoder(path, info, sizes, backend)
    try:
        starts, ends = _checked_times(decoder)
        rows = []
        for r in requests:
            w, h = output_size(info.width, info.height, r.spec.short_side, r.spec.max_side)
            rows.append(_Rows(r, sizes.index((w, h)), starts, ends, w * h * 3))
        wanted = [
            np.unique(np.concatenate([p.idx.ravel() for p in rows if p.size == s])) for s in range(len(sizes))
        ]
        union = np.unique(np.concatenate(wanted))
        decoder.want(union)
        caches: list[dict[int, np.ndarray]] = [{} for _ in sizes]
        frame_bytes = sum(w * h * 3 for w, h in sizes)
        chunk = max(1, min(max(p.step for p in rows), MAX_BATCH_BYTES // frame_bytes))
        for c in range(0, len(union), chunk):
            indices = union[c : c + chunk]
            need = np.stack([np.isin(indices, wanted[s]) for s in range(len(sizes))], 1)
            for s, frames in enumerate(decoder.read(indices, need)):
                caches[s].update(zip(indices[need[:, s]].tolist(), frames, strict=True))
            finished = c + chunk >= len(union)
            for i, p in enumerate(rows):
                while (span := p.ready(int(indices[-1]), finished)) is not None:
                    yield i, p.batch(*span, caches[p.size])
            for s, cache in enumerate(caches):
                keys = np.fromiter(cache, np.int64, len(cache))
                keep = np.zeros(len(keys), bool)
                for p in rows:
                    if p.size == s and len(keys):
                        keep |= np.isin(keys, p.needed_upto(int(keys.max())))
                for key in keys[~keep].tolist():
                    del cache[key]
    finally:
        decoder.close()


def iter_frames(
    path: str | Path, spec: FrameSpec, batch: int = 32, *, backend: str = "auto"
) -> Iterator[FrameBatch]:
    """Stream the frames a ``uniform`` / ``fps`` / ``all`` spec asks for, ``batch`` rows at a time.

    ``backend``: the reader tried first, "auto" (= PyAV), "pyav" (no fallback) or "decord" (PyAV as fallback);
    see the module docstring. Raises MediaError (naming the file) for unreadable, truncated or
    frameless videos.
    """
    if spec.kind == "clips":
        raise ConfigError("iter_frames: FrameSpec(kind='clips') is read with iter_clips")
    for _, fb in iter_frame_requests(path, [FrameRequest(spec, batch)], backend=backend):
        assert isinstance(fb, FrameBatch)
        yield fb


def iter_clips(
    path: str | Path, spec: FrameSpec, batch: int = 4, *, backend: str = "auto"
) -> Iterator[ClipBatch]:
    """Stream the clips of a ``clips`` spec, ``batch`` clips at a time (see module docstring for padding)."""
    if spec.kind != "clips":
        raise ConfigError(f"iter_clips: needs FrameSpec(kind='clips'), got kind={spec.kind!r}")
    for _, cb in iter_frame_requests(path, [FrameRequest(spec, batch)], backend=backend):
        assert isinstance(cb, ClipBatch)
        yield cb


MediaRequest = FrameRequest | AudioRequest


@dataclass
class StreamFailed:
    """A stream of a shared pass could not be decoded: the requests (indices) that read it get ``error``."""

    requests: tuple[int, ...]
    error: MediaError


def decode_pass(
    path: str | Path, requests: Sequence[MediaRequest], *, backend: str = "auto"
) -> Iterator[tuple[int, FrameBatch | ClipBatch | np.ndarray] | StreamFailed]:
    """Decode ``path`` once for all ``requests``: ``(request index, batch or audio chunk)`` in time order.

    The video stream is decoded once for every frame request (``iter_frame_requests``), then the audio track once
    for every audio request (``iter_audio_rates``: one resampler per rate). The file is opened four times per
    pass whatever the number of requests (probe, packet index, video decoding, audio decoding). A stream that
    fails yields one ``StreamFailed`` for its requests (after any batches it gave); the other stream still runs.
    """
    frames = [i for i, r in enumerate(requests) if isinstance(r, FrameRequest)]
    frame_requests = [r for r in requests if isinstance(r, FrameRequest)]
    rates: dict[int, list[int]] = {}
    for i, r in enumerate(requests):
        if isinstance(r, AudioRequest):
            rates.setdefault(r.sample_rate, []).append(i)
    if frames:
        try:
            for j, batch in iter_frame_requests(path, frame_requests, backend=backend):
                yield frames[j], batch
        except MediaError as err:
            yield StreamFailed(tuple(frames), err)
    if rates:
        try:
            for rate, chunk in iter_audio_rates(path, list(rates)):
                for i in rates[rate]:
                    yield i, chunk
        except MediaError as err:
            yield StreamFailed(tuple(i for ids in rates.values() for i in ids), err)
