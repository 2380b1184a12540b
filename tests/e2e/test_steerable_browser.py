"""Steerable queries in a real browser (system Chromium, see tests/e2e/test_browser.py): a shopper
types a query with a minus word and sees the products with that word move down."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from tests.conftest import distinct_image
from tests.e2e.test_browser import browser, page  # noqa: F401, F811  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def create(title: str, n: int):
    image = SimpleUploadedFile(f"p{n}.png", distinct_image(n), content_type="image/png")
    return catalog_services.product_create(title=title, price=Decimal("12"), images=[image])


def first_words(tab) -> list[str]:
    return [t.split()[0] for t in tab.locator(".results .card-title").all_inner_texts()]


def test_a_minus_word_typed_in_the_box_moves_its_products_down(page, live_server, settings):  # noqa: F811
    settings.EMBEDDINGS_HYBRID = True
    for n in range(3):
        create(f"Striped tee {n}", n)
        create(f"Plain tee {n}", n + 3)
    page.goto(live_server.url + "/")
    page.fill("#header-q", "striped tee")
    page.press("#header-q", "Enter")
    page.wait_for_url(re.compile(r"\?q=striped\+tee$"))
    before = first_words(page)
    assert before[0] == "Striped"
    page.fill("#header-q", "striped tee -striped")
    page.press("#header-q", "Enter")
    page.wait_for_url(re.compile(r"\?q=striped\+tee\+-striped$"))
    assert page.locator("#leaving-out").inner_text() == "Leaving out: “striped”"
    after = first_words(page)
    assert after == ["Plain"] * 3 + ["Striped"] * 3
    assert after != before
