"""Business ranking signals: boost, stock, newness and popularity modify relevance over the
candidate window before a page is cut (embeddings/ranking.py, selectors._Signals)."""

import json
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from catalog import services as catalog_services
from catalog.models import Product
from embeddings import ranking, runtime, selectors
from embeddings.analytics.models import SearchClick, SearchEvent
from embeddings.analytics.services import products_popularity_update
from embeddings.encoder import load_image
from embeddings.models import IndexChange
from tests.conftest import make_image

API = "/api/v1"
COLOURS = [(230, 20, 20), (200, 60, 30), (170, 90, 40), (140, 120, 50), (110, 150, 60)]


def product(title, colour, **kw):
    files = [SimpleUploadedFile("p.png", make_image(colour, shape="circle"))]
    return catalog_services.product_create(title=title, images=files, **kw)


def query():
    return load_image(make_image(COLOURS[0], shape="circle"))


def ranked(**kw):
    return [(h.product.id, h.score) for h in selectors.product_search(image=query(), **kw)]


@pytest.fixture
def five(transactional_db):
    return [product(f"Tee {i}", colour) for i, colour in enumerate(COLOURS)]


# -- the formula ---------------------------------------------------------------------------------


def test_formula_adds_then_multiplies_by_hand_computed_values():
    day = ranking.DAY_S
    now = 1_000_000_000.0
    signals = {
        "boost": np.array([0.0, 0.5, -1.0]),
        "popularity": np.array([0.0, 2.0, 0.0]),
        "created": np.array([now, now - 30 * day, np.nan]),
        "stock": np.array([-1, 0, 4]),
    }
    mods = (
        ranking.Modifier("boost", "add", 0.2),
        ranking.Modifier("newness", "add", 0.1),
        ranking.Modifier("popularity", "multiply", 0.25),
        ranking.Modifier("out_of_stock", "add", -0.3),
    )
    got = ranking.modified_scores(
        np.array([0.9, 0.8, 0.7]), signals, mods, now=now, half_life_days=30
    )
    # 0.9 + 0 + 0.1*1 ; (0.8 + 0.1 + 0.1*0.5 - 0.3) * (1 + 0.25*2) ; 0.7 - 0.2 + 0 (age unknown)
    assert got == pytest.approx([1.0, (0.8 + 0.1 + 0.05 - 0.3) * 1.5, 0.5])


def test_no_modifiers_or_zero_weights_keep_the_relevance_order():
    signals = {"boost": np.array([0.0, 9.0]), "popularity": np.zeros(2)}
    signals |= {"created": np.zeros(2), "stock": np.zeros(2)}
    assert ranking.reranked([5, 6], np.array([0.5, 0.5]), signals, (), now=0, half_life_days=1) == [
        5,
        6,
    ]
    assert ranking.shop_modifiers(boost=0, newness=0, popularity=0, out_of_stock_penalty=0) == ()


@pytest.mark.parametrize(
    "raw",
    [
        "boost",
        [{"field": "price", "op": "add", "weight": 1}],
        [{"field": "boost", "op": "pow", "weight": 1}],
        [{"field": "boost", "op": "add", "weight": 11}],
        [{"field": "boost", "op": "add", "weight": "nan"}],
        [{"field": "boost", "op": "add", "weight": True}],
        [{"field": "boost", "op": "add"}],
        [{"field": "boost", "op": "add", "weight": 1, "extra": 1}],
        [{"field": "boost", "weight": 0.1}] * 9,
    ],
)
def test_bad_modifiers_are_refused(raw):
    with pytest.raises(ranking.ModifierError):
        ranking.modifiers_parse(raw)


# -- search --------------------------------------------------------------------------------------


def test_defaults_leave_the_order_and_scores_unchanged_even_with_signals_set(five):
    before = ranked(limit=10)
    for n, p in enumerate(five):
        catalog_services.product_update(product=p, boost=float(n), stock=0)
    runtime.get_live_index().sync()
    after = ranked(limit=10)
    assert [pid for pid, _ in after] == [pid for pid, _ in before]
    # (The edits moved the rows from the base to the delta: float sums differ in the last bit.)
    assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-6)
    assert [s for _, s in before] == sorted((s for _, s in before), reverse=True)


