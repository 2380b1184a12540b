"""A serving process's vector store, kept in step with the database and the machine's snapshot.

``LiveIndex.open`` memory-maps the model's current base (verified; a damaged one is set aside
and rebuilt from the database), then ``sync`` applies the change log written since the base's
sequence to this process's small delta (adds, updates, deletes, product field changes), at most
every EMBEDDINGS_SYNC_INTERVAL. When another process writes a newer base (compaction), ``sync``
switches to it and replays only the changes after it.

``base_build`` makes a new base from the stored vectors (the source of truth): what
``rebuild_index`` runs, and what compaction (celery beat's ``snapshot_index``) runs when the
delta has grown. A base is never written from a process's in-memory state.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
from django.conf import settings

from . import changes
from .columns import Filter
from .kinds import IndexParams, build_index, choose_params, trained_empty
from .segments import BaseSegment
from .snapshot import (
    Snapshot,
    SnapshotError,
    current_base,
    open_snapshot,
    remove_old_bases,
    set_aside,
    write_snapshot,
)
from .store import ProductHit, VectorStore

log = logging.getLogger(__name__)

# A cosine similarity of unit vectors; float16 codes and float32 sums stray a little past 1.
SCORE_BOUND = 1.0 + 1e-3


class IndexDamagedError(SnapshotError):
    """The base this process serves from failed its check while serving (bytes changed under
    it); it is set aside and rebuilt from the database at the next sync."""


def snapshot_root(model_id: str, index_dir: Path | None = None) -> Path:
    """The model's folder of bases: a readable name plus a hash of the full model id."""
    index_dir = Path(index_dir or settings.EMBEDDINGS_INDEX_DIR)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id)[:60].strip("-")
    digest = hashlib.sha1(model_id.encode()).hexdigest()[:12]
    return index_dir / f"{readable}-{digest}"


def params_for(count: int, kind: str | None = None) -> IndexParams:
    return choose_params(
        count,
        kind=kind or settings.EMBEDDINGS_INDEX_KIND,
        ivf_threshold=settings.EMBEDDINGS_IVF_THRESHOLD,
        nlist=settings.EMBEDDINGS_IVF_NLIST,
        nprobe=settings.EMBEDDINGS_IVF_NPROBE,
        pq_m=settings.EMBEDDINGS_IVF_PQ_M,
    )


def base_build(
    *,
    model_id: str,
    dim: int,
    kind: str | None = None,
    root: Path | None = None,
    progress: bool = False,
) -> Path:
    """Writes a new base of every stored vector of ``model_id`` and makes it current.

    The change sequence is noted *before* reading: changes made while reading are replayed by
    the next sync (harmless). The previous base's trained quantizer is reused when the kind and
    list count still fit, so compaction at 1M does not re-run k-means.
    """
    root = root or snapshot_root(model_id)
    cursor = changes.Cursor.at_now()
    vectors, columns = changes.load_all_rows(model_id=model_id, dim=dim, progress=progress)
    params = params_for(len(vectors), kind)
    previous = None
    current = current_base(root)
    if current is not None:
        try:
            import faiss

            previous = faiss.read_index(str(current / "trained.faiss"))
        except (RuntimeError, OSError):
            previous = None
    started = time.monotonic()
    trained = trained_empty(vectors, params, previous=previous)
    index = build_index(vectors, trained)
    meta = {
        "model_id": model_id,
        "dim": dim,
        "params": params.to_dict(),
        "attributes": list(changes.facet_slots()),
        **cursor.to_meta(),
    }
    path = write_snapshot(root, index=index, trained=trained, columns=columns, meta=meta)
    remove_old_bases(root)
    log.info(
        "Wrote index base %s: %d vectors, %s, built in %.1f s",
        path.name,
        len(vectors),
        params.kind,
        time.monotonic() - started,
    )
    return path


