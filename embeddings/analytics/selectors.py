"""Reads of search analytics: the admin report, aggregated in the database (GROUP BY and
COUNT/AVG/MAX in SQL, never rows summed in Python), over a period [start, end).

Queries are grouped by (query, mode): "red shirt" typed and "red shirt" with a photo are two
lines. Click-through rate (CTR) = searches with at least one click / searches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Avg, Count, Exists, FloatField, Max, OuterRef, Q, QuerySet
from django.db.models.functions import Cast

from .models import SearchClick, SearchEvent

DEFAULT_FEW_RESULTS = 5
DEFAULT_ROWS = 20


@dataclass(frozen=True)
class QueryRow:
    query: str
    mode: str
    searches: int
    clicked: int = 0
    avg_results: float = 0.0
    avg_ms: float = 0.0
    max_ms: float = 0.0

    @property
    def ctr(self) -> float | None:
        return self.clicked / self.searches if self.searches else None

    @property
    def mode_label(self) -> str:
        return SearchEvent.Mode(self.mode).label


@dataclass(frozen=True)
class Summary:
    searches: int
    clicked: int
    zero_results: int
    p50_ms: float | None
    p95_ms: float | None
    by_mode: dict[str, int] = field(default_factory=dict)

    @property
    def ctr(self) -> float | None:
        return self.clicked / self.searches if self.searches else None


@dataclass(frozen=True)
class SearchReport:
    start: datetime
    end: datetime
    few_threshold: int
    summary: Summary
    top: list[QueryRow]
    zero: list[QueryRow]
    few: list[QueryRow]
    slowest: list[QueryRow]


# A subquery, not a join: joining the clicks would repeat a search once per clicked product
# and skew every average.
_HAS_CLICK = Exists(SearchClick.objects.filter(search_id=OuterRef("pk")))


def _events(start: datetime, end: datetime) -> QuerySet[SearchEvent]:
    return SearchEvent.objects.filter(created_at__gte=start, created_at__lt=end)


def _rows(qs: QuerySet, order: tuple[str, ...], limit: int) -> list[QueryRow]:
    grouped = (
        qs.values("query", "mode")
        .annotate(
            searches=Count("pk"),
            clicked=Count("pk", filter=_HAS_CLICK),
            avg_results=Avg(Cast("result_count", FloatField())),
            avg_ms=Avg("latency_ms"),
            max_ms=Max("latency_ms"),
        )
        .order_by(*order, "query", "mode")[:limit]
    )
    return [QueryRow(**row) for row in grouped]


def _percentile(qs: QuerySet[SearchEvent], count: int, q: float) -> float | None:
    # Nearest rank, read by one ORDER BY ... OFFSET query: portable (SQLite has no
    # percentile_cont) and cheap with the created_at index narrowing the period.
    if not count:
        return None
    rank = max(1, math.ceil(q * count))
    return qs.order_by("latency_ms").values_list("latency_ms", flat=True)[rank - 1]


def search_summary(*, start: datetime, end: datetime) -> Summary:
    qs = _events(start, end)
    totals = qs.aggregate(
        searches=Count("pk"),
        clicked=Count("pk", filter=_HAS_CLICK),
        zero_results=Count("pk", filter=Q(result_count=0)),
    )
    by_mode = dict(qs.values_list("mode").annotate(n=Count("pk")).order_by("mode"))
    return Summary(
        **totals,
        p50_ms=_percentile(qs, totals["searches"], 0.50),
        p95_ms=_percentile(qs, totals["searches"], 0.95),
        by_mode=by_mode,
    )


def search_top_queries(*, start: datetime, end: datetime, limit: int = DEFAULT_ROWS):
    """The most frequent queries with their click-through."""
    return _rows(_events(start, end), ("-searches", "-clicked"), limit)


def search_zero_result_queries(*, start: datetime, end: datetime, limit: int = DEFAULT_ROWS):
    """Queries that found nothing: missing products, or words the catalog does not use."""
    return _rows(_events(start, end).filter(result_count=0), ("-searches",), limit)


def search_few_result_queries(
    *,
    start: datetime,
    end: datetime,
    threshold: int = DEFAULT_FEW_RESULTS,
    limit: int = DEFAULT_ROWS,
):
    """Queries that found something, but at most ``threshold`` products."""
    qs = _events(start, end).filter(result_count__gt=0, result_count__lte=threshold)
    return _rows(qs, ("-searches",), limit)


def search_slowest_queries(*, start: datetime, end: datetime, limit: int = DEFAULT_ROWS):
    """Queries by their slowest search (max latency), with the mean beside it."""
    return _rows(_events(start, end), ("-max_ms", "-avg_ms"), limit)


def search_report(
    *,
    start: datetime,
    end: datetime,
    few_threshold: int = DEFAULT_FEW_RESULTS,
    limit: int = DEFAULT_ROWS,
) -> SearchReport:
    return SearchReport(
        start=start,
        end=end,
        few_threshold=few_threshold,
        summary=search_summary(start=start, end=end),
        top=search_top_queries(start=start, end=end, limit=limit),
        zero=search_zero_result_queries(start=start, end=end, limit=limit),
        few=search_few_result_queries(start=start, end=end, threshold=few_threshold, limit=limit),
        slowest=search_slowest_queries(start=start, end=end, limit=limit),
    )
