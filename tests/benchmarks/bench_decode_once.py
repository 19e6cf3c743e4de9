"""Benchmark (issue 11): one shared decoding per video for several experts vs one decoding per expert, in one run.

On clips of the embedded sample set (``generate_sample_dataset``: 4 s 320x240 clips with titles and speech), with
the four experts whose weights ship offline (rgb, ocr, audio_stats, speech):

1. decoding alone: ``decode_pass`` with the four experts' media requests together vs one ``decode_pass`` per
   expert (what every expert's shard task did before), one video after another on one thread: wall time, process
   CPU time and ``av.open`` calls per video;
2. extraction end to end: ``extract_shards`` with the four experts vs ``extract_shard`` once per expert, same
   videos, models loaded beforehand: wall and process CPU time.

Run: ``.venv/bin/python tests/benchmarks/bench_decode_once.py [--videos 32] [--workdir DIR] [--experts ...]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from data_manifest.sample.generate import generate_sample_dataset  # noqa: E402
from data_manifest.validate import load_manifest  # noqa: E402
from extractors.engine import ShardJob, extract_shard, extract_shards  # noqa: E402
from extractors.registry import get_expert  # noqa: E402
from extractors.weights import default_weights_dir  # noqa: E402
from pipeline.media.decode import decode_pass  # noqa: E402

OPENED: list[str] = []
_real_open = av.open


def _counting_open(*args, **kwargs):  # type: ignore[no-untyped-def]
    OPENED.append(str(args[0]))
    return _real_open(*args, **kwargs)


def _timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--experts", default="rgb,ocr,audio_stats,speech")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-decode-once-"))
    manifest = work / "sample" / "manifest.jsonl"
    if not manifest.exists() or len(load_manifest(manifest, check_paths=False)) != args.videos:
        generate_sample_dataset(work / "sample", n=args.videos, seed=0, workers=2, progress=False)
    records = load_manifest(manifest, check_paths=False)
    paths = [r.resolve(manifest.parent) for r in records]
    experts = [get_expert(name) for name in args.experts.split(",")]
    requests = [e.media_request() for e in experts]
    av.open = _counting_open

    def together() -> None:
        for path in paths:
            for _ in decode_pass(path, requests):
                pass

    def apart() -> None:
        for path in paths:
            for request in requests:
                for _ in decode_pass(path, [request]):
                    pass

    apart()  # warm the page cache and the codecs once
    OPENED.clear()
    shared = _timed(together)
    shared_opens = len(OPENED) / len(paths)
    OPENED.clear()
    separate = _timed(apart)
    separate_opens = len(OPENED) / len(paths)
    print(f"decoding {len(paths)} sample clips for {args.experts}")
    print(
        f"  one pass for all experts:  wall {shared[0]:6.2f} s  cpu {shared[1]:6.2f} s  opens/video {shared_opens:.0f}"
    )
    print(
        f"  one pass per expert:       wall {separate[0]:6.2f} s  cpu {separate[1]:6.2f} s  opens/video {separate_opens:.0f}"
    )
    print(
        f"  ratio shared/separate:     wall {shared[0] / separate[0]:.2f}x  cpu {shared[1] / separate[1]:.2f}x"
    )

    weights = default_weights_dir()
    for expert in experts:
        expert.load("cpu", weights)
    out = work / "out"

    def jobs(tag: str) -> list[ShardJob]:
        return [ShardJob(e, out / tag / f"{e.name}.h5", "f" * 12, "") for e in experts]

    def all_together() -> None:
        extract_shards(jobs("together"), records, manifest.parent, progress=False)

    def one_by_one() -> None:
        for job in jobs("apart"):
            extract_shard(
                job.expert,
                records,
                manifest.parent,
                job.out_path,
                fingerprint="f" * 12,
                weights_sha256="",
                progress=False,
            )

    OPENED.clear()
    e2e_shared = _timed(all_together)
    OPENED.clear()
    e2e_apart = _timed(one_by_one)
    print(f"extraction end to end ({len(records)} videos, {len(experts)} experts, CPU):")
    print(f"  extract_shards, all experts: wall {e2e_shared[0]:6.1f} s  cpu {e2e_shared[1]:6.1f} s")
    print(f"  extract_shard per expert:    wall {e2e_apart[0]:6.1f} s  cpu {e2e_apart[1]:6.1f} s")
    print(
        f"  ratio together/apart:        wall {e2e_shared[0] / e2e_apart[0]:.2f}x  cpu {e2e_shared[1] / e2e_apart[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
