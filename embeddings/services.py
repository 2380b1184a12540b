"""Writes of the embeddings app: computing and storing vectors, recording index changes,
rebuilding and snapshotting the index."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from catalog.models import ProductImage
from catalog.thumbnails import image_thumbnails_make

from . import runtime
from .encoder import ClipEncoder, ImageDecodeError, load_image
from .engine.fulltext import FullText
from .engine.live import LiveIndex, base_build
from .models import ImageEmbedding, IndexChange, IndexChangePrune

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedOutcome:
    image_id: int
    # "indexed"; "skipped" (unchanged, or superseded by a newer file whose own task embeds it);
    # "failed"; "missing" (the image was deleted before or while it was embedded)
    status: str
    error: str = ""


def _mark(image_id: int, status: str, error: str = "", *, name: str | None = None) -> int:
    """Sets an image's index status; with ``name``, only while the image still has that file (a
    task that read an older file must not mark the newer one). Returns the rows changed."""
    # update() instead of save(): no post_save signal, so marking never re-enqueues a task.
    rows = ProductImage.objects.filter(id=image_id)
    if name is not None:
        rows = rows.filter(image=name)
    return rows.update(
        index_status=status,
        index_error=error[:2000],
        indexed_at=timezone.now() if status == ProductImage.IndexStatus.INDEXED else None,
    )


def _read_image(image: ProductImage) -> tuple[bytes, str]:
    import hashlib

    with image.image.open("rb") as fh:
        data = fh.read()
    return data, hashlib.sha256(data).hexdigest()


def images_embed(
    *, image_ids: Sequence[int], encoder: ClipEncoder | None = None, force: bool = False
) -> list[EmbedOutcome]:
    """Embeds product images and stores their vectors, in one model batch.

    Safe to run twice: an image whose file content and model are unchanged is skipped unless
    ``force``. Missing rows are skipped. An unreadable image is marked failed with a reason and
    not retried; file-system errors (storage briefly unavailable) propagate so the task retries.

    Races end consistent: a vector is stored under the image's row lock and only while the image
    still has the file that was read (an image deleted or given a new file meanwhile is left to
    the delete, or to the newer file's own task); two runs for one image leave one row.
    """
    encoder = encoder or runtime.get_encoder()
    model_id = encoder.model_id
    images = {img.id: img for img in ProductImage.objects.filter(id__in=list(image_ids))}
    existing = dict(
        ImageEmbedding.objects.filter(image_id__in=list(images), model_id=model_id).values_list(
            "image_id", "content_hash"
        )
    )
    outcomes: list[EmbedOutcome] = []
    todo: list[tuple[ProductImage, str, object]] = []
    for image_id in image_ids:
        image = images.get(image_id)
        if image is None:
            outcomes.append(EmbedOutcome(image_id, "missing"))
            continue
        name = image.image.name
        try:
            data, digest = _read_image(image)
        except FileNotFoundError:
            msg = f"The image file {name!r} is missing from storage; upload it again."
            if _mark(image_id, ProductImage.IndexStatus.FAILED, msg, name=name):
                outcomes.append(EmbedOutcome(image_id, "failed", msg))
            else:  # deleted, or given a new file (and the old one removed) meanwhile
                outcomes.append(EmbedOutcome(image_id, "missing"))
            continue
        # Made here because the bytes are in hand; unchanged content costs a few stat calls.
        image_thumbnails_make(image=image, data=data)
        if not force and existing.get(image_id) == digest:
            if image.index_status != ProductImage.IndexStatus.INDEXED:
                _mark(image_id, ProductImage.IndexStatus.INDEXED, name=name)
            if image.content_hash != digest:  # rows from before the hash was recorded
                ProductImage.objects.filter(id=image_id, image=name).update(content_hash=digest)
            outcomes.append(EmbedOutcome(image_id, "skipped"))
            continue
        try:
            pil = load_image(
                data, max_pixels=settings.MAX_IMAGE_PIXELS, min_side=encoder.decode_side
            )
        except ImageDecodeError as exc:
            _mark(image_id, ProductImage.IndexStatus.FAILED, str(exc), name=name)
            outcomes.append(EmbedOutcome(image_id, "failed", str(exc)))
            continue
        todo.append((image, digest, pil))

    if todo:
        vectors = encoder.encode_images([pil for _, _, pil in todo])  # type: ignore[misc]
        for (image, digest, _), vector in zip(todo, vectors, strict=True):
            status = _store(
                image=image, model_id=model_id, digest=digest, vector=vector, force=force
            )
            outcomes.append(EmbedOutcome(image.id, status))
    return outcomes


@transaction.atomic
def _store(
    *, image: ProductImage, model_id: str, digest: str, vector: np.ndarray, force: bool = False
) -> str:
    """Stores one vector under the image's row lock. A delete takes the same lock before it
    removes the image's embeddings (signals.image_deleting), so the two never interleave."""
    current = list(
        ProductImage.objects.select_for_update().filter(id=image.id).values_list("image", flat=True)
    )
    if not current:  # deleted while we computed: nothing to store
        return "missing"
    if current[0] != image.image.name:
        # Given a new file while we computed: this vector is of the old one. The save that
        # changed the file queued its own task, which embeds the new file (or already has).
        return "skipped"
    if (
        not force
        and ImageEmbedding.objects.filter(
            image_id=image.id, model_id=model_id, content_hash=digest
        ).exists()
    ):
        # Another run (a redelivered or re-queued task) stored this content first.
        _mark(image.id, ProductImage.IndexStatus.INDEXED)
        return "skipped"
    ImageEmbedding.objects.update_or_create(
        image_id=image.id,
        model_id=model_id,
        defaults={
            "dim": int(vector.shape[0]),
            "vector": ImageEmbedding.pack(vector),
            "content_hash": digest,
        },
    )
    ProductImage.objects.filter(id=image.id).update(content_hash=digest)
    _mark(image.id, ProductImage.IndexStatus.INDEXED)
    IndexChange.objects.create(
        image_id=image.id, product_id=image.product_id, model_id=model_id, op=IndexChange.Op.UPSERT
    )
    return "indexed"


def image_embed(*, image_id: int, force: bool = False) -> EmbedOutcome:
    return images_embed(image_ids=[image_id], force=force)[0]


def image_index_remove(*, image_id: int, product_id: int | None) -> None:
    """Records that an image left the catalog; every serving index drops it at its next sync."""
    IndexChange.objects.create(image_id=image_id, product_id=product_id, op=IndexChange.Op.DELETE)


def product_index_touch(*, product_id: int) -> None:
    """Records that a product's searchable fields changed (or it was deleted): every serving
    index re-reads its filter columns and words at the next sync."""
    IndexChange.objects.create(product_id=product_id, op=IndexChange.Op.PRODUCT)


def products_index_touch(*, product_ids: Iterable[int]) -> int:
    """``product_index_touch`` for many products (a category renamed or deleted)."""
    rows = [IndexChange(product_id=pid, op=IndexChange.Op.PRODUCT) for pid in product_ids]
    IndexChange.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


# After a failed publish, skip publishing for this long: a product saved with ten images while
# the broker is down then costs one bounded publish attempt, not ten. The skipped images stay
# pending; the periodic reconcile queues them once the broker is back.
_PUBLISH_PAUSE_S = 5.0
_publish_paused_until = 0.0


def images_enqueue(*, image_ids: Iterable[int], force: bool = False) -> int:
    """Marks images pending and queues their embedding once the transaction commits.

    Never raises because of the broker: the rows are committed by then, and a request that
    failed after its commit would make a retrying client save twice. An image whose task could
    not be published stays ``pending`` and is queued again by ``images_reconcile``.
    """
    ids = list(image_ids)
    ProductImage.objects.filter(id__in=ids).update(
        index_status=ProductImage.IndexStatus.PENDING, index_error="", queued_at=timezone.now()
    )
    for image_id in ids:
        transaction.on_commit(lambda i=image_id: _publish([i], force=force))
    return len(ids)


def _publish(image_ids: list[int], *, force: bool) -> int:
    """Publishes one embed task per image; returns how many were published. A broker error is
    logged, not raised (bounded by CELERY_BROKER_CONNECT_TIMEOUT and CELERY_PUBLISH_MAX_RETRIES)."""
    global _publish_paused_until
    from .tasks import image_embed_task

    if image_embed_task.app.conf.task_always_eager:
        # In-process (no broker): nothing to lose, and the task's own errors must surface.
        for image_id in image_ids:
            image_embed_task.apply_async((image_id,), {"force": force})
        return len(image_ids)
    if time.monotonic() < _publish_paused_until:
        log.warning(
            "broker unavailable a moment ago: %d image(s) left pending for the reconcile",
            len(image_ids),
        )
        return 0
    for n, image_id in enumerate(image_ids):
        try:
            image_embed_task.apply_async((image_id,), {"force": force})
        except Exception as exc:  # kombu.OperationalError, redis errors, anything the broker raises
            _publish_paused_until = time.monotonic() + _PUBLISH_PAUSE_S
            log.warning(
                "could not queue the embedding of %d image(s) (%s: %s); they stay pending and "
                "the periodic reconcile queues them once the broker is reachable",
                len(image_ids) - n,
                type(exc).__name__,
                exc,
            )
            return n
    return len(image_ids)


def images_embed_batched(
    *, image_ids: Sequence[int], batch_size: int = 64, force: bool = False, progress: bool = True
) -> dict[str, int]:
    """Embeds ``image_ids`` in this process, ``batch_size`` images per model call (much faster
    than one task per image: bulk import, re-embedding). Returns how many of each outcome."""
    from tqdm import tqdm

    encoder = runtime.get_encoder()
    counts = {"indexed": 0, "skipped": 0, "failed": 0, "missing": 0}
    ids = list(image_ids)
    with tqdm(
        total=len(ids),
        desc=f"Embedding with {encoder.spec.model_name}",
        unit="img",
        disable=not progress,
    ) as bar:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            for outcome in images_embed(image_ids=chunk, encoder=encoder, force=force):
                counts[outcome.status] += 1
            bar.update(len(chunk))
    return counts


def images_reembed_all(
    *, batch_size: int = 64, force: bool = True, progress: bool = True
) -> dict[str, int]:
    """Computes the configured model's vector for every image (model change, or repair).

    Vectors of other models stay in the database but never enter this model's index.
    """
    ids = list(ProductImage.objects.order_by("id").values_list("id", flat=True))
    return images_embed_batched(
        image_ids=ids, batch_size=batch_size, force=force, progress=progress
    )


def index_rebuild(*, kind: str | None = None, progress: bool = True) -> LiveIndex:
    """Builds a new base of the configured model's index from the database (the snapshot every
    serving process on this machine switches to at its next sync) and serves from it here; and
    rebuilds the word index of every product."""
    encoder = runtime.get_encoder()
    base_build(model_id=encoder.model_id, dim=encoder.dim, kind=kind, progress=progress)
    live = LiveIndex.open(model_id=encoder.model_id, dim=encoder.dim)
    runtime.set_live_index(live)
    # The word side, from scratch. A FullText of its own: the runtime's would first build one
    # when the machine has none, only for this to build it again.
    FullText().rebuild(progress=progress)
    return live


def index_snapshot_write(*, force: bool = False) -> Path | None:
    """Compaction: when enough changed since the current base (EMBEDDINGS_COMPACT_CHANGES images,
    or anything and the base is older than EMBEDDINGS_COMPACT_AGE), builds a new base from the
    stored vectors. Returns the new base, or None when the current one is still good."""
    live = runtime.get_live_index(sync=False)
    live.sync()
    changed = live.delta_size()
    due = changed >= settings.EMBEDDINGS_COMPACT_CHANGES or (
        changed and live.base_age() >= settings.EMBEDDINGS_COMPACT_AGE
    )
    if not (force or due):
        return None
    encoder = runtime.get_encoder()
    path = base_build(model_id=encoder.model_id, dim=encoder.dim, kind=None)
    live.sync()  # switches to the new base
    return path


@dataclass(frozen=True)
class PruneOutcome:
    pruned_through: int  # highest change id removed (0: nothing was old enough)
    deleted: int
    kept: int


def index_changes_prune(*, older_than: timedelta, dry_run: bool = False) -> PruneOutcome:
    """Deletes change-log rows older than ``older_than``; vectors and products are untouched.

    The marker (IndexChangePrune) is committed *before* any row goes, so an index that still
    needed a deleted row sees the marker at its next sync and rebuilds from the stored vectors
    rather than silently missing a change.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative")
    cutoff = timezone.now() - older_than
    through = IndexChange.objects.filter(created_at__lt=cutoff).aggregate(m=Max("id"))["m"] or 0
    doomed = IndexChange.objects.filter(id__lte=through).count() if through else 0
    if dry_run or not through:
        return PruneOutcome(through if doomed else 0, doomed, IndexChange.objects.count() - doomed)
    marker = IndexChangePrune.objects.create(pruned_through=through)
    deleted = 0
    while True:
        ids = list(IndexChange.objects.filter(id__lte=through).values_list("id", flat=True)[:500])
        if not ids:
            break
        deleted += IndexChange.objects.filter(id__in=ids).delete()[0]
    IndexChangePrune.objects.filter(id=marker.id).update(deleted=deleted)
    return PruneOutcome(through, deleted, IndexChange.objects.count())
