"""Embedding stores: scores equal the head's similarity (with and without missing experts), incremental append,
IVF/PQ indexes, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import pipeline  # noqa: F401
from data_manifest.schema import write_manifest
from pipeline.errors import RunError, StoreError
from pipeline.features.reader import FeatureReader
from pipeline.heads import TextBatch
from pipeline.stores.index import IndexSpec, build_index, bytes_per_vector, search_index
from pipeline.stores.search import Searcher
from pipeline.stores.store import EmbeddingStore, encode_store, load_trained_run
from pipeline.training.dataset import RetrievalDataset, make_loader, row_caps
from tests.store_fixtures import TEXT_DIM, make_tree, save_run


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    manifest, features, records = make_tree(tmp)
    return tmp, manifest, features, records


def _random_queries(n: int, seed: int) -> TextBatch:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(n, 9, TEXT_DIM, generator=g)
    mask = torch.ones(n, 9, dtype=torch.bool)
    mask[1::2, 6:] = False
    return TextBatch(tokens=tokens, mask=mask)


@torch.no_grad()
def _reference(run, records, features_dirs, text_emb):
    """head.similarity on a fresh encoding of every video (column order = records)."""
    readers = {e: FeatureReader(features_dirs[e]) for e in run.head.expert_names}
    dataset = RetrievalDataset(records, readers, max_rows=row_caps(run.config, readers))
    embs = [run.head.encode_video(b.video) for b in make_loader(dataset, 4, False)]
    video = type(embs[0]).cat(embs)
    return run.head.similarity(text_emb, video).numpy(), dataset.video_ids


@pytest.mark.parametrize("head", ["t2vlad", "cret", "mgfi"])
def test_store_scores_equal_head_similarity(tree, head):
    tmp, manifest, features, records = tree
    run_dir = save_run(tmp / f"run-{head}", head, manifest, features, seed=1)
    store_dir = tmp / f"store-{head}"
    summary = encode_store(run_dir, store_dir, progress=False)
    assert summary.added == len(records) and summary.skipped == []
    run = load_trained_run(run_dir)
    store = EmbeddingStore(store_dir)
    if head == "t2vlad":  # every 3rd video lacks speech: both kinds must be present
        assert 0 < store.complete.sum() < len(store)
    text_emb = run.head.encode_text(_random_queries(5, seed=2)).detach()
    ref, ids = _reference(run, records, json.loads(store.attrs["feature_dirs"]), text_emb)
    col = {v: i for i, v in enumerate(ids)}
    variants = [Searcher(store, run)]
    if head == "mgfi":  # candidate pool from the proxy index (pool covers the store, so still exact)
        variants.append(Searcher(store, run, exhaustive_limit=0, pool=len(store)))
    for searcher in variants:
        for k in (3, len(store)):
            for b, (rows, scores) in enumerate(searcher.rank(text_emb, k=k)):
                expected = ref[b, [col[store.video_ids[r]] for r in rows]]
                np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
                best = np.sort(ref[b])[::-1][:k]
                np.testing.assert_allclose(scores, best, rtol=1e-5, atol=1e-5)


def test_incremental_append_and_reencode(tree):
    tmp, manifest, features, records = tree
    run_dir = save_run(tmp / "run-inc", "t2vlad", manifest, features)
    store_dir = tmp / "store-inc"
    first = encode_store(run_dir, store_dir, split="test", progress=False)
    assert first.added == 9 and first.num_videos == 9
    with h5py.File(EmbeddingStore(store_dir).h5_path) as f:
        before = f["emb/centers"][:9].copy()
    second = encode_store(run_dir, store_dir, progress=False)
    assert (second.added, second.reencoded, second.num_videos) == (6, 0, 15)
    store = EmbeddingStore(store_dir)
    assert store.video_ids[:9] == [r.video_id for r in records if r.split == "test"]
    with h5py.File(EmbeddingStore(store_dir).h5_path) as f:
        np.testing.assert_array_equal(f["emb/centers"][:9], before)
    assert store.index().ntotal == int(store.complete.sum())
    again = encode_store(run_dir, store_dir, progress=False)
    assert (again.added, again.reencoded) == (0, 0)
    edited = list(records)
    edited[0] = type(records[0])(**{**records[0].__dict__, "content_hash": "ab" * 32})
    other = tmp / "manifest-edited.jsonl"
    write_manifest(other, edited)
    third = encode_store(run_dir, store_dir, manifest=other, progress=False)
    assert (third.added, third.reencoded, third.num_videos) == (0, 1, 15)
    assert EmbeddingStore(store_dir).content_hash[store.row_of[records[0].video_id]] == "ab" * 32


def test_ivf_and_pq_indexes(tree):
    tmp, manifest, features, _ = tree
    run_dir = save_run(tmp / "run-ivf", "cret", manifest, features)
    for spec in (IndexSpec("ivf", nlist=64, nprobe=64), IndexSpec("ivfpq", nlist=4, nprobe=4, m=4)):
        summary = encode_store(run_dir, tmp / f"store-{spec.kind}", index=spec, progress=False)
        assert summary.index["kind"] == "ivf" and summary.index["nlist"] == 1  # 15 videos: one list, no PQ
        run, store = load_trained_run(run_dir), EmbeddingStore(tmp / f"store-{spec.kind}")
        rows, _ = Searcher(store, run).rank(run.head.encode_text(_random_queries(1, 3)).detach(), k=5)[0]
        assert len(set(rows.tolist())) == 5
    assert bytes_per_vector(IndexSpec("ivfpq", m=16), 256) == 24
    assert bytes_per_vector(IndexSpec("flat"), 256) == 1032


def test_index_recall_on_clustered_vectors():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(16, 16)).astype(np.float32)
    x = centers[rng.integers(0, 16, 1000)] + 0.3 * rng.normal(size=(1000, 16)).astype(np.float32)
    q = x[:50] + 0.1 * rng.normal(size=(50, 16)).astype(np.float32)
    flat, _ = build_index(x, np.arange(1000), IndexSpec("flat"))
    ivf, used = build_index(x, np.arange(1000), IndexSpec("ivf", nlist=16, nprobe=4))
    pq, used_pq = build_index(x, np.arange(1000), IndexSpec("ivfpq", nlist=16, nprobe=4, m=4))
    _, exact = search_index(flat, q, 10)
    for index in (ivf, pq):
        _, approx = search_index(index, q, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx, strict=True)])
        assert recall > 0.5
    assert used.nlist == 16 and used_pq.kind == "ivfpq"


def test_store_errors(tree, tmp_path):
    tmp, manifest, features, _ = tree
    with pytest.raises(StoreError, match="no embedding store"):
        EmbeddingStore(tmp_path / "missing")
    run_a = save_run(tmp / "run-a", "t2vlad", manifest, features, seed=5)
    run_b = save_run(tmp / "run-b", "t2vlad", manifest, features, seed=6)
    encode_store(run_a, tmp_path / "s", split="test", progress=False)
    with pytest.raises(StoreError, match="another checkpoint_sha256"):
        encode_store(run_b, tmp_path / "s", progress=False)
    with pytest.raises(StoreError, match="built by head"):
        Searcher(EmbeddingStore(tmp_path / "s"), load_trained_run(run_b))
    run_m = save_run(tmp / "run-m", "mgfi", manifest, features)
    with pytest.raises(StoreError, match="built by head 't2vlad'"):
        Searcher(EmbeddingStore(tmp_path / "s"), load_trained_run(run_m))
    with pytest.raises(StoreError, match="no video of split 'nope'"):
        encode_store(run_a, tmp_path / "s2", split="nope", progress=False)
    with pytest.raises(RunError, match="config.json: missing"):
        load_trained_run(tmp_path)


def test_video_without_any_expert_is_scored_by_the_head(tree):
    tmp, manifest, features, _ = tree
    run_dir = save_run(tmp / "run-none", "t2vlad", manifest, features, seed=4)
    store_dir = tmp / "store-none"
    encode_store(run_dir, store_dir, progress=False)
    with h5py.File(EmbeddingStore(store_dir).h5_path, "a") as f:
        assert not f["complete"][0]  # video 0 lacks speech; now it lacks every expert
        f["emb/available"][0] = False
        f["emb/experts"][0] = 0.0
    run, store = load_trained_run(run_dir), EmbeddingStore(store_dir)
    searcher = Searcher(store, run)
    assert searcher.fallback_rows.tolist() == [0] and searcher.groups
    text_emb = run.head.encode_text(_random_queries(3, seed=7)).detach()
    with torch.no_grad():
        ref = run.head.similarity(text_emb, store.embeddings(slice(0, len(store)))).numpy()
    for b, (rows, scores) in enumerate(searcher.rank(text_emb, k=len(store))):
        np.testing.assert_allclose(scores, ref[b, rows], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores, np.sort(ref[b])[::-1], rtol=1e-5, atol=1e-6)


def _crafted_store(folder, **attrs):
    """An empty store folder whose HDF5 attributes are ``attrs`` (as a crafted or an old file would hold them)."""
    folder.mkdir()
    with h5py.File(folder / "embeddings.h5", "w") as f:
        for name in ("video_ids", "captions", "paths", "splits", "content_hash"):
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({"format_version": 1, "num_videos": 0, "experts": "[]", "index": "{}", **attrs})
    return folder


def test_a_store_never_chooses_the_code_that_runs(tmp_path):
    """Attributes naming modules are never imported: the embedding class comes from the registered head."""
    hostile = _crafted_store(tmp_path / "hostile", head="antigravity", embedding_class="os:system")
    old = _crafted_store(tmp_path / "old", head="cret", embedding_class="antigravity:fly")
    code = (
        "import sys\n"
        "from pipeline.errors import StoreError\n"
        "from pipeline.stores.store import EmbeddingStore\n"
        f"print(EmbeddingStore({str(old)!r}).embedding_class.__name__)\n"
        "try:\n"
        f"    EmbeddingStore({str(hostile)!r})\n"
        "except StoreError as err:\n"
        "    print(err)\n"
        "print('antigravity' in sys.modules, 'webbrowser' in sys.modules)\n"
    )
    env = {**os.environ, "BROWSER": "true"}  # were antigravity imported anyway, it would open no browser
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "CRETVideoEmbedding"  # an old store's embedding_class is ignored
    assert lines[1] == (
        f"{hostile / 'embeddings.h5'}: unknown head 'antigravity'; known heads: ['cret', 'mgfi', 't2vlad']"
    )
    assert lines[2] == "False False" and len(lines) == 3


def test_removed_videos_leave_store_index_and_search(tree):
    tmp, manifest, features, records = tree
    run_dir = save_run(tmp / "run-rm", "t2vlad", manifest, features, seed=8)
    store_dir = tmp / "store-rm"
    encode_store(run_dir, store_dir, progress=False)
    gone = {records[1].video_id, records[4].video_id, records[12].video_id}
    other = tmp / "manifest-removed.jsonl"
    write_manifest(other, [r for r in records if r.video_id not in gone])
    summary = encode_store(run_dir, store_dir, manifest=other, progress=False)
    assert (summary.removed, summary.added, summary.num_videos) == (3, 0, len(records) - 3)
    run, store = load_trained_run(run_dir), EmbeddingStore(store_dir)
    assert gone.isdisjoint(store.video_ids) and store.video_ids == [
        r.video_id for r in records if r.video_id not in gone
    ]
    assert store.index().ntotal == int(store.complete.sum())
    text_emb = run.head.encode_text(_random_queries(3, seed=9)).detach()
    kept = [r for r in records if r.video_id not in gone]
    ref, ids = _reference(run, kept, json.loads(store.attrs["feature_dirs"]), text_emb)
    col = {v: i for i, v in enumerate(ids)}
    for b, (rows, scores) in enumerate(Searcher(store, run).rank(text_emb, k=len(records))):
        assert len(rows) == len(kept) and gone.isdisjoint(store.video_ids[r] for r in rows)
        np.testing.assert_allclose(
            scores, ref[b, [col[store.video_ids[r]] for r in rows]], rtol=1e-5, atol=1e-5
        )


def test_ivf_retrained_after_growth_refilled_after_edits(tree):
    tmp, manifest, features, records = tree
    run_dir = save_run(tmp / "run-grow", "cret", manifest, features)
    store_dir = tmp / "store-grow"
    spec = IndexSpec("ivf", nlist=1, nprobe=1)
    first = encode_store(run_dir, store_dir, split="test", index=spec, progress=False)
    assert first.index["trained_on"] == 9 and first.index["recall_at_10"] == 1.0
    grown = encode_store(run_dir, store_dir, progress=False)  # 6 appended > 50 % of 9: trained again
    assert grown.index["trained_on"] == 15 and grown.index["indexed"] == 15 and grown.index["kind"] == "ivf"
    edited = list(records)
    edited[0] = type(records[0])(**{**records[0].__dict__, "content_hash": "cd" * 32})
    other = tmp / "manifest-grow.jsonl"
    write_manifest(other, edited)
    refilled = encode_store(run_dir, store_dir, manifest=other, progress=False)
    assert refilled.reencoded == 1 and refilled.index["trained_on"] == 15 and refilled.index["indexed"] == 15
