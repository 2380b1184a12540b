"""Writes of search analytics: log a search, record a click, prune old rows.

Logging is a side effect of searching and must never fail a search: a database error while
logging is a warning in the log, and the search goes on without a search id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from catalog.models import Product

from .models import SearchClick, SearchEvent

logger = logging.getLogger(__name__)

PHOTO_QUERY = "photo"
MAX_QUERY_CHARS = 500
PRUNE_BATCH = 5000


class ClickError(ValueError):
    """A click that cannot be recorded; ``code`` is the API error code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def parse_search_id(value: Any) -> uuid.UUID | None:
    """The search id as a UUID, or None when it is not one (a malformed or truncated link)."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _clean_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    # Only what was given, JSON-safe (prices as decimal strings, exact as typed).
    return {
        key: str(value) if not isinstance(value, (int, str)) else value
        for key, value in filters.items()
        if value not in (None, "")
    }


def search_log_record(
    *,
    text: str,
    photo: bool,
    source: str,
    filters: Mapping[str, Any],
    result_count: int,
    latency_ms: float,
    similar_id: int | None = None,
    reuse: str | None = None,
) -> str | None:
    """Logs one search (one INSERT) and returns its id for the client, or None when logging is
    off (SEARCH_LOG_ENABLED) or the database refused the row.

    ``reuse``: the id a later page of the same search carries (`?sid=`); when it is a well-formed
    id it is returned as is and nothing is written, so paging is not counted as new searches.
    ``text`` is stored whitespace-collapsed and lower-cased, so "Red  Shirt" and "red shirt"
    count as one query; a photo alone is stored as "photo", a photo with words as the words
    with mode "text_photo".
    """
    if reuse is not None:
        reused = parse_search_id(reuse)
        if reused is not None:
            return str(reused)
    if not settings.SEARCH_LOG_ENABLED:
        return None
    words = " ".join((text or "").split()).lower()[:MAX_QUERY_CHARS]
    clean = _clean_filters(filters)
    if similar_id is not None:
        mode, words, clean["similar"] = SearchEvent.Mode.SIMILAR, "", similar_id
    elif photo:
        mode = SearchEvent.Mode.TEXT_PHOTO if words else SearchEvent.Mode.PHOTO
        words = words or PHOTO_QUERY
    else:
        mode = SearchEvent.Mode.TEXT
    event = SearchEvent(
        query=words,
        mode=mode,
        source=source,
        filters=clean,
        result_count=max(0, int(result_count)),
        latency_ms=max(0.0, float(latency_ms)),
    )
    try:
        if connection.in_atomic_block:
            # A failed INSERT must not poison the request's transaction (PostgreSQL aborts it).
            with transaction.atomic():
                event.save(force_insert=True)
        else:
            event.save(force_insert=True)
    except DatabaseError as exc:
        logger.warning("search not logged (the search itself went on): %s", exc)
        return None
    return str(event.id)


def search_click_record(*, search_id: Any, product_id: int, now: datetime | None = None) -> bool:
    """Records that ``product_id`` was opened from the results of search ``search_id``.

    Raises ClickError when the id is malformed (``invalid``), names no search logged within
    SEARCH_LOG_CLICK_HOURS (``unknown_search``), or the product is not an active product of
    the catalog (``unknown_product``). A second click on the same product from the same search
    is recorded once: returns whether this click was new.
    """
    parsed = parse_search_id(search_id)
    if parsed is None:
        raise ClickError("search_id is not a search id (a UUID).", code="invalid")
    now = now or timezone.now()
    since = now - timedelta(hours=settings.SEARCH_LOG_CLICK_HOURS)
    if not SearchEvent.objects.filter(pk=parsed, created_at__gte=since).exists():
        raise ClickError(
            f"No search {parsed} in the last {settings.SEARCH_LOG_CLICK_HOURS:g} hours; send the "
            "search_id of a recent search response.",
            code="unknown_search",
        )
    if not Product.objects.filter(pk=product_id, is_active=True).exists():
        raise ClickError(
            f"There is no active product with id {product_id}.", code="unknown_product"
        )
    # The unique constraint keeps one row per (search, product): reloading a product page that
    # was opened from a result is not a second click (get_or_create also settles a race).
    _, created = SearchClick.objects.get_or_create(
        search_id=parsed, product_id=product_id, defaults={"created_at": now}
    )
    return created


def search_log_prune(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Deletes searches logged before ``now - older_than`` with their clicks, in batches (no
    long lock, bounded memory); returns how many searches went. A second run deletes nothing."""
    cutoff = (now or timezone.now()) - older_than
    old = SearchEvent.objects.filter(created_at__lt=cutoff)
    deleted = 0
    while True:
        ids = list(old.values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            return deleted
        with transaction.atomic():
            SearchClick.objects.filter(search_id__in=ids).delete()
            _, per_model = SearchEvent.objects.filter(pk__in=ids).delete()
            deleted += per_model.get(SearchEvent._meta.label, 0)


def products_popularity_update(*, days: int, now: datetime | None = None) -> int:
    """Sets each product's ``popularity`` to log(1 + its search clicks over the last ``days``)
    and records a product change for each one that changed (so serving indexes re-read its
    ranking columns at their next sync). Safe to run twice: the second run changes nothing.
    Returns how many products changed."""
    import math

    from django.db.models import Count

    from ..services import products_index_touch

    since = (now or timezone.now()) - timedelta(days=days)
    clicks = dict(
        SearchClick.objects.filter(created_at__gte=since)
        .values_list("product_id")
        .annotate(n=Count("id"))
        .values_list("product_id", "n")
    )
    wanted = {pid: round(math.log1p(n), 6) for pid, n in clicks.items()}
    current = dict(Product.objects.filter(id__in=list(wanted)).values_list("id", "popularity"))
    stale = set(Product.objects.exclude(popularity=0).values_list("id", flat=True)) - set(wanted)
    changed: list[int] = []
    with transaction.atomic():
        for pid, value in wanted.items():
            if pid in current and current[pid] != value:
                Product.objects.filter(id=pid).update(popularity=value)
                changed.append(pid)
        if stale:
            Product.objects.filter(id__in=stale).update(popularity=0.0)
            changed.extend(stale)
        products_index_touch(product_ids=changed)
    return len(changed)