class LiveIndex:
    """This process's view of one model's index: base (shared, mmapped) + delta (private)."""

    def __init__(self, *, model_id: str, dim: int, root: Path, snapshot: Snapshot | None) -> None:
        self.model_id = model_id
        self.dim = dim
        self.root = root
        self.base_path = snapshot.path if snapshot else None
        base = None
        if snapshot is not None:
            base = BaseSegment(snapshot.index, snapshot.columns, snapshot.params)
        self.store = VectorStore(dim, base)
        self.cursor = changes.Cursor.from_meta(snapshot.manifest) if snapshot else changes.Cursor()
        self.last_sync = 0.0
        self.last_verified = time.monotonic()
        # Why the base was found damaged while serving; cleared once a new base replaces it.
        self.damaged: str | None = None
        self._lock = threading.Lock()

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, *, model_id: str, dim: int, root: Path | None = None, progress: bool = False
    ) -> LiveIndex:
        """The current base of ``model_id`` (built from the database when there is none, or it
        is damaged or foreign), brought up to date with the change log."""
        root = root or snapshot_root(model_id)
        snapshot = _ensure_base(root, model_id=model_id, dim=dim, progress=progress)
        live = cls(model_id=model_id, dim=dim, root=root, snapshot=snapshot)
        live.sync()
        return live

    @property
    def params(self) -> IndexParams:
        return self.store.params

    @property
    def seq(self) -> int:
        return self.cursor.seq

    def __len__(self) -> int:
        return len(self.store)

    # -- syncing ------------------------------------------------------------------------------
    def sync(self) -> int:
        """Switches to a newer base if one was written, then applies every change since.
        Returns the number of change rows read."""
        with self._lock:
            if self.damaged is None:
                self._reverify_if_due()
            if self.damaged is not None:
                self._replace_damaged_base()
            if self.cursor.behind_pruned_log():
                log.warning(
                    "Index of %s is at change %d but the change log was pruned past it; "
                    "rebuilding its base from the stored vectors",
                    self.model_id,
                    self.cursor.seq,
                )
                base_build(model_id=self.model_id, dim=self.dim, root=self.root)
            self._switch_if_newer()
            total = self._catch_up()
            self.last_sync = time.monotonic()
            return total

    def _catch_up(self) -> int:
        """Applies the change log after this index's cursor; returns the rows read."""
        total = 0
        while True:
            batch = changes.read_changes(self.cursor, model_id=self.model_id)
            total += batch.rows
            self._apply(batch)
            if batch.rows < changes.MAX_CHANGES_PER_READ:
                return total

    def maybe_sync(self, interval: float) -> None:
        if time.monotonic() - self.last_sync >= interval:
            self.sync()

    def _apply(self, batch: changes.Batch) -> None:
        upserts = set(batch.upserts)
        if batch.products:
            upserts |= changes.images_of_products(batch.products)
        upserts -= batch.deletes
        if upserts:
            vectors, columns, gone = changes.load_rows(
                upserts, model_id=self.model_id, dim=self.dim
            )
            self.store.upsert(vectors, columns)
            # An upsert whose vector is gone was deleted (or re-embedded by another model) since.
            batch.deletes |= gone
        if batch.deletes:
            self.store.delete(batch.deletes)

    def _reverify_if_due(self) -> None:
        """Re-checks the served base's checksums every EMBEDDINGS_VERIFY_INTERVAL seconds: bytes
        overwritten in place after it was opened (a bad disk, a stray copy) would otherwise be
        served until the next compaction."""
        interval = settings.EMBEDDINGS_VERIFY_INTERVAL
        if self.base_path is None or interval <= 0:
            return
        if time.monotonic() - self.last_verified < interval:
            return
        self.last_verified = time.monotonic()
        self._verify_base("periodic check")

    def _verify_base(self, reason: str) -> bool:
        """True when the served base still matches its manifest; else sets it aside and marks
        this index damaged (searches refuse until the next sync has rebuilt it)."""
        path = self.base_path
        if path is None:
            return True
        try:
            open_snapshot(path, model_id=self.model_id, dim=self.dim)
        except SnapshotError as exc:
            if path.exists():
                set_aside(path, f"{reason}: {exc}")
            self.damaged = f"{reason}: {exc}"
            return False
        return True

    def _replace_damaged_base(self) -> None:
        snapshot = _ensure_base(self.root, model_id=self.model_id, dim=self.dim)
        fresh = LiveIndex(model_id=self.model_id, dim=self.dim, root=self.root, snapshot=snapshot)
        fresh._catch_up()
        self.store, self.cursor, self.base_path = fresh.store, fresh.cursor, fresh.base_path
        self.damaged = None
        self.last_verified = time.monotonic()
        log.warning("Serving index base %s in place of the damaged one", snapshot.path.name)

    def _switch_if_newer(self) -> None:
        path = current_base(self.root)
        if path is None or path == self.base_path:
            return
        snapshot = _open_current(self.root, model_id=self.model_id, dim=self.dim)
        if snapshot is None:
            return
        fresh = LiveIndex(model_id=self.model_id, dim=self.dim, root=self.root, snapshot=snapshot)
        fresh._catch_up()  # what the new base lacks, before swapping: no search sees less
        self.store, self.cursor, self.base_path = fresh.store, fresh.cursor, fresh.base_path
        log.info("Switched to index base %s", snapshot.path.name)

    # -- queries ------------------------------------------------------------------------------
    def search(self, query: np.ndarray, *, k: int, flt: Filter | None = None) -> list[ProductHit]:
        self._refuse_if_damaged()
        hits = self.store.search(query, k=k, flt=flt)
        if any(not -SCORE_BOUND <= h.score <= SCORE_BOUND for h in hits):  # NaN fails too
            self._scores_out_of_range(max((h.score for h in hits), key=abs))
        # float16 codes and float32 sums stray a hair past +-1: clients get a cosine.
        return [ProductHit(h.product_id, h.image_id, _clip(h.score)) for h in hits]

    def score_images(self, query: np.ndarray, image_ids) -> dict[int, float]:
        self._refuse_if_damaged()
        scores = self.store.score_images(query, image_ids)
        if any(not -SCORE_BOUND <= s <= SCORE_BOUND for s in scores.values()):
            self._scores_out_of_range(max(scores.values(), key=abs))
        return {i: _clip(s) for i, s in scores.items()}

    def _refuse_if_damaged(self) -> None:
        if self.damaged is not None:
            raise IndexDamagedError(
                "The search index was found damaged and is being rebuilt from the database; "
                f"try again in a minute ({self.damaged})."
            )

    def _scores_out_of_range(self, score: float) -> None:
        """A score no pair of unit vectors can have: the base's bytes are suspect. A damaged
        base is set aside and the search refused (never a wrong answer); when the files check
        out (a vector stored unnormalised, say), the scores are clipped and it is logged."""
        reason = f"a search scored {score!r}, outside [-1, 1]"
        with self._lock:
            if self.damaged is None and self._verify_base(reason):
                log.error("%s, but the index base %s checks out", reason, self.base_path)
                return
        self._refuse_if_damaged()

    def count_products(self, flt: Filter | None = None, *, cap: int) -> int:
        return self.store.count_products(flt, cap=cap)

    def product_signals(self, product_ids) -> dict[str, np.ndarray]:
        return self.store.product_signals(product_ids)

    def delta_size(self) -> int:
        """Rows that differ from the base: what compaction would fold in."""
        base = self.store.base
        return len(self.store.delta) + (base.n_dead if base is not None else 0)

    def base_age(self) -> float:
        if self.base_path is None:
            return float("inf")
        try:
            return time.time() - (self.base_path / "manifest.json").stat().st_mtime
        except OSError:
            return float("inf")


