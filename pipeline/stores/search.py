"""Text search over an embedding store: query encoding, exact scoring, re-ranking and the head's explanations.

Scoring (``Searcher.rank``), with ``s`` = the head's own ``similarity``:

- Inner-product heads (``text_conditioned`` False: T2VLAD, CRET): the index holds ``video_vectors`` of the *complete* videos (every expert
  present), for which ``query_vectors(t) · video_vectors(v) == s(t, v)``. The videos with a missing expert (T2VLAD
  renormalises the expert weights over each video's experts) are all scored exactly, whatever their number: grouped
  by the set of experts they have, each group against the head's own ``query_vectors(t, available=that set)``
  (a flat scan of the group's video vectors, kept in memory), and videos without any expert with
  ``head.similarity`` on their stored embeddings. The k best of the union are returned. (Scoring the groups with
  ``head.similarity`` gives the same numbers, far slower on CPU: T2VLAD's local score is an ``einsum``.)
  **Guarantee**: with the flat index the result is exactly the top k of ``s`` over the whole store (ties
  broken by store row); with ``ivf``/``ivfpq``/``ivfpq-rerank`` only the complete videos are approximate. With
  ``ivfpq-rerank`` the index's ``candidates`` rows are scored exactly against their float16 vectors read from the
  store on disk (score error recorded at encode as ``fp16_max_score_error``), so only the candidate list is
  approximate (its recall@10 is recorded at encode).
- Text-conditioned heads (MGFI): stores of up to ``exhaustive_limit`` videos (default 20 000) are scored entirely
  with ``head.similarity`` (exact). Larger stores take a candidate pool of ``max(10·k, pool)`` videos from the index
  of query-independent proxies (the head's ``index_video_vectors``) and re-rank it with the head: exact within the
  pool, approximate overall.

The text encoder is loaded once per ``Searcher``; frozen-text runs round token features to float16 as the
training cache (``pipeline.training.text_cache``) did, fine-tuned runs load the run's fine-tuned encoder. Queries are encoded
with one torch thread by default (``QueryEncoder(threads=...)``): a short query gains nothing from intra-op threads,
and on shared, busy cores OpenMP's spin-waiting makes it many times slower.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pipeline.errors import StoreError
from pipeline.heads import Embedding, TextBatch
from pipeline.runs.record import BEST
from pipeline.stores.index import rerank, search_index
from pipeline.stores.store import EmbeddingStore, TrainedRun, load_trained_run
from pipeline.stores.vectors import query_index_vectors
from pipeline.text_encoder import TextEncoder, encoder_pooling, model_dir_digest, resolve_text_model_dir
from pipeline.training.text_cache import TextSide, frozen_text_batch


def text_model_digest(run: TrainedRun) -> str:
    """Digest of the text model folder the run's config names, as found on this machine now."""
    return model_dir_digest(resolve_text_model_dir(run.config.text.model or None))


def check_text_model(store: EmbeddingStore, digest: str) -> None:
    """StoreError when the store was built with another text model than ``digest``."""
    if digest != store.attrs.get("text_model_digest"):
        raise StoreError(
            f"{store.path}: store was built with text model {str(store.attrs.get('text_model_digest'))[:12]}, "
            f"the text model found now is {digest[:12]}"
        )


class QueryEncoder:
    """Captions -> ``TextBatch`` as the run's text side produced them in training (loaded once)."""

    def __init__(
        self, run: TrainedRun, device: str = "cpu", digest: str | None = None, threads: int | None = 1
    ):
        text = run.config.text
        self.device, self.threads = device, threads
        self.side: TextSide | None = None
        self.encoder: TextEncoder | None = None
        self.digest = digest or text_model_digest(run)
        if text.mode == "frozen":
            self.encoder = TextEncoder(resolve_text_model_dir(text.model or None), max_length=text.max_length)
            self.encoder.to(device).eval()
            self.pooling = encoder_pooling(self.encoder.model_dir)
        else:
            self.side = TextSide(text, run.run_dir / "text-cache")
            if run.text_state is not None:
                self.side.load_state_dict(run.text_state)
            self.side.to(device).eval()

    @property
    def tokenizer(self) -> Any:
        enc = self.encoder if self.encoder is not None else self.side.encoder
        return enc.tokenizer

    @torch.no_grad()
    def encode(self, texts: list[str]) -> TextBatch:
        """Token features of ``texts``, computed with ``threads`` torch CPU threads (None: torch's setting)."""
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._encode(texts)
        finally:
            torch.set_num_threads(previous)

    def _encode(self, texts: list[str]) -> TextBatch:
        if self.side is not None:
            return self.side(texts, device=self.device)
        tokens = self.encoder(texts)
        mask = tokens.mask.bool()
        feats = tokens.features.half().float().masked_fill(~mask.unsqueeze(-1), 0.0)
        return frozen_text_batch(feats, mask, self.pooling)


