"""The safety net between the catalog and the vectors: finds images whose embedding was lost or
is out of date, and queues them again.

An upload's task can be lost: the broker was down when the save committed (the save still
succeeds, see ``services.images_enqueue``), Redis restarted without persistence, a worker died
and the message slipped past the visibility timeout. Celery beat runs ``images_reconcile``
every EMBEDDINGS_RECONCILE_INTERVAL seconds, so nothing stays pending for longer than about
interval + grace (+ the broker's visibility timeout if a worker dies with the re-queued task).

Queuing is idempotent: the task skips an image whose content already has a vector of the
serving model, and a queued image is not queued again before another grace period has passed.
Failed images (unreadable files) are not retried; staff replace them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Min, OuterRef, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.models import ProductImage

from . import services
from .models import ImageEmbedding


@dataclass(frozen=True)
class ReconcileOutcome:
    stuck_pending: int  # pending longer than the grace period since they were queued
    missing_vector: int  # marked indexed, but no vector of the serving model
    outdated_vector: int  # the vector was computed from other bytes than the image's
    queued: int  # queued now (at most the batch size; 0 on a dry run)
    left: int  # found but beyond this run's batch: the next run takes them

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _grace() -> timedelta:
    return timedelta(seconds=settings.EMBEDDINGS_RECONCILE_GRACE)


def _pending() -> QuerySet[ProductImage]:
    # queued_at is empty on rows queued before the column existed: their creation time stands in.
    return ProductImage.objects.filter(index_status=ProductImage.IndexStatus.PENDING).annotate(
        since=Coalesce("queued_at", "created_at")
    )


def images_needing_embedding(
    *, model_id: str, grace: timedelta | None = None, now: datetime | None = None
) -> dict[str, QuerySet[ProductImage]]:
    """The images the reconcile queues, by reason (disjoint): ``stuck_pending``,
    ``missing_vector``, ``outdated_vector``. Failed images are in none of them."""
    cutoff = (now or timezone.now()) - (grace if grace is not None else _grace())
    vectors = ImageEmbedding.objects.filter(model_id=model_id, image_id=OuterRef("pk"))
    indexed = ProductImage.objects.filter(index_status=ProductImage.IndexStatus.INDEXED)
    return {
        "stuck_pending": _pending().filter(since__lt=cutoff),
        "missing_vector": indexed.filter(~Exists(vectors)),
        "outdated_vector": indexed.filter(
            Exists(vectors.exclude(content_hash=OuterRef("content_hash")))
        ),
    }


def images_reconcile(
    *,
    model_id: str,
    grace: timedelta | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> ReconcileOutcome:
    """Queues (again) up to ``limit`` images that need a vector of ``model_id``, oldest id first.

    A second run right after queues nothing new: queued images get a fresh ``queued_at`` and are
    pending, so they only come back once the grace period has passed again.
    """
    limit = settings.EMBEDDINGS_RECONCILE_BATCH if limit is None else limit
    found = images_needing_embedding(model_id=model_id, grace=grace)
    counts = {reason: rows.count() for reason, rows in found.items()}
    total = sum(counts.values())
    if dry_run or not total:
        return ReconcileOutcome(**counts, queued=0, left=total)
    ids: list[int] = []
    for rows in found.values():
        if len(ids) >= limit:
            break
        ids += rows.order_by("id").values_list("id", flat=True)[: limit - len(ids)]
    with transaction.atomic():  # the tasks are published once the batch is marked
        queued = services.images_enqueue(image_ids=ids)
    return ReconcileOutcome(**counts, queued=queued, left=total - queued)


@dataclass(frozen=True)
class Freshness:
    """How far the vectors lag behind the catalog."""

    pending: int
    oldest_pending_age_s: float | None  # since it was (last) queued; None when nothing is pending
    pending_beyond_grace: int  # the reconcile queues these again at its next run
    grace_s: float
    reconcile_interval_s: float
    visibility_timeout_s: float

    @property
    def drift_bound_s(self) -> float:
        """Once a broker and a worker are up, an upload has its vector within this long (plus
        the time the queue ahead of it takes)."""
        return self.reconcile_interval_s + self.grace_s + self.visibility_timeout_s

    def describe(self) -> str:
        return (
            f"every upload is embedded within {self.drift_bound_s:.0f} s once a broker and a "
            f"worker are up (reconcile every {self.reconcile_interval_s:.0f} s + grace "
            f"{self.grace_s:.0f} s + broker visibility timeout {self.visibility_timeout_s:.0f} s), "
            "plus the time the queue ahead of it takes"
        )

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "drift_bound_s": self.drift_bound_s, "drift_bound": self.describe()}


def index_freshness(*, now: datetime | None = None) -> Freshness:
    now = now or timezone.now()
    grace = _grace()
    pending = _pending()
    oldest = pending.aggregate(m=Min("since"))["m"]
    return Freshness(
        pending=pending.count(),
        oldest_pending_age_s=round((now - oldest).total_seconds(), 1) if oldest else None,
        pending_beyond_grace=pending.filter(since__lt=now - grace).count(),
        grace_s=grace.total_seconds(),
        reconcile_interval_s=float(settings.EMBEDDINGS_RECONCILE_INTERVAL),
        visibility_timeout_s=float(settings.CELERY_BROKER_VISIBILITY_TIMEOUT),
    )
