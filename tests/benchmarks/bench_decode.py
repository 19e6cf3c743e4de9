"""Decode benchmark (not part of pytest): our sampling paths vs ``ffmpeg -i X -f null -``, and peak memory.

Run: ``.venv/bin/python tests/benchmarks/bench_decode.py [--workdir DIR] [--repeats 3] [--long-minutes 30]
[--breakdown-sizes 640x360,1280x720]``

1. A 60 s 640x360 30 fps H.264 clip with film grain (~5 Mbit/s; x264 default GOP of 250 frames): median
   wall time of ``ffmpeg -i X -f null -`` (decode only, no pixel conversion) vs our dense path
   (``FrameSpec("all")``, RGB arrays) for each backend, as a ratio; sparse specs (1 fps, 16 uniform frames)
   vs our full decode.
2. Where the dense PyAV path's time goes, per clip size (60 s, 30 fps, same grain), each part timed in the same
   round (median wall and CPU seconds, CPU = all threads): interpreter start and imports, ``probe_video``, opening
   the reader (its packet index, a demux pass, inside), decoding alone, plus the yuv->rgb24 conversion, plus the
   copy into the batch array, and the whole ``iter_frames`` in-process and as a fresh process. The limits:
   ``ffmpeg -i X -f null -`` decodes without converting pixels; ``ffmpeg -i X -pix_fmt rgb24 -f null -`` also
   converts every frame to rgb24, the same work an RGB array needs, so it is the like-for-like limit.
3. A long small video (default 30 min, 320x180 25 fps, with grain): peak RSS (VmHWM from /proc) of a process
   streaming it with the dense and the 1 fps spec, each in a fresh process, next to its RSS after imports.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.media.decode import FrameSpec, iter_frames  # noqa: E402
from pipeline.media.readers import open_pyav, probe_video  # noqa: E402

SPECS = {
    "all": FrameSpec("all"),
    "fps1": FrameSpec("fps", fps=1.0),
    "uniform16": FrameSpec("uniform", num_frames=16),
}

RSS_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pipeline.media.decode import FrameSpec, iter_frames

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
base = hwm()
spec = {{"all": FrameSpec("all"), "fps1": FrameSpec("fps", fps=1.0)}}[sys.argv[2]]
rows = sum(len(b.frames) for b in iter_frames(sys.argv[1], spec, batch=32))
print(rows, round(base, 1), round(hwm(), 1))
"""


def make_clip(path: Path, duration: float, size: str, fps: int) -> Path:
    """H.264 (x264 veryfast, default GOP), lavfi testsrc2 with film grain (not trivially compressible)."""
    if not path.exists():
        src = f"testsrc2=size={size}:rate={fps}:duration={duration}"
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src]
        cmd += [
            "-vf",
            "noise=alls=12:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
        ]
        subprocess.run([*cmd, str(path)], check=True)
    return path


FFMPEG_NULL = ["-f", "null", "-"]
FFMPEG_RGB = ["-pix_fmt", "rgb24", "-f", "null", "-"]
DENSE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from pipeline.media.decode import FrameSpec, iter_frames
sum(len(b.frames) for b in iter_frames(sys.argv[1], FrameSpec("all"), batch=32))
"""


IMPORT_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import pipeline.media.decode
"""


def ffmpeg(path: Path, output: list[str]) -> list[str]:
    """The ffmpeg command decoding ``path`` into ``output`` (FFMPEG_NULL or FFMPEG_RGB)."""
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), *output]


