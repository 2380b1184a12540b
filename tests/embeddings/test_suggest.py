"""Type-ahead and "did you mean": the vocabulary read from the word index, spelling correction,
completions from titles, categories and popular queries (only above the minimum count), the
suggest API and its errors, did_you_mean in the search API and on the page, and the vocabulary
following the catalog."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle
from tantivy import Query

from catalog import services as catalog_services
from embeddings import suggestions
from embeddings.analytics.models import SearchEvent
from embeddings.engine.fulltext import ProductDoc, TextIndex
from embeddings.engine.suggest import Vocabulary, suggest_terms

SUGGEST = "/api/v1/search/suggest/"
API_SEARCH = "/api/v1/search/"


@pytest.fixture(autouse=True)
def _fresh_suggestions(settings):
    settings.SEARCH_SUGGEST_REFRESH = 0.0
    settings.SEARCH_SUGGEST_MIN_SEARCHES = 3
    suggestions.clear_suggest_caches()
    yield
    suggestions.clear_suggest_caches()


def product(title: str, category: str = "Tops", **kwargs):
    return catalog_services.product_create(
        title=title,
        price=Decimal("10"),
        category=catalog_services.category_get_or_create(name=category),
        images=[],
        **kwargs,
    )


@pytest.fixture
def shop(db):
    return [
        product("Tshirt"),
        product("Navy Blue Cotton Tshirt"),
        product("Navy Blue Jeans", "Jeans", description="stonewashed denim"),
        product("Red Running Shoe", "Shoes"),
    ]


def searched(query: str, times: int, *, results: int = 5, days_ago: float = 1) -> None:
    for _ in range(times):
        SearchEvent.objects.create(
            query=query,
            mode="text",
            source="page",
            result_count=results,
            latency_ms=10,
            created_at=timezone.now() - timedelta(days=days_ago),
        )


def texts(response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.content
    return [(s["text"], s["kind"]) for s in response.json()["suggestions"]]


# --- the engine, without Django -----------------------------------------------------------------


def test_vocabulary_counts_live_products_and_forgets_deleted_ones(tmp_path):
    docs = [ProductDoc(1, "Tshirt", category_name="Tops"), ProductDoc(2, "Navy Tshirt")]
    index = TextIndex.build(tmp_path / "ix", docs)
    vocab = Vocabulary.from_searcher(index.index.searcher())
    assert vocab.words == {"tshirt": 2, "navy": 1, "tops": 1}
    writer = index.index.writer(heap_size=15_000_000, num_threads=1)
    writer.delete_documents_by_query(Query.term_query(index.schema, "product_id", 2))
    writer.commit()
    index.reload()
    vocab = Vocabulary.from_searcher(index.index.searcher())
    assert vocab.words == {"tshirt": 1, "tops": 1}
    assert [c.text for c in vocab.complete("n")] == []


def test_suggest_terms_are_title_openings_and_the_category():
    assert suggest_terms("Navy Blue Slim-fit Cotton Tee", "T-Shirts") == [
        "t:navy",
        "t:navy blue",
        "t:navy blue slim",
        "t:navy blue slim fit",
        "c:t shirts",
    ]


def test_the_closest_word_prefers_fewer_edits_then_the_more_frequent_word():
    vocab = Vocabulary(words={"shirt": 10, "skirt": 50, "shorts": 3, "tshirt": 7})
    assert vocab.closest("shrit") == "shirt"  # one transposition
    assert vocab.closest("shirtt") == "shirt"
    assert vocab.closest("tshrit") == "tshirt"
    # "sxirt" is one edit from both shirt and skirt: the more frequent wins.
    assert vocab.closest("sxirt") == "skirt"
    # Short words get one edit at most: "shxrx" is two from "shirt".
    assert vocab.closest("shxrx") is None
    # A word with nothing near stays as typed; the others are corrected.
    assert vocab.correct("blue shrit") == "blue shirt"
    assert vocab.correct("blue shirt") is None


# --- did you mean -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_typo_of_a_catalog_word_is_corrected(shop):
    assert suggestions.search_did_you_mean(text="tshrit") == "tshirt"
    assert suggestions.search_did_you_mean(text="Navy  Tshrit") == "navy tshirt"
    assert suggestions.search_did_you_mean(text="runing shoe") == "running shoe"


@pytest.mark.django_db
def test_a_correct_query_is_not_corrected(shop):
    for query in ("tshirt", "Navy blue tshirts", "denim", "shoes", "xl tshirt", "2024 tshirt"):
        assert suggestions.search_did_you_mean(text=query) is None, query


@pytest.mark.django_db
def test_nothing_is_suggested_when_no_catalog_word_is_near(shop):
    assert suggestions.search_did_you_mean(text="giraffe") is None
    assert suggestions.search_did_you_mean(text="") is None


@pytest.mark.django_db(transaction=True)
def test_the_search_api_returns_did_you_mean(shop):
    api = APIClient()
    typo = api.get(API_SEARCH, {"q": "tshrit"})
    assert typo.status_code == 200, typo.content
    assert typo.json()["did_you_mean"] == "tshirt"
    right = api.get(API_SEARCH, {"q": "tshirt"}).json()
    assert right["did_you_mean"] is None and right["count"] >= 2
    posted = api.post(API_SEARCH, {"q": "nayv tshirt"}, format="multipart")
    assert posted.json()["did_you_mean"] == "navy tshirt"


@pytest.mark.django_db(transaction=True)
def test_the_search_page_offers_the_corrected_query_keeping_the_filters(client, shop):
    response = client.get(reverse("embeddings:search"), {"q": "tshrit", "category": "tops"})
    html = response.content.decode()
    assert "Did you mean" in html
    assert 'href="?q=tshirt&amp;category=tops" data-did-you-mean>tshirt</a>' in html
    assert (
        "Did you mean"
        not in client.get(reverse("embeddings:search"), {"q": "tshirt"}).content.decode()
    )


# --- type-ahead ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_completions_come_from_title_openings_and_categories(shop):
    api = APIClient()
    assert texts(api.get(SUGGEST, {"q": "ts"})) == [("tshirt", "title")]
    assert texts(api.get(SUGGEST, {"q": "NAVY  b"})) == [
        ("navy blue", "title"),  # two products; then one each, alphabetically
        ("navy blue cotton", "title"),
        ("navy blue cotton tshirt", "title"),
        ("navy blue jeans", "title"),
    ]
    assert ("shoes", "category") in texts(api.get(SUGGEST, {"q": "sh"}))
    assert texts(api.get(SUGGEST, {"q": "t"}))[0] == ("tops", "category")  # two products
    assert texts(api.get(SUGGEST, {"q": "zebra"})) == []


@pytest.mark.django_db
def test_popular_queries_are_suggested_only_from_the_minimum_count(shop):
    searched("navy blazer", 5)
    searched("navy socks", 3)
    searched("navy hat", 2)  # under the minimum (3): never shown
    searched("navy scarf", 9, results=0)  # found nothing: not worth suggesting
    searched("navy coat", 9, days_ago=40)  # older than SEARCH_SUGGEST_DAYS
    SearchEvent.objects.create(
        query="navy gloves", mode="text_photo", source="page", result_count=3, latency_ms=1
    )
    got = texts(APIClient().get(SUGGEST, {"q": "navy"}))
    assert got[:2] == [("navy blazer", "query"), ("navy socks", "query")]
    shown = {text for text, _ in got}
    assert {"navy blazer", "navy socks", "navy blue"} <= shown
    assert not shown & {"navy hat", "navy scarf", "navy coat", "navy gloves"}
    assert len(got) <= 8


@pytest.mark.django_db
def test_a_query_from_one_search_is_never_suggested(shop, settings):
    settings.SEARCH_SUGGEST_MIN_SEARCHES = 1  # even with the minimum set too low
    searched("navy private words", 1)
    assert texts(APIClient().get(SUGGEST, {"q": "navy p"})) == []
    searched("navy private words", 1)  # a second search: now two people may have typed it
    suggestions.clear_suggest_caches()
    assert texts(APIClient().get(SUGGEST, {"q": "navy p"})) == [("navy private words", "query")]


@pytest.mark.django_db
def test_at_most_the_limit_and_each_text_once(shop, settings):
    settings.SEARCH_SUGGEST_LIMIT = 2
    searched("navy blue", 3)  # also a title opening: shown once, as a query
    got = texts(APIClient().get(SUGGEST, {"q": "navy"}))
    assert len(got) == 2
    assert [t for t, _ in got].count("navy blue") == 1
    assert ("navy blue", "query") in got


@pytest.mark.django_db(transaction=True)
def test_suggestions_follow_the_catalog_after_the_index_sync(shop):
    api = APIClient()
    assert texts(api.get(SUGGEST, {"q": "gira"})) == []
    added = product("Giraffe Print Shirt", "Shirts")
    assert texts(api.get(SUGGEST, {"q": "gira"})) == [
        ("giraffe", "title"),
        ("giraffe print", "title"),
        ("giraffe print shirt", "title"),
    ]
    assert suggestions.search_did_you_mean(text="girafe") == "giraffe"
    catalog_services.product_update(product=added, is_active=False)
    assert texts(api.get(SUGGEST, {"q": "gira"})) == []


@pytest.mark.django_db
def test_bad_prefixes_are_400s_in_the_error_shape(shop):
    api = APIClient()
    for params, words in (
        ({}, "Give the start of a query"),
        ({"q": ""}, "empty"),
        ({"q": "   "}, "empty"),
        ({"q": "x" * 101}, "too long"),
    ):
        response = api.get(SUGGEST, params)
        assert response.status_code == 400, params
        error = response.json()["error"]
        assert error["code"] == "invalid" and words in error["details"]["q"][0], error


@pytest.mark.django_db
def test_suggest_shares_the_search_throttle(shop, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "search_anon", "2/min")
    assert "search_anon" in api_settings.DEFAULT_THROTTLE_RATES
    api = APIClient()
    assert api.get(SUGGEST, {"q": "ts"}).status_code == 200
    assert api.get(SUGGEST, {"q": "tsh"}).status_code == 200
    throttled = api.get(SUGGEST, {"q": "tshi"})
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"


def test_completion_and_correction_stay_fast_at_ten_thousand_products(tmp_path):
    """10k generated products (titles of 3-6 words from a 2,000-word vocabulary); the figures
    printed are those in the README."""
    import random

    rng = random.Random(7)
    letters = "abcdefghijklmnoprstuvwy"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(4, 9))) for _ in range(2000)]
    cats = [f"category {w}" for w in words[:40]]
    docs = [
        ProductDoc(
            i, " ".join(rng.choices(words, k=rng.randint(3, 6))), category_name=rng.choice(cats)
        )
        for i in range(1, 10_001)
    ]
    index = TextIndex.build(tmp_path / "ix", docs)
    started = time.perf_counter()
    vocab = Vocabulary.from_searcher(index.index.searcher())
    build_ms = (time.perf_counter() - started) * 1000
    prefixes = [w[:n] for w in rng.sample(words, 200) for n in (1, 2, 3, 5)]
    started = time.perf_counter()
    for prefix in prefixes:
        vocab.complete(prefix, limit=8)
    complete_ms = (time.perf_counter() - started) * 1000 / len(prefixes)
    # Two letters swapped (one Damerau-Levenshtein edit), in words the catalog does not have.
    known = set(words)
    sample = [w for w in rng.sample(words, 300) if w[2] != w[3]]
    typos = {w[:2] + w[3] + w[2] + w[4:]: w for w in sample}
    typos = {t: w for t, w in typos.items() if t not in known}
    started = time.perf_counter()
    fixed = [vocab.correct(t) for t in typos]
    correct_ms = (time.perf_counter() - started) * 1000 / len(typos)
    print(
        f"vocabulary {len(vocab)} words, {len(vocab.phrases)} phrases: build {build_ms:.0f} ms, "
        f"complete {complete_ms:.3f} ms, correct {correct_ms:.3f} ms"
    )
    back = sum(f == typos[t] for t, f in zip(typos, fixed, strict=True))
    print(f"{back} of {len(typos)} swapped-letter typos corrected back to their word")
    assert all(fixed) and back >= 0.9 * len(typos)
    assert complete_ms < 5 and correct_ms < 5
