"""The two kinds of segment a store searches: the memory-mapped base and the in-memory delta.

A segment answers "the best ``k`` rows for this query among the rows of this mask" and owns
its columns (see ``columns``). Scores are inner products of unit vectors: cosine similarity.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from .columns import COLUMNS, Filter
from .kinds import IndexParams

_EMPTY = (np.zeros(0, np.float32), np.zeros(0, np.int64))
# Matching vectors an approximate search scores at least: twice the deepest ranking asked for
# (1000 products), so ranking depth never changes which candidates are looked at.
MIN_CANDIDATES = 2048
FILTERED_BUDGET = 2.0


@dataclass
class FilterPlan:
    """What searching a base under one filter needs, computed once per filter and base state
    (shoppers repeat the same category and price filters): the row mask, how many rows it
    keeps, the packed bitmap FAISS tests, and (IVF) how many of its rows each list holds."""

    mask: np.ndarray
    members: int
    bitmap: np.ndarray | None  # None: every row matches
    per_list: np.ndarray | None = None


PLAN_CACHE_SIZE = 16  # filters remembered per process (~1.2 MB each at 1M rows)


class BaseSegment:
    """A snapshot's index and columns (memory-mapped, shared by every process on the machine)
    plus this process's tombstones: rows deleted or replaced since the snapshot."""

    def __init__(self, index: Any, columns: dict[str, np.ndarray], params: IndexParams) -> None:
        self.index = index
        self.columns = columns
        self.params = params
        self.size = int(index.ntotal)
        self.dead = np.zeros(self.size, dtype=bool)
        self.n_dead = 0
        self._version = 0
        self._alive_cache: tuple[int, np.ndarray] | None = None
        self._product_order: np.ndarray | None = None
        self._plans: OrderedDict[tuple[Filter, int], FilterPlan] = OrderedDict()
        self._plans_lock = threading.Lock()
        if params.kind != "flat":
            self._plan_ivf()

    def product_order(self) -> np.ndarray:
        """Row numbers sorting the product id column (computed once: the columns never change;
        rows replaced since the snapshot are told apart by ``dead``)."""
        if self._product_order is None:
            self._product_order = np.argsort(np.asarray(self.columns["product_id"]), kind="stable")
        return self._product_order

    def _plan_ivf(self) -> None:
        """What the IVF planner needs, read once from the index: the centroids (lists are ranked
        for a query with one small matrix product) and which list each row is in (so a filter's
        matching rows can be counted per list)."""
        ivf = faiss.extract_index_ivf(self.index)
        self._ivf = ivf
        self._centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
        self._list_of_row = np.zeros(self.size, dtype=np.int32)
        self._offset_of_row = np.zeros(self.size, dtype=np.int32)
        invlists = ivf.invlists
        for list_no in range(ivf.nlist):
            n = invlists.list_size(list_no)
            if n:
                rows = faiss.rev_swig_ptr(invlists.get_ids(list_no), n)
                self._list_of_row[rows] = list_no
                self._offset_of_row[rows] = np.arange(n, dtype=np.int32)
        self._list_sizes = np.bincount(self._list_of_row, minlength=ivf.nlist)

    # rows are sorted by image id when a base is built, so finding one is a binary search
    def rows_of(self, image_ids: np.ndarray) -> np.ndarray:
        """Row of each image id, or -1 where the base does not hold it (or it is dead)."""
        if not self.size:
            return np.full(len(image_ids), -1, dtype=np.int64)
        ids = self.columns["image_id"]
        pos = np.minimum(np.searchsorted(ids, image_ids), self.size - 1)
        rows = np.where(ids[pos] == image_ids, pos, -1)
        live = rows >= 0
        rows[live] = np.where(self.dead[rows[live]], -1, rows[live])
        return rows

    def kill(self, rows: np.ndarray) -> None:
        rows = rows[rows >= 0]
        if len(rows):
            self.dead[rows] = True
            self.n_dead = int(self.dead.sum())
            self._version += 1

    def alive_mask(self) -> np.ndarray:
        """Rows of active products not deleted since the snapshot (cached until a change)."""
        cached = self._alive_cache
        if cached is not None and cached[0] == self._version:
            return cached[1]
        mask = np.asarray(self.columns["active"], dtype=bool) & ~self.dead
        self._alive_cache = (self._version, mask)
        return mask

    def mask(self, flt: Filter) -> np.ndarray:
        return self.plan(flt).mask

    def vectors(self, rows: np.ndarray) -> np.ndarray | None:
        """The stored vectors of a few rows (flat: float32; ivf: its float16 codes), or None
        for PQ codes, which are not vectors."""
        if self.params.kind == "flat":
            return np.stack([self.index.reconstruct(int(r)) for r in rows]) if len(rows) else None
        if self.params.kind != "ivf":
            return None
        ivf, out = self._ivf, []
        for row in rows.tolist():
            list_no, offset = int(self._list_of_row[row]), int(self._offset_of_row[row])
            size = ivf.invlists.list_size(list_no)
            codes = faiss.rev_swig_ptr(ivf.invlists.get_codes(list_no), size * ivf.code_size)
            start = offset * ivf.code_size
            out.append(np.frombuffer(codes[start : start + ivf.code_size], dtype=np.float16))
        return np.stack(out).astype(np.float32) if out else None

    def plan(self, flt: Filter) -> FilterPlan:
        key = (flt, self._version)
        with self._plans_lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        mask = self.alive_mask() if flt.is_empty else flt.mask(self.columns) & ~self.dead
        members = int(np.count_nonzero(mask))
        everything = members == self.size
        plan = FilterPlan(
            mask=mask,
            members=members,
            bitmap=None if everything else np.packbits(mask, bitorder="little"),
        )
        if self.params.kind != "flat":
            plan.per_list = (
                self._list_sizes
                if everything
                else np.bincount(self._list_of_row[mask], minlength=self.params.nlist)
            )
        with self._plans_lock:
            self._plans[key] = plan
            for old in [key for key in self._plans if key[1] != self._version]:
                del self._plans[old]  # the base changed since: those masks are stale
            while len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return plan

    def search(self, query: np.ndarray, k: int, plan: FilterPlan) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` rows of ``plan``'s filter: (scores, rows), best first. The filter is applied
        inside the FAISS scan; how far an approximate index probes follows where its rows are."""
        k = min(k, plan.members)
        if k <= 0:
            return _EMPTY
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        everything = plan.bitmap is None
        members = plan.members
        selector, packed = None, plan.bitmap
        if not everything:
            # Points into plan.bitmap, which the plan keeps alive during the search.
            selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(packed))
        if self.params.kind == "flat":
            params = None if everything else faiss.SearchParameters(sel=selector)
            return self._run(self.index.search, q, k, params, packed)
        # Lists nearest the query first; probe until about as many *matching* vectors will be
        # scored as an unfiltered query scores (nprobe lists' worth, and never fewer than
        # MIN_CANDIDATES, so a deeper page looks at the same candidates as a shallower one).
        # Counting matches per list makes this right for filters that cluster (a category
        # lives in its own lists) as well as for scattered ones; a filter with fewer rows than
        # the budget is answered exactly (every list probed, only its rows scored).
        nlist = self.params.nlist
        per_list = plan.per_list
        closeness = self._centroids @ q[0]
        order = np.argsort(-closeness)
        budget = max(self.params.nprobe * self.size / nlist, MIN_CANDIDATES)
        if not everything:
            # A filter's best matches may sit far from the query (the best t-shirts for a photo
            # of a bag): score twice as many matching vectors (measured: category recall@10
            # 0.94 -> 0.98 for image queries at 100k, ~1 ms).
            budget *= FILTERED_BUDGET
        reached = np.cumsum(per_list[order])
        # ... and never fewer lists than nprobe: text queries sit away from the images (the
        # modality gap) and their nearest lists are often big, so a vector budget alone
        # probes too few of them (measured at 1M: text recall@10 0.895 vs 0.960 at nprobe 32).
        probe = min(nlist, max(int(np.searchsorted(reached, budget)) + 1, self.params.nprobe))
        if not everything and members <= budget:
            probe = nlist
        while True:
            lists = order[:probe]
            assign = lists.reshape(1, -1).astype(np.int64)
            dis = closeness[lists].reshape(1, -1).astype(np.float32)
            params = faiss.SearchParametersIVF(nprobe=probe)
            if selector is not None:
                params.sel = selector

            def run(x, kk, params=params, assign=assign, dis=dis):
                # The Python wrapper of search_preassigned takes no params (the selector and
                # our own probe count): call the C++ method directly.
                out_d = np.empty((1, kk), dtype=np.float32)
                out_i = np.empty((1, kk), dtype=np.int64)
                self._ivf.search_preassigned_c(
                    1,
                    faiss.swig_ptr(x),
                    kk,
                    faiss.swig_ptr(assign),
                    faiss.swig_ptr(dis),
                    faiss.swig_ptr(out_d),
                    faiss.swig_ptr(out_i),
                    False,
                    params,
                )
                return out_d, out_i

            scores, rows = self._run(run, q, k, None, packed)
            if len(rows) >= k or probe >= nlist:
                return scores, rows
            probe = min(nlist, probe * 4)  # too few matches near the query: probe wider

    @staticmethod
    def _run(search, q, k, params, keep_alive=None) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = search(q, k) if params is None else search(q, k, params=params)
        del keep_alive
        valid = rows[0] >= 0  # FAISS pads with -1 when it found fewer than k
        return scores[0][valid], rows[0][valid]


class DeltaSegment:
    """Vectors upserted since the snapshot, searched exactly (it stays small: compaction folds
    it into a new base). Rows are reused in place when an image is updated again."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.size = 0
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.columns = {name: np.zeros(0, dtype=dtype) for name, dtype in COLUMNS.items()}
        self.alive = np.zeros(0, dtype=bool)
        self.row: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(np.count_nonzero(self.alive[: self.size]))

    def _grow(self, need: int) -> None:
        cap = len(self.vectors)
        if need <= cap:
            return
        new_cap = max(need, cap * 2, 256)
        vectors = np.zeros((new_cap, self.dim), dtype=np.float32)
        vectors[:cap] = self.vectors
        self.vectors = vectors
        for name, arr in self.columns.items():
            grown = np.zeros(new_cap, dtype=arr.dtype)
            grown[:cap] = arr
            self.columns[name] = grown
        alive = np.zeros(new_cap, dtype=bool)
        alive[:cap] = self.alive
        self.alive = alive

    def upsert(self, vectors: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        with self._lock:
            ids = columns["image_id"]
            rows = np.empty(len(ids), dtype=np.int64)
            fresh = 0
            for i, image_id in enumerate(ids.tolist()):
                row = self.row.get(image_id)
                if row is None:
                    row = self.size + fresh
                    self.row[image_id] = row
                    fresh += 1
                rows[i] = row
            self._grow(self.size + fresh)
            self.size += fresh
            self.vectors[rows] = vectors
            for name in COLUMNS:
                self.columns[name][rows] = columns[name]
            self.alive[rows] = True

    def delete(self, image_ids: np.ndarray) -> None:
        with self._lock:
            for image_id in image_ids.tolist():
                row = self.row.pop(image_id, None)
                if row is not None:
                    self.alive[row] = False

    def top(
        self, query: np.ndarray, k: int, flt: Filter
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Best ``k`` rows kept by ``flt``: (scores best first, copies of their columns)."""
        with self._lock:
            n = self.size
            cols = {name: arr[:n] for name, arr in self.columns.items()}
            keep = flt.mask(cols) & self.alive[:n]
            rows = np.flatnonzero(keep)
            if k <= 0 or not len(rows):
                return np.zeros(0, np.float32), {c: a[:0].copy() for c, a in cols.items()}
            scores = (self.vectors[:n] @ query)[rows]
            if len(rows) > k:
                top = np.argpartition(-scores, k - 1)[:k]
            else:
                top = np.arange(len(rows))
            top = top[np.argsort(-scores[top], kind="stable")]
            picked = rows[top]
            return scores[top].astype(np.float32), {c: a[picked].copy() for c, a in cols.items()}

    def vector(self, image_id: int) -> np.ndarray | None:
        with self._lock:
            row = self.row.get(image_id)
            return None if row is None else self.vectors[row].copy()

    def live_columns(self) -> dict[str, np.ndarray]:
        """Copies of the columns of the rows alive now."""
        with self._lock:
            rows = np.flatnonzero(self.alive[: self.size])
            return {c: a[rows].copy() for c, a in self.columns.items()}
