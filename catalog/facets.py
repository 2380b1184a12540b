"""Facet counts of a set of products: category, each configured attribute, price range.

One GROUP BY query over the products (every combination of category, attribute values and
price bucket that occurs, with its count), summed per facet in Python: the rows are few (the
distinct combinations), whatever the number of products.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from django.conf import settings
from django.db.models import Case, Count, IntegerField, QuerySet, Value, When
from django.db.models.fields.json import KT

from .attributes import facet_attributes
from .models import Product

MAX_VALUES = 20  # per facet, the most frequent first


def price_buckets() -> list[tuple[float, float | None]]:
    """(min, max) of each price bucket, max None for the last (open) one; min <= price < max."""
    edges = list(settings.SEARCH_FACET_PRICE_EDGES)
    return list(zip(edges, [*edges[1:], None], strict=True))


def _number(x: float | None) -> float | int | None:
    return None if x is None else (int(x) if float(x).is_integer() else x)


def product_facets(products: QuerySet[Product]) -> dict[str, list[dict]]:
    """{"category": [{"value": slug, "label": name, "count"}], <attribute>: [{"value", "label",
    "count"}] for each of CATALOG_FACET_ATTRIBUTES, "price": [{"min", "max", "count"}]} over
    ``products``. Values with no product are left out; the most frequent come first."""
    attributes = facet_attributes()
    buckets = price_buckets()
    whens = [
        When(price__gte=Decimal(str(lo)), then=Value(n))
        if hi is None
        else When(price__gte=Decimal(str(lo)), price__lt=Decimal(str(hi)), then=Value(n))
        for n, (lo, hi) in enumerate(buckets)
    ]
    keys = {f"attr_{n}": KT(f"attributes__{name}") for n, name in enumerate(attributes)}
    rows = (
        products.order_by()
        .select_related(None)
        .prefetch_related(None)
        .annotate(price_bucket=Case(*whens, default=Value(-1), output_field=IntegerField()), **keys)
        .values("category__slug", "category__name", "price_bucket", *keys)
        .annotate(n=Count("id"))
    )
    categories: Counter = Counter()
    labels: dict[str, str] = {}
    values: dict[str, Counter] = {name: Counter() for name in attributes}
    prices: Counter = Counter()
    for row in rows:
        n = row["n"]
        if row["category__slug"]:
            categories[row["category__slug"]] += n
            labels[row["category__slug"]] = row["category__name"]
        for i, name in enumerate(attributes):
            value = row[f"attr_{i}"]
            if value not in (None, ""):
                values[name][str(value)] += n
        if row["price_bucket"] >= 0:
            prices[row["price_bucket"]] += n

    def ranked(counter: Counter, label) -> list[dict]:
        top = sorted(counter.items(), key=lambda kv: (-kv[1], label(kv[0])))[:MAX_VALUES]
        return [{"value": v, "label": label(v), "count": c} for v, c in top]

    facets: dict[str, list[dict]] = {"category": ranked(categories, lambda slug: labels[slug])}
    for name in attributes:
        facets[name] = ranked(values[name], lambda v: v)
    facets["price"] = [
        {"min": _number(lo), "max": _number(hi), "count": prices[n]}
        for n, (lo, hi) in enumerate(buckets)
        if prices[n]
    ]
    return facets