def test_a_boost_moves_a_product_up_by_the_expected_amount(five, settings):
    before = ranked(limit=10)
    scores = dict(before)
    last = before[-1][0]
    catalog_services.product_update(product=Product.objects.get(pk=last), boost=1.0)
    runtime.get_live_index().sync()
    # Pick a weight that lifts it between the first and second result: score + w lands there.
    target = (scores[before[0][0]] + scores[before[1][0]]) / 2
    weight = target - scores[last]
    settings.RANK_BOOST_WEIGHT = weight
    expected = sorted(scores, key=lambda pid: -(scores[pid] + (weight if pid == last else 0.0)))
    after = [pid for pid, _ in ranked(limit=10)]
    assert after == expected and after[1] == last
    # The same through a request's modifiers (which replace the shop default).
    mods = (ranking.Modifier("boost", "add", weight),)
    settings.RANK_BOOST_WEIGHT = 0.0
    assert [pid for pid, _ in ranked(limit=10, modifiers=mods)] == expected
    # Shown scores stay cosine similarities: a modifier changes the order, not the score.
    assert dict(ranked(limit=10, modifiers=mods)) == pytest.approx(scores)


def test_out_of_stock_products_sink_or_leave_and_untracked_stock_counts_as_in(five, settings):
    first, second = [pid for pid, _ in ranked(limit=10)][:2]
    catalog_services.product_update(product=Product.objects.get(pk=first), stock=0)
    catalog_services.product_update(product=Product.objects.get(pk=second), stock=3)
    runtime.get_live_index().sync()
    settings.RANK_OUT_OF_STOCK_PENALTY = 2.0
    order = [pid for pid, _ in ranked(limit=10)]
    assert order[-1] == first and order[0] == second and len(order) == 5
    settings.RANK_OUT_OF_STOCK_PENALTY = 0.0
    settings.RANK_IN_STOCK_ONLY = True
    order = [pid for pid, _ in ranked(limit=10)]
    assert first not in order and len(order) == 4
    # The word side (hybrid) leaves it out too.
    words = [h.product.id for h in selectors.product_search(text="tee", limit=10)]
    assert first not in words


def test_a_signal_edit_reaches_the_index_after_sync(five):
    live = runtime.get_live_index()
    pid = five[2].id
    assert live.product_signals([pid])["boost"].tolist() == [0.0]
    catalog_services.product_update(product=five[2], boost=0.75, stock=7)
    live.sync()
    got = live.product_signals([pid, 10**9])
    assert got["boost"].tolist() == [0.75, 0.0]
    assert got["stock"].tolist() == [7, -1]
    assert got["created"][0] == pytest.approx(five[2].created_at.timestamp())
    assert np.isnan(got["created"][1])


def test_newness_prefers_the_newer_product_when_relevance_is_equal(transactional_db):
    old = product("Old tee", COLOURS[0])
    new = product("New tee", COLOURS[0])
    Product.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=300))
    catalog_services.product_update(product=Product.objects.get(pk=old.pk), boost=0.0)
    Product.objects.filter(pk=new.pk).update(created_at=timezone.now() - timedelta(days=1))
    catalog_services.product_update(product=Product.objects.get(pk=new.pk), boost=0.0)
    runtime.get_live_index().sync()
    mods = (ranking.Modifier("newness", "add", -0.5),)  # a shop that prefers older stock
    assert [pid for pid, _ in ranked(limit=2, modifiers=mods)] == [old.id, new.id]
    mods = (ranking.Modifier("newness", "add", 0.5),)
    assert [pid for pid, _ in ranked(limit=2, modifiers=mods)] == [new.id, old.id]


