"""FAISS wrapper: a small public surface (add/remove/search/save/load), NumPy in, dataclasses out.

Plain Python (no Django). Vectors are L2-normalised float32 and compared by inner product
(cosine similarity). Ids are int64 (the ProductImage primary key). No FAISS type leaks out.

Kinds:
- ``flat``: exact search (IndexIDMap2 over IndexFlatIP). Right for catalogs up to ~1M images.
- ``ivf``: approximate inverted-file index (IVF-Flat, or IVF-PQ with ``pq_m``); must be trained on
  a sample of vectors before adding; supports removal, so deltas still apply without a rebuild.

HNSW is left out on purpose: FAISS cannot delete from it, and this index must apply deletes and
updates as deltas; IVF covers the approximate case with real removal.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

KINDS = ("flat", "ivf")
_MAGIC = b"SHOPIDX1"


@dataclass(frozen=True)
class SearchHit:
    id: int
    score: float


@dataclass
class IndexParams:
    kind: str = "flat"
    nlist: int = 1024  # ivf: number of clusters
    nprobe: int = 32  # ivf: clusters visited per query
    pq_m: int = 0  # ivf: PQ sub-quantizers (0 = store full vectors, IVF-Flat)


class IndexError_(RuntimeError):
    """Bad use of the index (wrong dimension, untrained approximate index, bad file)."""


class VectorIndex:
    """A thread-safe id -> vector index. ``add`` is an upsert: an existing id is replaced."""

    def __init__(self, dim: int, params: IndexParams | None = None) -> None:
        if dim <= 0:
            raise IndexError_(f"dimension must be positive, got {dim}")
        self.dim = int(dim)
        self.params = params or IndexParams()
        if self.params.kind not in KINDS:
            raise IndexError_(f"unknown index kind {self.params.kind!r}; use one of {KINDS}")
        self._lock = threading.RLock()
        self._index = self._make()

    # -- construction -----------------------------------------------------------------------
    def _make(self) -> Any:
        p = self.params
        if p.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        quantizer = faiss.IndexFlatIP(self.dim)
        if p.pq_m:
            if self.dim % p.pq_m:
                raise IndexError_(f"pq_m={p.pq_m} must divide the dimension {self.dim}")
            index = faiss.IndexIVFPQ(
                quantizer, self.dim, p.nlist, p.pq_m, 8, faiss.METRIC_INNER_PRODUCT
            )
        else:
            index = faiss.IndexIVFFlat(quantizer, self.dim, p.nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = p.nprobe
        return index

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        """Trains an approximate index on a sample (ivf needs at least ``nlist`` vectors)."""
        x = self._check_vectors(vectors)
        with self._lock:
            if self.params.kind == "ivf" and len(x) < self.params.nlist:
                raise IndexError_(
                    f"ivf with nlist={self.params.nlist} needs at least that many training vectors, "
                    f"got {len(x)}; use a smaller nlist or the flat index"
                )
            self._index.train(x)

    # -- mutation ---------------------------------------------------------------------------
    def add(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        ids_arr = self._check_ids(ids)
        x = self._check_vectors(vectors)
        if len(ids_arr) != len(x):
            raise IndexError_(f"{len(ids_arr)} ids but {len(x)} vectors")
        if len(ids_arr) == 0:
            return
        if len(np.unique(ids_arr)) != len(ids_arr):
            # Keep the last vector given for a repeated id.
            _, last = np.unique(ids_arr[::-1], return_index=True)
            keep = np.sort(len(ids_arr) - 1 - last)
            ids_arr, x = ids_arr[keep], x[keep]
        with self._lock:
            if not self._index.is_trained:
                raise IndexError_("the approximate index is not trained; call train() first")
            self._index.remove_ids(faiss.IDSelectorBatch(ids_arr))
            self._index.add_with_ids(x, ids_arr)

    def remove(self, ids: np.ndarray | list[int]) -> None:
        ids_arr = self._check_ids(ids)
        if len(ids_arr) == 0:
            return
        with self._lock:
            self._index.remove_ids(faiss.IDSelectorBatch(ids_arr))

    # -- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        with self._lock:
            if self.params.kind == "flat":
                return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))
            return np.sort(self._ivf_ids())

    def _ivf_ids(self) -> np.ndarray:
        invlists = self._index.invlists
        out = []
        for list_no in range(self._index.nlist):
            size = invlists.list_size(list_no)
            if size:
                ptr = invlists.get_ids(list_no)
                out.append(faiss.rev_swig_ptr(ptr, size).copy())
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Top-``k`` hits per query row, best first. Fewer than k when the index is smaller."""
        q = self._check_vectors(queries)
        if k <= 0 or len(q) == 0:
            return [[] for _ in range(len(q))]
        with self._lock:
            total = int(self._index.ntotal)
            if total == 0:
                return [[] for _ in range(len(q))]
            scores, ids = self._index.search(q, min(k, total))
        # FAISS pads missing results (e.g. an IVF probe that found too few) with id -1.
        return [
            [
                SearchHit(id=int(i), score=float(s))
                for s, i in zip(row_s.tolist(), row_i.tolist(), strict=True)
                if i >= 0
            ]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]

    def reconstruct(self, id_: int) -> np.ndarray | None:
        """The stored vector of ``id_`` (flat only), or None when absent."""
        with self._lock:
            if self.params.kind != "flat":
                return None
            try:
                return self._index.reconstruct(int(id_))
            except RuntimeError:
                return None

    # -- persistence ------------------------------------------------------------------------
    def to_bytes(self, meta: dict[str, Any] | None = None) -> bytes:
        with self._lock:
            blob = faiss.serialize_index(self._index).tobytes()
            header = {
                "dim": self.dim,
                "params": dict(self.params.__dict__),
                "meta": meta or {},
            }
        head = json.dumps(header).encode()
        return _MAGIC + len(head).to_bytes(8, "little") + head + blob

    @classmethod
    def from_bytes(cls, data: bytes) -> tuple[VectorIndex, dict[str, Any]]:
        if not data.startswith(_MAGIC):
            raise IndexError_("not an index snapshot file (bad header)")
        n = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 8], "little")
        start = len(_MAGIC) + 8
        header = json.loads(data[start : start + n])
        index = cls.__new__(cls)
        index.dim = int(header["dim"])
        index.params = IndexParams(**header["params"])
        index._lock = threading.RLock()
        index._index = faiss.deserialize_index(np.frombuffer(data[start + n :], dtype=np.uint8))
        return index, header.get("meta", {})

    def save(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
        """Writes atomically: a temporary file in the same folder, then a rename over ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_bytes(meta)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[VectorIndex, dict[str, Any]]:
        with open(path, "rb") as fh:
            return cls.from_bytes(fh.read())

    # -- validation -------------------------------------------------------------------------
    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise IndexError_(
                f"expected vectors of shape (n, {self.dim}), got {tuple(np.shape(vectors))}"
            )
        return x

    @staticmethod
    def _check_ids(ids: np.ndarray | list[int]) -> np.ndarray:
        arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(arr) and arr.min() < 0:
            raise IndexError_("ids must be non-negative")
        return arr
