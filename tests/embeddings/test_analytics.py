"""Search analytics: every search logged without personal data, clicks attributed from the page
and the API, the admin report's aggregates, the prune and its schedule.

Searches go through the real page and API (transactional: eager Celery embeds the products on
commit); the report tests write events with known values and check the sums.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError
from django.urls import reverse
from django.utils import timezone
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from catalog import services as catalog_services
from embeddings.analytics import selectors as reports
from embeddings.analytics.models import SearchClick, SearchEvent
from embeddings.analytics.services import search_click_record, search_log_prune
from embeddings.tasks import search_log_prune_task
from embeddings.views import PER_PAGE
from searchsite.celery import app as celery_app
from tests.conftest import distinct_image as picture

SEARCH = reverse("embeddings:search")
API_SEARCH = "/api/v1/search/"
API_CLICKS = "/api/v1/search/clicks/"
SID = re.compile(r'href="/products/(\d+)/\?sid=([0-9a-f-]{36})"')

transactional = pytest.mark.django_db(transaction=True)


def create(title: str, n: int, *, price: str = "19.99", category: str = "Shirts", active=True):
    return catalog_services.product_create(
        title=title,
        price=Decimal(price),
        category=catalog_services.category_get_or_create(name=category),
        is_active=active,
        images=[SimpleUploadedFile(f"p{n}.png", picture(n), content_type="image/png")],
    )


@pytest.fixture
def shop():
    return [create(f"Shirt no. {n}", n, price=str(10 + n)) for n in range(4)]


def result_links(response) -> list[tuple[int, str]]:
    return [(int(pk), sid) for pk, sid in SID.findall(response.content.decode())]


def event(
    query: str,
    *,
    mode: str = "text",
    results: int = 10,
    ms: float = 50.0,
    ago: timedelta = timedelta(hours=1),
    clicks: tuple[int, ...] = (),
) -> SearchEvent:
    row = SearchEvent.objects.create(
        query=query,
        mode=mode,
        source="page",
        result_count=results,
        latency_ms=ms,
        created_at=timezone.now() - ago,
    )
    for product_id in clicks:
        SearchClick.objects.create(search=row, product_id=product_id)
    return row


# --- logging from the page ----------------------------------------------------------------------


@transactional
def test_a_text_search_on_the_page_is_logged_once_without_personal_data(client, shop):
    user = get_user_model().objects.create_user("shopper", "shopper@example.com", "pw-12345678")
    client.force_login(user)
    response = client.get(
        SEARCH,
        {"q": "  Striped   SHIRT ", "price_max": "30"},
        REMOTE_ADDR="203.0.113.9",
        HTTP_USER_AGENT="PrivateBrowser/1.0",
    )
    assert response.status_code == 200
    row = SearchEvent.objects.get()
    assert row.query == "striped shirt"
    assert (row.mode, row.source) == ("text", "page")
    assert row.filters == {"price_max": "30"}
    assert row.result_count == 4
    assert 0 < row.latency_ms < 60_000
    # The row holds exactly these fields: nothing about who searched.
    fields = {f.name for f in SearchEvent._meta.get_fields() if f.concrete}
    assert fields == {
        "id",
        "created_at",
        "query",
        "mode",
        "source",
        "filters",
        "result_count",
        "latency_ms",
    }
    stored = " ".join(str(getattr(row, name)) for name in fields)
    for personal in ("203.0.113.9", "PrivateBrowser", "shopper", "example.com"):
        assert personal not in stored
    assert client.session.session_key not in stored
    # Every result link carries this search's id.
    links = result_links(response)
    assert {pk for pk, _ in links} == {p.pk for p in shop}
    assert {sid for _, sid in links} == {str(row.id)}


@transactional
def test_later_pages_carry_the_first_pages_id_and_are_not_logged_again(client):
    for n in range(PER_PAGE + 2):
        create(f"Tee {n}", n)
    first = client.get(SEARCH, {"q": "tee"})
    row = SearchEvent.objects.get()
    page_two = re.search(r'href="\?([^"]*page=2[^"]*)"', first.content.decode())
    assert page_two and f"sid={row.id}" in page_two.group(1)
    second = client.get(f"{SEARCH}?{page_two.group(1).replace('&amp;', '&')}")
    assert second.status_code == 200
    assert SearchEvent.objects.count() == 1
    assert {sid for _, sid in result_links(second)} == {str(row.id)}
    # Changing the filters is a new search: the filter form does not carry the id.
    client.get(SEARCH, {"q": "tee", "price_max": "15"})
    assert SearchEvent.objects.count() == 2


@transactional
def test_photo_searches_are_logged_as_photo_and_photo_with_words_keeps_the_words(client, shop):
    response = client.post(SEARCH, {"image": SimpleUploadedFile("q.png", picture(1))})
    assert response.status_code == 302
    client.get(response["Location"])
    response = client.post(
        SEARCH, {"image": SimpleUploadedFile("q.png", picture(2)), "q": "In Blue"}
    )
    client.get(response["Location"])
    rows = list(SearchEvent.objects.order_by("created_at").values_list("query", "mode"))
    assert rows == [("photo", "photo"), ("in blue", "text_photo")]


@transactional
def test_similar_searches_are_logged_and_browse_and_bad_input_are_not(client, shop):
    client.get(SEARCH, {"similar": shop[0].pk})
    client.get(SEARCH)  # browse: no query
    client.get(SEARCH, {"q": "shirt", "price_min": "9", "price_max": "1"})  # 400
    row = SearchEvent.objects.get()
    assert (row.mode, row.query, row.filters) == ("similar", "", {"similar": shop[0].pk})


@transactional
def test_a_database_error_while_logging_never_fails_the_search(client, shop, monkeypatch, caplog):
    def broken(self, *args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(SearchEvent, "save", broken)
    with caplog.at_level(logging.WARNING, logger="embeddings.analytics.services"):
        page = client.get(SEARCH, {"q": "shirt"})
        api = APIClient().get(API_SEARCH, {"q": "shirt"})
    assert page.status_code == 200
    assert result_links(page) == []  # plain links, no id
    assert 'href="/products/' in page.content.decode()
    assert api.status_code == 200 and api.json()["search_id"] is None
    assert api.json()["count"] == 4
    assert "search not logged" in caplog.text and "disk full" in caplog.text


@transactional
def test_nothing_is_logged_when_search_logging_is_off(client, shop, settings):
    settings.SEARCH_LOG_ENABLED = False
    assert client.get(SEARCH, {"q": "shirt"}).status_code == 200
    assert APIClient().get(API_SEARCH, {"q": "shirt"}).json()["search_id"] is None
    assert not SearchEvent.objects.exists()


# --- clicks from the page -----------------------------------------------------------------------


@transactional
def test_opening_a_result_records_one_click_for_its_search(client, shop):
    response = client.get(SEARCH, {"q": "shirt"})
    product_id, sid = result_links(response)[0]
    product_page = client.get(f"/products/{product_id}/?sid={sid}")
    assert product_page.status_code == 200
    click = SearchClick.objects.get()
    assert (str(click.search_id), click.product_id) == (sid, product_id)
    client.get(f"/products/{product_id}/?sid={sid}")  # a reload is not a second click
    other = next(p.pk for p in shop if p.pk != product_id)
    client.get(f"/products/{other}/?sid={sid}")
    assert SearchClick.objects.filter(search_id=sid).count() == 2


@transactional
def test_product_pages_with_a_bad_or_stale_search_id_open_normally_without_a_click(client, shop):
    old = event("shirt", ago=timedelta(hours=settings.SEARCH_LOG_CLICK_HOURS + 1))
    pk = shop[0].pk
    for sid in ("not-a-uuid", str(uuid.uuid4()), str(old.id), "x" * 500):
        assert client.get(f"/products/{pk}/", {"sid": sid}).status_code == 200
    # An inactive product's page is a 404: no click either.
    hidden = create("Hidden", 9, active=False)
    recent = event("shirt")
    assert client.get(f"/products/{hidden.pk}/", {"sid": str(recent.id)}).status_code == 404
    assert not SearchClick.objects.exists()


# --- the API ------------------------------------------------------------------------------------


@transactional
def test_api_search_returns_its_search_id_and_a_click_on_it_is_recorded(shop):
    api = APIClient()
    body = api.get(API_SEARCH, {"q": "Shirt", "page_size": 2, "category": "shirts"}).json()
    row = SearchEvent.objects.get()
    assert body["search_id"] == str(row.id)
    assert (row.query, row.mode, row.source) == ("shirt", "text", "api")
    assert row.filters == {"category": "shirts"}
    assert row.result_count == body["count"] == 4
    # Later pages are not new searches.
    assert api.get(body["next"]).json()["search_id"] is None
    assert SearchEvent.objects.count() == 1

    product_id = body["results"][0]["product"]["id"]
    payload = {"search_id": body["search_id"], "product_id": product_id}
    response = api.post(API_CLICKS, payload, format="json")
    assert response.status_code == 204, response.content
    assert api.post(API_CLICKS, payload, format="json").status_code == 204  # counted once
    assert list(SearchClick.objects.values_list("search_id", "product_id")) == [
        (row.id, product_id)
    ]


@transactional
def test_api_image_search_is_logged_as_photo_and_with_words_as_the_words(shop):
    api = APIClient()
    api.post(API_SEARCH, {"image": SimpleUploadedFile("q.png", picture(0))}, format="multipart")
    api.post(
        API_SEARCH,
        {"image": SimpleUploadedFile("q.png", picture(0)), "q": "Red"},
        format="multipart",
    )
    api.post(API_SEARCH, {"q": "Red"}, format="multipart")
    rows = list(SearchEvent.objects.order_by("created_at").values_list("query", "mode"))
    assert rows == [("photo", "photo"), ("red", "text_photo"), ("red", "text")]


def assert_error(response, code: str) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


@pytest.mark.django_db
def test_bad_clicks_are_400s_in_the_error_shape():
    active = catalog_services.product_create(title="Tee", price=Decimal("5"), images=[])
    inactive = catalog_services.product_create(
        title="Old", price=Decimal("5"), is_active=False, images=[]
    )
    recent = event("tee")
    stale = event("tee", ago=timedelta(hours=settings.SEARCH_LOG_CLICK_HOURS, minutes=1))
    api = APIClient()

    def click(**body):
        return api.post(API_CLICKS, body, format="json")

    error = assert_error(click(search_id="abc", product_id=active.pk), "invalid")
    assert "search_id" in error["details"]
    error = assert_error(click(search_id=str(recent.id)), "invalid")
    assert "product_id" in error["details"]
    assert_error(click(search_id=str(recent.id), product_id="x"), "invalid")
    assert_error(click(search_id=str(recent.id), product_id=0), "invalid")
    assert_error(click(search_id=str(uuid.uuid4()), product_id=active.pk), "unknown_search")
    assert_error(click(search_id=str(stale.id), product_id=active.pk), "unknown_search")
    assert_error(click(search_id=str(recent.id), product_id=inactive.pk), "unknown_product")
    assert_error(click(search_id=str(recent.id), product_id=10**12), "unknown_product")
    assert_error(click(search_id=str(recent.id), product_id=2**63), "invalid")
    wrong_type = api.post(API_CLICKS, "search_id=1", content_type="text/plain")
    assert wrong_type.status_code == 415
    assert wrong_type.json()["error"]["code"] == "unsupported_media_type"
    assert not SearchClick.objects.exists()
    # A form body works too.
    ok = api.post(API_CLICKS, {"search_id": str(recent.id), "product_id": active.pk})
    assert ok.status_code == 204
    assert SearchClick.objects.get().search_id == recent.id


@pytest.mark.django_db
def test_clicks_share_the_search_throttle(monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "search_anon", "2/min")
    assert "search_anon" in api_settings.DEFAULT_THROTTLE_RATES
    product = catalog_services.product_create(title="Tee", price=Decimal("5"), images=[])
    body = {"search_id": str(event("tee").id), "product_id": product.pk}
    api = APIClient()
    assert api.post(API_CLICKS, body, format="json").status_code == 204
    assert api.post(API_CLICKS, body, format="json").status_code == 204
    throttled = api.post(API_CLICKS, body, format="json")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"


# --- reports ------------------------------------------------------------------------------------


@pytest.fixture
def events():
    """Known events: 'shirt' x4 (two clicked, one of them on two products), 'sock' x2 with no
    results, 'scarf' x1 with 3 results, a photo search, and an old 'shirt' outside the week."""
    return {
        "shirt": [
            event("shirt", results=20, ms=10, clicks=(1, 2)),
            event("shirt", results=20, ms=30, clicks=(3,)),
            event("shirt", results=20, ms=20),
            event("shirt", results=20, ms=40),
        ],
        "sock": [event("sock", results=0, ms=5), event("sock", results=0, ms=7)],
        "scarf": [event("scarf", results=3, ms=900)],
        "photo": [event("photo", mode="photo", results=12, ms=60, clicks=(4,))],
        "old": [event("shirt", results=1, ms=5000, ago=timedelta(days=10), clicks=(1,))],
    }


def week() -> dict:
    now = timezone.now()
    return {"start": now - timedelta(days=7), "end": now}


@pytest.mark.django_db
def test_top_queries_count_searches_and_click_through_per_query(events):
    top = reports.search_top_queries(**week())
    assert [(r.query, r.mode, r.searches, r.clicked) for r in top] == [
        ("shirt", "text", 4, 2),
        ("sock", "text", 2, 0),
        ("photo", "photo", 1, 1),
        ("scarf", "text", 1, 0),
    ]
    shirt = top[0]
    assert shirt.ctr == 0.5
    # Two clicks on one search do not weigh that search twice in the averages.
    assert shirt.avg_ms == pytest.approx(25.0)
    assert shirt.avg_results == pytest.approx(20.0)
    assert shirt.max_ms == 40


@pytest.mark.django_db
def test_zero_and_few_result_queries_use_the_threshold(events):
    zero = reports.search_zero_result_queries(**week())
    assert [(r.query, r.searches) for r in zero] == [("sock", 2)]
    few = reports.search_few_result_queries(**week(), threshold=5)
    assert [(r.query, r.searches) for r in few] == [("scarf", 1)]
    wider = reports.search_few_result_queries(**week(), threshold=12)
    assert [r.query for r in wider] == ["photo", "scarf"]


@pytest.mark.django_db
def test_slowest_queries_and_the_summary(events):
    slowest = reports.search_slowest_queries(**week(), limit=2)
    assert [(r.query, r.max_ms) for r in slowest] == [("scarf", 900), ("photo", 60)]
    summary = reports.search_summary(**week())
    assert (summary.searches, summary.clicked, summary.zero_results) == (8, 3, 2)
    assert summary.ctr == pytest.approx(3 / 8)
    # Latencies 5 7 10 20 30 40 60 900: nearest-rank p50 = 4th = 20, p95 = 8th = 900.
    assert (summary.p50_ms, summary.p95_ms) == (20, 900)
    assert summary.by_mode == {"photo": 1, "text": 7}


@pytest.mark.django_db
def test_a_period_holds_only_its_own_searches(events):
    now = timezone.now()
    old_only = reports.search_summary(start=now - timedelta(days=11), end=now - timedelta(days=8))
    assert (old_only.searches, old_only.clicked, old_only.p95_ms) == (1, 1, 5000)
    empty = reports.search_summary(start=now - timedelta(days=30), end=now - timedelta(days=20))
    assert (empty.searches, empty.ctr, empty.p50_ms) == (0, None, None)


# --- the admin page -----------------------------------------------------------------------------


@pytest.fixture
def staff_client(client):
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-12345678")
    client.force_login(admin)
    return client


REPORT = reverse("admin:embeddings_searchevent_changelist")


def table(html: str, table_id: str) -> str:
    match = re.search(rf'<div class="module" id="{table_id}">(.*?)</div>', html, re.S)
    assert match, f"no table {table_id}"
    return match.group(1)


@pytest.mark.django_db
def test_the_admin_report_shows_each_table_for_the_chosen_period(staff_client, events):
    html = staff_client.get(REPORT, {"period": "7d", "few": "5"}).content.decode()
    top = table(html, "top-queries")
    assert re.search(r">shirt<.*?>4<.*?>2<.*?50&nbsp;%", top, re.S)
    assert ">sock<" in table(html, "zero-results") and ">shirt<" not in table(html, "zero-results")
    assert ">scarf<" in table(html, "few-results")
    assert table(html, "slowest").index(">scarf<") < table(html, "slowest").index(">shirt<")
    assert re.search(r"<strong>8</strong> searches", html)
    # The last 24 hours do not reach back to the 10-day-old search; 30 days do.
    day = staff_client.get(REPORT, {"period": "24h"}).content.decode()
    assert re.search(r"<strong>8</strong> searches", day)
    month = staff_client.get(REPORT, {"period": "30d"}).content.decode()
    assert re.search(r"<strong>9</strong> searches", month)


@pytest.mark.django_db
def test_the_admin_report_takes_custom_dates_and_explains_bad_ones(staff_client, events):
    today = timezone.localdate()
    ten_days_ago = today - timedelta(days=10)
    html = staff_client.get(
        REPORT, {"period": "custom", "start": ten_days_ago, "end": ten_days_ago}
    ).content.decode()
    assert re.search(r"<strong>1</strong> searches", html)
    bad = staff_client.get(REPORT, {"period": "custom", "start": today, "end": ten_days_ago})
    assert bad.status_code == 400
    assert "The From date is after the To date" in bad.content.decode()
    missing = staff_client.get(REPORT, {"period": "custom", "start": today})
    assert missing.status_code == 400 and "need both" in missing.content.decode()


@pytest.mark.django_db
def test_the_report_is_for_staff_and_the_rows_are_read_only(client, staff_client, events):
    anonymous = type(client)()
    assert anonymous.get(REPORT).status_code == 302  # to the admin login
    shopper = type(client)()
    shopper.force_login(get_user_model().objects.create_user("x", password="pw-12345678"))
    assert shopper.get(REPORT).status_code == 302  # not staff: to the admin login
    assert staff_client.get(reverse("admin:embeddings_searchevent_add")).status_code == 403
    index = staff_client.get(reverse("admin:index")).content.decode()
    assert REPORT in index and "Search analytics" in index


# --- pruning ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prune_removes_only_rows_older_than_the_limit_with_their_clicks():
    keep = event("new", ago=timedelta(days=89), clicks=(1,))
    gone = [event("old", ago=timedelta(days=91), clicks=(1, 2)) for _ in range(3)]
    assert search_log_prune(older_than=timedelta(days=90)) == 3
    assert list(SearchEvent.objects.all()) == [keep]
    assert list(SearchClick.objects.values_list("search_id", flat=True)) == [keep.id]
    assert not SearchClick.objects.filter(search_id__in=[g.id for g in gone]).exists()
    assert search_log_prune(older_than=timedelta(days=90)) == 0


@pytest.mark.django_db
def test_the_prune_task_follows_search_log_days_and_zero_keeps_everything(settings):
    event("a", ago=timedelta(days=40))
    event("b", ago=timedelta(days=5))
    settings.SEARCH_LOG_DAYS = 0
    assert search_log_prune_task.delay().get() == 0
    assert SearchEvent.objects.count() == 2
    settings.SEARCH_LOG_DAYS = 30
    assert search_log_prune_task.delay().get() == 1
    assert list(SearchEvent.objects.values_list("query", flat=True)) == ["b"]


def test_the_prune_runs_daily_from_celery_beat():
    entry = settings.CELERY_BEAT_SCHEDULE["search-log-prune"]
    assert entry["task"] == "embeddings.tasks.search_log_prune_task"
    assert entry["task"] in celery_app.tasks
    assert entry["schedule"] == 24 * 3600


@pytest.mark.django_db
def test_clicks_on_a_search_are_counted_once_per_product_by_the_service():
    product = catalog_services.product_create(title="Tee", price=Decimal("5"), images=[])
    row = event("tee")
    assert search_click_record(search_id=str(row.id), product_id=product.pk) is True
    assert search_click_record(search_id=row.id, product_id=product.pk) is False
    assert SearchClick.objects.count() == 1
