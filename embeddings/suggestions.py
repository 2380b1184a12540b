"""Selectors for type-ahead and "did you mean" (the engine part is engine/suggest.py).

Kept out of selectors.py (the ranking) on purpose: nothing here changes a search's results.
Per process, in memory: the catalog vocabulary, read from the machine's word index and rebuilt
when that index has moved on (at most every SEARCH_SUGGEST_REFRESH seconds), and the popular
queries from the search log (re-read every SEARCH_SUGGEST_QUERIES_TTL seconds). A request
reads neither the database nor the disk once they are loaded.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from . import runtime
from .analytics.models import SearchEvent
from .engine.fulltext import query_terms
from .engine.suggest import Completion, Vocabulary, phrase_key

log = logging.getLogger(__name__)
MAX_PREFIX_CHARS = 100
POPULAR_QUERIES_READ = 20_000  # the most popular queries a process keeps


class SuggestError(ValueError):
    """A prefix that cannot be completed as given; the message says what to change."""


@dataclass(frozen=True)
class Suggestion:
    text: str
    kind: str  # "query" | "category" | "title"


# -- the catalog vocabulary ------------------------------------------------------------------------

_lock = threading.Lock()
_vocabulary: Vocabulary = Vocabulary()
_vocabulary_key: tuple | None = None
_vocabulary_built = 0.0


def catalog_vocabulary() -> Vocabulary:
    """This process's vocabulary of the catalog, rebuilt from the word index when the index
    covers a newer change than the vocabulary, at most every SEARCH_SUGGEST_REFRESH seconds.

    The rebuild (about 0.2 s at 10k products) runs in a background thread while requests use
    the previous vocabulary; only the first one of a process, and every one with
    SEARCH_SUGGEST_REFRESH=0 (tests, one-off commands), happens in the caller."""
    fulltext = runtime.get_fulltext()
    key = (id(fulltext), fulltext.generation)
    if key == _vocabulary_key:
        return _vocabulary
    refresh = settings.SEARCH_SUGGEST_REFRESH
    if _vocabulary_key is None or refresh <= 0:
        _rebuild(fulltext)
    elif time.monotonic() - _vocabulary_built >= refresh and not _lock.locked():
        threading.Thread(
            target=_rebuild, args=(fulltext,), name="suggest-vocabulary", daemon=True
        ).start()
    return _vocabulary


def _rebuild(fulltext) -> None:
    global _vocabulary, _vocabulary_key, _vocabulary_built
    if not _lock.acquire(blocking=False):
        return  # another thread is at it; callers use the previous vocabulary meanwhile
    try:
        key = (id(fulltext), fulltext.generation)  # read before the searcher: never newer
        searcher = fulltext.searcher()
        vocabulary = Vocabulary() if searcher is None else Vocabulary.from_searcher(searcher)
        _vocabulary, _vocabulary_key, _vocabulary_built = vocabulary, key, time.monotonic()
    except Exception:  # an index being replaced under us: keep the old one, retry next time
        log.exception("Rebuilding the type-ahead vocabulary failed")
        _vocabulary_built = time.monotonic()
    finally:
        _lock.release()


# -- popular queries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Popular:
    keys: list[str]  # sorted phrase keys
    rows: list[tuple[str, int]]  # (query, searches), in the order of keys
    loaded: float


_popular: _Popular | None = None


def popular_queries() -> _Popular:
    """Text queries that found something, typed by at least SEARCH_SUGGEST_MIN_SEARCHES (never
    fewer than 2) searches over the last SEARCH_SUGGEST_DAYS days, with their number of searches (one SQL GROUP BY,
    repeated every SEARCH_SUGGEST_QUERIES_TTL seconds)."""
    global _popular
    popular = _popular
    now = time.monotonic()
    if popular is not None and now - popular.loaded < settings.SEARCH_SUGGEST_QUERIES_TTL:
        return popular
    since = timezone.now() - timedelta(days=settings.SEARCH_SUGGEST_DAYS)
    rows = (
        SearchEvent.objects.filter(
            created_at__gte=since, mode=SearchEvent.Mode.TEXT, result_count__gt=0
        )
        .exclude(query="")
        .values("query")
        .annotate(searches=Count("id"))
        .filter(searches__gte=max(2, settings.SEARCH_SUGGEST_MIN_SEARCHES))
        .order_by("-searches", "query")
        .values_list("query", "searches")[:POPULAR_QUERIES_READ]
    )
    by_key: dict[str, int] = {}
    for query, searches in rows:
        key = phrase_key(query)
        if key:
            by_key[key] = by_key.get(key, 0) + searches
    ordered = sorted(by_key.items())
    popular = _Popular([k for k, _ in ordered], ordered, now)
    _popular = popular
    return popular


def _popular_completions(prefix_key: str, limit: int) -> list[Completion]:
    popular = popular_queries()
    start = bisect.bisect_left(popular.keys, prefix_key)
    end = bisect.bisect_left(popular.keys, prefix_key + "\uffff", lo=start)
    rows = sorted(popular.rows[start:end], key=lambda r: (-r[1], r[0]))[:limit]
    return [Completion(text, "query", n) for text, n in rows]


def clear_suggest_caches() -> None:
    """Forgets the vocabulary and popular queries of this process (tests)."""
    global _vocabulary, _vocabulary_key, _vocabulary_built, _popular
    with _lock:
        _vocabulary, _vocabulary_key, _vocabulary_built, _popular = Vocabulary(), None, 0.0, None


# -- the selectors --------------------------------------------------------------------------------


def search_suggest(*, prefix: str, limit: int | None = None) -> list[Suggestion]:
    """Completions of what a shopper has typed so far: popular queries first when they are as
    popular as the catalog phrases, then by count (searches for a query, products for a title
    opening or category), at most ``limit`` (SEARCH_SUGGEST_LIMIT), each text once."""
    text = " ".join((prefix or "").split())
    if not text:
        raise SuggestError("Give the start of a query, e.g. ?q=tsh.")
    if len(text) > MAX_PREFIX_CHARS:
        raise SuggestError(
            f"The prefix is {len(text)} characters long; the limit is {MAX_PREFIX_CHARS}."
        )
    limit = limit or settings.SEARCH_SUGGEST_LIMIT
    key = phrase_key(text)
    if not key:
        return []
    candidates = _popular_completions(key, limit) + catalog_vocabulary().complete(key, limit=limit)
    # A query was typed by people; a phrase is one product's title opening: at equal counts the
    # query goes first.
    order = {"query": 0, "category": 1, "title": 2}
    candidates.sort(key=lambda c: (-c.count, order[c.kind], c.text))
    seen: set[str] = set()
    out: list[Suggestion] = []
    for c in candidates:
        if c.text in seen:
            continue
        seen.add(c.text)
        out.append(Suggestion(c.text, c.kind))
        if len(out) == limit:
            break
    return out


def search_did_you_mean(*, text: str) -> str | None:
    """The query with each word that matches nothing in the catalog replaced by the nearest
    catalog word (see Vocabulary.correct), when that corrected query finds products; else None.
    A word the word index knows some other way (a description word, a SKU) is kept."""
    text = " ".join((text or "").split())
    if not text or len(text) > MAX_PREFIX_CHARS * 5:
        return None
    fulltext = runtime.get_fulltext()
    searcher = fulltext.searcher()
    if searcher is None:
        return None

    def known(word: str) -> bool:
        return any(searcher.doc_freq("text", term) > 0 for term in query_terms(word))

    corrected = catalog_vocabulary().correct(text, known=known)
    if corrected is None or corrected == phrase_key(text):
        return None
    return corrected if fulltext.search(corrected, limit=1).ids else None
