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
from django.db.models import F, Q
from PIL import Image

from catalog.models import Product, ProductImage
from catalog.selectors import product_filter, product_queryset

from . import hybrid, runtime
from .encoder import l2_normalize
from .models import ImageEmbedding

MAX_QUERY_CHARS = 500
MAX_RESULTS = 1000


class SearchError(ValueError):
    """A search that cannot be answered as asked; the message tells the user what to change."""


@dataclass(frozen=True)
class ProductHit:
    product: Product
    score: float  # cosine similarity of the best-matching image (0 when none is indexed yet)
    image_id: int | None


class RankedProducts(Sequence):
    """Ranked search results: cheap ids and scores for the whole ranking, Product rows loaded
    only for the slice that is shown (a page). Works with Django's Paginator and len()."""

    def __init__(self, ranked: list[tuple[int, float, int]], products_qs) -> None:
        self._ranked = ranked  # (product id, score, best image id or None), best first
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

    @property
    def queryset(self):
        return self._qs

    @property
    def rows(self) -> list[tuple[int, float, int | None]]:
        return list(self._ranked)


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


def product_search_by_vector(
    vector: np.ndarray,
    *,
    limit: int = 100,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    exclude_product_ids: frozenset[int] = frozenset(),
) -> RankedProducts:
    """Best products for a query vector: at most ``limit``, best first, filters applied.

    Ranking touches only ids (FAISS hits, then one image -> product query per 500 hits);
    Product rows are loaded when a slice of the result is read.
    """
    limit = max(0, min(limit, MAX_RESULTS))
    products = product_filter(
        product_queryset(), category=category, price_min=price_min, price_max=price_max
    )
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
        checked.update(h.id for h in new)
        owners = _image_owners([h.id for h in new], products)
        for hit in new:
            product_id = owners.get(hit.id)
            if product_id is None or product_id in exclude_product_ids:
                continue
            if product_id not in best or hit.score > best[product_id][0]:
                best[product_id] = (hit.score, hit.id)
        if len(best) >= limit or k >= total:
            break
        k = min(total, k * 4)

    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:limit]
    return RankedProducts([(pid, score, image_id) for pid, (score, image_id) in ranked], products)


def _image_owners(image_ids: list[int], products) -> dict[int, int]:
    """image id -> product id, for images whose product passes the filters."""
    owners: dict[int, int] = {}
    for start in range(0, len(image_ids), 500):
        chunk = image_ids[start : start + 500]
        # Two primary-key lookups, not `product__in=<subquery>`: SQLite plans that subquery as a
        # scan per row (~150 ms per 500 ids at 3k products, vs ~2 ms this way).
        pairs = dict(
            ProductImage.objects.filter(id__in=chunk).order_by().values_list("id", "product_id")
        )
        allowed = set(
            products.filter(id__in=set(pairs.values())).order_by().values_list("id", flat=True)
        )
        owners.update((image_id, pid) for image_id, pid in pairs.items() if pid in allowed)
    return owners


