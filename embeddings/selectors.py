"""Search: a text and/or image query -> ranked products.

Query -> vector (text tower or image tower, text vectors cached) -> FAISS top-k image ids ->
products (several images of one product collapse to one result, best score wins) -> shopper
filters (category, price, active only) -> at most ``limit`` results, best first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.conf import settings
from PIL import Image

from catalog.models import Product, ProductImage
from catalog.selectors import product_filter, product_queryset

from . import runtime
from .encoder import l2_normalize
from .models import ImageEmbedding

MAX_QUERY_CHARS = 500
MAX_RESULTS = 1000


class SearchError(ValueError):
    """A search that cannot be answered as asked; the message tells the user what to change."""


@dataclass(frozen=True)
class ProductHit:
    product: Product
    score: float
    image_id: int


class RankedProducts(Sequence):
    """Ranked search results: cheap ids and scores for the whole ranking, Product rows loaded
    only for the slice that is shown (a page). Works with Django's Paginator and len()."""

    def __init__(self, ranked: list[tuple[int, float, int]], products_qs) -> None:
        self._ranked = ranked  # (product id, score, best image id), best first
        self._qs = products_qs
        self._cache: dict[int, Product] = {}

    def __len__(self) -> int:
        return len(self._ranked)

    def count(self) -> int:  # Paginator prefers count()
        return len(self._ranked)

    def __iter__(self):
        # One query for the whole list, not Sequence's default of one per item.
        return iter(self._hydrate(self._ranked))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._hydrate(self._ranked[index])
        return self._hydrate([self._ranked[index]])[0]

    def _hydrate(self, rows: list[tuple[int, float, int]]) -> list[ProductHit]:
        missing = [pid for pid, _, _ in rows if pid not in self._cache]
        if missing:
            self._cache.update(self._qs.in_bulk(missing))
        # A product deleted between ranking and loading is simply left out.
        return [
            ProductHit(product=self._cache[pid], score=score, image_id=image_id)
            for pid, score, image_id in rows
            if pid in self._cache
        ]

    @property
    def product_ids(self) -> list[int]:
        return [pid for pid, _, _ in self._ranked]


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], value: np.ndarray) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_text_cache = _LRU(settings.EMBEDDINGS_QUERY_CACHE_SIZE)


def normalize_query_text(text: str | None) -> str:
    return " ".join((text or "").split())


def text_vector(text: str) -> np.ndarray:
    encoder = runtime.get_encoder()
    key = (encoder.model_id, text.lower())
    vec = _text_cache.get(key)
    if vec is None:
        vec = encoder.encode_texts([text])[0]
        _text_cache.put(key, vec)
    return vec


def image_vector(image: Image.Image) -> np.ndarray:
    return runtime.get_encoder().encode_images([image])[0]


def query_vector(
    *, text: str | None = None, image: Image.Image | None = None, image_vec: np.ndarray | None = None
) -> np.ndarray:
    """The query's unit vector. Text and image together: the normalised mean of both.

    ``image_vec`` is an image query already encoded (a unit vector from an earlier
    ``query_vector(image=...)``): the search page keeps it between requests instead of the photo.
    """
    text = normalize_query_text(text)
    if not text and image is None and image_vec is None:
        raise SearchError("Give a text query (q), an image, or both.")
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(f"The text query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}.")
    parts = []
    if text:
        parts.append(text_vector(text))
    if image is not None:
        parts.append(image_vector(image))
    if image_vec is not None:
        parts.append(np.asarray(image_vec, dtype=np.float32))
    return l2_normalize(np.mean(parts, axis=0))


def product_search_by_vector(
    vector: np.ndarray,
    *,
    limit: int = 100,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    exclude_product_ids: frozenset[int] = frozenset(),
    min_score: float | None = None,
) -> RankedProducts:
    """Best products for a query vector: at most ``limit``, best first, filters applied.

    Ranking touches only ids (FAISS hits, then one image -> product query per 500 hits);
    Product rows are loaded when a slice of the result is read.
    """
    limit = max(0, min(limit, MAX_RESULTS))
    products = product_filter(product_queryset(), category=category, price_min=price_min, price_max=price_max)
    live = runtime.get_live_index()
    total = len(live)
    if limit == 0 or total == 0:
        return RankedProducts([], products)
    best: dict[int, tuple[float, int]] = {}  # product id -> (score, image id)
    checked: set[int] = set()
    k = min(total, max(limit * 4, 64))
    while True:
        hits = live.index.search(vector.reshape(1, -1), k)[0]
        new = [h for h in hits if h.id not in checked]
        if min_score is not None:
            new = [h for h in new if h.score >= min_score]
        checked.update(h.id for h in new)
        owners = _image_owners([h.id for h in new], products)
        for hit in new:
            product_id = owners.get(hit.id)
            if product_id is None or product_id in exclude_product_ids:
                continue
            if product_id not in best or hit.score > best[product_id][0]:
                best[product_id] = (hit.score, hit.id)
        below_threshold = min_score is not None and hits and hits[-1].score < min_score
        if len(best) >= limit or k >= total or below_threshold:
            break
        k = min(total, k * 4)

    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:limit]
    return RankedProducts([(pid, score, image_id) for pid, (score, image_id) in ranked], products)


def _image_owners(image_ids: list[int], products) -> dict[int, int]:
    """image id -> product id, for images whose product passes the filters."""
    owners: dict[int, int] = {}
    for start in range(0, len(image_ids), 500):
        chunk = image_ids[start : start + 500]
        owners.update(
            ProductImage.objects.filter(id__in=chunk, product__in=products.values("id")).values_list(
                "id", "product_id"
            )
        )
    return owners


def product_search(
    *,
    text: str | None = None,
    image: Image.Image | None = None,
    limit: int = 100,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
) -> RankedProducts:
    """Products matching a text query, an image query, or both (their mean vector).

    Text-only queries drop results below the model's "no good match" score (runtime.get_min_score),
    so a query that matches nothing
    in the catalog returns an honest empty list instead of arbitrary products.
    """
    vector = query_vector(text=text, image=image)
    min_score = runtime.get_min_score() if image is None else None
    return product_search_by_vector(
        vector, limit=limit, category=category, price_min=price_min, price_max=price_max, min_score=min_score
    )


def product_vector(*, product_id: int) -> np.ndarray | None:
    """The normalised mean of a product's stored image vectors, or None if none is indexed."""
    model_id = runtime.get_encoder().model_id
    blobs = ImageEmbedding.objects.filter(image__product_id=product_id, model_id=model_id).values_list(
        "vector", flat=True
    )
    vectors = [np.frombuffer(bytes(b), dtype="<f4") for b in blobs]
    if not vectors:
        return None
    return l2_normalize(np.mean(vectors, axis=0))


def product_similar(
    *,
    product_id: int,
    limit: int = 12,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
) -> RankedProducts:
    """"More like this": products whose images look like this product's images."""
    vector = product_vector(product_id=product_id)
    if vector is None:
        return RankedProducts([], Product.objects.none())
    return product_search_by_vector(
        vector,
        limit=limit,
        category=category,
        price_min=price_min,
        price_max=price_max,
        exclude_product_ids=frozenset({product_id}),
    )


def index_status_counts() -> dict[str, int]:
    from django.db.models import Count

    rows = ProductImage.objects.values("index_status").annotate(n=Count("id"))
    counts = {status: 0 for status in ProductImage.IndexStatus.values}
    counts.update({row["index_status"]: row["n"] for row in rows})
    return counts


def clear_query_cache() -> None:
    _text_cache.clear()
