"""Benchmark: recall@10, latency and RAM of the store's index kinds at store scale (100k, 1M videos), on vectors
shaped like the demo T2VLAD's (``configs/sample/t2vlad.toml``: C = 256, K = 16, 4 experts, P = 256·(4 + 16) = 5120).

**Generator** (no training needed; deterministic per ``--seed``, generated in chunks of ``--chunk`` videos): each
video has a latent ``z`` (r = 64 dims) = a mix of two of 1000 topic centres, ``(1 - λ)·c_a + λ·c_b`` with
λ ~ U(0, 0.5), plus within-topic variation N(0, 0.6²·I); ``x = z·A + ε`` where ``A`` (r × P) is Gaussian with
anisotropic per-dimension scales ``s`` (log-normal, σ = 0.7) and ``ε`` ~ N(0, (0.5·s)²) per dimension; then each of
the 20 blocks of 256 floats (4 expert vectors + 16 centre vectors) is L2-normalised, as T2VLAD's are. Topics overlap
(two-topic mixes, within-topic spread), so a query's neighbours are spread over several lists: not trivial.
**Queries** (``--queries``, held out, same generator, another seed) are shaped like T2VLAD query vectors: the expert
blocks weighted by a Dirichlet(1) draw (the softmax expert weights), the centre blocks by 1/K.

The videos are written to an HDF5 file as float16, in the layout of a store's ``vectors`` dataset (chunks of one
row, ``pipeline.stores.store``), and added to each index kind while they are generated (the index trains on the
first ``training_sample_size`` videos, which are an i.i.d. sample). Ground truth: exact float32 inner products of
every query against every video, kept during generation; ``fp16_max_score_error`` = the largest |q·v16 − q·v|
over all of them (the re-rank scores float16 vectors). Each index kind and setting prints one JSON line: ``kind``,
``n``, its parameters, ``recall_at_10``, ``p50_ms`` / ``p95_ms`` per query (1 thread, one query at a time, text
encoder excluded, re-rank reads included), ``bytes_per_vector`` (the index's RAM / n, shared tables included; the
float16 vectors stay on disk), ``ram_vs_flat`` and ``build_s``, and ``within_bounds`` (recall@10 >= 0.95,
p95 <= 50 ms, RAM <= 1/8 of flat). ``flat`` is built only while it fits ``--flat-max-gb``.

Usage: ``python tests/benchmarks/search_scale.py --n 100000 --json [--dir TMP] [--build-threads 2]``.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss
import h5py
import numpy as np

from pipeline.stores.index import (
    IndexSpec,
    add_to_index,
    choose_spec,
    index_bytes,
    recall_at,
    rerank,
    search_index,
    train_index,
    training_sample_size,
)

C, K, EXPERTS = 256, 16, 4
BLOCKS = EXPERTS + K
P = C * BLOCKS
LATENT, TOPICS = 64, 1000
HELD_OUT = 2**31  # the queries' stream: no chunk of videos gets this number


class Generator:
    """T2VLAD-shaped video and query vectors (see the module docstring)."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 0])
        self.seed = seed
        self.scales = np.exp(0.7 * rng.standard_normal(P)).astype(np.float32)
        self.mix = (rng.standard_normal((LATENT, P), dtype=np.float32) * self.scales) / np.sqrt(LATENT)
        self.topics = rng.standard_normal((TOPICS, LATENT), dtype=np.float32)

    def videos(self, n: int, stream: int) -> np.ndarray:
        """(n, P) float32 video vectors of chunk ``stream``."""
        rng = np.random.default_rng([self.seed, 1, stream])
        a, b = rng.integers(0, TOPICS, n), rng.integers(0, TOPICS, n)
        lam = rng.uniform(0, 0.5, (n, 1)).astype(np.float32)
        z = (1 - lam) * self.topics[a] + lam * self.topics[b]
        z += 0.6 * rng.standard_normal((n, LATENT), dtype=np.float32)
        x = z @ self.mix
        x += 0.5 * self.scales * rng.standard_normal((n, P), dtype=np.float32)
        x = x.reshape(n, BLOCKS, C)
        x /= np.linalg.norm(x, axis=-1, keepdims=True)
        return x.reshape(n, P)

    def queries(self, n: int) -> np.ndarray:
        """(n, P) float32 query vectors: held-out videos with T2VLAD's query weighting."""
        rng = np.random.default_rng([self.seed, 2])
        x = self.videos(n, stream=HELD_OUT).reshape(n, BLOCKS, C)
        weights = np.concatenate([rng.dirichlet(np.ones(EXPERTS), n), np.full((n, K), 1 / K)], 1)
        return (x * weights[..., None].astype(np.float32)).reshape(n, P)


class TopK:
    """The exact top k ids of each query, updated one chunk of scores at a time."""

    def __init__(self, queries: int, k: int):
        self.k = k
        self.scores = np.full((queries, 0), -np.inf, np.float32)
        self.rows = np.zeros((queries, 0), np.int64)

    def update(self, scores: np.ndarray, first_row: int) -> None:
        rows = np.broadcast_to(np.arange(first_row, first_row + scores.shape[1]), scores.shape)
        s, r = np.concatenate([self.scores, scores], 1), np.concatenate([self.rows, rows], 1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, : self.k]
        self.scores, self.rows = np.take_along_axis(s, keep, 1), np.take_along_axis(r, keep, 1)

    def ids(self) -> np.ndarray:
        return self.rows