@dataclass
class Hit:
    """One ranked video; ``explanation``: the head's ``explain`` output for it (T2VLAD: per-expert
    weights/contributions and the top centers), None when the head explains nothing."""

    rank: int
    video_id: str
    score: float
    row: int
    split: str
    captions: list[str]
    path: str
    explanation: dict[str, Any] | None = None


@dataclass
class SearchResult:
    """Hits of one query; ``expert_weights`` = the head's query-level weights (T2VLAD's softmax over all experts);
    ``timings`` in seconds; ``index`` = which index kind answered (``Searcher.answered_by``)."""

    query: str
    hits: list[Hit]
    expert_weights: dict[str, float] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Searcher:
    """Search one store with the head of the run that built it (or ``run``, which must match it)."""

    def __init__(
        self,
        store: EmbeddingStore,
        run: TrainedRun,
        encoder: QueryEncoder | None = None,
        *,
        device: str = "cpu",
        pool: int = 100,
        exhaustive_limit: int = 20000,
        block: int = 4096,
    ):
        if store.head_name != run.head.name or store.attrs.get("checkpoint_sha256") != run.checkpoint_sha256:
            raise StoreError(
                f"{store.path}: store was built by head {store.head_name!r} (checkpoint "
                f"{str(store.attrs.get('checkpoint_sha256'))[:12]}), not by {run.run_dir} ({run.head.name!r}, "
                f"checkpoint {run.checkpoint_sha256[:12]}); re-run t2v encode"
            )
        if encoder is not None:
            check_text_model(store, encoder.digest)
        if len(store) == 0:
            raise StoreError(f"{store.path}: the store holds no videos")
        self.store, self.run, self.head, self.encoder = store, run, run.head, encoder
        self.device, self.pool, self.block = device, pool, block
        self.index = store.index()
        self.spec = store.index_spec
        self.vectors: h5py.Dataset | None = None
        if self.spec.reranked:
            self.vectors = h5py.File(store.h5_path, "r", locking=False)["vectors"]  # versions never change
        self.all_emb: Embedding | None = None
        self.groups: list[tuple[torch.Tensor, np.ndarray, torch.Tensor]] = []
        self.fallback_rows = np.zeros(0, np.int64)
        self.fallback_emb: Embedding | None = None
        if self.head.text_conditioned:
            if len(store) <= exhaustive_limit:
                self.all_emb = store.embeddings(slice(0, len(store)), device)
        else:
            self._group_incomplete(np.flatnonzero(~store.complete))
        self.answered_by = self._answered_by()

    def _answered_by(self) -> dict[str, Any]:
        """The index kind that ranks, whether the ranking is exact, and the recall@10 measured at encode."""
        if self.all_emb is not None:
            return {"kind": "exhaustive", "exact": True, "recall_at_10": 1.0}
        info = json.loads(self.store.attrs["index"])
        exact = self.spec.kind == "flat" and not self.head.text_conditioned
        return {"kind": self.spec.kind, "exact": exact, "recall_at_10": info.get("recall_at_10")}

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the index, its candidates re-ranked exactly from disk for ``ivfpq-rerank``."""
        if self.vectors is None:
            return search_index(self.index, queries, k)
        _, candidates = search_index(self.index, queries, max(k, self.spec.candidates))
        return rerank(queries, candidates, self.vectors, k)

    @torch.no_grad()
    def _group_incomplete(self, rows: np.ndarray) -> None:
        """Videos with a missing expert, grouped by the set of experts they have: one (pattern, rows, video
        vectors) per group, scored with ``query_vectors(t, available=pattern)``. Videos without any expert (or a
        head whose embedding has no ``available``) are scored with ``head.similarity`` itself."""
        if not len(rows):
            return
        emb = self.store.embeddings(rows, self.device)
        available = getattr(emb, "available", None)
        if available is None:
            self.fallback_rows, self.fallback_emb = rows, emb
            return
        patterns, inverse = torch.unique(available.bool(), dim=0, return_inverse=True)
        fallback = []
        for g, pattern in enumerate(patterns):
            members = torch.nonzero(inverse == g).flatten()
            if not bool(pattern.any()):
                fallback.append(members)
                continue
            vectors = self.head.video_vectors(emb[members]).float()
            self.groups.append((pattern, rows[members.cpu().numpy()], vectors))
        if fallback:
            members = torch.cat(fallback)
            self.fallback_rows, self.fallback_emb = rows[members.cpu().numpy()], emb[members]

    @classmethod
    def open(cls, store_path: str | Path, run_dir: str | Path | None = None, device: str = "cpu") -> Searcher:
        """Open a store, its run (``run_dir`` or the one recorded in the store) and the text encoder."""
        store = EmbeddingStore(store_path)
        run = load_trained_run(
            run_dir or store.attrs["run_dir"], str(store.attrs.get("checkpoint", BEST)), device
        )
        digest = text_model_digest(run)
        check_text_model(store, digest)
        return cls(store, run, QueryEncoder(run, device, digest), device=device)

    @torch.no_grad()
    def encode_queries(self, queries: list[str]) -> Embedding:
        for q in queries:
            if not q.strip():
                raise StoreError("empty query")
        if self.encoder is None:
            raise StoreError("this Searcher has no text encoder (pass encoder=QueryEncoder(run))")
        return self.head.encode_text(self.encoder.encode(queries).to(self.device))

    def _similarity_blocks(self, text_emb: Embedding, video_emb: Embedding) -> np.ndarray:
        tiles = [
            self.head.similarity(text_emb, video_emb[a : a + self.block]).float().cpu()
            for a in range(0, len(video_emb), self.block)
        ]
        return torch.cat(tiles, dim=1).numpy()

    @torch.no_grad()
    def rank(self, text_emb: Embedding, k: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query of ``text_emb``: (rows, scores) of the k best videos, best first (see module docstring)."""
        k = max(1, min(int(k), len(self.store)))
        out = []
        if self.head.text_conditioned and self.all_emb is not None:
            sims = self._similarity_blocks(text_emb, self.all_emb)
            return [_top(np.arange(len(self.store)), s, k) for s in sims]
        queries = query_index_vectors(self.head, text_emb)
        if self.head.text_conditioned:
            _, ids = search_index(self.index, queries, max(10 * k, self.pool))
            for b in range(len(text_emb)):
                rows = ids[b][ids[b] >= 0]
                sims = self._similarity_blocks(text_emb[b], self.store.embeddings(rows, self.device))[0]
                out.append(_top(rows, sims, k))
            return out
        scores, ids = self._search(queries, k)
        extra_rows, extra_sims = [], []
        for pattern, rows, vectors in self.groups:
            q = self.head.query_vectors(text_emb, available=pattern).float()
            extra_rows.append(rows)
            extra_sims.append((q @ vectors.t()).cpu().numpy())
        if self.fallback_emb is not None:
            extra_rows.append(self.fallback_rows)
            extra_sims.append(self._similarity_blocks(text_emb, self.fallback_emb))
        for b in range(len(text_emb)):
            valid = ids[b] >= 0
            rows = np.concatenate([ids[b][valid], *extra_rows])
            sims = np.concatenate([scores[b][valid], *[s[b] for s in extra_sims]])
            out.append(_top(rows, sims, k))
        return out

    def search(
        self, query: str, k: int = 10, explain: bool = True, text_emb: Embedding | None = None
    ) -> SearchResult:
        """Encode ``query`` (unless its ``text_emb`` is given), rank the store, attach captions and the head's
        explanations (``RetrievalHead.explain``)."""
        t0 = time.perf_counter()
        if text_emb is None:
            text_emb = self.encode_queries([query])
        t1 = time.perf_counter()
        rows, scores = self.rank(text_emb, k)[0]
        t2 = time.perf_counter()
        s = self.store
        hits = [
            Hit(i + 1, s.video_ids[r], float(sc), int(r), s.splits[r], s.captions[r], s.paths[r])
            for i, (r, sc) in enumerate(zip(rows, scores, strict=True))
        ]
        weights = None
        explained = (
            self.head.explain(self.store.experts, text_emb, self.store.embeddings(rows))
            if explain and hits
            else None
        )
        if explained is not None:
            weights, per_hit = explained
            for hit, info in zip(hits, per_hit, strict=True):
                hit.explanation = info
        t3 = time.perf_counter()
        timings = {"encode_s": t1 - t0, "search_s": t2 - t1, "explain_s": t3 - t2, "total_s": t3 - t0}
        return SearchResult(query, hits, weights, timings, dict(self.answered_by))


def _top(rows: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows, -sims))[:k]
    return rows[order].astype(np.int64), sims[order].astype(np.float32)
