"""Long-video benchmark (not part of pytest): peak memory and wall time of ``t2v extract`` on one 2-hour video.

Run: ``.venv/bin/python tests/benchmarks/bench_long_video.py [--minutes 120] [--experts rgb,audio_stats]
[--workdir DIR]``

The video is 1280x720 H.264 (x264 ultrafast, lavfi testsrc2) at 10 fps with a 44.1 kHz AAC sine tone, generated
with ffmpeg into ``--workdir`` and reused when present (2.8 GB for 2 hours). The low frame rate keeps generation
to a few minutes on 2 cores (3.6 min for 2 hours); the experts sample at 1 fps and read the whole audio track, so
their rows do not depend on the frame rate (x264 ultrafast has no B-frames: every frame is decoded either way).
``--minutes 10`` is a quick run.

Steps, each a subprocess of the ``t2v`` CLI next to this Python (with this checkout first on ``PYTHONPATH``): a
one-line manifest, ``t2v manifest probe``, ``t2v extract`` into a fresh features folder with the shipped weights.
Prints the wall time of each step, the peak RSS of the extract process tree (``ru_maxrss`` from ``wait4`` of the
command: the largest single process, and the largest sum over the tree sampled from /proc every 0.2 s) next to
the RSS of a process that has only imported the CLI and the experts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
T2V = Path(sys.executable).with_name("t2v")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

IMPORTS_SCRIPT = """
import workflows.cli, extractors.registry
for name in {experts!r}:
    extractors.registry.get_expert(name, {{}})
for line in open("/proc/self/status"):
    if line.startswith("VmRSS"):
        print(int(line.split()[1]) / 1024)
"""


def make_video(path: Path, minutes: float) -> Path:
    """1280x720 10 fps H.264 (ultrafast) with an AAC sine tone; reused when present."""
    if not path.exists():
        seconds = minutes * 60
        partial = path.with_suffix(".partial.mp4")
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=10:duration={seconds}"]
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
        cmd += [
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
        ]
        subprocess.run([*cmd, str(partial)], check=True)
        partial.rename(path)
    return path


def tree_rss_mib(pid: int) -> float:
    """Sum of VmRSS over ``pid`` and its descendants (0 for processes that have already gone)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            status = (Path("/proc") / str(current) / "status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0)
    return total / 1024


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; (wall s, peak sampled tree RSS MiB, ru_maxrss MiB of the command and its descendants)."""
    t0 = time.perf_counter()
    pid = subprocess.Popen(cmd, env=ENV).pid
    peak = 0.0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        peak = max(peak, tree_rss_mib(pid))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit status {os.waitstatus_to_exitcode(status)}")
    return wall, peak, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=120.0, help="video length (default 2 hours)")
    parser.add_argument("--experts", default="rgb,audio_stats")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "t2v-bench-long")
    args = parser.parse_args()
    experts = args.experts.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    video = make_video(args.workdir / f"long{args.minutes:g}min_1280x720_10fps.mp4", args.minutes)
    print(f"video: {video} ({video.stat().st_size / 1e6:.0f} MB), ready in {time.perf_counter() - t0:.0f} s")

    run_dir = args.workdir / f"run-{args.minutes:g}min-{'-'.join(experts)}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    manifest = run_dir / "manifest.jsonl"
    record = {"video_id": "long", "path": str(video), "captions": ["a test pattern"], "split": "test"}
    manifest.write_text(json.dumps(record) + "\n")

    imports = subprocess.run(
        [sys.executable, "-c", IMPORTS_SCRIPT.format(experts=experts)],
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    )
    base = float(imports.stdout.split()[-1])
    probe_s, _, _ = run_measured([str(T2V), "manifest", "probe", str(manifest), "--no-progress"])
    extract = [str(T2V), "extract", "--manifest", str(manifest), "--experts", args.experts]
    extract += ["--out", str(run_dir / "features"), "--workers", "1"]
    wall, tree_peak, maxrss = run_measured(extract)
    print(f"experts {args.experts}: probe {probe_s:.1f} s, extract {wall:.1f} s wall")
    print(
        f"RSS after imports {base:.0f} MiB; extract peak: largest process {maxrss:.0f} MiB, "
        f"process tree (sampled) {tree_peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