def product_search(
    *,
    text: str | None = None,
    image: Image.Image | None = None,
    image_vec: np.ndarray | None = None,
    limit: int = 100,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
) -> RankedProducts:
    """Products matching a text query, an image query (a picture or its stored vector), or both.

    "No good match": when a text-only query's best vector score is below the model's calibrated
    threshold (runtime.get_min_score), the vector results are dropped, so nonsense returns an
    honest empty list. The threshold is about the *best* hit (how it was calibrated), not each
    hit: a real query keeps its whole ranking. With EMBEDDINGS_HYBRID on, products whose title
    or SKU contain the query's words are fused in by reciprocal rank fusion (brands, "polo" or a
    SKU find their product even where the embedding is unsure, and survive the threshold).
    """
    vector = query_vector(text=text, image=image, image_vec=image_vec)
    has_image = image is not None or image_vec is not None
    filters = {"category": category, "price_min": price_min, "price_max": price_max}
    ranked = product_search_by_vector(vector, limit=limit, **filters)
    min_score = None if has_image else runtime.get_min_score()
    if min_score is not None and ranked.rows and ranked.rows[0][1] < min_score:
        ranked = RankedProducts([], ranked.queryset)
    text = normalize_query_text(text)
    if not text or not settings.EMBEDDINGS_HYBRID:
        return ranked
    products = product_filter(product_queryset(), **filters)
    lexical = product_lexical_ranking(text=text, products=products, limit=max(limit, 1))
    if not lexical:
        return ranked
    fused = hybrid.hybrid_rank(
        ranked.product_ids,
        lexical,
        k=settings.EMBEDDINGS_HYBRID_RRF_K,
        lexical_weight=settings.EMBEDDINGS_HYBRID_WEIGHT,
        limit=min(limit, MAX_RESULTS),
    )
    # A query that is exactly a SKU is a lookup: that product first, whatever fusion says.
    exact = set(products.filter(sku__iexact=text).values_list("id", flat=True))
    if exact:
        fused = [pid for pid in lexical if pid in exact] + [
            pid for pid in fused if pid not in exact
        ]
    known = {pid: (score, image_id) for pid, score, image_id in ranked.rows}
    extra = _best_images(vector, [pid for pid in fused if pid not in known])
    rows = [(pid, *known.get(pid, extra.get(pid, (0.0, None)))) for pid in fused]
    return RankedProducts(rows, products)


LEXICAL_CANDIDATES = 2000


def product_lexical_ranking(*, text: str, products, limit: int = 100) -> list[int]:
    """Product ids whose title or SKU share words with ``text``, best first (BM25 over the
    candidates; an exact SKU match comes first). Empty when no word matches."""
    text = normalize_query_text(text)
    # Plural-folded terms ("tshirts" -> "tshirt"), pre-filtered by a substring every form of the
    # term contains, so "Tshirts" finds titles saying "Tshirt" and the reverse.
    tokens = [t for t in dict.fromkeys(hybrid.terms(text)) if len(t) >= 2][:8]
    if not tokens:
        return []
    match = Q(sku__iexact=text)  # SKUs like "TS-0042" tokenise into pieces
    for token in tokens:
        part = hybrid.substring_for(token)
        match |= Q(title__icontains=part) | Q(sku__icontains=part)
    # No ORDER BY: sorting every match (the model's default order) cost ~250 ms per common word
    # at 100k products; unordered, the database stops at the cap. Candidates are then put
    # newest first so BM25 ties break the same way whatever order the database returned.
    rows = list(
        products.filter(match).order_by().values_list("id", "title", "sku")[:LEXICAL_CANDIDATES]
    )
    rows.sort(key=lambda row: -row[0])
    if not rows:
        return []
    exact_sku = [pid for pid, _, sku in rows if sku.lower() == text.lower()]
    bm25 = hybrid.BM25([f"{title} {sku}" for _, title, sku in rows])
    ranked = [rows[i][0] for i in bm25.rank(text, k=limit) if rows[i][0] not in exact_sku]
    return (exact_sku + ranked)[:limit]


def _best_images(vector: np.ndarray, product_ids: list[int]) -> dict[int, tuple[float, int]]:
    """product id -> (best cosine score, image id) from stored vectors, for products that came
    from the lexical side only."""
    if not product_ids:
        return {}
    model_id = runtime.get_encoder().model_id
    rows = ImageEmbedding.objects.filter(
        image__product_id__in=product_ids, model_id=model_id
    ).values_list("image__product_id", "image_id", "vector")
    best: dict[int, tuple[float, int]] = {}
    for product_id, image_id, blob in rows:
        score = float(np.frombuffer(bytes(blob), dtype="<f4") @ vector)
        if product_id not in best or score > best[product_id][0]:
            best[product_id] = (score, image_id)
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
