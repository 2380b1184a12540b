"""Search analytics in a real browser: a shopper searches on the page and opens a result; staff
then open the admin report and see that query with its click. System Chromium, as in
test_browser.py (a missing Chromium fails, never skips)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model

from embeddings.analytics.models import SearchClick, SearchEvent
from tests.e2e.test_browser import browser, create_products, page, shots  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_search_and_its_click_show_in_the_admin_report(page, live_server, shots):  # noqa: F811
    products = create_products(5)
    page.goto(live_server.url + "/")
    page.fill("#header-q", "Blue Hoodie")
    page.press("#header-q", "Enter")
    page.wait_for_url(re.compile(r"\?q=Blue\+Hoodie"))
    assert page.locator(".results .card").count() == 5

    # The shopper opens the second result; its link carries the search's id.
    card = page.locator(".results .card-link").nth(1)
    href = card.get_attribute("href")
    match = re.fullmatch(r"/products/(\d+)/\?sid=([0-9a-f-]{36})", href or "")
    assert match, href
    card.click()
    page.wait_for_url(re.compile(r"/products/\d+/\?sid="))
    assert page.locator("h1").inner_text() in {p.title for p in products}

    search = SearchEvent.objects.get()
    assert (search.query, search.mode, search.result_count) == ("blue hoodie", "text", 5)
    click = SearchClick.objects.get()
    assert (str(click.search_id), click.product_id) == (match[2], int(match[1]))

    # Staff log in and open Embeddings > Search analytics.
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-12345678")
    page.goto(live_server.url + "/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-12345678")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    page.click("a:has-text('Search analytics')")
    page.wait_for_url(re.compile(r"/admin/embeddings/searchevent/"))
    page.select_option("#id_period", "24h")
    page.click("input[value=Show]")
    page.wait_for_url(re.compile(r"period=24h"))

    row = page.locator("#top-queries tbody tr", has_text="blue hoodie")
    assert row.count() == 1
    cells = row.locator("td").all_inner_texts()
    # Query, mode, searches, with a click, CTR ...
    assert cells[:5] == ["blue hoodie", "text", "1", "1", "100\xa0%"]
    summary = page.locator("#summary").inner_text()
    assert "1\nsearches" in summary and "100\xa0%" in summary
    page.screenshot(path=str(shots / "admin-search-analytics.png"), full_page=True)
