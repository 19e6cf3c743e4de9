"""faiss inner-product indexes of an embedding store, with row ids: exact (flat), IVF, IVF-PQ, and OPQ + IVF-PQ whose
candidates are re-ranked exactly with the store's vectors read from disk (``ivfpq-rerank``).

Memory per indexed video (P = vector size, float32; ids are int64):

| kind           | bytes per video in RAM | search                                                             |
|----------------|------------------------|--------------------------------------------------------------------|
| `flat`         | 4·P + 8                | exact: every vector scanned                                        |
| `ivf`          | 4·P + 8                | `nprobe` of `nlist` lists scanned; approximate                     |
| `ivfpq`        | m + 8                  | `nprobe` lists, m one-byte codes per vector; approximate           |
| `ivfpq-rerank` | m + 8                  | OPQ rotation to `rotate` dims, IVF-PQ gives `candidates` rows; their float16 vectors are read from the store on disk and scored exactly |

E.g. the demo's T2VLAD (C = 256, K = 16, 4 experts) has P = 20·256 = 5120: 20.5 kB per video flat or IVF, 72 B with
PQ m = 64 (1M videos: 20.5 GB vs 72 MB). The paper-size T2VLAD (C = 768, K = 9, 8 experts) has P = 13 056: 52 kB.
A ``Searcher`` also keeps the vectors of the videos that lack an expert in memory (4·P bytes each).
The coarse quantizer (`nlist` centroids), the PQ codebooks and the OPQ matrix (`rotate`·P floats: 10.5 MB for
P = 5120, rotate 512) are per index, not per video; ``index_bytes`` counts them. With `nlist` larger than the data
allows (faiss wants ~39 training vectors per list) it is reduced to ``max(1, n // 39)``, and the PQ kinds over fewer
than 256 vectors (PQ codebooks need 256 training points) are built as `ivf`; the parameters actually used are kept
with the index.

**Choosing a kind** (``choose_spec``, what ``t2v encode`` does unless ``--index`` is given): `flat` while the
flat vectors take at most ``FLAT_MAX_BYTES`` (256 MB: 12 800 videos at P = 5120; the README's search section
has the timings) or the store has fewer than ``RERANK_MIN_VIDEOS`` (10 000) videos, else `ivfpq-rerank` with
``nlist = 4·√n`` (rounded to a multiple of 64), ``nprobe = nlist / 8`` (neighbours of real-looking vectors spread
over many lists: recall was bound by the lists probed, not by the candidates, in ``tests/benchmarks/search_scale.py``),
m = 64, rotate = 512 and 256 candidates. **Retraining**: an IVF/PQ index is trained again from scratch when
the vectors appended since its training exceed ``RETRAIN_GROWTH`` (50 %) of those it was trained on, or when the
chosen kind (no explicit ``--index``) changes with the store's size; otherwise appends only add codes.
**Recall**: every freshly built approximate index records ``recall_at_10`` against exact search, measured on
``RECALL_QUERIES`` (100) of the store's own vectors used as queries, each query's own row excluded from both lists.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is logged at INFO
import faiss  # noqa: E402

from data_manifest.hashing import sha256_file  # noqa: E402
from pipeline.errors import StoreError  # noqa: E402

INDEX_KINDS = ("flat", "ivf", "ivfpq", "ivfpq-rerank")
MIN_POINTS_PER_LIST = 39
PQ_MIN_POINTS = 256
TRAIN_SAMPLE_CAP = 100_000
FLAT_MAX_BYTES = 256 << 20
RERANK_MIN_VIDEOS = 10_000
RETRAIN_GROWTH = 0.5
RECALL_QUERIES = 100


@dataclass
class IndexSpec:
    """Which index to build: ``kind`` (see ``INDEX_KINDS``); IVF ``nlist`` lists, ``nprobe`` searched; PQ ``m``
    bytes; ``ivfpq-rerank``: OPQ to ``rotate`` dims and ``candidates`` rows re-ranked exactly."""

    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 16
    m: int = 16
    rotate: int = 512
    candidates: int = 256

    def validate(self, dim: int | None = None) -> None:
        if self.kind not in INDEX_KINDS:
            raise StoreError(f"index kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if min(self.nlist, self.nprobe, self.m, self.rotate, self.candidates) < 1:
            raise StoreError(
                f"index: nlist, nprobe, m, rotate and candidates must be >= 1, got {self.nlist}, {self.nprobe}, "
                f"{self.m}, {self.rotate}, {self.candidates}"
            )
        if self.kind == "ivfpq" and dim is not None and dim % self.m:
            raise StoreError(f"index ivfpq: vector size {dim} is not divisible by m={self.m}")

    @property
    def reranked(self) -> bool:
        """Whether search re-ranks candidates with the store's vectors on disk."""
        return self.kind == "ivfpq-rerank"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        names = ("kind", "nlist", "nprobe", "m", "rotate", "candidates")
        return cls(**{k: data[k] for k in names if k in data})


