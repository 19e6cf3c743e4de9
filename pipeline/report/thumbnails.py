"""Thumbnails for the report: frame strips of a video and single frames at given times (JPEG files).

Frames come from ``pipeline.media.decode.iter_frames`` (PyAV, decord fallback), decoded at ``height`` pixels on the short
side. An unreadable video gives a grey placeholder with a one-line reason instead of a missing image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from data_manifest.atomic import atomic_path
from pipeline.errors import MediaError
from pipeline.media.decode import FrameSpec, iter_frames

GAP = 2


def _frames(path: str | Path, spec: FrameSpec) -> tuple[np.ndarray, np.ndarray]:
    frames, times = [], []
    for batch in iter_frames(path, spec):
        frames.append(batch.frames)
        times.append(batch.timestamps)
    if not frames:
        raise MediaError(f"{path}: no frames decoded")
    return np.concatenate(frames), np.concatenate(times)


def save_jpeg(img: Image.Image, out: Path, quality: int = 82) -> Path:
    """Write ``img`` as a JPEG at ``out`` atomically."""
    with atomic_path(out) as tmp:
        img.save(tmp, "JPEG", quality=quality)
    return out


def placeholder(out: Path, reason: str, size: tuple[int, int] = (160, 48)) -> Path:
    """A grey JPEG with ``reason`` written on it."""
    img = Image.new("RGB", size, (200, 200, 200))
    ImageDraw.Draw(img).text((4, size[1] // 2 - 6), reason[:40], fill=(60, 60, 60))
    return save_jpeg(img, out, quality=80)


def strip(frames: np.ndarray) -> Image.Image:
    """Frames (n, H, W, 3) side by side with a white ``GAP`` between them."""
    n, h, w, _ = frames.shape
    canvas = Image.new("RGB", (n * w + (n - 1) * GAP, h), (255, 255, 255))
    for i, frame in enumerate(frames):
        canvas.paste(Image.fromarray(frame), (i * (w + GAP), 0))
    return canvas


def write_strip(video: str | Path, out: Path, num_frames: int = 4, height: int = 64) -> Path:
    """``num_frames`` uniformly spaced frames of ``video`` as one JPEG strip at ``out``."""
    try:
        frames, _ = _frames(video, FrameSpec("uniform", num_frames=num_frames, short_side=height))
    except MediaError as err:
        return placeholder(out, f"unreadable: {str(err).split(': ')[-1]}")
    return save_jpeg(strip(frames), out)


class FrameLookup:
    """Frames of one video sampled at ``fps`` (decoded once); ``write_at(t, out)`` saves the nearest one."""

    def __init__(self, video: str | Path, fps: float = 2.0, height: int = 56):
        self.error = ""
        try:
            self.frames, times = _frames(video, FrameSpec("fps", fps=fps, short_side=height))
            self.centres = times.mean(axis=1)
        except MediaError as err:
            self.error = str(err).split(": ")[-1]

    def write_at(self, seconds: float, out: Path) -> Path:
        if self.error:
            return placeholder(out, f"unreadable: {self.error}", (96, 56))
        i = int(np.argmin(np.abs(self.centres - seconds)))
        return save_jpeg(Image.fromarray(self.frames[i]), out)
