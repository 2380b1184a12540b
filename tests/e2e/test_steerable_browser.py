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


def test_photo_and_words_slider_moves_between_the_photo_and_the_words(
    page,  # noqa: F811
    live_server,
    settings,
    tmp_path,
):
    settings.EMBEDDINGS_HYBRID = True
    for n in range(3):
        create(f"Striped tee {n}", n)
        create(f"Plain tee {n}", n + 3)
    photo = tmp_path / "plain-tee.png"
    photo.write_bytes(distinct_image(3))  # exactly "Plain tee 0"'s picture
    page.goto(live_server.url + "/")
    page.click("summary:has-text('Search with a photo')")
    page.set_input_files("#photo-input", str(photo))
    page.fill("#photo-form input[name=q]", "striped tee")
    page.click("button:has-text('Search by photo')")
    page.wait_for_url(re.compile(r"[?&]qi="))

    slider = page.locator("form.steer input[type=range]")
    slider.fill("1")  # photo only: the product whose picture it is comes first
    page.click("form.steer button:has-text('Apply')")
    page.wait_for_url(re.compile(r"image_weight=1"))
    photo_first = page.locator(".results .card-title").first.inner_text()
    assert photo_first == "Plain tee 0"

    page.locator("form.steer input[type=range]").fill("0")  # words only
    page.click("form.steer button:has-text('Apply')")
    page.wait_for_url(re.compile(r"image_weight=0(&|$)"))
    words_only = page.locator(".results .card-title").all_inner_texts()
    assert words_only[0].startswith("Striped")
    assert page.locator("form.steer input[type=range]").input_value() == "0"
    # Words only is exactly the plain text search for the same words.
    page.goto(live_server.url + "/?q=striped+tee")
    assert page.locator(".results .card-title").all_inner_texts() == words_only
