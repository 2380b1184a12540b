"""Search: a text and/or image query -> ranked products.

Query -> vector (text tower or image tower, text vectors cached) -> FAISS top-k image ids ->
products (several images of one product collapse to one result, best score wins) -> shopper
filters (category, price, active only) -> at most ``limit`` results, best first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db.models import F
from PIL import Image

from catalog.models import Category, Product, ProductImage
from catalog.selectors import product_filter, product_queryset
from searchsite.errors import ServiceUnavailable

from . import hybrid, runtime
from .encoder import l2_normalize
from .engine.columns import Filter
from .engine.live import IndexDamagedError
from .models import ImageEmbedding

MAX_QUERY_CHARS = 500
MAX_RESULTS = 1000
# Hybrid search fuses the first RANK_WINDOW products of the vector and of the word ranking;
# rankings are computed to max(page end, window), never to MAX_RESULTS by default.
RANK_WINDOW = settings.EMBEDDINGS_RANK_WINDOW


class SearchError(ValueError):
    """A search that cannot be answered as asked; the message tells the user what to change."""


@dataclass(frozen=True)
class ProductHit:
    product: Product
    score: float  # cosine similarity of the best-matching image (0 when none is indexed yet)
    image_id: int | None


# (product id, score, best image id or None); a score of None is filled in when shown
Row = tuple[int, "float | None", "int | None"]


class RankedProducts(Sequence):
    """Ranked search results, computed only as deep as they are read.

    ``rank(depth)`` returns (rows best first, total): the first ``depth`` rows of the ranking
    and how many results there are in all (up to MAX_RESULTS). Reading a slice ranks to its end
    (a page, not a thousand results) and loads Product rows for that slice alone, in one query.
    Rankings are deterministic, so page n is the same whatever depth was asked before it.
    Works with Django's Paginator and len().
    """

    def __init__(self, rank, products_qs, *, score=None) -> None:
        self._rank = rank
        self._qs = products_qs
        # Rows may come without a score (products the word side brought in): ``score(products)``
        # gives {product id: (score, image id)} for the ones actually shown.
        self._score = score
        self._rows: list[Row] = []
        self._depth = 0
        self._total: int | None = None
        self._cache: dict[int, Product] = {}

    @classmethod
    def of(cls, rows: list[Row], products_qs) -> RankedProducts:
        """A ranking already computed in full."""
        rows = list(rows)
        return cls(lambda depth: (rows[:depth], len(rows)), products_qs)

    def _ensure(self, depth: int) -> None:
        depth = max(0, min(depth, MAX_RESULTS))
        if self._total is None or (depth > self._depth and len(self._rows) >= self._depth):
            want = max(depth, RANK_WINDOW)
            self._rows, total = self._rank(want)
            self._depth = want
            self._total = min(MAX_RESULTS, max(total, len(self._rows)))

    def __len__(self) -> int:
        self._ensure(RANK_WINDOW)
        assert self._total is not None
        return self._total

    def count(self) -> int:  # Paginator prefers count()
        return len(self)

    def __iter__(self):
        return iter(self[0 : len(self)])

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            self._ensure(stop)
            return self._hydrate(self._rows[start:stop:step])
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(index)
        self._ensure(index + 1)
        return self._hydrate([self._rows[index]])[0]

    def _hydrate(self, rows: list[Row]) -> list[ProductHit]:
        missing = [pid for pid, _, _ in rows if pid not in self._cache]
        if missing:
            self._cache.update(self._qs.in_bulk(missing))
        unscored = [
            self._cache[pid] for pid, score, _ in rows if score is None and pid in self._cache
        ]
        if unscored and self._score is not None:
            found = self._score(unscored)
            rows = [
                (pid, *found.get(pid, (0.0, None))) if score is None else (pid, score, image_id)
                for pid, score, image_id in rows
            ]
        # A product deleted (or changed to no longer match) since ranking is simply left out.
        return [
            ProductHit(product=self._cache[pid], score=score, image_id=image_id)
            for pid, score, image_id in rows
            if pid in self._cache
        ]

    @property
    def queryset(self):
        return self._qs


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
    *,
    text: str | None = None,
    image: Image.Image | None = None,
    image_vec: np.ndarray | None = None,
) -> np.ndarray:
    """The query's unit vector. Text and image together: the normalised mean of both.

    ``image_vec`` is an image query already encoded (a unit vector from an earlier
    ``query_vector(image=...)``): the search page keeps it between requests instead of the photo.
    """
    text = normalize_query_text(text)
    if not text and image is None and image_vec is None:
        raise SearchError("Give a text query (q), an image, or both.")
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(
            f"The text query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}."
        )
    parts = []
    if text:
        parts.append(text_vector(text))
    if image is not None:
        parts.append(image_vector(image))
    if image_vec is not None:
        parts.append(np.asarray(image_vec, dtype=np.float32))
    return l2_normalize(np.mean(parts, axis=0))


def _engine_filter(
    *,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    exclude_product_ids: frozenset[int] = frozenset(),
) -> Filter:
    """The shopper's filters on the engine's columns (a category slug becomes its id)."""
    category_ids = None
    if category:
        category_ids = tuple(Category.objects.filter(slug=category).values_list("id", flat=True))
    return Filter(
        category_ids=category_ids,
        price_min=None if price_min is None else float(price_min),
        price_max=None if price_max is None else float(price_max),
        exclude_product_ids=frozenset(exclude_product_ids),
    )


@contextmanager
def _index_available():
    """A base found damaged while serving is refused until it is rebuilt: a 503 (searchsite
    answers ServiceUnavailable so) rather than a wrong answer."""
    try:
        yield
    except IndexDamagedError as exc:
        raise ServiceUnavailable(str(exc)) from exc


def _vector_rows(live, vector: np.ndarray, flt: Filter, depth: int) -> list[Row]:
    with _index_available():
        hits = live.search(vector, k=depth, flt=flt)
    return [(h.product_id, h.score, h.image_id) for h in hits]


def product_search_by_vector(
    vector: np.ndarray,
    *,
    limit: int = MAX_RESULTS,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    exclude_product_ids: frozenset[int] = frozenset(),
) -> RankedProducts:
    """Best products for a query vector, best first, filters applied inside the index search.

    Ranking reads only the engine's arrays; Product rows are loaded for the slice that is read.
    ``limit`` caps the results (at most MAX_RESULTS).
    """
    limit = max(0, min(limit, MAX_RESULTS))
    products = product_filter(
        product_queryset(), category=category, price_min=price_min, price_max=price_max
    )
    flt = _engine_filter(
        category=category,
        price_min=price_min,
        price_max=price_max,
        exclude_product_ids=exclude_product_ids,
    )
    live = runtime.get_live_index()

    def rank(depth: int) -> tuple[list[Row], int]:
        rows = _vector_rows(live, vector, flt, min(depth, limit))
        return rows, live.count_products(flt, cap=limit)

    return RankedProducts(rank, products)


def product_search(
    *,
    text: str | None = None,
    image: Image.Image | None = None,
    image_vec: np.ndarray | None = None,
    limit: int = MAX_RESULTS,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
) -> RankedProducts:
    """Products matching a text query, an image query (a picture or its stored vector), or both.

    "No good match": when a text-only query's best vector score is below the model's calibrated
    threshold (runtime.get_min_score), the vector results are dropped, so nonsense returns an
    honest empty list. The threshold is about the *best* hit (how it was calibrated), not each
    hit: a real query keeps its whole ranking. With EMBEDDINGS_HYBRID on, products whose words
    match the query (full-text ranking over the whole catalog) are fused in by reciprocal rank
    fusion over the first RANK_WINDOW of each ranking; deeper results continue in vector order.
    A query that is exactly a SKU puts that product first.
    """
    vector = query_vector(text=text, image=image, image_vec=image_vec)
    has_image = image is not None or image_vec is not None
    limit = max(0, min(limit, MAX_RESULTS))
    products = product_filter(
        product_queryset(), category=category, price_min=price_min, price_max=price_max
    )
    flt = _engine_filter(category=category, price_min=price_min, price_max=price_max)
    live = runtime.get_live_index()
    min_score = None if has_image else runtime.get_min_score()
    text = normalize_query_text(text)
    words = bool(text) and settings.EMBEDDINGS_HYBRID

    def rank(depth: int) -> tuple[list[Row], int]:
        depth = min(depth, limit)
        window = min(RANK_WINDOW, limit)
        vec = _vector_rows(live, vector, flt, max(depth, window) + window)
        if min_score is not None and vec and vec[0][1] < min_score:
            vec = []
        vec_total = live.count_products(flt, cap=limit) if vec else 0
        if not words:
            return vec[:depth], vec_total
        lexical = runtime.get_fulltext().search(text, flt=flt, limit=window if vec else limit)
        if not lexical.ids:
            return vec[:depth], vec_total
        known = {pid: (score, image_id) for pid, score, image_id in vec}
        fused = hybrid.hybrid_rank(
            [pid for pid, _, _ in vec[:window]],
            lexical.ids[:window],
            k=settings.EMBEDDINGS_HYBRID_RRF_K,
            lexical_weight=settings.EMBEDDINGS_HYBRID_WEIGHT,
        )
        # A query that is exactly a SKU is a lookup: that product first, whatever fusion says.
        fused = lexical.exact_sku + [pid for pid in fused if pid not in lexical.exact_sku]
        seen = set(fused)
        order = fused + [pid for pid, _, _ in vec if pid not in seen]
        seen.update(order)
        order += [pid for pid in lexical.ids if pid not in seen]
        rows = [(pid, *known.get(pid, (None, None))) for pid in order[:depth]]
        # Products with no indexed image (found by their words alone) add to the vector count;
        # without a vector side, the word matches are the results.
        extra = len(set(lexical.ids) - known.keys()) if not vec else 0
        return rows, max(vec_total + extra, len(lexical.ids))

    def score(shown: list[Product]) -> dict[int, tuple[float, int]]:
        return _best_images(live, vector, shown)

    return RankedProducts(rank, products, score=score)


def _best_images(live, vector: np.ndarray, shown: list[Product]) -> dict[int, tuple[float, int]]:
    """product id -> (best cosine score, image id) for products the word side brought onto a
    page: their images (already loaded with the page) scored from the index's stored vectors,
    no search; products with no indexed image are left out."""
    owner = {image.id: product.id for product in shown for image in product.images.all()}
    best: dict[int, tuple[float, int]] = {}
    with _index_available():
        scores = live.score_images(vector, owner)
    for image_id, score in scores.items():
        pid = owner[image_id]
        if pid not in best or score > best[pid][0]:
            best[pid] = (score, image_id)
    missing = [p.id for p in shown if p.id not in best and p.images.all()]
    if missing:  # stored in a form that is not a vector (PQ codes): ask the index
        only = Filter(product_ids=frozenset(missing))
        for pid, score, image_id in _vector_rows(live, vector, only, len(missing)):
            best[pid] = (score, image_id)
    return best


def product_vector(*, product_id: int) -> np.ndarray | None:
    """The normalised mean of a product's stored image vectors, or None if none is indexed."""
    model_id = runtime.get_encoder().model_id
    blobs = ImageEmbedding.objects.filter(
        image__product_id=product_id, model_id=model_id
    ).values_list("vector", flat=True)
    vectors = [np.frombuffer(bytes(b), dtype="<f4") for b in blobs]
    if not vectors:
        return None
    return l2_normalize(np.mean(vectors, axis=0))


def stored_image_vector(*, image_id: int) -> np.ndarray | None:
    """The serving model's stored vector of one catalog image, or None when there is none or
    it was computed from an earlier version of the file (then the caller encodes the image)."""
    blob = (
        ImageEmbedding.objects.filter(
            image_id=image_id,
            model_id=runtime.get_encoder().model_id,
            content_hash=F("image__content_hash"),
        )
        .values_list("vector", flat=True)
        .first()
    )
    return None if blob is None else np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)


def product_similar(
    *,
    product_id: int,
    limit: int = 12,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
) -> RankedProducts:
    """ "More like this": products whose images look like this product's images."""
    vector = product_vector(product_id=product_id)
    if vector is None:
        return RankedProducts.of([], Product.objects.none())
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
