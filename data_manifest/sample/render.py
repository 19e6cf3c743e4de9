"""Pixel and sample rendering of one sample clip (see ``data_manifest.sample.generate``): pure numpy, deterministic.

Frames are uint8 RGB arrays (num_frames, H, W, 3); audio is int16 mono PCM at ``AUDIO_RATE`` Hz. Everything is a
function of the clip's plan dict (no global state), so the same plan renders the same bytes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from data_manifest.sample.vocab import PALETTE

AUDIO_RATE = 22050  # Hz, espeak-ng's native rate
SUPERSAMPLE = 4


def _polygon(px: np.ndarray, py: np.ndarray, verts: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test of points (px, py) against a closed polygon."""
    inside = np.zeros(px.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(verts, verts[1:] + verts[:1], strict=True):
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)
        inside ^= crosses & (px < (x2 - x1) * (py - y1) / (y2 - y1) + x1)
    return inside


def _regular(k: int, radius: float, phase: float) -> list[tuple[float, float]]:
    return [
        (radius * np.cos(phase + 2 * np.pi * i / k), radius * np.sin(phase + 2 * np.pi * i / k))
        for i in range(k)
    ]


@lru_cache(maxsize=256)
def shape_mask(shape: str, size: int) -> np.ndarray:
    """Anti-aliased coverage mask float32 (size, size) in [0, 1] of a shape filling a size x size box."""
    n = size * SUPERSAMPLE
    c = (np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0  # [-1, 1], y grows downward
    x, y = np.meshgrid(c, c)
    r = np.hypot(x, y)
    if shape == "circle":
        inside = r <= 0.96
    elif shape == "ring":
        inside = (r <= 0.96) & (r >= 0.55)
    elif shape == "square":
        inside = (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85)
    elif shape == "cross":
        inside = ((np.abs(x) <= 0.3) & (np.abs(y) <= 0.95)) | ((np.abs(y) <= 0.3) & (np.abs(x) <= 0.95))
    elif shape == "diamond":
        inside = np.abs(x) / 0.8 + np.abs(y) / 0.98 <= 1.0
    elif shape == "triangle":
        inside = _polygon(x, y, [(0.0, -0.95), (0.97, 0.85), (-0.97, 0.85)])
    elif shape == "hexagon":
        inside = _polygon(x, y, _regular(6, 0.98, 0.0))
    elif shape == "star":
        outer, inner = _regular(5, 0.98, -np.pi / 2), _regular(5, 0.42, -np.pi / 2 + np.pi / 5)
        inside = _polygon(x, y, [p for pair in zip(outer, inner, strict=True) for p in pair])
    elif shape == "heart":
        hx, hy = x * 1.25, -y * 1.25 + 0.15
        inside = (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
    else:
        raise ValueError(f"unknown shape {shape!r}")
    cov = inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return cov.astype(np.float32)


def render_background(bg: dict[str, Any], width: int, height: int) -> np.ndarray:
    """Static background uint8 (H, W, 3) for a background dict (kind, colours, direction, noise_seed, stripe)."""
    c0 = np.array(PALETTE[bg["colours"][0]], dtype=np.float32)
    img = np.broadcast_to(c0, (height, width, 3)).astype(np.float32)
    if bg["kind"] == "gradient":
        c1 = np.array(PALETTE[bg["colours"][1]], dtype=np.float32)
        steps = width if bg["direction"] == "horizontal" else height
        ramp = np.linspace(0.0, 1.0, steps, dtype=np.float32)
        ramp = ramp[None, :, None] if bg["direction"] == "horizontal" else ramp[:, None, None]
        img = c0 * (1 - ramp) + c1 * ramp + np.zeros((height, width, 1), np.float32)
    elif bg["kind"] == "noise":
        block = 6
        noise = np.random.default_rng(bg["noise_seed"]).normal(
            0.0, 40.0, (height // block + 1, width // block + 1)
        )
        noise = np.repeat(np.repeat(noise, block, axis=0), block, axis=1)[:height, :width]
        img = img + noise[:, :, None].astype(np.float32)
    elif bg["kind"] == "stripes":
        c1 = np.array(PALETTE[bg["colours"][1]], dtype=np.float32)
        axis = np.arange(width) if bg["direction"] == "vertical" else np.arange(height)
        on = (axis // bg["stripe"]) % 2 == 1
        on = on[None, :] if bg["direction"] == "vertical" else on[:, None]
        img = np.where(np.broadcast_to(on, (height, width))[:, :, None], c1, img)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def shape_position(
    shape: dict[str, Any], t: float, duration: float, width: int, height: int
) -> tuple[float, float, float]:
    """Centre (x, y) in pixels and scale factor of a shape at time ``t`` seconds (motion laws in meta terms)."""
    half = shape["size"] / 2 + 2
    u = t / duration
    x_free = half + shape["x"] * (width - 2 * half)
    y_free = half + shape["y"] * (height - 2 * half)
    motion = shape["motion"]
    if motion == "left":
        return width - half - u * (width - 2 * half), y_free, 1.0
    if motion == "right":
        return half + u * (width - 2 * half), y_free, 1.0
    if motion == "up":
        return x_free, height - half - u * (height - 2 * half), 1.0
    if motion == "down":
        return x_free, half + u * (height - 2 * half), 1.0
    if motion == "diagonal":
        sx, sy = shape["direction"]  # +1/-1: left->right, top->bottom
        fx = u if sx > 0 else 1 - u
        fy = u if sy > 0 else 1 - u
        return half + fx * (width - 2 * half), half + fy * (height - 2 * half), 1.0
    if motion == "circling":
        radius = max(min(width, height) / 2 - half - 1, 4.0)
        angle = shape["phase"] + shape["direction"][0] * 2 * np.pi * t / 2.5
        return width / 2 + radius * np.cos(angle), height / 2 + radius * np.sin(angle), 1.0
    if motion == "bouncing":
        lift = abs(np.sin(np.pi * t / 0.9 + shape["phase"]))
        return x_free, height - half - lift * (height - 2 * half), 1.0
    if motion == "pulsing":
        return x_free, y_free, 1.0 + 0.35 * np.sin(2 * np.pi * t / 1.1 + shape["phase"])
    return x_free, y_free, 1.0  # static


def _paste(frame: np.ndarray, mask: np.ndarray, colour: np.ndarray, cx: float, cy: float) -> None:
    """Alpha-blend ``colour`` through ``mask`` centred at (cx, cy), clipped to the frame (in place)."""
    h, w = frame.shape[:2]
    size = mask.shape[0]
    x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + size, w), min(y0 + size, h)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    a = mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0, None]
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.rint(region * (1.0 - a) + colour * a).astype(np.uint8)


def render_frames(plan: dict[str, Any]) -> np.ndarray:
    """All frames uint8 (num_frames, H, W, 3) of a clip plan: background, then shapes (second one first)."""
    width, height = plan["size"]
    fps, num_frames = plan["fps"], plan["num_frames"]
    duration = num_frames / fps
    bg = render_background(plan["background"], width, height)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    shapes = plan["shapes"][::-1]
    colours = [np.array(PALETTE[s["colour"]], dtype=np.float32) for s in shapes]
    for i in range(num_frames):
        frame = frames[i]
        frame[...] = bg
        t = i / fps
        for shape, colour in zip(shapes, colours, strict=True):
            cx, cy, scale = shape_position(shape, t, duration, width, height)
            size = max(4, int(round(shape["size"] * scale)))
            _paste(frame, shape_mask(shape["shape"], size), colour, cx, cy)
    return frames


def _background_sound(tone: dict[str, Any], n: int) -> np.ndarray:
    """Background tone or noise float64 (n,), peak about ``tone['level']``."""
    t = np.arange(n) / AUDIO_RATE
    if tone["kind"] == "sine":
        wave = np.sin(2 * np.pi * tone["frequency"] * t)
        if tone["pattern"] == "beeping":
            phase = (t % 0.5) / 0.5
            gate = np.clip(np.minimum(phase, 0.5 - phase) / 0.02, 0.0, 1.0) * (phase < 0.5)
            wave = wave * gate
        return tone["level"] * wave
    white = np.random.default_rng(tone["noise_seed"]).standard_normal(n)
    if tone["colour"] == "white":
        shaped = white
    elif tone["colour"] == "pink":
        spec = np.fft.rfft(white)
        spec[1:] /= np.sqrt(np.arange(1, spec.size))
        spec[0] = 0
        shaped = np.fft.irfft(spec, n)
    else:  # brown: leaky integration of white noise
        spec = np.fft.rfft(white)
        spec[1:] /= np.arange(1, spec.size)
        spec[0] = 0
        shaped = np.fft.irfft(spec, n)
    return tone["level"] * shaped / (np.max(np.abs(shaped)) + 1e-9)


def render_audio(plan: dict[str, Any], speech: np.ndarray | None, speech_start: float) -> np.ndarray:
    """Mono int16 PCM of the whole clip: background sound plus ``speech`` (float in [-1, 1]) from ``speech_start`` s."""
    n = int(round(plan["num_frames"] / plan["fps"] * AUDIO_RATE))
    mix = _background_sound(plan["tone"], n)
    if speech is not None:
        start = int(round(speech_start * AUDIO_RATE))
        seg = speech[: max(0, n - start)]
        mix[start : start + seg.size] += 0.7 * seg / (np.max(np.abs(seg)) + 1e-9)
    return np.clip(np.rint(mix * 32767), -32768, 32767).astype(np.int16)
