"""The in-memory index of a serving process, kept in step with the database.

A LiveIndex is a VectorIndex plus the change sequence it covers. ``sync()`` applies the
IndexChange rows written since (adds, updates and deletes, each re-read from the current
ImageEmbedding rows so applying a change twice or late is harmless). Ids that were skipped
in the sequence ("gaps": a transaction that took an id but had not committed when we read)
are asked for again until they show up or expire.

Snapshots are written atomically with the sequence and gaps they cover, so a new process
starts from the snapshot and only syncs the small delta written since. When the log has been
pruned past an index's sequence (an old snapshot, a process asleep for days), the delta is
gone: the index rebuilds itself from the stored vectors instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Max, Q

from .index import IndexParams, VectorIndex
from .models import ImageEmbedding, IndexChange, IndexChangePrune

log = logging.getLogger(__name__)

# A gap older than this is a rolled-back transaction, not a slow one.
GAP_TIMEOUT_S = 120.0
MAX_GAPS = 2000
# Bounds the work one sync does inside a request; the rest follows on the next sync.
MAX_CHANGES_PER_SYNC = 20_000
_SQL_CHUNK = 500  # SQLite allows ~999 parameters per query.


def _chunks(seq: list[int], size: int = _SQL_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def pruned_through() -> int:
    """Every change id up to this one has been deleted from the log (0: never pruned)."""
    return IndexChangePrune.objects.aggregate(m=Max("pruned_through"))["m"] or 0


def snapshot_path(model_id: str, index_dir: Path | None = None) -> Path:
    index_dir = Path(index_dir or settings.EMBEDDINGS_INDEX_DIR)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id)[:60].strip("-")
    digest = hashlib.sha1(model_id.encode()).hexdigest()[:12]
    return index_dir / f"{readable}-{digest}.index"


def index_params_for(count: int, kind: str | None = None) -> IndexParams:
    """Exact search for small catalogs; IVF once exact search gets slow (see make bench)."""
    kind = kind or settings.EMBEDDINGS_INDEX_KIND
    if kind == "auto":
        kind = "ivf" if count >= settings.EMBEDDINGS_IVF_THRESHOLD else "flat"
    if kind == "flat" or count < 1000:
        # Too few vectors to train clusters on; exact search is fast at this size anyway.
        return IndexParams(kind="flat")
    nlist = max(
        1,
        min(settings.EMBEDDINGS_IVF_NLIST or int(4 * np.sqrt(max(count, 1))), max(count // 39, 1)),
    )
    return IndexParams(
        kind="ivf",
        nlist=nlist,
        nprobe=min(settings.EMBEDDINGS_IVF_NPROBE, nlist),
        pq_m=settings.EMBEDDINGS_IVF_PQ_M,
    )


@dataclass
class LiveIndex:
    model_id: str
    index: VectorIndex
    seq: int = 0
    gaps: dict[int, float] = field(default_factory=dict)  # change id -> first seen (monotonic)
    last_sync: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dim(self) -> int:
        return self.index.dim

    def __len__(self) -> int:
        return len(self.index)

    # -- syncing ----------------------------------------------------------------------------
    def sync(self) -> int:
        """Applies every change since the last sync. Returns the number of change rows read."""
        with self._lock:
            total = 0
            pruned = pruned_through()
            if self.seq < pruned:
                log.warning(
                    "Index of %s is at change %d but the change log was pruned through %d; "
                    "rebuilding it from the stored vectors",
                    self.model_id,
                    self.seq,
                    pruned,
                )
                self.index, self.seq, self.gaps = _index_from_db(
                    model_id=self.model_id,
                    dim=self.dim,
                    kind=self.index.params.kind,
                    progress=False,
                )
            while True:
                n = self._sync_once()
                total += n
                if n < MAX_CHANGES_PER_SYNC:
                    break
            self.last_sync = time.monotonic()
            return total

    def maybe_sync(self, interval: float) -> None:
        if time.monotonic() - self.last_sync >= interval:
            self.sync()

    def _sync_once(self) -> int:
        now = time.monotonic()
        self.gaps = {g: t for g, t in self.gaps.items() if now - t < GAP_TIMEOUT_S}
        query = Q(id__gt=self.seq)
        if self.gaps:
            query |= Q(id__in=list(self.gaps))
        rows = list(
            IndexChange.objects.filter(query)
            .order_by("id")
            .values_list("id", "image_id", "op", "model_id")[:MAX_CHANGES_PER_SYNC]
        )
        if not rows:
            return 0
        seen = {r[0] for r in rows}
        for change_id in seen:
            self.gaps.pop(change_id, None)
        new_max = max(self.seq, max(seen))
        for missing in range(self.seq + 1, new_max + 1):
            if missing not in seen:
                self.gaps.setdefault(missing, now)
        if len(self.gaps) > MAX_GAPS:
            for old in sorted(self.gaps)[: len(self.gaps) - MAX_GAPS]:
                del self.gaps[old]
        self.seq = new_max

        latest: dict[int, str] = {}
        for _, image_id, op, model_id in rows:
            if op == IndexChange.Op.DELETE or model_id == self.model_id:
                latest[image_id] = op
        upserts = [i for i, op in latest.items() if op == IndexChange.Op.UPSERT]
        deletes = [i for i, op in latest.items() if op == IndexChange.Op.DELETE]
        found: set[int] = set()
        for chunk in _chunks(upserts):
            pairs = list(
                ImageEmbedding.objects.filter(
                    model_id=self.model_id, image_id__in=chunk
                ).values_list("image_id", "vector")
            )
            if pairs:
                ids = np.array([p[0] for p in pairs], dtype=np.int64)
                vecs = np.stack([np.frombuffer(bytes(p[1]), dtype="<f4") for p in pairs])
                self.index.add(ids, vecs)
                found.update(ids.tolist())
        # An upsert whose vector is gone was deleted since: make sure it is not searchable.
        deletes.extend(i for i in upserts if i not in found)
        if deletes:
            self.index.remove(deletes)
        return len(rows)

    # -- snapshots --------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "seq": self.seq,
            "gaps": sorted(self.gaps),
            "count": len(self.index),
            "kind": self.index.params.kind,
            "written_at": time.time(),
        }

    def save(self, path: Path | None = None) -> Path:
        path = path or snapshot_path(self.model_id)
        with self._lock:
            self.index.save(path, self.meta())
        return path

    @classmethod
    def load(cls, path: Path, *, model_id: str) -> LiveIndex | None:
        """The snapshot at ``path`` if it exists, is readable and holds ``model_id``'s vectors."""
        if not path.is_file():
            return None
        try:
            index, meta = VectorIndex.load(path)
        except Exception as exc:  # a damaged snapshot is rebuilt, not fatal
            log.warning(
                "Ignoring unreadable index snapshot %s (%s); rebuilding from the database",
                path,
                exc,
            )
            return None
        if meta.get("model_id") != model_id:
            log.warning(
                "Snapshot %s holds model %r, not %r; ignoring it",
                path,
                meta.get("model_id"),
                model_id,
            )
            return None
        now = time.monotonic()
        return cls(
            model_id=model_id,
            index=index,
            seq=int(meta.get("seq", 0)),
            gaps={int(g): now for g in meta.get("gaps", [])},
        )


