"""Index kinds: chosen by size, the retraining trigger, exact re-rank of IVF-PQ candidates from disk, and the recall
recorded at encode time."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

import pipeline  # noqa: F401
from data_manifest.schema import VideoRecord
from pipeline.heads.t2vlad import T2VLADVideoEmbedding
from pipeline.stores.index import (
    FLAT_MAX_BYTES,
    RERANK_MIN_VIDEOS,
    IndexSpec,
    build_index,
    choose_spec,
    needs_retraining,
    rerank,
    search_index,
)
from pipeline.stores.search import Searcher
from pipeline.stores.store import EmbeddingStore, append_embeddings, load_trained_run, rebuild_index
from tests.pipeline.stores.test_store import _random_queries
from tests.store_fixtures import make_tree, save_run


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_kind_chosen_by_size():
    assert choose_spec(RERANK_MIN_VIDEOS - 1, 100_000).kind == "flat"  # few videos: flat however large
    flat_limit = FLAT_MAX_BYTES // (4 * 5120)
    assert choose_spec(flat_limit, 5120).kind == "flat"
    big = choose_spec(flat_limit + 1, 5120)
    assert big.kind == "ivfpq-rerank" and big.nlist % 64 == 0
    assert choose_spec(1_000_000, 5120).nlist == 3968 and choose_spec(100_000, 5120).nlist == 1280


def test_retraining_trigger():
    info = {"kind": "ivfpq-rerank", "trained_on": 1000}
    assert not needs_retraining(info, 1500) and needs_retraining(info, 1501)
    assert not needs_retraining({"kind": "flat", "trained_on": 0}, 10**6)


def test_ivfpq_candidates_reranked_exactly(tmp_path):
    x = _clustered(1000, 32, seed=0)
    q = _clustered(20, 32, seed=1)
    spec = IndexSpec("ivfpq-rerank", nlist=8, nprobe=8, m=16, rotate=32, candidates=100)
    index, used = build_index(x, np.arange(len(x)), spec)
    assert used.kind == "ivfpq-rerank" and used.rotate == 32
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("vectors", data=x, chunks=(1, 32))
        _, candidates = search_index(index, q, spec.candidates)
        scores, ids = rerank(q, candidates, f["vectors"], 10)
    exact = q @ x.T
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    for b in range(len(q)):
        assert set(truth[b]) <= set(candidates[b])  # the candidates cover the truth here...
    np.testing.assert_array_equal(ids, truth)  # ...so the re-rank gives the exact top 10
    np.testing.assert_allclose(scores, np.take_along_axis(exact, truth, 1), rtol=1e-6, atol=1e-6)
    _, pq_only = search_index(index, q, 10)
    assert not np.array_equal(pq_only, truth)  # PQ alone is approximate


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A T2VLAD store of 600 synthetic videos with every expert (enough to train PQ codebooks)."""
    tmp = tmp_path_factory.mktemp("index")
    manifest, features, _ = make_tree(tmp)
    run_dir = save_run(tmp / "run", "t2vlad", manifest, features)
    run = load_trained_run(run_dir)
    n, experts = 600, len(run.head.expert_names)
    k, c = run.head.config.num_clusters, run.head.config.dim
    g = torch.Generator().manual_seed(0)
    topics = torch.randn(12, experts + k, c, generator=g)
    x = topics[torch.randint(0, 12, (n,), generator=g)] + 0.6 * torch.randn(n, experts + k, c, generator=g)
    x = torch.nn.functional.normalize(x, dim=-1)
    available = np.ones((n, experts), bool)
    emb = T2VLADVideoEmbedding(
        centers=x[:, experts:], experts=x[:, :experts], available=torch.ones(n, experts, dtype=torch.bool)
    )
    records = [
        VideoRecord(video_id=f"s{i:04d}", path=f"s{i:04d}.mp4", captions=[], split="test") for i in range(n)
    ]
    dirs = dict(run.saved.feature_dirs)
    append_embeddings(run, tmp / "store", [(records, emb, available)], manifest=manifest, feature_dirs=dirs)
    return tmp / "store", run_dir


def test_recall_recorded_and_reported(big_store):
    store_dir, run_dir = big_store
    run = load_trained_run(run_dir)
    text_emb = run.head.encode_text(_random_queries(4, seed=2)).detach()
    full = IndexSpec("ivfpq-rerank", nlist=8, nprobe=8, m=4, rotate=16, candidates=600)
    info = rebuild_index(store_dir, run.head, full)
    assert info["recall_at_10"] >= 0.99  # every row is a candidate: only float16 rounding can swap near-ties
    assert info["recall_queries"] == 100 and info["trained_on"] == 600
    assert 0 < info["fp16_max_score_error"] < 1e-3
    store = EmbeddingStore(store_dir)
    searcher = Searcher(store, run)
    assert searcher.answered_by == {
        "kind": "ivfpq-rerank",
        "exact": False,
        "recall_at_10": info["recall_at_10"],
    }
    with torch.no_grad():
        ref = run.head.similarity(text_emb, store.embeddings(slice(0, len(store)))).numpy()
    for b, (rows, scores) in enumerate(
        searcher.rank(text_emb, k=10)
    ):  # candidates cover the store: exact order
        np.testing.assert_array_equal(rows, np.argsort(-ref[b], kind="stable")[:10])
        np.testing.assert_allclose(scores, ref[b, rows], atol=1e-3)
    del searcher  # it holds the store's vectors open for reading
    narrow = IndexSpec("ivfpq-rerank", nlist=8, nprobe=1, m=4, rotate=16, candidates=10)
    info = rebuild_index(store_dir, run.head, narrow)
    assert info["recall_at_10"] < 1.0  # one list of eight, ten candidates: misses are measured
    assert json.loads(EmbeddingStore(store_dir).attrs["index"])["recall_at_10"] == info["recall_at_10"]
