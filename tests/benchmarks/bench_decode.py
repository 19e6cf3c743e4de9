"""Decode benchmark (not part of pytest): our sampling paths vs ``ffmpeg -i X -f null -``, and peak memory.

Run: ``.venv/bin/python tests/benchmarks/bench_decode.py [--workdir DIR] [--repeats 3] [--long-minutes 30]``

1. A 60 s 640x360 30 fps H.264 clip with film grain (~5 Mbit/s; x264 default GOP of 250 frames): median
   wall time of ``ffmpeg -i X -f null -`` (decode only, no pixel conversion) vs our dense path
   (``FrameSpec("all")``, RGB arrays) for each backend, as a ratio; sparse specs (1 fps, 16 uniform frames)
   vs our full decode.
2. A long small video (default 30 min, 320x180 25 fps, with grain): peak RSS (VmHWM from /proc) of a process
   streaming it with the dense and the 1 fps spec, each in a fresh process, next to its RSS after imports.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.media.decode import FrameSpec, iter_frames  # noqa: E402

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


def time_ffmpeg(path: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-f", "null", "-"], check=True
    )
    return time.perf_counter() - t0


def time_ours(path: Path, spec: FrameSpec, backend: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = sum(len(b.frames) for b in iter_frames(path, spec, batch=32, backend=backend))
    return time.perf_counter() - t0, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "t2v-bench-decode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-minutes", type=float, default=30.0, help="0 skips the memory part")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    clip = make_clip(args.workdir / "clip60_640x360.mp4", 60, "640x360", 30)
    print(f"clip: {clip} ({clip.stat().st_size / 1e6:.1f} MB)")
    # ffmpeg and every (backend, spec) run once per round, so each ratio compares runs made close in time
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    rows: dict[str, int] = {}
    for _ in range(args.repeats):
        times["ffmpeg", "all"].append(time_ffmpeg(clip))
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
