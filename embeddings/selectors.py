"""Search: a text and/or image query -> ranked products.

Query -> vector (text tower or image tower, text vectors cached) -> FAISS top-k image ids ->
products (several images of one product collapse to one result, best score wins) -> shopper
filters (category, price, active only) -> at most ``limit`` results, best first.
"""

from __future__ import annotations

import dataclasses
import threading
import time
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

from . import hybrid, ranking, runtime, steering
from .encoder import ImageDecodeError, l2_normalize, load_image
from .engine.changes import facet_slots
from .engine.columns import Filter, attribute_code
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

    def all_rows(self) -> list[Row]:
        """Every result row, best first (ranks to the full result count: at most ``limit``)."""
        total = len(self)
        self._ensure(total)
        return self._rows[:total]

    def reordered(self, rows: list[Row]) -> RankedProducts:
        """The same results in another order (sorting): ``rows`` is a permutation of (a subset
        of) ``all_rows()``; scores still missing are filled in as for this ranking."""
        rows = list(rows)
        return RankedProducts(lambda depth: (rows[:depth], len(rows)), self._qs, score=self._score)


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


@dataclass(frozen=True)
class QueryPart:
    """One part of a steerable query as a caller gives it: words or an image's unit vector
    (exactly one of them), with a weight in [-1, 1]; a negative weight pushes results away."""

    text: str | None = None
    image_vec: np.ndarray | None = None
    weight: float = 1.0


@dataclass(frozen=True)
class SteeredQuery:
    """A query ready to rank: its unit vector (steering.combine of the parts) and what the word
    side needs. ``words`` are the positive texts only, ``not_words`` the negative ones (their
    products leave the word side), ``word_share`` the texts' share of the positive weight.
    ``positive`` is the vector of the positive parts alone when there are negative ones (the
    "no good match" check asks whether the *wanted* thing exists), else None."""

    vector: np.ndarray
    words: str
    not_words: tuple[str, ...]
    word_share: float
    has_image: bool
    positive: np.ndarray | None = None


def _checked_text(text: str | None, what: str) -> str:
    text = normalize_query_text(text)
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(f"{what} is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}.")
    return text


def steered_query(
    parts: Sequence[QueryPart],
    *,
    exclude: Sequence[str] = (),
    not_weight: float | None = None,
) -> SteeredQuery:
    """Weighted parts plus terms to leave out (``exclude``: texts that together weigh
    ``not_weight``, default EMBEDDINGS_NOT_WEIGHT, as negative parts) -> a SteeredQuery.

    The vector is sum(w_i * v_i) normalised (embeddings/steering.py). Raises SearchError for
    more than steering.MAX_PARTS parts, a weight outside [-1, 1], a text over MAX_QUERY_CHARS,
    no positive part, or parts that cancel out."""
    exclude = [t for t in (_checked_text(t, "A term to leave out") for t in exclude) if t]
    if len(parts) + len(exclude) > steering.MAX_PARTS:
        raise SearchError(
            f"A query has at most {steering.MAX_PARTS} parts, terms to leave out included."
        )
    try:
        weights = steering.not_weights(
            len(exclude), settings.EMBEDDINGS_NOT_WEIGHT if not_weight is None else not_weight
        )
        built: list[steering.Part] = []
        for n, part in enumerate(parts, start=1):
            weight = steering.check_weight(part.weight, what=f"The weight of part {n}")
            if (part.text is None) == (part.image_vec is None):
                raise SearchError(f"Part {n} needs either a text or an image, not both.")
            if part.text is not None:
                text = _checked_text(part.text, f"The text of part {n}")
                if not text:
                    raise SearchError(f"The text of part {n} is empty.")
                if weight:
                    built.append(steering.Part(text_vector(text), weight, text))
            elif weight:
                vec = np.asarray(part.image_vec, dtype=np.float32)
                built.append(steering.Part(vec, weight))
        for text, weight in zip(exclude, weights, strict=True):
            if weight:
                built.append(steering.Part(text_vector(text), weight, text))
        vector = steering.combine(built)
        negatives = [p for p in built if p.weight < 0]
        positive = steering.combine([p for p in built if p.weight > 0]) if negatives else None
    except steering.SteeringError as exc:
        raise SearchError(str(exc)) from None
    return SteeredQuery(
        vector=vector,
        words=" ".join(p.text for p in built if p.weight > 0 and p.text),
        not_words=tuple(p.text for p in negatives if p.text),
        word_share=steering.word_share(built),
        has_image=any(p.is_image and p.weight > 0 for p in built),
        positive=positive,
    )