def percentile_ms(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="folder for the float16 vectors (default: a temp folder)")
    parser.add_argument(
        "--build-threads",
        type=int,
        default=1,
        help="faiss threads while building (OpenMP spin-waits on busy cores)",
    )
    parser.add_argument("--flat-max-gb", type=float, default=4.0, help="build flat only while it fits this")
    parser.add_argument("--kinds", default="flat,ivfpq-rerank", help="of flat, ivfpq, ivfpq-rerank")
    parser.add_argument("--nprobe", default="16,32,64")
    parser.add_argument("--candidates", default="128,256,512")
    parser.add_argument("--json", action="store_true", help="one JSON object per line (else a table)")
    args = parser.parse_args()
    n = args.n
    gen = Generator(args.seed)
    queries = gen.queries(args.queries)
    auto = choose_spec(n, P)
    kinds = args.kinds.split(",")
    specs = {
        "flat": IndexSpec("flat"),
        "ivfpq": IndexSpec("ivfpq", nlist=auto.nlist, m=64),
        "ivfpq-rerank": auto,
    }
    if n * 4 * P > args.flat_max_gb * 1e9:
        kinds = [k for k in kinds if k != "flat"]
    specs = {k: specs[k] for k in kinds}
    train_n = training_sample_size(auto, n)
    with tempfile.TemporaryDirectory(prefix="search-scale-", dir=args.dir) as tmp:
        h5 = h5py.File(Path(tmp) / "vectors.h5", "w")
        ds = h5.create_dataset("vectors", (n, P), np.float16, chunks=(1, P))
        faiss.omp_set_num_threads(args.build_threads)
        gen_s, fp16_err = 0.0, 0.0
        truth = TopK(args.queries, 10)
        indexes, build_s = {}, dict.fromkeys(specs, 0.0)
        t = time.perf_counter()
        pending = [
            gen.videos(min(args.chunk, n - a), stream=i) for i, a in enumerate(range(0, train_n, args.chunk))
        ]
        gen_s += time.perf_counter() - t
        sample = np.concatenate(pending)
        for kind, spec in specs.items():
            t = time.perf_counter()
            indexes[kind] = train_index(sample, spec, n)
            build_s[kind] += time.perf_counter() - t
        del sample
        for i, a in enumerate(range(0, n, args.chunk)):
            t = time.perf_counter()
            x = pending[i] if i < len(pending) else gen.videos(min(args.chunk, n - a), stream=i)
            gen_s += time.perf_counter() - t
            x16 = x.astype(np.float16)
            ds[a : a + len(x)] = x16
            exact = queries @ x.T
            fp16_err = max(fp16_err, float(np.abs(queries @ x16.astype(np.float32).T - exact).max()))
            truth.update(exact, a)
            for kind, (index, _) in indexes.items():
                t = time.perf_counter()
                add_to_index(index, x, np.arange(a, a + len(x)))
                build_s[kind] += time.perf_counter() - t
        pending.clear()
        h5.flush()
        faiss.omp_set_num_threads(1)
        flat_bytes = 4 * P + 8
        for kind, (index, used) in indexes.items():
            ivf = None if kind == "flat" else faiss.extract_index_ivf(index)
            nprobes = [0] if ivf is None else [int(v) for v in args.nprobe.split(",")]
            cands = [int(v) for v in args.candidates.split(",")] if kind == "ivfpq-rerank" else [10]
            ram = index_bytes(index) / n
            for nprobe in nprobes:
                if ivf is not None:
                    ivf.nprobe = nprobe
                for cand in cands:
                    found, times = [], []
                    for q in queries:
                        t = time.perf_counter()
                        s, ids = search_index(index, q[None], cand)
                        if kind == "ivfpq-rerank":
                            s, ids = rerank(q[None], ids, ds, 10)
                        times.append(time.perf_counter() - t)
                        found.append(ids[0, :10])
                    row = {
                        "kind": kind,
                        "n": n,
                        "dim": P,
                        "nlist": used.nlist if ivf is not None else None,
                        "nprobe": nprobe or None,
                        "m": used.m if ivf is not None else None,
                        "rotate": used.rotate if kind == "ivfpq-rerank" else None,
                        "candidates": cand if kind == "ivfpq-rerank" else None,
                        "recall_at_10": recall_at(truth.ids(), np.stack(found)),
                        "p50_ms": percentile_ms(times, 50),
                        "p95_ms": percentile_ms(times, 95),
                        "bytes_per_vector": round(ram, 1),
                        "ram_vs_flat": round(ram / flat_bytes, 4),
                        "build_s": round(build_s[kind], 1),
                        "trained_on": train_n,
                        "fp16_max_score_error": fp16_err if kind == "ivfpq-rerank" else None,
                        "generate_s": round(gen_s, 1),
                        "queries": args.queries,
                    }
                    row["within_bounds"] = bool(
                        row["recall_at_10"] >= 0.95 and row["p95_ms"] <= 50 and ram <= flat_bytes / 8
                    )
                    print(json.dumps(row) if args.json else row, flush=True)
        h5.close()


if __name__ == "__main__":
    main()