def live_index_build(
    *, model_id: str, dim: int, kind: str | None = None, progress: bool = False
) -> LiveIndex:
    """Builds an index of every stored vector of ``model_id`` from the database, then syncs."""
    index, seq, gaps = _index_from_db(model_id=model_id, dim=dim, kind=kind, progress=progress)
    live = LiveIndex(model_id=model_id, index=index, seq=seq, gaps=gaps)
    live.sync()
    return live


def _index_from_db(
    *, model_id: str, dim: int, kind: str | None, progress: bool
) -> tuple[VectorIndex, int, dict[int, float]]:
    """Every stored vector of ``model_id`` in a new index, with the change sequence it covers
    and the ids below it that may still be transactions in flight (gaps)."""
    from tqdm import tqdm

    # Note the sequence *before* reading vectors: changes made while we read are re-applied by
    # the next sync, which is harmless. Ids below that point that are still missing may be
    # transactions in flight; they are gaps. Pruned ids are not gaps, and the sequence never
    # goes below the pruned point (the log may have been pruned empty).
    pruned = pruned_through()
    seq = max(IndexChange.objects.aggregate(m=Max("id"))["m"] or 0, pruned)
    low = max(seq - 1000, pruned)
    recent = set(IndexChange.objects.filter(id__gt=low).values_list("id", flat=True))
    now = time.monotonic()
    gaps = {i: now for i in range(low + 1, seq + 1) if i not in recent}

    qs = ImageEmbedding.objects.filter(model_id=model_id).order_by("id")
    count = qs.count()
    ids = np.zeros(count, dtype=np.int64)
    vecs = np.zeros((count, dim), dtype=np.float32)
    n = 0
    rows = qs.values_list("image_id", "vector").iterator(chunk_size=2000)
    for image_id, blob in tqdm(
        rows, total=count, desc="Loading vectors", unit="vec", disable=not progress
    ):
        if n >= count:  # rows added while we read; the sync picks them up
            break
        vec = np.frombuffer(bytes(blob), dtype="<f4")
        if vec.shape[0] != dim:
            raise ValueError(
                f"Stored vector for image {image_id} has dimension {vec.shape[0]}, expected {dim} "
                f"for model {model_id!r}. Run `manage.py reembed` to recompute the vectors."
            )
        ids[n], vecs[n] = image_id, vec
        n += 1
    ids, vecs = ids[:n], vecs[:n]
    index = VectorIndex(dim, index_params_for(n, kind))
    if not index.is_trained:
        # k-means on a sample: FAISS would otherwise use up to 256 vectors per cluster (all of
        # 1M vectors at nlist 4000: about an hour on 2 cores); 64 per cluster is plenty.
        sample = min(n, 64 * index.params.nlist)
        rng = np.random.default_rng(0)
        index.train(vecs if sample == n else vecs[rng.choice(n, sample, replace=False)])
    index.add(ids, vecs)
    return index, seq, gaps