def _engine_filter(
    *,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    exclude_product_ids: frozenset[int] = frozenset(),
    attributes: dict[str, tuple[str, ...]] | None = None,
) -> Filter:
    """The shopper's filters on the engine's columns (a category slug becomes its id, an
    attribute value its code in the attribute's slot)."""
    slots = facet_slots()
    attribute_filters = []
    for name, values in (attributes or {}).items():
        if name not in slots:
            raise SearchError(f"{name!r} is not an attribute this shop filters by.")
        codes = tuple(sorted({attribute_code(v) for v in values}))
        attribute_filters.append((slots.index(name), codes))
    category_ids = None
    if category:
        category_ids = tuple(Category.objects.filter(slug=category).values_list("id", flat=True))
    return Filter(
        category_ids=category_ids,
        price_min=None if price_min is None else float(price_min),
        price_max=None if price_max is None else float(price_max),
        exclude_product_ids=frozenset(exclude_product_ids),
        attributes=tuple(attribute_filters),
        in_stock_only=settings.RANK_IN_STOCK_ONLY,
    )


def shop_modifiers() -> tuple[ranking.Modifier, ...]:
    """The shop-wide ranking modifiers (RANK_* settings; none by default)."""
    return ranking.shop_modifiers(
        boost=settings.RANK_BOOST_WEIGHT,
        newness=settings.RANK_NEWNESS_WEIGHT,
        popularity=settings.RANK_POPULARITY_WEIGHT,
        out_of_stock_penalty=settings.RANK_OUT_OF_STOCK_PENALTY,
    )


class _Signals:
    """Applies ranking modifiers to a ranking's first ``window`` products (the candidates every
    page is cut from), reading the signals from the index's columns. One clock per search, so
    every page of it sees the same newness."""

    def __init__(self, live, modifiers: tuple[ranking.Modifier, ...] | None, window: int):
        self.live = live
        self.modifiers = shop_modifiers() if modifiers is None else tuple(modifiers)
        self.window = window
        self.now = time.time()

    def __bool__(self) -> bool:
        return bool(self.modifiers)

    def rerank(self, pids: list, relevance) -> list:
        """``pids`` (best first) with the head re-sorted by modified score; the rest follows
        in its own order (so the order is the same however deep it is read)."""
        if not self.modifiers or not pids:
            return list(pids)
        head, rest = list(pids[: self.window]), list(pids[self.window :])
        signals = self.live.product_signals(head)
        return (
            ranking.reranked(
                head,
                np.asarray(relevance[: len(head)], dtype=np.float64),
                signals,
                self.modifiers,
                now=self.now,
                half_life_days=settings.RANK_NEWNESS_HALF_LIFE_DAYS,
            )
            + rest
        )

    def rerank_rows(self, rows: list[Row]) -> list[Row]:
        """Vector rows (cosine scores) reranked by ``rerank``."""
        if not self.modifiers:
            return rows
        by_pid = {row[0]: row for row in rows}
        order = self.rerank([r[0] for r in rows], [r[1] for r in rows[: self.window]])
        return [by_pid[pid] for pid in order]


def _in_stock(live, pids: list[int]) -> list[int]:
    """``pids`` less the products whose tracked stock is 0 (the word index holds no stock)."""
    stock = live.product_signals(pids)["stock"]
    return [pid for pid, units in zip(pids, stock.tolist(), strict=True) if units != 0]


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


def _shopper_filters(
    *,
    category: str | None,
    price_min: Decimal | None,
    price_max: Decimal | None,
    attributes: dict[str, tuple[str, ...]] | None,
    exclude_product_ids: frozenset[int] = frozenset(),
):
    """The shopper's filters twice: on the Product rows a page loads, and on the engine's
    columns the ranking reads."""
    products = product_filter(
        product_queryset(),
        category=category,
        price_min=price_min,
        price_max=price_max,
        attributes=attributes,
    )
    flt = _engine_filter(
        category=category,
        price_min=price_min,
        price_max=price_max,
        exclude_product_ids=exclude_product_ids,
        attributes=attributes,
    )
    return products, flt