def test_popularity_is_log_of_recent_clicks_and_a_second_run_changes_nothing(five):
    event = SearchEvent.objects.create(
        query="tee", mode="text", result_count=5, latency_ms=1.0, source="api"
    )
    SearchClick.objects.create(search=event, product_id=five[0].id)
    other = SearchEvent.objects.create(
        query="tee", mode="text", result_count=5, latency_ms=1.0, source="api"
    )
    SearchClick.objects.create(search=other, product_id=five[0].id)
    old = SearchEvent.objects.create(
        query="tee", mode="text", result_count=5, latency_ms=1.0, source="api"
    )
    SearchClick.objects.create(
        search=old, product_id=five[1].id, created_at=timezone.now() - timedelta(days=60)
    )
    before = IndexChange.objects.count()
    assert products_popularity_update(days=30) == 1
    assert Product.objects.get(pk=five[0].pk).popularity == pytest.approx(np.log1p(2), abs=1e-6)
    assert Product.objects.get(pk=five[1].pk).popularity == 0.0
    assert IndexChange.objects.count() == before + 1
    assert products_popularity_update(days=30) == 0
    runtime.get_live_index().sync()
    got = runtime.get_live_index().product_signals([five[0].id])["popularity"]
    assert got.tolist() == pytest.approx([np.log1p(2)], abs=1e-6)
    # Clicks that age out bring it back to 0.
    assert products_popularity_update(days=30, now=timezone.now() + timedelta(days=40)) == 1
    assert Product.objects.get(pk=five[0].pk).popularity == 0.0


# -- API -----------------------------------------------------------------------------------------


def test_pages_continue_the_modified_order(five):
    client = APIClient()
    last = [pid for pid, _ in ranked(limit=10)][-1]
    catalog_services.product_update(product=Product.objects.get(pk=last), boost=1.0)
    mods = json.dumps([{"field": "boost", "op": "add", "weight": 2}])
    whole = client.get(f"{API}/search/", {"q": "tee", "modifiers": mods, "page_size": 10}).json()
    ids = [r["product"]["id"] for r in whole["results"]]
    assert ids[0] == last and len(ids) == 5
    paged, url = [], None
    params = {"q": "tee", "modifiers": mods, "page_size": 2}
    body = client.get(f"{API}/search/", params).json()
    while True:
        paged += [r["product"]["id"] for r in body["results"]]
        url = body["next"]
        if not url:
            break
        body = client.get(url).json()
    assert paged == ids


def test_json_body_modifiers_reorder_results(five):
    client = APIClient()
    plain = client.post(
        f"{API}/search/", {"parts": [{"text": "tee"}], "page_size": 10}, format="json"
    ).json()
    plain_ids = [r["product"]["id"] for r in plain["results"]]
    last = plain_ids[-1]
    catalog_services.product_update(product=Product.objects.get(pk=last), boost=1.0)
    body = {
        "parts": [{"text": "tee"}],
        "page_size": 10,
        "modifiers": [{"field": "boost", "op": "add", "weight": 2}],
    }
    got = client.post(f"{API}/search/", body, format="json").json()
    got_ids = [r["product"]["id"] for r in got["results"]]
    assert got_ids == [last] + [pid for pid in plain_ids if pid != last]


@pytest.mark.parametrize(
    "mods",
    [
        "[{",
        json.dumps({"field": "boost"}),
        json.dumps([{"field": "colour", "op": "add", "weight": 1}]),
        json.dumps([{"field": "boost", "op": "divide", "weight": 1}]),
        json.dumps([{"field": "boost", "op": "add", "weight": 100}]),
    ],
)
def test_bad_modifiers_are_a_400_in_the_error_shape(five, mods):
    response = APIClient().get(f"{API}/search/", {"q": "tee", "modifiers": mods})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["message"] and "modifiers" in error["details"]


def test_signals_do_not_slow_a_default_search_into_db_queries(five, django_assert_max_num_queries):
    selectors.product_search(image=query(), limit=10)  # warm: index open, encoder loaded
    mods = (ranking.Modifier("boost", "add", 0.1),)
    hits = selectors.product_search(image=query(), limit=10, modifiers=mods)
    with django_assert_max_num_queries(0):
        hits._ensure(10)  # ranking alone: signals come from the index's columns
