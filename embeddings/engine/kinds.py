"""Which FAISS index a catalog gets, and how it is built.

Every kind stores vectors under *row numbers* (0..n-1 of the snapshot's arrays), so a filter is
a bitmap over rows (``faiss.IDSelectorBitmap``) evaluated inside the FAISS scan.

- ``flat``: exact inner-product scan (IndexFlatIP). Memory-mapped from the snapshot file.
- ``ivf``: inverted file whose coarse quantizer is an HNSW graph over the centroids (finding the
  lists to probe is then ~0.1 ms even at nlist 4000); vectors are stored as float16 (scalar
  quantizer fp16, not by residual: scores agree with float32 to ~1e-3, half the memory of
  IVF-Flat: 512 bytes a 256-d vector); the inverted lists are memory-mapped. Recall is set by
  ``nprobe`` (see ``make bench``).
- ``ivfpq``: the same with product-quantised codes (``pq_m`` bytes per vector instead of
  4 * dim): the memory-saving option for catalogs beyond one machine's RAM; scores are
  approximate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

KINDS = ("flat", "ivf", "ivfpq")


class EngineError(RuntimeError):
    """Bad use of the engine (wrong dimension, unknown kind, unreadable snapshot)."""


@dataclass(frozen=True)
class IndexParams:
    kind: str = "flat"
    nlist: int = 0  # ivf/ivfpq: number of inverted lists
    nprobe: int = 0  # ivf/ivfpq: lists probed by an unfiltered query
    pq_m: int = 0  # ivfpq: sub-quantizers (bytes per vector)
    hnsw_m: int = 32  # ivf/ivfpq: links per centroid in the coarse quantizer's graph

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexParams:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def choose_params(
    count: int,
    *,
    kind: str = "auto",
    ivf_threshold: int = 200_000,
    nlist: int = 0,
    nprobe: int = 64,
    pq_m: int = 0,
) -> IndexParams:
    """Exact search below ``ivf_threshold`` vectors, IVF above it (IVF-PQ when ``pq_m`` is set
    or asked for). ``nlist`` 0 means 4 * sqrt(count), and never fewer than ~39 vectors a list."""
    if kind not in (*KINDS, "auto"):
        raise EngineError(f"unknown index kind {kind!r}; use one of {KINDS} or 'auto'")
    if kind == "auto":
        kind = ("ivfpq" if pq_m else "ivf") if count >= ivf_threshold else "flat"
    if kind == "flat" or count < 1000:
        # Too few vectors to train clusters on; exact search is fast at this size anyway.
        return IndexParams(kind="flat")
    lists = nlist or int(4 * math.sqrt(count))
    lists = max(1, min(lists, count // 39))
    if kind == "ivfpq" and not pq_m:
        pq_m = 32
    return IndexParams(
        kind=kind,
        nlist=lists,
        nprobe=max(1, min(nprobe, lists)),
        pq_m=pq_m if kind == "ivfpq" else 0,
    )


def new_index(dim: int, params: IndexParams) -> Any:
    """An empty FAISS index of ``params.kind`` (approximate kinds still need ``train``)."""
    if params.kind == "flat":
        return faiss.IndexFlatIP(dim)
    quantizer = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    if params.kind == "ivfpq":
        if dim % params.pq_m:
            raise EngineError(f"pq_m={params.pq_m} must divide the dimension {dim}")
        index = faiss.IndexIVFPQ(
            quantizer, dim, params.nlist, params.pq_m, 8, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer,
            dim,
            params.nlist,
            faiss.ScalarQuantizer.QT_fp16,
            faiss.METRIC_INNER_PRODUCT,
            False,  # encode the vectors themselves, not residuals: scores stay exact-ish
        )
    index.own_fields = True
    quantizer.this.disown()  # the IVF index frees its quantizer
    index.nprobe = params.nprobe
    return index


def train_sample(vectors: np.ndarray, params: IndexParams, seed: int = 0) -> np.ndarray:
    """The k-means sample: 64 vectors a list is plenty (FAISS would take up to 256 a list:
    all of 1M vectors at nlist 4000, about an hour on 2 cores)."""
    n = len(vectors)
    size = min(n, 64 * max(params.nlist, 1))
    if size == n:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def trained_empty(vectors: np.ndarray, params: IndexParams, *, previous: Any | None = None) -> Any:
    """An empty, trained index for ``vectors``: ``previous`` (an empty trained index kept in the
    last snapshot) when it fits the same kind, dimension and nlist, so compaction does not re-run
    k-means over the whole catalog; else k-means on a sample now."""
    dim = vectors.shape[1]
    if previous is not None and _same_training(previous, dim, params):
        index = faiss.clone_index(previous)
        if params.kind != "flat":
            index.nprobe = params.nprobe
        return index
    index = new_index(dim, params)
    if params.kind != "flat":
        index.train(train_sample(vectors, params))
    return index


def build_index(vectors: np.ndarray, trained: Any) -> Any:
    """``trained`` (left empty) cloned and filled with ``vectors`` under ids 0..n-1."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.clone_index(trained)
    for start in range(0, len(x), 100_000):
        chunk = x[start : start + 100_000]
        if isinstance(index, faiss.IndexFlat):
            index.add(chunk)  # flat ids are the insertion order: rows again
        else:
            index.add_with_ids(chunk, np.arange(start, start + len(chunk), dtype=np.int64))
    return index


def _same_training(index: Any, dim: int, params: IndexParams) -> bool:
    if params.kind == "flat":
        return isinstance(index, faiss.IndexFlat) and index.d == dim
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None or index.d != dim or ivf.nlist != params.nlist or ivf.ntotal:
        return False
    is_pq = isinstance(ivf, faiss.IndexIVFPQ)
    return (params.kind == "ivfpq") == is_pq and (not is_pq or ivf.pq.M == params.pq_m)