def product_search_by_vector(
    vector: np.ndarray,
    *,
    limit: int = MAX_RESULTS,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    exclude_product_ids: frozenset[int] = frozenset(),
    attributes: dict[str, tuple[str, ...]] | None = None,
    modifiers: tuple[ranking.Modifier, ...] | None = None,
) -> RankedProducts:
    """Best products for a query vector, best first, filters applied inside the index search.

    Ranking reads only the engine's arrays; Product rows are loaded for the slice that is read.
    ``limit`` caps the results (at most MAX_RESULTS). ``modifiers`` (None: the shop's RANK_*
    defaults) re-sort the first RANK_WINDOW products by business signals (embeddings/ranking.py).
    """
    limit = max(0, min(limit, MAX_RESULTS))
    products, flt = _shopper_filters(
        category=category,
        price_min=price_min,
        price_max=price_max,
        attributes=attributes,
        exclude_product_ids=exclude_product_ids,
    )
    live = runtime.get_live_index()
    signals = _Signals(live, modifiers, min(RANK_WINDOW, limit))

    def rank(depth: int) -> tuple[list[Row], int]:
        depth = min(depth, limit)
        rows = _vector_rows(live, vector, flt, max(depth, signals.window) if signals else depth)
        return signals.rerank_rows(rows)[:depth], live.count_products(flt, cap=limit)

    return RankedProducts(rank, products)


def product_search(
    *,
    text: str | None = None,
    image: Image.Image | None = None,
    image_vec: np.ndarray | None = None,
    image_weight: float | None = None,
    exclude: Sequence[str] = (),
    not_weight: float | None = None,
    limit: int = MAX_RESULTS,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    attributes: dict[str, tuple[str, ...]] | None = None,
    modifiers: tuple[ranking.Modifier, ...] | None = None,
) -> RankedProducts:
    """Products matching a text query, an image query (a picture or its stored vector), or both.

    Photo + words weigh ``image_weight`` and 1 - ``image_weight`` (0..1, default 0.5: their
    mean); ``exclude`` are terms to leave out (see ``steered_query``). Without those two, the
    query is exactly ``query_vector``'s.
    """
    query = search_query(
        text=text,
        image=image,
        image_vec=image_vec,
        image_weight=image_weight,
        exclude=exclude,
        not_weight=not_weight,
    )
    return product_search_steered(
        query,
        limit=limit,
        category=category,
        price_min=price_min,
        price_max=price_max,
        attributes=attributes,
        modifiers=modifiers,
    )


def search_query(
    *,
    text: str | None = None,
    image: Image.Image | None = None,
    image_vec: np.ndarray | None = None,
    image_weight: float | None = None,
    exclude: Sequence[str] = (),
    not_weight: float | None = None,
) -> SteeredQuery:
    """product_search's query: text and/or image (weighed by ``image_weight``) minus
    ``exclude``. Encodes the image; raises SearchError for what cannot be searched."""
    if image is not None and image_vec is not None:
        raise SearchError("Give an image or a stored image vector, not both.")
    text = normalize_query_text(text)
    if not text and image is None and image_vec is None:
        if any(normalize_query_text(t) for t in exclude):
            raise SearchError(
                "Say what you are looking for as well as what to leave out, e.g. “shirt -striped”."
            )
        raise SearchError("Give a text query (q), an image, or both.")
    if len(text) > MAX_QUERY_CHARS:
        raise SearchError(
            f"The text query is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}."
        )
    if image is not None:
        image_vec = image_vector(image)
    weights = (0.0, 1.0)
    if image_vec is not None:
        try:
            weights = steering.photo_and_words(
                steering.DEFAULT_IMAGE_WEIGHT if image_weight is None else image_weight
            )
        except steering.SteeringError as exc:
            raise SearchError(str(exc)) from None
        if not text:
            weights = (1.0, 0.0)
    parts = []
    if image_vec is not None:
        parts.append(QueryPart(image_vec=image_vec, weight=weights[0]))
    if text:
        parts.append(QueryPart(text=text, weight=weights[1]))
    return steered_query(parts, exclude=exclude, not_weight=not_weight)


