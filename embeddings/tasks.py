"""Celery tasks: thin, take ids, safe to run twice. The work is in services."""

from __future__ import annotations

from celery import shared_task
from celery.utils.log import get_task_logger
from django.db import InterfaceError, OperationalError

from . import services

logger = get_task_logger(__name__)

# Transient: storage or database briefly unavailable. A corrupt image is not an exception here
# (services record it on the row), so it is never retried.
TRANSIENT_ERRORS = (OSError, OperationalError, InterfaceError, TimeoutError, ConnectionError)


@shared_task(
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    # Below CELERY_BROKER_VISIBILITY_TIMEOUT (300 s): a retry waiting its countdown in a worker is
    # not delivered a second time.
    retry_backoff_max=240,
    retry_jitter=True,
    max_retries=8,
    acks_late=True,
    reject_on_worker_lost=True,
)
def image_embed_task(image_id: int, force: bool = False) -> str:
    return services.image_embed(image_id=image_id, force=force).status


@shared_task(acks_late=True, ignore_result=True)
def index_reconcile_task() -> dict[str, int]:
    """Celery beat, every EMBEDDINGS_RECONCILE_INTERVAL seconds: queues lost or stale embeddings."""
    from . import reconcile, runtime

    outcome = reconcile.images_reconcile(model_id=runtime.get_encoder().model_id)
    if outcome.queued:
        logger.warning(
            "reconcile queued %d image(s): %d pending too long, %d without a vector, %d with an "
            "out-of-date vector; %d left for the next run",
            outcome.queued,
            outcome.stuck_pending,
            outcome.missing_vector,
            outcome.outdated_vector,
            outcome.left,
        )
    return outcome.as_dict()


@shared_task
def index_snapshot_task() -> str:
    return str(services.index_snapshot_write())


@shared_task
def index_changes_prune_task() -> int:
    from datetime import timedelta

    from django.conf import settings

    days = settings.EMBEDDINGS_CHANGE_LOG_DAYS
    if not days or days <= 0:
        return 0
    return services.index_changes_prune(older_than=timedelta(days=days)).deleted


@shared_task(ignore_result=True)
def products_popularity_task() -> int:
    """Celery beat (RANK_POPULARITY_INTERVAL): product popularity from the last
    RANK_POPULARITY_DAYS of search clicks; products whose figure changed are re-indexed."""
    from django.conf import settings

    from .analytics.services import products_popularity_update

    return products_popularity_update(days=settings.RANK_POPULARITY_DAYS)


@shared_task
def search_log_prune_task() -> int:
    """Celery beat, daily: deletes logged searches older than SEARCH_LOG_DAYS (0: keeps all)."""
    from datetime import timedelta

    from django.conf import settings

    from .analytics.services import search_log_prune

    days = settings.SEARCH_LOG_DAYS
    if not days or days <= 0:
        return 0
    return search_log_prune(older_than=timedelta(days=days))


# Acknowledged on receipt (not acks_late): an import outlives the broker's visibility timeout,
# and a late ack would have it delivered to a second worker while the first still runs. A worker
# killed mid-import leaves the job "running"; its page offers to start it again once its
# progress has not moved for a while (embeddings.import_jobs.STALE_AFTER).
@shared_task(acks_late=False, ignore_result=True)
def catalog_import_task(job_id: int) -> str:
    """Admin bulk import: runs the queued CatalogImport ``job_id`` (a no-op for any other)."""
    from .import_jobs import catalog_import_run

    return catalog_import_run(job_id=job_id)
