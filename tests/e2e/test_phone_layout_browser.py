"""On a phone the results come first: the filters and facets used to fill the whole first screen
(seen in the README's phone screenshot); a link at the top of the results jumps down to them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from tests.conftest import distinct_image
from tests.e2e.test_browser import browser  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def catalog():
    for n in range(6):
        catalog_services.product_create(
            title=f"Tee {n}",
            price=Decimal("12"),
            images=[SimpleUploadedFile(f"t{n}.png", distinct_image(n), content_type="image/png")],
        )


def open_search(browser, live_server, width: int, height: int):  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(live_server.url + "/?q=tee")
    return context, page


def test_phone_shows_results_before_the_filters(browser, live_server, catalog):  # noqa: F811
    context, page = open_search(browser, live_server, 390, 844)
    try:
        first_card = page.locator(".results .card").first.bounding_box()
        filters = page.locator("aside.filters").bounding_box()
        assert first_card["y"] < filters["y"], "results above the filters"
        assert first_card["y"] < 844, "a result on the first screen"
        link = page.locator("a.to-filters")
        assert link.is_visible()
        link.click()
        page.wait_for_function("location.hash === '#filters'")
    finally:
        context.close()


def test_desktop_keeps_the_sidebar_and_no_jump_link(browser, live_server, catalog):  # noqa: F811
    context, page = open_search(browser, live_server, 1280, 900)
    try:
        first_card = page.locator(".results .card").first.bounding_box()
        filters = page.locator("aside.filters").bounding_box()
        assert filters["x"] < first_card["x"], "the filters sit left of the results"
        assert not page.locator("a.to-filters").is_visible()
    finally:
        context.close()
