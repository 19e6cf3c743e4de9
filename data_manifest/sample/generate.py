"""The embedded sample dataset: deterministic captioned clips that exercise every expert (issue 2 §4).

``generate_sample_dataset(out_dir, n=300, seed=0, workers=2)`` writes ``out_dir/videos/<video_id>.mp4`` and
``out_dir/manifest.jsonl``. Each clip (3-8 s, H.264 yuv420p + AAC, 160x120 to 256x144, 12-25 fps) shows one or
two coloured shapes moving in a distinct way over a solid, gradient, noisy or striped background, shows an upper
case word (ffmpeg ``drawtext``, DejaVu Sans) for part of the clip, speaks a short phrase with espeak-ng over a
background tone or noise; about 8 % of clips have no audio track, 15 % no speech (those included) and 15 % no
on-screen word. ``meta`` records every generation attribute (shapes, colours, motions, word and its times, spoken
phrase and its times, background, tone, size, fps, duration); captions are paraphrases built from it.

Splits: the last third of the clips is ``test``, about 7 % ``val``, the rest ``train`` (180/20/100 for n=300).
On-screen and spoken words are drawn without replacement within a split (100 words each), so test clips rarely
share a word.

Determinism: all randomness comes from ``numpy.random.default_rng([seed, index])`` per clip (plus per-split word
permutations); frames and audio are rendered with numpy and encoded single-threaded with bit-exact flags, so the
same seed gives a byte-identical manifest and identical decoded frames. A clip file already present whose embedded
plan digest matches is kept (regeneration is idempotent); files are written under temporary names and renamed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from data_manifest.atomic import publish
from data_manifest.errors import T2VError
from data_manifest.sample.plan import FONTS, GENERATOR_VERSION, plan_dataset, plan_digest, split_counts
from data_manifest.sample.render import AUDIO_RATE, render_audio, render_frames
from data_manifest.sample.vocab import TEXT_STYLES, compose_captions
from data_manifest.schema import VideoRecord, write_manifest

__all__ = ["generate_sample_dataset", "build_clip", "split_counts", "video_id"]


def _run(cmd: list[str], what: str, stdin: bytes | None = None) -> None:
    """Run an external tool; a non-zero exit becomes a one-line T2VError naming ``what``."""
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise T2VError(
            f"{what}: {cmd[0]} exited with {proc.returncode}: {lines[-1] if lines else 'no message'}"
        )


def _speak(plan: dict[str, Any], tmp: Path, what: str) -> np.ndarray:
    """espeak-ng's rendering of the plan's phrase, float64 mono at AUDIO_RATE in [-1, 1]."""
    wav = tmp / "speech.wav"
    cmd = ["espeak-ng", "-w", str(wav), "-v", plan["voice"]]
    cmd += ["-s", str(plan["speed"]), "-p", str(plan["pitch"])]
    _run([*cmd, plan["spoken_phrase"]], what)
    with wave.open(str(wav), "rb") as fh:
        if fh.getframerate() != AUDIO_RATE or fh.getsampwidth() != 2:
            raise T2VError(
                f"{what}: espeak-ng wrote {fh.getframerate()} Hz / {fh.getsampwidth()} bytes, not 16-bit"
            )
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2")
    return pcm.astype(np.float64) / 32768.0


def _is_valid(path: Path, digest: str, has_audio: bool) -> bool:
    """True when ``path`` is a complete clip written from the plan with this digest."""
    try:
        with av.open(str(path)) as container:
            return (
                container.metadata.get("comment") == f"{GENERATOR_VERSION} {digest}"
                and len(container.streams.video) == 1
                and len(container.streams.audio) == int(has_audio)
            )
    except (av.FFmpegError, OSError):
        return False


def _drawtext(plan: dict[str, Any]) -> str:
    width, height = plan["size"]
    word = plan["word"]
    fontsize = int(min(0.26 * height, 0.86 * width / (0.8 * len(word) + 0.5)))
    colour, box = TEXT_STYLES[plan["text_style"]]
    y = {"center": "(h-text_h)/2", "top": "h*0.08", "bottom": "h*0.92-text_h"}[plan["word_position"]]
    return (
        f"drawtext=fontfile={FONTS[plan['font']]}:text={word}:fontsize={fontsize}:fontcolor={colour}"
        f":box=1:boxcolor={box}:boxborderw={max(3, fontsize // 6)}:x=(w-text_w)/2:y={y}"
        f":enable='between(t,{plan['word_start']},{plan['word_end']})'"
    )


def _encode(
    plan: dict[str, Any], frames: np.ndarray, audio: np.ndarray | None, tmp: Path, digest: str
) -> Path:
    width, height = plan["size"]
    out = tmp / "clip.mp4"
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(plan["fps"])]
    cmd += ["-i", "pipe:0"]
    if audio is not None:
        wav = tmp / "audio.wav"
        with wave.open(str(wav), "wb") as fh:
            fh.setnchannels(1)
            fh.setsampwidth(2)
            fh.setframerate(AUDIO_RATE)
            fh.writeframes(audio.astype("<i2").tobytes())
        cmd += ["-i", str(wav), "-map", "0:v", "-map", "1:a"]
    vf = (_drawtext(plan) + ",") if plan["has_text"] else ""
    cmd += ["-vf", vf + "format=yuv420p", "-sws_flags", "bicubic+accurate_rnd+bitexact"]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-threads", "1"]
    cmd += ["-g", str(2 * plan["fps"])]
    cmd += ["-pix_fmt", "yuv420p", "-flags:v", "+bitexact"]
    cmd += ["-c:a", "aac", "-b:a", "64k", "-flags:a", "+bitexact"] if audio is not None else ["-an"]
    cmd += ["-fflags", "+bitexact", "-map_metadata", "-1"]
    cmd += ["-metadata", f"comment={GENERATOR_VERSION} {digest}"]
    _run([*cmd, "-f", "mp4", str(out)], f"sample clip {plan['index']}", stdin=frames.tobytes())
    return out


def build_clip(plan: dict[str, Any], video_path: Path) -> dict[str, Any]:
    """Make (or keep, when already valid) one clip; returns its ``meta`` (the plan plus speech times)."""
    what = f"sample clip {video_path.name}"
    digest = plan_digest(plan)
    meta = {**plan, "digest": digest}
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=video_path.parent) as tmp_name:
        tmp = Path(tmp_name)
        speech = _speak(plan, tmp, what) if plan["has_speech"] else None
        if speech is not None:
            spoken = speech.size / AUDIO_RATE
            start = 0.2 + plan["speech_offset"] * max(0.0, plan["duration"] - spoken - 0.4)
            meta.update(
                speech_start=round(start, 3), speech_end=round(min(plan["duration"], start + spoken), 3)
            )
        if _is_valid(video_path, digest, plan["has_audio"]):
            return meta
        frames = render_frames(plan)
        audio = render_audio(plan, speech, meta.get("speech_start", 0.0)) if plan["has_audio"] else None
        publish(_encode(plan, frames, audio, tmp, digest), video_path)
    return meta


def check_tools(plans: list[dict[str, Any]]) -> None:
    """Fail early, in one line, when ffmpeg, espeak-ng or a DejaVu font the plans need is missing."""
    if shutil.which("ffmpeg") is None:
        raise T2VError("sample-data: ffmpeg not found on PATH (install it: apt-get install -y ffmpeg)")
    if any(p["has_speech"] for p in plans) and shutil.which("espeak-ng") is None:
        raise T2VError("sample-data: espeak-ng not found on PATH (install it: apt-get install -y espeak-ng)")
    for font in {p["font"] for p in plans if p["has_text"]}:
        if not FONTS[font].is_file():
            raise T2VError(
                f"sample-data: font {FONTS[font]} missing (install it: apt-get install -y fonts-dejavu-core)"
            )


def generate_sample_dataset(
    out_dir: str | Path, n: int = 300, seed: int = 0, workers: int = 2, *, progress: bool = True
) -> Path:
    """Generate ``n`` clips under ``out_dir/videos/`` and write ``out_dir/manifest.jsonl``; returns its path."""
    if n < 1:
        raise T2VError(f"sample-data: --n must be at least 1, got {n}")
    if workers < 1:
        raise T2VError(f"sample-data: --workers must be at least 1, got {workers}")
    out_dir = Path(out_dir)
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for stale in videos.glob(".tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    plans = plan_dataset(n, seed)
    check_tools(plans)
    metas: dict[int, dict[str, Any]] = {}
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=n, desc="sample clips", unit="clip", disable=not progress) as bar,
    ):
        futures = {pool.submit(build_clip, p, videos / f"{video_id(i)}.mp4"): i for i, p in enumerate(plans)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                err = fut.exception()
                if err is not None:
                    for other in pending:
                        other.cancel()
                    raise err
                metas[futures[fut]] = fut.result()
                bar.update(1)
    records = []
    for i in range(n):
        meta = metas[i]
        rng = np.random.default_rng([seed, i, 7])
        captions = compose_captions(meta, rng)
        vid = video_id(i)
        records.append(
            VideoRecord(
                video_id=vid, path=f"videos/{vid}.mp4", captions=captions, split=meta["split"], meta=meta
            )
        )
    manifest = out_dir / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest


def video_id(index: int) -> str:
    """The id (and file stem) of sample clip ``index``."""
    return f"sample-{index:05d}"