def _clip(score: float) -> float:
    return min(1.0, max(-1.0, score))


def _ensure_base(root: Path, *, model_id: str, dim: int, progress: bool = False) -> Snapshot:
    """The current base of ``root``, built from the database when there is none (or it is
    damaged or foreign). Processes on one machine needing it at once build it once."""
    snapshot = _open_current(root, model_id=model_id, dim=dim)
    if snapshot is not None:
        return snapshot
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        snapshot = _open_current(root, model_id=model_id, dim=dim)
        if snapshot is None:
            base_build(model_id=model_id, dim=dim, root=root, progress=progress)
            snapshot = _open_current(root, model_id=model_id, dim=dim)
    if snapshot is None:
        raise SnapshotError(f"could not open the base just written under {root}")
    return snapshot


def _open_current(root: Path, *, model_id: str, dim: int) -> Snapshot | None:
    path = current_base(root)
    if path is None:
        return None
    try:
        snapshot = open_snapshot(path, model_id=model_id, dim=dim)
        built_for = snapshot.manifest.get("attributes")
        if built_for != list(changes.facet_slots()):
            raise SnapshotError(
                f"{path}: its attribute columns hold {built_for}, the shop's facet attributes "
                f"are now {list(changes.facet_slots())}"
            )
        return snapshot
    except SnapshotError as exc:
        # Damaged, truncated, another model's or another version's: never served.
        set_aside(path, str(exc))
        return None
