"""Benchmark: text search over embedding stores (CPU), exact-scan throughput vs memory bandwidth, IVF/PQ recall.

1. Query latency (``Searcher.search``: encode the text with the run's encoder (all-MiniLM-L6-v2),
   rank = exact flat index over the complete videos + ``head.similarity`` on the videos with a missing expert,
   T2VLAD explanations of the top 10) for stores of 1k, 10k, 100k videos; p50 / p95 over ``--queries`` distinct
   captions after one warm-up query, and the share of the total spent in the text encoder. The store holds a
   random-init T2VLAD head (C = ``--dim``, K = 9, 4 experts: P = 13·C floats per video) and synthetic unit
   embeddings drawn around 64 cluster centres, 20 % of the videos lacking one expert; it is written through
   ``pipeline.stores.store.append_embeddings`` (encoding 100k videos from features is not what is measured here).
2. Exact search throughput: the flat index scanned for one query (and for a batch of 32) over the 100k store's
   vectors, in bytes of vectors scored per second (queries x array size / time), against ``np.copyto`` of the same array in the same run (bytes
   copied per second; a copy reads and writes each byte, so its memory traffic is twice that figure).
Recall, latency and RAM of the index kinds at 100k-1M videos: ``tests/benchmarks/search_scale.py``.
All torch and faiss work runs with ``--threads`` CPU threads (default 1).

Usage: ``python tests/benchmarks/bench_search.py [--sizes 1000,10000,100000] [--dim 256] [--queries 30]
[--json OUT]``. Not part of the test suite; writes its stores under a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault(
    "OPENBLAS_NUM_THREADS", "1"
)  # faiss' BLAS path (>= 20 queries) spin-waits on busy cores
os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import numpy as np
import torch

import pipeline  # noqa: F401
from data_manifest.schema import VideoRecord
from pipeline.heads import build_head
from pipeline.heads.t2vlad import T2VLADVideoEmbedding
from pipeline.stores.index import IndexSpec, search_index
from pipeline.stores.search import QueryEncoder, Searcher
from pipeline.stores.store import EmbeddingStore, append_embeddings, load_trained_run, rebuild_index
from pipeline.text_encoder import model_dir_digest, resolve_text_model_dir
from pipeline.training.config import TrainConfig

EXPERTS = {"rgb": 1280, "audio": 128, "ocr": 384, "speech": 384}
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star")
WORDS = ("harbour", "tiger", "river", "apple", "planet", "guitar")


def captions(n: int) -> list[str]:
    out = []
    for i in range(n):
        c, s, w = COLOURS[i % 6], SHAPES[(i // 6) % 4], WORDS[(i // 24) % 6]
        out.append(f"a {c} {s} moves while a voice says {w}")
    return out


def make_run(tmp: Path, dim: int) -> Path:
    torch.manual_seed(0)
    options = {"dim": dim, "num_clusters": 9, "ff_dim": 2 * dim}
    head = build_head("t2vlad", options, EXPERTS, 384)
    config = TrainConfig(head="t2vlad", experts=list(EXPERTS), device="cpu", head_options=options)
    saved = {
        "config": config.to_dict(),
        "manifest": str(tmp / "manifest.jsonl"),
        "features_root": str(tmp),
        "feature_dirs": {e: str(tmp / e / ("0" * 12)) for e in EXPERTS},
        "expert_dims": EXPERTS,
        "text_dim": 384,
        "text_model_digest": model_dir_digest(resolve_text_model_dir(None)),
    }
    run = tmp / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(saved))
    torch.save({"epoch": 0, "head": head.state_dict(), "text": None}, run / "best.pt")
    return run


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_store(run_dir: Path, out: Path, n: int, dim: int, seed: int = 0, block: int = 10000) -> None:
    """n T2VLAD video embeddings around 64 cluster centres; 20 % lack one expert."""
    run = load_trained_run(run_dir)
    append_embeddings(
        run,
        out,
        synthetic_blocks(n, dim, seed, block),
        manifest=run_dir.parent / "manifest.jsonl",
        feature_dirs=dict(run.saved.feature_dirs),
    )
    rebuild_index(out, run.head, IndexSpec("flat"))


def synthetic_blocks(
    n: int, dim: int, seed: int, block: int
) -> Iterator[tuple[list[VideoRecord], T2VLADVideoEmbedding, np.ndarray]]:
    """The blocks of ``synthetic_store``, generated one at a time."""
    rng = np.random.default_rng(seed)
    k, e = 9, len(EXPERTS)
    protos = rng.normal(size=(64, e + k, dim)).astype(np.float32)
    for a in range(0, n, block):
        b = min(n, a + block)
        cluster = rng.integers(0, 64, b - a)
        x = unit(protos[cluster] + 0.7 * rng.normal(size=(b - a, e + k, dim)).astype(np.float32))
        available = np.ones((b - a, e), bool)
        missing = rng.random(b - a) < 0.2
        available[missing, rng.integers(0, e, int(missing.sum()))] = False
        experts = x[:, :e] * available[..., None]
        emb = T2VLADVideoEmbedding(
            centers=torch.from_numpy(np.ascontiguousarray(x[:, e:])),
            experts=torch.from_numpy(np.ascontiguousarray(experts)),
            available=torch.from_numpy(available),
        )
        records = [
            VideoRecord(video_id=f"v{i:07d}", path=f"videos/v{i:07d}.mp4", captions=[], split="test")
            for i in range(a, b)
        ]
        yield records, emb, available


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def latency(store_dir: Path, run_dir: Path, queries: int, threads: int) -> dict:
    run = load_trained_run(run_dir)
    store = EmbeddingStore(store_dir)
    t = time.perf_counter()
    searcher = Searcher(store, run, QueryEncoder(run, threads=threads))
    open_s = time.perf_counter() - t
    searcher.search("warm up query", k=10)
    totals, encodes, searches = [], [], []
    for q in captions(queries):
        t = searcher.search(q, k=10).timings
        totals.append(t["total_s"])
        encodes.append(t["encode_s"])
        searches.append(t["search_s"])
    return {
        "videos": len(store),
        "incomplete": int((~store.complete).sum()),
        "floats_per_video": searcher.index.d,
        "p50_ms": percentile(totals, 50),
        "p95_ms": percentile(totals, 95),
        "search_p50_ms": percentile(searches, 50),
        "encode_p50_ms": percentile(encodes, 50),
        "encoder_share": float(sum(encodes) / sum(totals)),
        "searcher_open_s": open_s,
    }


def scan_throughput(store_dir: Path, run_dir: Path, repeats: int = 5) -> dict:
    """Flat scan of the store's vectors (one query / 32 queries) vs np.copyto of the same array."""
    run = load_trained_run(run_dir)
    store = EmbeddingStore(store_dir)
    index = store.index()
    n, d = index.ntotal, index.d
    vectors = index.index.reconstruct_n(0, n)  # the flat codes as float32 (n, d)
    nbytes = vectors.nbytes
    rng = np.random.default_rng(1)
    out = {"vectors": n, "bytes": nbytes}
    for batch in (1, 32):
        q = rng.normal(size=(batch, d)).astype(np.float32)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            search_index(index, q, 10)
            times.append(time.perf_counter() - t)
        out[f"scan_{batch}q_gb_s"] = batch * nbytes / min(times) / 1e9  # vector bytes scored per second
    dst = np.empty_like(vectors)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, vectors)
        times.append(time.perf_counter() - t)
    out["numpy_copy_gb_s"] = nbytes / min(times) / 1e9
    del run
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss CPU threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    results: dict = {
        "load_average_at_start": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "latency": [],
        "scan": None,
    }
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        tmp = Path(tmp)
        run_dir = make_run(tmp, args.dim)
        sizes = [int(s) for s in args.sizes.split(",") if s]
        for n in sizes:
            store = tmp / f"store-{n}"
            t = time.perf_counter()
            synthetic_store(run_dir, store, n, args.dim)
            build_s = time.perf_counter() - t
            row = latency(store, run_dir, args.queries, args.threads)
            row["store_write_s"] = build_s
            results["latency"].append(row)
            print(json.dumps(row), flush=True)
        if sizes:
            results["scan"] = scan_throughput(tmp / f"store-{max(sizes)}", run_dir)
            print(json.dumps(results["scan"]), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