def product_search_parts(
    *,
    parts: Sequence[QueryPart],
    exclude: Sequence[str] = (),
    not_weight: float | None = None,
    limit: int = MAX_RESULTS,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    attributes: dict[str, tuple[str, ...]] | None = None,
    modifiers: tuple[ranking.Modifier, ...] | None = None,
) -> RankedProducts:
    """Products matching several weighted parts (``steered_query``), ranked as product_search."""
    if not parts:
        raise SearchError("Give at least one part (a text or an image) to search with.")
    query = steered_query(parts, exclude=exclude, not_weight=not_weight)
    return product_search_steered(
        query,
        limit=limit,
        category=category,
        price_min=price_min,
        price_max=price_max,
        attributes=attributes,
        modifiers=modifiers,
    )


def product_search_steered(
    query: SteeredQuery,
    *,
    limit: int = MAX_RESULTS,
    category: str | None = None,
    price_min: Decimal | None = None,
    price_max: Decimal | None = None,
    attributes: dict[str, tuple[str, ...]] | None = None,
    modifiers: tuple[ranking.Modifier, ...] | None = None,
) -> RankedProducts:
    """Ranks a SteeredQuery (product_search's rules).

    "No good match": when a text-only query's best vector score is below the model's calibrated
    threshold (runtime.get_min_score), the vector results are dropped, so nonsense returns an
    honest empty list. The threshold is about the *best* hit (how it was calibrated), not each
    hit: a real query keeps its whole ranking. With EMBEDDINGS_HYBRID on, products whose words
    match the query (full-text ranking over the whole catalog) are fused in by reciprocal rank
    fusion over the first RANK_WINDOW of each ranking; deeper results continue in vector order.
    A query that is exactly a SKU puts that product first.

    Steering: the word side uses the positive words only and leaves out products with every
    word of a negative term; it weighs in full while words hold at least half of the positive
    weight, then fades linearly to nothing as the photo takes it all. With negative parts the
    "no good match" check looks at the positive parts alone (one top-1 search more).

    Business signals: ``modifiers`` (None: the shop's RANK_* defaults, which are none unless
    set) re-sort the first RANK_WINDOW products by relevance (cosine, or the fused score over
    its maximum) modified as embeddings/ranking.py says; an exact SKU stays first. The page is
    cut after that, so every page continues the same modified order.
    """
    vector = query.vector
    limit = max(0, min(limit, MAX_RESULTS))
    products, flt = _shopper_filters(
        category=category, price_min=price_min, price_max=price_max, attributes=attributes
    )
    live = runtime.get_live_index()
    min_score = None if query.has_image else runtime.get_min_score()
    text = query.words
    words = bool(text) and settings.EMBEDDINGS_HYBRID
    lexical_weight = settings.EMBEDDINGS_HYBRID_WEIGHT * min(1.0, 2.0 * query.word_share)
    signals = _Signals(live, modifiers, min(RANK_WINDOW, limit))

    def rank(depth: int) -> tuple[list[Row], int]:
        depth = min(depth, limit)
        window = min(RANK_WINDOW, limit)
        vec = _vector_rows(live, vector, flt, max(depth, window) + window)
        if min_score is not None and vec:
            best = vec[0][1]
            if query.positive is not None:
                top = _vector_rows(live, query.positive, flt, 1)
                best = top[0][1] if top else best
            if best < min_score:
                vec = []
        vec_total = live.count_products(flt, cap=limit) if vec else 0
        if not words:
            return signals.rerank_rows(vec)[:depth], vec_total
        lexical = runtime.get_fulltext().search(
            text, flt=flt, limit=window if vec else limit, exclude=query.not_words
        )
        if attributes and lexical.ids:
            # The word index holds no attributes: one query keeps its matches that have them.
            lexical = _with_attributes(lexical, products)
        if flt.in_stock_only and lexical.ids:
            lexical = _only(lexical, set(_in_stock(live, lexical.ids)))
        if not lexical.ids:
            return signals.rerank_rows(vec)[:depth], vec_total
        known = {pid: (score, image_id) for pid, score, image_id in vec}
        fused = hybrid.hybrid_rank(
            [pid for pid, _, _ in vec[:window]],
            lexical.ids[:window],
            k=settings.EMBEDDINGS_HYBRID_RRF_K,
            lexical_weight=lexical_weight,
        )
        # A query that is exactly a SKU is a lookup: that product first, whatever fusion says.
        fused = lexical.exact_sku + [pid for pid in fused if pid not in lexical.exact_sku]
        seen = set(fused)
        order = fused + [pid for pid, _, _ in vec if pid not in seen]
        seen.update(order)
        order += [pid for pid in lexical.ids if pid not in seen]
        if signals:
            order = _rerank_fused(signals, order, vec[:window], lexical, lexical_weight)
        rows = [(pid, *known.get(pid, (None, None))) for pid in order[:depth]]
        # Products with no indexed image (found by their words alone) add to the vector count;
        # without a vector side, the word matches are the results.
        extra = len(set(lexical.ids) - known.keys()) if not vec else 0
        return rows, max(vec_total + extra, len(lexical.ids))

    def score(shown: list[Product]) -> dict[int, tuple[float, int]]:
        return _best_images(live, vector, shown)

    return RankedProducts(rank, products, score=score)


