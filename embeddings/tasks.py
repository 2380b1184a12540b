"""Celery tasks: thin, take ids, safe to run twice. The work is in services."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import services

# Transient: storage or database briefly unavailable. A corrupt image is not an exception here
# (services record it on the row), so it is never retried.
TRANSIENT_ERRORS = (OSError, OperationalError, InterfaceError, TimeoutError, ConnectionError)


@shared_task(
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
    acks_late=True,
)
def image_embed_task(image_id: int, force: bool = False) -> str:
    return services.image_embed(image_id=image_id, force=force).status


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
