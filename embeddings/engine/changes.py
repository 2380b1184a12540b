"""The change log (IndexChange rows) read as batches, and the rows a store needs for them.

A ``Cursor`` remembers the last change id applied and the ids below it that were missing when
read ("gaps": a transaction that took an id but had not committed yet). Reading returns the
images and products that changed since; applying a change twice or late is harmless because
consumers re-read the current rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db.models import Max, Q

from catalog.models import ProductImage

from ..models import ImageEmbedding, IndexChange, IndexChangePrune
from .columns import ATTRIBUTE_SLOTS, NO_VALUE, Attrs, attribute_code, columns_from

# A gap older than this is a rolled-back transaction, not a slow one.
GAP_TIMEOUT_S = 120.0
MAX_GAPS = 2000
# Bounds the work one read does; the rest follows on the next.
MAX_CHANGES_PER_READ = 20_000
SQL_CHUNK = 500  # SQLite allows ~999 parameters per query.


def facet_slots() -> tuple[str, ...]:
    """The attributes held in the engine's slots, in slot order (CATALOG_FACET_ATTRIBUTES)."""
    return tuple(settings.CATALOG_FACET_ATTRIBUTES)[:ATTRIBUTE_SLOTS]


def chunks(seq: list[int], size: int = SQL_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def pruned_through() -> int:
    """Every change id up to this one has been deleted from the log (0: never pruned)."""
    return IndexChangePrune.objects.aggregate(m=Max("pruned_through"))["m"] or 0


def latest_change() -> int:
    return IndexChange.objects.aggregate(m=Max("id"))["m"] or 0


@dataclass
class Cursor:
    seq: int = 0
    gaps: dict[int, float] = field(default_factory=dict)  # change id -> first seen (monotonic)

    @classmethod
    def at_now(cls) -> Cursor:
        """A cursor for state read *after* this call: the latest change id, with the recent ids
        below it still missing recorded as gaps (transactions in flight)."""
        pruned = pruned_through()
        seq = max(latest_change(), pruned)
        low = max(seq - 1000, pruned)
        recent = set(IndexChange.objects.filter(id__gt=low).values_list("id", flat=True))
        now = time.monotonic()
        return cls(seq=seq, gaps={i: now for i in range(low + 1, seq + 1) if i not in recent})

    def to_meta(self) -> dict:
        return {"seq": self.seq, "gaps": sorted(self.gaps)}

    @classmethod
    def from_meta(cls, meta: dict) -> Cursor:
        now = time.monotonic()
        return cls(seq=int(meta.get("seq", 0)), gaps={int(g): now for g in meta.get("gaps", [])})

    def behind_pruned_log(self) -> bool:
        """True when changes this cursor still needs were pruned: only a rebuild catches up."""
        return self.seq < pruned_through()


@dataclass
class Batch:
    rows: int = 0
    upserts: set[int] = field(default_factory=set)  # image ids (this model's vector changed)
    deletes: set[int] = field(default_factory=set)  # image ids gone from the catalog
    # Products whose own fields changed (product rows of the log only: an image's embedding
    # leaves its product's words alone).
    products: set[int] = field(default_factory=set)


def read_changes(
    cursor: Cursor, *, model_id: str | None, limit: int = MAX_CHANGES_PER_READ
) -> Batch:
    """The changes after ``cursor`` (plus its gaps that have committed since), and advances it.
    ``model_id`` None keeps every model's upserts (a consumer that only needs products)."""
    now = time.monotonic()
    cursor.gaps = {g: t for g, t in cursor.gaps.items() if now - t < GAP_TIMEOUT_S}
    query = Q(id__gt=cursor.seq)
    if cursor.gaps:
        query |= Q(id__in=list(cursor.gaps))
    rows = list(
        IndexChange.objects.filter(query)
        .order_by("id")
        .values_list("id", "image_id", "product_id", "op", "model_id")[:limit]
    )
    batch = Batch(rows=len(rows))
    if not rows:
        return batch
    seen = {r[0] for r in rows}
    for change_id in seen:
        cursor.gaps.pop(change_id, None)
    new_max = max(cursor.seq, max(seen))
    for missing in range(cursor.seq + 1, new_max + 1):
        if missing not in seen:
            cursor.gaps.setdefault(missing, now)
    if len(cursor.gaps) > MAX_GAPS:
        for old in sorted(cursor.gaps)[: len(cursor.gaps) - MAX_GAPS]:
            del cursor.gaps[old]
    cursor.seq = new_max
    for _, image_id, product_id, op, row_model in rows:
        if op == IndexChange.Op.PRODUCT:
            batch.products.add(product_id)
        elif op == IndexChange.Op.DELETE:
            batch.deletes.add(image_id)
            batch.upserts.discard(image_id)
        elif model_id is None or row_model == model_id:
            batch.upserts.add(image_id)
            batch.deletes.discard(image_id)
    return batch


def images_of_products(product_ids: Iterable[int]) -> set[int]:
    out: set[int] = set()
    for chunk in chunks(sorted(product_ids)):
        out.update(ProductImage.objects.filter(product_id__in=chunk).values_list("id", flat=True))
    return out


_ROW_FIELDS = (
    "image_id",
    "vector",
    "image__product_id",
    "image__product__is_active",
    "image__product__category_id",
    "image__product__price",
    "image__product__attributes",
    "image__product__boost",
    "image__product__stock",
    "image__product__created_at",
    "image__product__popularity",
)


def attribute_codes(attributes: dict | None, names: tuple[str, ...]) -> tuple[int, ...]:
    """The engine's slot codes of a product's attributes for the facet attributes ``names``."""
    attributes = attributes or {}
    return tuple(
        attribute_code(str(attributes[name])) if attributes.get(name) else NO_VALUE
        for name in names
    )


def _parse(values: Iterable[tuple], dim: int, model_id: str):
    names = facet_slots()
    for row in values:
        image_id, blob, product_id, active, category_id, price, attributes = row[:7]
        boost, stock, created_at, popularity = row[7:]
        vec = np.frombuffer(bytes(blob), dtype="<f4")
        if vec.shape[0] != dim:
            raise ValueError(
                f"Stored vector for image {image_id} has dimension {vec.shape[0]}, expected {dim} "
                f"for model {model_id!r}. Run `manage.py reembed` to recompute the vectors."
            )
        codes = attribute_codes(attributes, names)
        created = created_at.timestamp() if created_at is not None else None
        yield (
            image_id,
            vec,
            Attrs(product_id, active, category_id, price, codes, boost, stock, created, popularity),
        )


def load_rows(
    image_ids: Iterable[int], *, model_id: str, dim: int
) -> tuple[np.ndarray, dict[str, np.ndarray], set[int]]:
    """Current vectors and filter columns of ``image_ids`` for ``model_id``: (vectors, columns,
    ids that have no vector of this model any more, which must leave the index)."""
    wanted = sorted(set(image_ids))
    ids: list[int] = []
    vecs: list[np.ndarray] = []
    attrs: list[Attrs] = []
    for chunk in chunks(wanted):
        qs = ImageEmbedding.objects.filter(model_id=model_id, image_id__in=chunk)
        for image_id, vec, attr in _parse(qs.values_list(*_ROW_FIELDS), dim, model_id):
            ids.append(image_id)
            vecs.append(vec)
            attrs.append(attr)
    vectors = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    return vectors, columns_from(ids, attrs), set(wanted) - set(ids)


def load_all_rows(
    *, model_id: str, dim: int, progress: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every stored vector of ``model_id`` with its filter columns, sorted by image id."""
    from tqdm import tqdm

    qs = ImageEmbedding.objects.filter(model_id=model_id).order_by("image_id")
    count = qs.count()
    vectors = np.zeros((count, dim), dtype=np.float32)
    ids: list[int] = []
    attrs: list[Attrs] = []
    values = qs.values_list(*_ROW_FIELDS).iterator(chunk_size=5000)
    bar = tqdm(values, total=count, desc="Loading vectors", unit="vec", disable=not progress)
    for image_id, vec, attr in _parse(bar, dim, model_id):
        if len(ids) >= count:  # rows added while we read; the change log brings them
            break
        vectors[len(ids)] = vec
        ids.append(image_id)
        attrs.append(attr)
    return vectors[: len(ids)], columns_from(ids, attrs)