def choose_spec(n: int, dim: int) -> IndexSpec:
    """The kind ``t2v encode`` uses for ``n`` vectors of ``dim`` floats (thresholds in the module docstring)."""
    if n * 4 * dim <= FLAT_MAX_BYTES or n < RERANK_MIN_VIDEOS:
        return IndexSpec("flat")
    nlist = max(64, int(round(4 * math.sqrt(n) / 64)) * 64)
    return IndexSpec("ivfpq-rerank", nlist=nlist, nprobe=nlist // 8, m=64, rotate=512, candidates=256)


def needs_retraining(info: dict[str, Any], indexed: int) -> bool:
    """Whether an IVF/PQ index trained on ``info['trained_on']`` vectors should be trained again now that it would
    hold ``indexed``: more than ``RETRAIN_GROWTH`` of the training size appended since."""
    if info.get("kind", "flat") == "flat":
        return False
    trained = int(info.get("trained_on", 0))
    return indexed - trained > RETRAIN_GROWTH * trained


def bytes_per_vector(spec: IndexSpec, dim: int) -> int:
    """Bytes one indexed video costs in ``spec`` (vector or code + 8-byte id; shared tables not counted)."""
    return (spec.m if spec.kind in ("ivfpq", "ivfpq-rerank") else 4 * dim) + 8


def index_bytes(index: faiss.Index) -> int:
    """RAM the index takes: its serialised size (codes, ids, quantizer, codebooks, OPQ matrix)."""
    return int(faiss.serialize_index(index).size)


def _pq_dims(spec: IndexSpec, dim: int) -> tuple[int, int]:
    """(rotate, m) for ``ivfpq-rerank`` over ``dim`` floats: ``rotate`` <= dim and a multiple of ``m``."""
    m = min(spec.m, dim)
    rotate = max(m, min(spec.rotate, dim) // m * m)
    return rotate, m


def train_index(sample: np.ndarray, spec: IndexSpec, n: int | None = None) -> tuple[faiss.Index, IndexSpec]:
    """An empty index of ``spec`` trained on ``sample`` (k, P); ``n`` (default k) = how many vectors it will hold,
    which bounds ``nlist``. Returns it and the spec actually used."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    dim = int(sample.shape[1])
    spec.validate(dim)
    n = len(sample) if n is None else n
    if spec.kind == "flat" or n == 0:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), IndexSpec("flat", *_rest(spec))
    nlist = max(1, min(spec.nlist, n // MIN_POINTS_PER_LIST, len(sample) // MIN_POINTS_PER_LIST))
    kind = "ivf" if min(n, len(sample)) < PQ_MIN_POINTS else spec.kind
    index: faiss.Index
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivfpq":
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, spec.m, 8, faiss.METRIC_INNER_PRODUCT)
    else:
        rotate, m = _pq_dims(spec, dim)
        index = faiss.index_factory(dim, f"OPQ{m}_{rotate},IVF{nlist},PQ{m}", faiss.METRIC_INNER_PRODUCT)
        # faiss's type hints miss SWIG's members: chain is a C++ vector (``at``), IVF-PQ has do_polysemous_training
        chain = cast(faiss.IndexPreTransform, faiss.downcast_index(index)).chain
        opq = cast(faiss.OPQMatrix, faiss.downcast_VectorTransform(chain.at(0)))  # type: ignore[attr-defined]
        # the rotation only orders candidates (the re-rank is exact): a cheap one
        opq.niter, opq.max_train_points = 4, 16_384
    ivf = faiss.extract_index_ivf(index)
    if kind != "ivf":  # polysemous training: minutes of annealing for a Hamming filter search never uses
        cast(faiss.IndexIVFPQ, faiss.downcast_index(ivf)).do_polysemous_training = False  # type: ignore[attr-defined]
    index.train(sample)
    ivf.nprobe = min(spec.nprobe, nlist)
    used = IndexSpec(kind, nlist, ivf.nprobe, spec.m, spec.rotate, spec.candidates)
    if kind == "ivfpq-rerank":
        used.rotate, used.m = _pq_dims(spec, dim)
    return index, used


def _rest(spec: IndexSpec) -> tuple[int, int, int, int, int]:
    """``spec``'s fields after ``kind``."""
    return spec.nlist, spec.nprobe, spec.m, spec.rotate, spec.candidates


def training_sample_size(spec: IndexSpec, n: int) -> int:
    """How many of ``n`` vectors an IVF index of ``spec`` is trained on: ``max(39·nlist, min(256·nlist, 100 000))``,
    at most ``n``."""
    nlist = max(1, min(spec.nlist, n // MIN_POINTS_PER_LIST))
    return min(n, max(MIN_POINTS_PER_LIST * nlist, min(256 * nlist, TRAIN_SAMPLE_CAP)))


def build_index(
    vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec, seed: int = 0
) -> tuple[faiss.Index, IndexSpec]:
    """An index over ``vectors`` (n, P) float32 with int64 ``ids`` (n,); returns it and the spec actually used
    (``nlist`` reduced for small n). IVF kinds are trained on a random sample (``training_sample_size``)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    limit = training_sample_size(spec, len(vectors))
    rng = np.random.default_rng(seed)
    sample = vectors if len(vectors) <= limit else vectors[np.sort(rng.choice(len(vectors), limit, False))]
    index, used = train_index(sample, spec, len(vectors))
    add_to_index(index, vectors, ids)
    return index, used


def add_to_index(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Append vectors with their ids (an IVF index keeps its trained lists)."""
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))


def search_index(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (B, k') with k' = min(k, index size); ids are -1 where an IVF probe found fewer."""
    k = min(int(k), int(index.ntotal))
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    return index.search(np.ascontiguousarray(queries, np.float32), k)


def read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``ds[rows]`` for sorted unique ``rows`` of a dataset chunked by row: one hyperslab read per row (cheaper
    than h5py's fancy indexing)."""
    out = np.empty((len(rows), *ds.shape[1:]), ds.dtype)
    space = ds.id.get_space()
    mem = h5py.h5s.create_simple((1, *ds.shape[1:]))
    tail = tuple(ds.shape[1:])
    for i, r in enumerate(rows):
        space.select_hyperslab((int(r),) + (0,) * len(tail), (1, *tail))
        ds.id.read(mem, space, out[i : i + 1])
    return out


def rerank(
    queries: np.ndarray, candidates: np.ndarray, vectors: h5py.Dataset, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (scores, ids) (B, k') of each query over its ``candidates`` (B, c) rows (-1 = none), scored against
    the rows of ``vectors`` (N, P) read from disk; ties broken by row."""
    uniq = np.unique(candidates[candidates >= 0])
    rows = read_rows(vectors, uniq).astype(np.float32)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.full((len(queries), k), -1, np.int64)
    for b, q in enumerate(np.asarray(queries, np.float32)):
        cand = np.unique(candidates[b][candidates[b] >= 0])
        sims = rows[np.searchsorted(uniq, cand)] @ q
        order = np.lexsort((cand, -sims))[:k]
        scores[b, : len(order)], ids[b, : len(order)] = sims[order], cand[order]
    return scores, ids


def exact_top(queries: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """(B, k) ids of the exact top k of ``queries`` over ``blocks`` of (vectors, ids), scanned once."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for vectors, ids in blocks:
        s = np.concatenate([best_s, np.asarray(queries, np.float32) @ np.asarray(vectors, np.float32).T], 1)
        i = np.concatenate([best_i, np.broadcast_to(np.asarray(ids, np.int64), (len(queries), len(ids)))], 1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def recall_at(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (B, k) ids found in the same row of ``found``."""
    return float(np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth, found, strict=True)]))


def write_index(index: faiss.Index, path: Path) -> None:
    """Write ``index`` to ``path``: a temp file of the store version being written, published with it."""
    faiss.write_index(index, str(path))


def read_index(path: Path, spec: IndexSpec, sha256: str | None = None) -> faiss.Index:
    """Read an index written by ``write_index``, checked against its recorded ``sha256`` when given (a flipped
    byte otherwise gives confident wrong hits); IVF kinds get ``spec.nprobe``."""
    if not path.is_file():
        raise StoreError(f"{path}: index file missing (re-run t2v encode)")
    if sha256 is not None and (actual := sha256_file(path)) != sha256:
        raise StoreError(
            f"{path}: index does not match its recorded sha256 ({actual[:12]} != {sha256[:12]}); "
            "re-run t2v encode to rebuild it"
        )
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise StoreError(f"{path}: unreadable faiss index ({str(err).splitlines()[0]})") from err
    if spec.kind != "flat":
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    return index
