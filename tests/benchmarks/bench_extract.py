"""Benchmark: end-to-end ``extract_shard`` vs the model's own forward time on the same frames (rgb expert).

Goal (issue 3 §6, issue 4): end-to-end <= 1.2x the forward time (decoding hidden behind inference) and <= 20% of
the wall time spent waiting on decode when a core is spare. Run:

    .venv/bin/python tests/benchmarks/bench_extract.py [--videos 8] [--duration 20] [--size 640x360] [--device cpu]

With ``--with-clip`` (default on CUDA) it then extracts the same videos with rgb and a randomly initialised CLIP
ViT-B/32 together (``extract_shards``: one decoding for both; transformers' default ``CLIPVisionConfig``, no weights)
and reports frames per second and, on CUDA, each model's GPU-busy share of the wall time (shard attribute
``gpu_busy``; goal >= 80%).

Prints one table and, with ``--json FILE``, writes the numbers. Videos are generated with ffmpeg (h264, 30 fps,
testsrc2 + noise so frames are not trivially compressible) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data_manifest.schema import VideoRecord  # noqa: E402
from extractors.engine import ShardJob, default_workers, extract_shard, extract_shards, model_threads  # noqa: E402
from extractors.registry import get_expert  # noqa: E402
from pipeline.features.shards import shard_attrs  # noqa: E402
from tests.media import make_video  # noqa: E402


def _videos(folder: Path, count: int, duration: float, size: tuple[int, int]) -> list[VideoRecord]:
    records = []
    for i in range(count):
        make_video(
            folder / f"b{i}.mp4",
            duration=duration,
            size=size,
            fps=30,
            audio=False,
            extra_video_filters=f"noise=alls={10 + i}:allf=t,hue=h={i * 40}",
        )
        records.append(VideoRecord(f"b{i}", f"b{i}.mp4", [], "test"))
    return records


def run(args: argparse.Namespace) -> dict:
    width, height = (int(v) for v in args.size.split("x"))
    expert = get_expert("rgb", {"batch_size": args.batch_size})
    expert.load(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        records = _videos(folder, args.videos, args.duration, (width, height))
        gen_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        prepared = [expert.prepare(r.resolve(folder), r) for r in records]
        decode_s = time.perf_counter() - t0
        frames = sum(p.rows for p in prepared)

        threads_before = torch.get_num_threads()
        if expert.device == "cpu":
            torch.set_num_threads(model_threads())
        expert.forward(prepared[:1])  # warm-up (allocator, kernels)
        t0 = time.perf_counter()
        for i in range(0, len(prepared), 4):
            expert.forward(prepared[i : i + 4])
        forward_s = time.perf_counter() - t0
        torch.set_num_threads(threads_before)

        summary = extract_shard(
            expert,
            records,
            folder,
            folder / "out" / "shard-00000.h5",
            fingerprint=expert.fingerprint(),
            weights_sha256=expert.weights_sha256(),
            device=args.device,
            progress=False,
            workers=args.workers,
        )
        together = run_with_clip(expert, records, folder, args) if args.with_clip else {}
    return {
        **together,
        "device": expert.device,
        "cpu_count": os.cpu_count(),
        "model_threads": model_threads() if expert.device == "cpu" else None,
        "decode_workers": args.workers or default_workers(expert.device),
        "videos": args.videos,
        "video": f"{args.duration:g} s {args.size} h264 30 fps",
        "frames": frames,
        "batch_size": args.batch_size,
        "generate_s": round(gen_s, 2),
        "decode_serial_s": round(decode_s, 2),
        "forward_s": round(forward_s, 2),
        "end_to_end_s": round(summary.seconds, 2),
        "ratio_end_to_end_vs_forward": round(summary.seconds / forward_s, 3),
        "decode_wait_s": round(summary.decode_wait_s, 2),
        "decode_wait_share": round(summary.decode_wait_s / summary.seconds, 3),
        "forward_in_engine_s": round(summary.forward_s, 2),
        "videos_per_s": round(args.videos / summary.seconds, 3),
        "frames_per_s": round(frames / summary.seconds, 2),
        "ok": summary.ok,
        "rows": summary.rows,
        "rows_match_frames": bool(np.equal(summary.rows, frames)),
    }


def run_with_clip(rgb: object, records: list[VideoRecord], folder: Path, args: argparse.Namespace) -> dict:
    """rgb and a random-init CLIP ViT-B/32 extracted together: frames per second, GPU-busy share per model."""
    clip = get_expert("clip", {"batch_size": args.batch_size})
    clip.load(args.device, random_init=True)
    jobs = [
        ShardJob(e, folder / "together" / f"{e.name}.h5", "f" * 12, "")  # type: ignore[arg-type]
        for e in (rgb, clip)
    ]
    summaries = extract_shards(
        jobs, records, folder, device=args.device, progress=False, workers=args.workers
    )
    out: dict = {"together_rgb_clip_wall_s": round(summaries[0].seconds, 2)}
    for job, summary in zip(jobs, summaries, strict=True):
        attrs = shard_attrs(job.out_path)
        name = job.expert.name
        out[f"together_{name}_frames_per_s"] = round(summary.rows / summary.seconds, 2)
        out[f"together_{name}_model_s"] = attrs["model_s"]
        out[f"together_{name}_gpu_busy"] = attrs.get("gpu_busy", "n/a (not CUDA)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per video")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, help="decode threads (default: the engine's default)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--with-clip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also extract rgb + random-init CLIP ViT-B/32 together (default: on CUDA only)",
    )
    args = parser.parse_args()
    if args.with_clip is None:
        args.with_clip = args.device.startswith("cuda")
    result = run(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key.ljust(width)}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
