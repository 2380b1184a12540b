"""Base + delta: the whole vector side of a search, ranked by product, without the database.

``VectorStore.search`` asks both segments for their best image rows under a filter, merges
them, keeps each product's best image, and widens the image depth until it has the products
asked for (or there are no more). Ranking is deterministic (score, then newest product), so
asking deeper returns the same first products: page n of a deeper query equals page n of a
shallower one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .columns import COLUMNS, SIGNALS, Filter
from .kinds import EngineError, IndexParams
from .segments import BaseSegment, DeltaSegment


@dataclass(frozen=True)
class ProductHit:
    product_id: int
    image_id: int
    score: float  # cosine similarity of the product's best image (LiveIndex keeps it in [-1, 1])


class VectorStore:
    """A model's vectors in one process: a shared read-only base and a private delta."""

    def __init__(self, dim: int, base: BaseSegment | None = None) -> None:
        if dim <= 0:
            raise EngineError(f"dimension must be positive, got {dim}")
        self.dim = dim
        self.base = base
        self.delta = DeltaSegment(dim)
        self._lock = threading.Lock()

    @property
    def params(self) -> IndexParams:
        return self.base.params if self.base is not None else IndexParams(kind="flat")

    def __len__(self) -> int:
        """Vectors searchable now (active or not)."""
        base = self.base.size - self.base.n_dead if self.base is not None else 0
        return base + len(self.delta)

    # -- changes ------------------------------------------------------------------------------
    def upsert(self, vectors: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Adds or replaces images (their vectors and their product's attributes)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        ids = np.asarray(columns["image_id"], dtype=np.int64)
        if len(ids) != len(x):
            raise EngineError(f"{len(ids)} image ids but {len(x)} vectors")
        if not len(ids):
            return
        with self._lock:
            if self.base is not None:
                self.base.kill(self.base.rows_of(ids))
            self.delta.upsert(x, columns)

    def delete(self, image_ids) -> None:
        ids = np.asarray(list(image_ids), dtype=np.int64)
        if not len(ids):
            return
        with self._lock:
            if self.base is not None:
                self.base.kill(self.base.rows_of(ids))
            self.delta.delete(ids)

    # -- queries ------------------------------------------------------------------------------
    def search(self, query: np.ndarray, *, k: int, flt: Filter | None = None) -> list[ProductHit]:
        """The best ``k`` products for a unit query vector under ``flt``, best first."""
        flt = flt or Filter()
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise EngineError(f"expected a query of dimension {self.dim}, got {q.shape[0]}")
        if k <= 0:
            return []
        base_plan = self.base.plan(flt) if self.base is not None else None
        depth = 2 * k + 16  # images; a product with several images needs more than one
        while True:
            scores, images, products, exhausted = self._images(q, depth, flt, base_plan)
            hits = _best_per_product(scores, images, products, k)
            if len(hits) >= k or exhausted:
                return hits
            depth *= 4

    def _images(self, q, depth, flt, base_plan):
        parts_s, parts_i, parts_p = [], [], []
        exhausted = True
        if self.base is not None:
            scores, rows = self.base.search(q, depth, base_plan)
            exhausted &= len(rows) < depth
            parts_s.append(scores)
            parts_i.append(np.asarray(self.base.columns["image_id"][rows]))
            parts_p.append(np.asarray(self.base.columns["product_id"][rows]))
        scores, cols = self.delta.top(q, depth, flt)
        exhausted &= len(scores) < depth
        parts_s.append(scores)
        parts_i.append(cols["image_id"])
        parts_p.append(cols["product_id"])
        return np.concatenate(parts_s), np.concatenate(parts_i), np.concatenate(parts_p), exhausted

    def count_products(self, flt: Filter | None = None, *, cap: int) -> int:
        """How many distinct products ``flt`` keeps, counted exactly up to ``cap``.

        Most catalogs have a few images a product, so the first 8 * cap matching rows usually
        settle it; only those are read (at 1M rows a full gather alone costs milliseconds)."""
        flt = flt or Filter()
        want = 8 * cap
        delta = self.delta.live_columns()
        parts = [delta["product_id"][flt.mask(delta)]]
        total = len(parts[0])
        if self.base is not None:
            mask = self.base.mask(flt)
            products, members = _first_products(mask, self.base.columns["product_id"], want)
            parts.append(products)
            total += members
        head = np.unique(np.concatenate(parts))
        if len(head) >= cap or total <= want + len(parts[0]):
            return min(cap, len(head))
        everything = np.concatenate(
            [parts[0], np.asarray(self.base.columns["product_id"])[self.base.mask(flt)]]
        )
        return min(cap, len(np.unique(everything)))

    def score_images(self, query: np.ndarray, image_ids) -> dict[int, float]:
        """Cosine scores of particular images (those of products the word side brought onto a
        page) read from their stored vectors, with no search; images not held (or whose
        stored form is not a vector) are left out."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        ids = np.asarray(list(image_ids), dtype=np.int64)
        out: dict[int, float] = {}
        for image_id in ids.tolist():
            vec = self.delta.vector(image_id)
            if vec is not None:
                out[image_id] = float(vec @ q)
        if self.base is not None and len(ids):
            rows = self.base.rows_of(ids)
            found = rows >= 0
            active = np.asarray(self.base.columns["active"])[rows[found]]
            picked, picked_ids = rows[found][active], ids[found][active]
            vectors = self.base.vectors(picked)
            if vectors is not None:
                scores = vectors @ q
                for image_id, score in zip(picked_ids.tolist(), scores.tolist(), strict=True):
                    out.setdefault(image_id, float(score))
        return out

    def product_signals(self, product_ids) -> dict[str, np.ndarray]:
        """The ranking signal columns (columns.SIGNALS) of ``product_ids``, aligned with them:
        read from any live row of each product (they are product fields, the same on every
        image). A product not held gets no boost, untracked stock, unknown age, no popularity."""
        pids = np.asarray(list(product_ids), dtype=np.int64)
        out = {name: np.full(len(pids), fill, COLUMNS[name]) for name, fill in SIGNALS.items()}
        if not len(pids):
            return out
        found = np.zeros(len(pids), dtype=bool)
        delta = self.delta.live_columns()
        if len(delta["product_id"]):
            order = np.argsort(delta["product_id"], kind="stable")
            _pick(delta, order, pids, out, found, dead=None)
        if self.base is not None and not found.all():
            _pick(
                self.base.columns, self.base.product_order(), pids, out, found, dead=self.base.dead
            )
        return out

    def image_ids(self) -> np.ndarray:
        """Every searchable image id, sorted (tests, status)."""
        parts = [self.delta.live_columns()["image_id"]]
        if self.base is not None:
            parts.append(np.asarray(self.base.columns["image_id"])[~self.base.dead])
        return np.sort(np.concatenate(parts))


def _best_per_product(scores, images, products, k: int) -> list[ProductHit]:
    if not len(scores):
        return []
    # Best score first; ties: newest product first, then lowest image id (deterministic).
    order = np.lexsort((images, -products, -scores))
    _, first = np.unique(products[order], return_index=True)
    keep = order[np.sort(first)[:k]]
    # Raw scores: a score outside [-1, 1] is how a damaged base shows itself, so the caller
    # (LiveIndex) checks them rather than this clipping it away.
    return [
        ProductHit(product_id=int(p), image_id=int(i), score=float(s))
        for p, i, s in zip(
            products[keep].tolist(), images[keep].tolist(), scores[keep].tolist(), strict=True
        )
    ]


def _first_products(mask: np.ndarray, product_col, want: int) -> tuple[np.ndarray, int]:
    """Product ids of the first ``want`` rows of ``mask`` (read from a prefix of the mask just
    long enough), and how many rows the mask keeps in all."""
    size, members = len(mask), int(np.count_nonzero(mask))
    if not members:
        return np.zeros(0, np.int64), 0
    span = min(size, int(want * size / members * 1.2) + 64)
    while True:
        rows = np.flatnonzero(mask[:span])
        if len(rows) >= want or span >= size:
            return np.asarray(product_col[rows[:want]]), members
        span = min(size, span * 2)


def _pick(cols, order, pids, out, found, dead) -> None:
    """Fills ``out`` for the ``pids`` not ``found`` yet from ``cols`` (``order`` sorts its
    product ids); rows marked in ``dead`` (tombstones) are skipped."""
    sorted_p = np.asarray(cols["product_id"])[order]
    lo = np.searchsorted(sorted_p, pids, side="left")
    hi = np.searchsorted(sorted_p, pids, side="right")
    for n in np.flatnonzero(~found & (hi > lo)).tolist():
        rows = order[lo[n] : hi[n]]
        if dead is not None:
            rows = rows[~dead[rows]]
        if not len(rows):
            continue
        row = int(rows[0])
        for name in out:
            out[name][n] = cols[name][row]
        found[n] = True