def _rerank_fused(signals: _Signals, order: list, vec: list[Row], lexical, lexical_weight):
    """A hybrid ``order`` with its head re-sorted by modified score: relevance is the RRF score
    over the largest one possible ((1 + lexical weight) / (k + 1)); an exact SKU stays first."""
    k = settings.EMBEDDINGS_HYBRID_RRF_K
    fused = hybrid.rrf_scores(
        [[pid for pid, _, _ in vec], lexical.ids[: signals.window]],
        k=k,
        weights=[1.0, lexical_weight],
    )
    top = (1.0 + lexical_weight) / (k + 1)
    pinned = [pid for pid in order if pid in set(lexical.exact_sku)]
    rest = [pid for pid in order if pid not in set(pinned)]
    relevance = [fused.get(pid, 0.0) / top for pid in rest[: signals.window]]
    return pinned + signals.rerank(rest, relevance)


def _only(lexical, keep: set[int]):
    return dataclasses.replace(
        lexical,
        ids=[pid for pid in lexical.ids if pid in keep],
        exact_sku=[pid for pid in lexical.exact_sku if pid in keep],
    )


def _with_attributes(lexical, products):
    """``lexical`` (a word search's result) less the products ``products`` (attribute-filtered)
    leaves out: one query over its ids."""
    keep = set(products.filter(id__in=lexical.ids).values_list("id", flat=True))
    return dataclasses.replace(
        lexical,
        ids=[pid for pid in lexical.ids if pid in keep],
        exact_sku=[pid for pid in lexical.exact_sku if pid in keep],
    )


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


def catalog_image_vector(*, image_id: int) -> np.ndarray | None:
    """The unit vector of a catalog image of an active product, as a query: its stored vector,
    or the file encoded now when it is not indexed (yet). None when there is no such image;
    SearchError when its file cannot be read."""
    image = ProductImage.objects.filter(pk=image_id, product__is_active=True).first()
    if image is None:
        return None
    vector = stored_image_vector(image_id=image_id)
    if vector is not None:
        return vector
    try:
        with image.image.open("rb") as fh:
            picture = load_image(
                fh, max_pixels=settings.MAX_IMAGE_PIXELS, min_side=runtime.get_encoder().decode_side
            )
    except (ImageDecodeError, OSError):
        raise SearchError(f"Image {image_id} cannot be read right now; try another one.") from None
    return image_vector(picture)


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
    attributes: dict[str, tuple[str, ...]] | None = None,
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
        attributes=attributes,
    )


def index_status_counts() -> dict[str, int]:
    from django.db.models import Count

    rows = ProductImage.objects.values("index_status").annotate(n=Count("id"))
    counts = {status: 0 for status in ProductImage.IndexStatus.values}
    counts.update({row["index_status"]: row["n"] for row in rows})
    return counts


def clear_query_cache() -> None:
    _text_cache.clear()