def run_process(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all threads) of a command run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def run_here(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds (all threads of this process) of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def time_stage(path: Path, stage: str) -> tuple[float, float]:
    """Wall and CPU seconds of one pass over every frame through the dense path's steps up to ``stage`` ("index":
    the reader's packet index only; "decode", "rgb" or "copy"), with the reader's own decoder settings and
    conversion but without its seeks and bookkeeping. Opening the reader is not timed."""
    info = probe_video(path)
    reader = open_pyav(path, info, [(info.width, info.height)])
    batch = np.empty((32, info.height, info.width, 3), dtype=np.uint8)

    def frames() -> None:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for n, frame in enumerate(container.decode(stream)):
                if stage == "decode":
                    continue
                rgb = reader.to_rgb(frame, 0)
                if stage == "copy":
                    batch[n % 32] = rgb

    try:
        return run_here(reader._index if stage == "index" else frames)
    finally:
        reader.close()


def breakdown(path: Path, repeats: int) -> None:
    """Print where the dense PyAV path spends its time on ``path`` next to the two ffmpeg limits."""
    info = probe_video(path)
    python = [sys.executable, "-c"]
    parts: dict[str, Callable[[], tuple[float, float]]] = {
        "ffmpeg -f null (decode only)": lambda: run_process(ffmpeg(path, FFMPEG_NULL)),
        "ffmpeg -pix_fmt rgb24 -f null": lambda: run_process(ffmpeg(path, FFMPEG_RGB)),
        "python start": lambda: run_process([*python, "pass"]),
        "python start + imports": lambda: run_process([*python, IMPORT_SCRIPT.format(root=str(ROOT))]),
        "probe_video": lambda: run_here(lambda: probe_video(path)),
        "open reader (incl. index)": lambda: run_here(
            lambda: open_pyav(path, info, [(info.width, info.height)]).close()
        ),
        "  of which the index pass": lambda: time_stage(path, "index"),
        "decode (no conversion)": lambda: time_stage(path, "decode"),
        "decode + rgb24": lambda: time_stage(path, "rgb"),
        "decode + rgb24 + batch copy": lambda: time_stage(path, "copy"),
        "iter_frames (in-process)": lambda: run_here(lambda: time_ours(path, FrameSpec("all"), "pyav")),
        "iter_frames (fresh process)": lambda: run_process(
            [*python, DENSE_SCRIPT.format(root=str(ROOT)), str(path)]
        ),
    }
    wall: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for name, part in parts.items():
            w, c = part()
            wall[name].append(w)
            cpu[name].append(c)
    print(
        f"breakdown {info.width}x{info.height} ({os.cpu_count()} cores; decoder thread_type AUTO, thread_count 0 "
        "= auto, as ffmpeg's; rgb24 conversion by one reused swscale context, threads auto as ffmpeg's scale filter)"
    )
    for name in parts:
        print(
            f"  {name:<32} wall {statistics.median(wall[name]):6.2f} s   cpu {statistics.median(cpu[name]):6.2f} s"
        )
    for label, times in (("wall", wall), ("cpu", cpu)):
        med = {name: statistics.median(v) for name, v in times.items()}
        convert = med["decode + rgb24"] - med["decode (no conversion)"]
        copy = med["decode + rgb24 + batch copy"] - med["decode + rgb24"]
        setup = med["probe_video"] + med["open reader (incl. index)"]
        rest = med["iter_frames (in-process)"] - med["decode + rgb24 + batch copy"] - setup
        print(
            f"  derived ({label}): conversion {convert:+.2f} s, batch copy {copy:+.2f} s, probe + open {setup:.2f} s, "
            f"the rest of iter_frames (per-frame python, fresh batch arrays) {rest:+.2f} s, process start + "
            f"imports {med['python start + imports']:.2f} s"
        )

    def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))

    for ours in ("iter_frames (in-process)", "iter_frames (fresh process)"):
        for den in ("ffmpeg -f null (decode only)", "ffmpeg -pix_fmt rgb24 -f null"):
            print(f"  {ours} vs {den}: wall {ratio(wall, ours, den):.2f}x, cpu {ratio(cpu, ours, den):.2f}x")


def time_ours(path: Path, spec: FrameSpec, backend: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = sum(len(b.frames) for b in iter_frames(path, spec, batch=32, backend=backend))
    return time.perf_counter() - t0, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "t2v-bench-decode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-minutes", type=float, default=30.0, help="0 skips the memory part")
    parser.add_argument("--breakdown-sizes", default="640x360,1280x720", help="clip sizes; empty skips it")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    clip = make_clip(args.workdir / "clip60_640x360.mp4", 60, "640x360", 30)
    print(f"clip: {clip} ({clip.stat().st_size / 1e6:.1f} MB)")
    # ffmpeg and every (backend, spec) run once per round, so each ratio compares runs made close in time
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    rows: dict[str, int] = {}
    for _ in range(args.repeats):
        times["ffmpeg", "all"].append(run_process(ffmpeg(clip, FFMPEG_NULL))[0])
        for backend in ("pyav", "decord"):
            for name, spec in SPECS.items():
                secs, rows[name] = time_ours(clip, spec, backend)
                times[backend, name].append(secs)

    def ratio(num: tuple[str, str], den: tuple[str, str]) -> float:
        return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))

    print(f"ffmpeg -f null (decode only): median {statistics.median(times['ffmpeg', 'all']):.2f} s")
    for backend in ("pyav", "decord"):
        for name in SPECS:
            secs = statistics.median(times[backend, name])
            if name == "all":
                extra = f"ratio vs ffmpeg {ratio((backend, name), ('ffmpeg', 'all')):.2f}x"
            else:
                extra = f"vs our full decode {ratio((backend, name), (backend, 'all')):.2f}x"
            print(f"{backend:>6} {name:<10} rows={rows[name]:<5} median {secs:6.2f} s  {extra}")

    for size in filter(None, args.breakdown_sizes.split(",")):
        breakdown(make_clip(args.workdir / f"clip60_{size}.mp4", 60, size, 30), args.repeats)

    if args.long_minutes <= 0:
        return
    long = make_clip(
        args.workdir / f"long{args.long_minutes:g}min_320x180.mp4", args.long_minutes * 60, "320x180", 25
    )
    print(f"long video: {long} ({long.stat().st_size / 1e6:.1f} MB)")
    for name in ("all", "fps1"):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT.format(root=str(ROOT)), str(long), name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        secs = time.perf_counter() - t0
        n_rows, base, peak = int(out[0]), float(out[1]), float(out[2])
        rss = f"RSS after imports {base:.0f} MiB, peak {peak:.0f} MiB"
        print(f"long {name:<5} rows={n_rows:<6} {secs:6.1f} s  {rss}")


if __name__ == "__main__":
    main()
