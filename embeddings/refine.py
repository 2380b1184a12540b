"""Sorting and facet counts of search results.

A query's results are its ranked candidates (``RankedProducts.all_rows``: up to the result cap,
after the "no good match" rule); sorting reorders those, never the whole catalog, and the facets
count them. Either costs one database query over the candidate ids, never one per candidate.
A browse (no query) is a QuerySet: sorting is an ORDER BY, facets count the filtered catalog.
"""

from __future__ import annotations

from django.db.models import F, QuerySet

from catalog.facets import product_facets
from catalog.models import Product

from .selectors import RankedProducts

SORTS = {
    "relevance": "Relevance",
    "price": "Price: low to high",
    "-price": "Price: high to low",
    "newest": "Newest",
}

_ORDER_BY = {
    "price": (F("price").asc(nulls_last=True), "-id"),
    "-price": (F("price").desc(nulls_last=True), "-id"),
    "newest": ("-created_at", "-id"),
}


def results_sorted(results, *, sort: str):
    """``results`` (RankedProducts or a Product QuerySet) in ``sort`` order (a key of SORTS).
    Ties, and products without a price (last in both price orders), keep relevance order."""
    if sort not in SORTS:
        raise ValueError(f"Unknown sort {sort!r}; use one of {', '.join(SORTS)}.")
    if sort == "relevance":
        return results
    if isinstance(results, QuerySet):
        return results.order_by(*_ORDER_BY[sort])
    rows = results.all_rows()
    fields = dict(
        (pid, (price, created))
        for pid, price, created in Product.objects.filter(id__in=[r[0] for r in rows])
        .order_by()
        .values_list("id", "price", "created_at")
    )
    rank = {row[0]: n for n, row in enumerate(rows)}

    def key(row):
        price, created = fields.get(row[0], (None, None))
        if sort == "newest":
            return (created is None, -(created.timestamp() if created else 0), rank[row[0]])
        if price is None:
            return (True, 0, rank[row[0]])
        return (False, price if sort == "price" else -price, rank[row[0]])

    return results.reordered(sorted((r for r in rows if r[0] in fields), key=key))


def results_facets(results) -> dict[str, list[dict]]:
    """Facet counts (catalog.facets) over what ``results`` can return."""
    if isinstance(results, QuerySet):
        return product_facets(results)
    if isinstance(results, RankedProducts):
        ids = [row[0] for row in results.all_rows()]
        return product_facets(Product.objects.filter(id__in=ids, is_active=True))
    return product_facets(Product.objects.none())
