"""Tiny real media files for tests, made with ffmpeg's lavfi sources (deterministic, a few KB each)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np


def make_video(
    path: str | Path,
    *,
    duration: float = 2.0,
    size: tuple[int, int] = (64, 48),
    fps: float = 10,
    audio: bool = True,
    codec: str = "libx264",
    source: str = "testsrc2",
    extra_video_filters: str = "",
    extra_args: tuple[str, ...] = (),
    audio_codec: str | None = None,
    audio_duration: float | None = None,
) -> Path:
    """Write a synthetic video (``source`` pattern, optional 440 Hz sine audio of ``audio_duration``, default the
    video's, in ``audio_codec``, default AAC or Opus for .webm). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    vf = f"{source}=size={w}x{h}:rate={fps}:duration={duration}"
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", vf]
    if audio:
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=16000:duration={audio_duration or duration}",
        ]
    if extra_video_filters:
        cmd += ["-vf", extra_video_filters]
    cmd += ["-c:v", codec, "-pix_fmt", "yuv420p"]
    if codec == "libx264":
        cmd += ["-preset", "ultrafast"]
    if audio:
        cmd += ["-c:a", audio_codec or ("libopus" if path.suffix == ".webm" else "aac")]
        cmd += [] if audio_duration else ["-shortest"]
    cmd += [*extra_args, str(path)]
    subprocess.run(cmd, check=True)
    return path


def truncate(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of a file's bytes (a truncated download)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def corrupt_packets(src: str | Path, dst: str | Path, stream: str, count: int = 2, keep: int = 0) -> Path:
    """Copy ``src`` with ``count`` packets in the middle of its first ``stream`` ("audio"/"video") overwritten by
    noise (container headers intact: only packet payload bytes change, after the first ``keep`` of each)."""
    data = bytearray(Path(src).read_bytes())
    with av.open(str(src)) as container:
        chosen = container.streams.audio[0] if stream == "audio" else container.streams.video[0]
        packets = [(p.pos, bytes(p)) for p in container.demux(chosen) if p.size and p.pos is not None]
    noise = np.random.default_rng(0)
    middle = len(packets) // 2
    for pos, payload in packets[middle : middle + count]:
        start = data.find(payload, pos)
        assert start >= 0, f"{src}: packet payload not found at {pos}"
        data[start + keep : start + len(payload)] = noise.integers(
            0, 256, len(payload) - keep, np.uint8
        ).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
