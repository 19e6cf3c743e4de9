"""faiss inner-product indexes of an embedding store: exact (flat), IVF and IVF-PQ, with row ids.

Memory per indexed video (P = vector size, float32; ids are int64):

| kind    | bytes per video | search                                                       |
|---------|-----------------|--------------------------------------------------------------|
| `flat`  | 4·P + 8         | exact: every vector scanned                                  |
| `ivf`   | 4·P + 8         | `nprobe` of `nlist` lists scanned; approximate               |
| `ivfpq` | m + 8           | `nprobe` lists, m one-byte codes per vector; approximate     |

E.g. T2VLAD with C = 256, K = 9 and 4 experts has P = 13·256 = 3328: 13.3 kB per video flat or IVF, 40 B with
PQ m = 32 (1M videos: 13.3 GB vs 40 MB). The paper-size T2VLAD (C = 768, K = 9, 8 experts) has P = 13 056: 52 kB.
A ``Searcher`` also keeps the vectors of the videos that lack an expert in memory (4·P bytes each).
The coarse quantizer (`nlist` centroids of P floats) and the PQ codebooks (256·P floats) are per index, not per
video. With `nlist` larger than the data allows (faiss wants ~39 training vectors per list) it is reduced to
``max(1, n // 39)``, and `ivfpq` over fewer than 256 vectors (PQ codebooks need 256 training points) is built as
`ivf`; the parameters actually used are kept with the index.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is logged at INFO
import faiss  # noqa: E402

from data_manifest.atomic import atomic_path  # noqa: E402
from pipeline.errors import StoreError  # noqa: E402

INDEX_KINDS = ("flat", "ivf", "ivfpq")
MIN_POINTS_PER_LIST = 39
PQ_MIN_POINTS = 256
TRAIN_SAMPLE_CAP = 100_000


@dataclass
class IndexSpec:
    """Which index to build: ``kind`` flat|ivf|ivfpq; IVF ``nlist`` lists, ``nprobe`` searched; PQ ``m`` bytes."""

    kind: str = "flat"
    nlist: int = 1024
    nprobe: int = 16
    m: int = 16

    def validate(self, dim: int | None = None) -> None:
        if self.kind not in INDEX_KINDS:
            raise StoreError(f"index kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.nlist < 1 or self.nprobe < 1 or self.m < 1:
            raise StoreError(
                f"index: nlist, nprobe and m must be >= 1, got {self.nlist}, {self.nprobe}, {self.m}"
            )
        if self.kind == "ivfpq" and dim is not None and dim % self.m:
            raise StoreError(f"index ivfpq: vector size {dim} is not divisible by m={self.m}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        return cls(**{k: data[k] for k in ("kind", "nlist", "nprobe", "m") if k in data})


def bytes_per_vector(spec: IndexSpec, dim: int) -> int:
    """Bytes one indexed video costs in ``spec`` (vector or code + 8-byte id; shared tables not counted)."""
    return (spec.m if spec.kind == "ivfpq" else 4 * dim) + 8


def build_index(
    vectors: np.ndarray, ids: np.ndarray, spec: IndexSpec, seed: int = 0
) -> tuple[faiss.Index, IndexSpec]:
    """An index over ``vectors`` (n, P) float32 with int64 ``ids`` (n,); returns it and the spec actually used
    (``nlist`` reduced for small n). IVF kinds are trained on a sample of ``vectors``: at most
    ``max(39·nlist, min(256·nlist, 100 000))`` of them."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    dim = int(vectors.shape[1])
    spec.validate(dim)
    index: faiss.Index
    if spec.kind == "flat" or len(vectors) == 0:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        used = IndexSpec("flat", spec.nlist, spec.nprobe, spec.m)
    else:
        nlist = max(1, min(spec.nlist, len(vectors) // MIN_POINTS_PER_LIST))
        kind = "ivf" if len(vectors) < PQ_MIN_POINTS else spec.kind
        quantizer = faiss.IndexFlatIP(dim)
        ivf: faiss.IndexIVF
        if kind == "ivf":
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            ivf = faiss.IndexIVFPQ(quantizer, dim, nlist, spec.m, 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        limit = max(MIN_POINTS_PER_LIST * nlist, min(256 * nlist, TRAIN_SAMPLE_CAP))
        sample = (
            vectors if len(vectors) <= limit else vectors[np.sort(rng.choice(len(vectors), limit, False))]
        )
        ivf.train(sample)
        ivf.nprobe = min(spec.nprobe, nlist)
        index = ivf
        used = IndexSpec(kind, nlist, ivf.nprobe, spec.m)
    if len(vectors):
        index.add_with_ids(vectors, ids)
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


def write_index(index: faiss.Index, path: Path) -> None:
    """Write atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: Path, spec: IndexSpec) -> faiss.Index:
    """Read an index written by ``write_index``; IVF kinds get ``spec.nprobe``."""
    if not path.is_file():
        raise StoreError(f"{path}: index file missing (re-run t2v encode)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise StoreError(f"{path}: unreadable faiss index ({str(err).splitlines()[0]})") from err
    if spec.kind != "flat":
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    return index
