"""Facets and sort in a real browser (system Chromium, see tests/e2e/test_browser.py): a shopper
searches, sees the facet counts, clicks a colour, gets exactly that many results, then sorts by
price and sees the prices go up."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from tests.conftest import distinct_image
from tests.e2e.test_browser import browser, page  # noqa: F401, F811  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PRODUCTS = [  # title, colour, price
    ("Red tee one", "Red", "30.00"),
    ("Blue tee", "Blue", "12.00"),
    ("Red tee two", "Red", "9.50"),
    ("Green tee", "Green", "45.00"),
    ("Red tee three", "Red", "19.99"),
    ("Blue tee two", "Blue", "60.00"),
]


def money(text: str) -> Decimal:
    return Decimal(re.sub(r"[^0-9.]", "", text))


def test_colour_facet_narrows_and_price_sort_ascends(page, live_server, settings):  # noqa: F811
    settings.EMBEDDINGS_HYBRID = True
    for n, (title, colour, price) in enumerate(PRODUCTS):
        image = SimpleUploadedFile(f"p{n}.png", distinct_image(n), content_type="image/png")
        catalog_services.product_create(
            title=title, price=Decimal(price), attributes={"colour": colour}, images=[image]
        )
    page.goto(live_server.url + "/")
    page.fill("#header-q", "tee")
    page.press("#header-q", "Enter")
    page.wait_for_url(re.compile(r"\?q=tee$"))
    colour = page.locator('[data-facet="colour"]')
    red = colour.locator("li", has=page.locator('[data-facet-value="red"]'))
    assert red.locator("[data-count]").inner_text() == "3"
    assert colour.locator('[data-facet-value="blue"] + [data-count]').inner_text() == "2"

    red.locator("a").click()
    page.wait_for_url(re.compile(r"colour=red"))
    titles = page.locator(".results .card-title").all_inner_texts()
    assert sorted(titles) == ["Red tee one", "Red tee three", "Red tee two"]
    assert page.locator(".results-count").inner_text().startswith("3 products")

    page.select_option("#sort-select", "price")
    page.wait_for_url(re.compile(r"sort=price"))
    assert "colour=red" in page.url and "q=tee" in page.url  # the sort keeps query and facet
    prices = [money(t) for t in page.locator(".results .price").all_inner_texts()]
    assert prices == [Decimal("9.50"), Decimal("19.99"), Decimal("30.00")]
    assert page.locator("#sort-select").input_value() == "price"
