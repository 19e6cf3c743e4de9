"""The two frame readers behind ``pipeline.media.decode`` (decord, PyAV) and the PyAV probe they share.

A reader exposes the real frame times of the video (``frame_times()``, seconds from the first frame,
VFR-aware) and ``read(indices, need)`` for sorted unique frame indices, returning uint8 RGB ``(k, H, W, 3)`` arrays
at each of its output sizes: one decoded frame is converted to every size that wants it (several experts share
one decoding; PyAV converts the same ``av.VideoFrame`` per size, decord opens one reader per size).
``DecodeFailure`` means "this reader can't do it, try the next one"; ``MediaError`` means the
file itself is bad (e.g. truncated) and is final.

Rotation: PyAV reports the display matrix as ``frame.rotation`` (degrees counter-clockwise); decord ignores it
and returns garbage shapes for rotated files, so rotated videos are always read with PyAV and turned upright
here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipeline.errors import MediaError
from pipeline.media.glitches import LOSS_TOLERANCE, track

log = logging.getLogger(__name__)

TRUNCATION_TOLERANCE = LOSS_TOLERANCE  # one rule for truncation and undecodable packets
ESTIMATE_TOLERANCE = 0.2  # containers without a frame count: audio may outlast the video


class DecodeFailure(Exception):
    """A reader could not open or decode the file; the caller falls back to the next reader."""


@dataclass(frozen=True)
class VideoInfo:
    """Container facts of a video. ``width``/``height`` as displayed (after rotation), ``rotation`` in degrees
    counter-clockwise (0/90/180/270), ``num_frames`` as the container declares it (None when it doesn't)."""

    path: Path
    width: int
    height: int
    rotation: int
    fps: float | None
    num_frames: int | None
    duration: float | None
    codec: str
    has_audio: bool


class FrameReader(Protocol):
    """What ``pipeline.media.decode`` needs from a reader."""

    name: str

    def frame_times(self) -> tuple[np.ndarray, np.ndarray]: ...

    def read(self, indices: np.ndarray, need: np.ndarray) -> list[list[np.ndarray]]: ...

    def want(self, indices: np.ndarray) -> None: ...

    def close(self) -> None: ...


def probe_video(path: str | Path) -> VideoInfo:
    """Open with PyAV and decode the first frame (for rotation). Raises MediaError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise MediaError(f"{path}: no decodable video frames")
            rotation = int(round((first.rotation or 0) / 90.0)) % 4 * 90
            width, height = (
                (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
            )
            fps = float(stream.average_rate) if stream.average_rate else None
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            return VideoInfo(
                path=path,
                width=width,
                height=height,
                rotation=rotation,
                fps=fps,
                num_frames=int(stream.frames) or None,
                duration=duration,
                codec=stream.codec_context.name,
                has_audio=bool(container.streams.audio),
            )
    except (av.FFmpegError, OSError) as err:
        raise MediaError(f"{path}: cannot open video: {err}") from err


def _check_truncation(path: Path, found: int, info: VideoInfo, span: float | None = None) -> None:
    """MediaError when far fewer frames exist than the container declares (or its duration implies).

    ``span``: seconds from the first to past the last frame found, when known; a duration estimate is then met by
    the frames' time span, so a timestamp gap (MPEG-TS) is not taken for missing frames.
    """
    if info.num_frames:
        if found < (1 - TRUNCATION_TOLERANCE) * info.num_frames:
            raise MediaError(f"{path}: truncated: decoded {found} of {info.num_frames} frames")
    elif info.duration and info.fps:
        expected = round(info.duration * info.fps)
        covered = max(found, round(span * info.fps)) if span is not None else found
        if covered < (1 - ESTIMATE_TOLERANCE) * expected:
            raise MediaError(f"{path}: truncated: decoded {found} of ~{expected} frames (from the duration)")


def _times_from_starts(starts: np.ndarray, fallback_dur: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalise start times to begin at 0 and derive ends (next start; last = median frame duration)."""
    starts = starts - starts[0]
    diffs = np.diff(starts)
    last = float(np.median(diffs)) if len(diffs) else fallback_dur
    return starts, np.append(starts[1:], starts[-1] + (last if last > 0 else fallback_dur))


def open_decord(path: Path, info: VideoInfo, sizes: list[tuple[int, int]], threads: int) -> FrameReader:
    """A decord reader with output ``sizes`` (width, height) (``threads=0``: decord's default; 1 works around its
    VP9 threading bug)."""
    return _DecordReader(path, info, sizes, threads)


def open_pyav(path: Path, info: VideoInfo, sizes: list[tuple[int, int]]) -> FrameReader:
    """A PyAV reader with output ``sizes`` (width, height) that seeks to the keyframe before each needed frame
    and decodes forward."""
    return _PyAVReader(path, info, sizes)


class _DecordReader:
    """decord decodes at one size per ``VideoReader``: the first size is opened at once, others on first use."""

    def __init__(self, path: Path, info: VideoInfo, sizes: list[tuple[int, int]], threads: int):
        try:
            import decord
        except ImportError as err:
            raise DecodeFailure(f"decord not importable: {err}") from err
        self._decord = decord
        self._errors = (decord.DECORDError, RuntimeError)
        self.name = "decord" if threads == 0 else f"decord-{threads}-thread"
        self.path, self.info, self.sizes, self._threads = path, info, sizes, threads
        self._readers: dict[int, Any] = {}
        try:
            first = self._reader(0)
            count = len(first)
            stamps = np.asarray(first.get_frame_timestamp(np.arange(count)), dtype=np.float64)
        except self._errors as err:
            raise DecodeFailure(str(err).strip().splitlines()[-1]) from err
        if count == 0:
            raise DecodeFailure("no frames")
        _check_truncation(path, count, info)
        fallback = 1.0 / info.fps if info.fps else 0.04
        self._starts, _ = _times_from_starts(stamps[:, 0], fallback)
        self._ends = stamps[:, 1] - stamps[0, 0]
        bad = self._ends <= self._starts
        self._ends[bad] = self._starts[bad] + fallback

    def frame_times(self) -> tuple[np.ndarray, np.ndarray]:
        return self._starts, self._ends

    def _reader(self, s: int) -> Any:
        if s not in self._readers:
            w, h = self.sizes[s]
            kwargs = {} if (w, h) == (self.info.width, self.info.height) else {"width": w, "height": h}
            self._readers[s] = self._decord.VideoReader(
                str(self.path), ctx=self._decord.cpu(0), num_threads=self._threads, **kwargs
            )
        return self._readers[s]

    def read(self, indices: np.ndarray, need: np.ndarray) -> list[list[np.ndarray]]:
        out: list[list[np.ndarray]] = []
        for s, (w, h) in enumerate(self.sizes):
            wanted = indices[need[:, s]]
            if not len(wanted):
                out.append([])
                continue
            try:
                frames = self._reader(s).get_batch(wanted.tolist()).asnumpy()
            except self._errors as err:
                raise DecodeFailure(str(err).strip().splitlines()[-1]) from err
            if frames.shape != (len(wanted), h, w, 3):
                raise DecodeFailure(f"unexpected frame shape {frames.shape}")
            out.append(list(frames))
        return out

    def want(self, indices: np.ndarray) -> None:
        """decord has no use for the full list of needed frames."""

    def close(self) -> None:
        self._readers.clear()


class _PyAVReader:
    name = "pyav"

    def __init__(self, path: Path, info: VideoInfo, sizes: list[tuple[int, int]]):
        self.path, self.info, self.sizes = path, info, sizes
        self._k = info.rotation // 90
        self._decode_sizes = [(h, w) if self._k % 2 else (w, h) for w, h in sizes]
        pts, keys = self._index()
        order = np.argsort(pts, kind="stable")
        self._pts, uniq = np.unique(pts[order], return_index=True)
        self._key_idx = np.flatnonzero(keys[order][uniq])
        if len(self._pts) == 0:
            raise MediaError(f"{path}: no decodable video frames")
        fallback = 1.0 / info.fps if info.fps else 0.04
        _check_truncation(
            path, len(self._pts), info, float(self._pts[-1] - self._pts[0]) * self._tb + fallback
        )
        self._starts, self._ends = _times_from_starts(self._pts * self._tb, fallback)
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as err:
            raise DecodeFailure(str(err)) from err
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._reformatters = [VideoReformatter() for _ in sizes]
        self._wanted: set[int] | None = None
        self._loss = track("video")
        self._frames = self._decode()
        self._pos = -1
        self._last: av.VideoFrame | None = None

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """Presentation timestamps and keyframe flags of every video packet (demux only, no decoding)."""
        pts, keys = [], []
        self._pts_complete = True
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                if stream.time_base is None:
                    raise DecodeFailure(f"{self.path}: video stream has no time base")
                self._tb = float(stream.time_base)
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    self._pts_complete = self._pts_complete and packet.pts is not None
                    stamp = packet.pts if packet.pts is not None else packet.dts
                    if stamp is None:
                        continue
                    pts.append(stamp)
                    keys.append(packet.is_keyframe)
        except av.InvalidDataError as err:
            log.debug("%s: demux stopped early: %s", self.path, err)
        except (av.FFmpegError, OSError) as err:
            raise DecodeFailure(str(err)) from err
        return np.asarray(pts, dtype=np.int64), np.asarray(keys, dtype=bool)

    def frame_times(self) -> tuple[np.ndarray, np.ndarray]:
        return self._starts, self._ends

    def want(self, indices: np.ndarray) -> None:
        """Declare every frame the caller will read: other non-reference frames are then skipped by the
        decoder (``skip_frame=NONREF``), which never changes the frames that are decoded. Packets without a
        pts can't be matched to frames, so then nothing is skipped."""
        if not self._pts_complete:
            return
        self._wanted = {int(p) for p in self._pts[np.asarray(indices, dtype=np.int64)]}

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Frames from the current position; packets of unwanted frames are decoded only if referenced."""
        ctx = self._stream.codec_context
        ctx.skip_frame = "DEFAULT"
        for packet in self._container.demux(self._stream):
            if self._wanted is not None and packet.pts is not None:
                ctx.skip_frame = "DEFAULT" if packet.pts in self._wanted else "NONREF"
            try:
                frames = ctx.decode(packet)
            except av.FFmpegError as err:
                self._lost(packet, err)
                continue
            yield from frames

    def to_rgb(self, frame: av.VideoFrame, s: int) -> np.ndarray:
        """``frame`` as uint8 RGB at output size ``s``, upright. One swscale context (and its thread pool) per
        output size serves every frame; ``frame.to_ndarray(format=...)`` would set up and tear down one per
        frame."""
        w, h = self._decode_sizes[s]
        rgb = self._reformatters[s].reformat(frame, width=w, height=h, format="rgb24").to_ndarray()
        return np.rot90(rgb, self._k)

    def _lost(self, packet: av.Packet, err: av.FFmpegError) -> None:
        """Skip an undecodable packet (counted once, see ``pipeline.media.glitches``); too many fail the video."""
        seconds = (
            float(packet.duration * self._tb)
            if packet.duration
            else float(self._ends[-1]) / len(self._starts)
        )
        key = packet.pts if packet.pts is not None else -1 - (packet.pos or 0)
        self._loss.lost_packet(self.path, key, seconds, float(self._ends[-1]), str(err))

    def _seek(self, target: int) -> None:
        k = np.searchsorted(self._key_idx, target, side="right") - 1
        key = int(self._key_idx[k]) if k >= 0 else 0
        self._container.seek(int(self._pts[key]), stream=self._stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._pos = -1

    def _needs_seek(self, target: int) -> bool:
        if target <= self._pos:
            return True
        k = np.searchsorted(self._key_idx, target, side="right") - 1
        return bool(k >= 0 and int(self._key_idx[k]) > self._pos + 1)

    def _advance(self, target: int) -> av.VideoFrame:
        target_pts = self._pts[target]
        try:
            for frame in self._frames:
                stamp = frame.pts
                self._pos = self._pos + 1 if stamp is None else int(np.searchsorted(self._pts, stamp))
                if stamp is not None and stamp < target_pts:
                    continue
                if stamp is None and self._pos < target:
                    continue
                self._last = frame
                return frame
        except (av.FFmpegError, OSError) as err:
            raise DecodeFailure(f"decode error near frame {target}: {err}") from err
        n = len(self._pts)
        if self._last is not None and target >= (1 - TRUNCATION_TOLERANCE) * n:
            log.warning(
                "%s: frames from %d of %d could not be decoded; repeating the last one", self.path, target, n
            )
            return self._last
        raise MediaError(f"{self.path}: truncated: decoded {min(target, n)} of {n} frames")

    def read(self, indices: np.ndarray, need: np.ndarray) -> list[list[np.ndarray]]:
        out: list[list[np.ndarray]] = [[] for _ in self.sizes]
        for j, target in enumerate(indices):
            if self._needs_seek(int(target)):
                self._seek(int(target))
            frame = self._advance(int(target))
            for s in np.flatnonzero(need[j]):
                try:
                    out[s].append(self.to_rgb(frame, int(s)))
                except (av.FFmpegError, OSError) as err:
                    raise DecodeFailure(f"cannot convert frame {target}: {err}") from err
        return out

    def close(self) -> None:
        self._container.close()
