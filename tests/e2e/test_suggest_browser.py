"""Type-ahead and "did you mean" in a real browser (system Chromium, as in test_browser.py; a
missing Chromium fails, never skips): typing a prefix shows suggestions, the keyboard or the
mouse chooses one and searches it; a typo gets "Did you mean", whose link searches the fix."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from catalog import services as catalog_services
from embeddings import suggestions
from tests.e2e.test_browser import browser, page, shots  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_suggestions(settings):
    settings.SEARCH_SUGGEST_REFRESH = 0.0
    suggestions.clear_suggest_caches()
    yield
    suggestions.clear_suggest_caches()


def make_shop() -> None:
    for title, category in (
        ("Tshirt", "Tops"),
        ("Navy Blue Cotton Tshirt", "Tops"),
        ("Navy Blue Jeans", "Jeans"),
        ("Red Running Shoe", "Shoes"),
    ):
        catalog_services.product_create(
            title=title,
            price=Decimal("20"),
            category=catalog_services.category_get_or_create(name=category),
            images=[],
        )


def options(page) -> list[str]:  # noqa: F811
    page.locator("#header-q-suggestions [role=option]").first.wait_for()
    return page.locator("#header-q-suggestions .suggestion-text").all_inner_texts()


def test_typing_shows_suggestions_and_choosing_one_searches_it(page, live_server, shots):  # noqa: F811
    make_shop()
    page.goto(live_server.url + "/")
    box = page.locator("#header-q")
    assert box.get_attribute("role") == "combobox"
    assert box.get_attribute("aria-autocomplete") == "list"
    assert box.get_attribute("aria-expanded") == "false"

    box.press_sequentially("navy b", delay=40)
    assert options(page) == [
        "navy blue",
        "navy blue cotton",
        "navy blue cotton tshirt",
        "navy blue jeans",
    ]
    assert box.get_attribute("aria-expanded") == "true"
    page.screenshot(path=str(shots / "search-typeahead.png"))

    # Keyboard: down twice, up once -> the first option is active; Enter searches it.
    box.press("ArrowDown")
    box.press("ArrowDown")
    box.press("ArrowUp")
    active = box.get_attribute("aria-activedescendant")
    assert page.locator(f"#{active}").get_attribute("aria-selected") == "true"
    assert page.locator(f"#{active} .suggestion-text").inner_text() == "navy blue"
    box.press("Enter")
    page.wait_for_url(re.compile(r"/\?q=navy\+blue$"))
    assert page.locator(".results h1").inner_text() == "Results for “navy blue”"

    # Mouse: a category suggestion, clicked.
    box.fill("")
    box.press_sequentially("sho", delay=40)
    assert "shoes" in options(page)
    page.locator("#header-q-suggestions [role=option]", has_text="shoes").click()
    page.wait_for_url(re.compile(r"/\?q=shoes$"))
    assert page.locator(".results .card").count() == 1

    # Escape closes the list without searching.
    box.fill("")
    box.press_sequentially("ts", delay=40)
    assert options(page) == ["tshirt"]
    box.press("Escape")
    assert page.locator("#header-q-suggestions").is_hidden()
    assert box.get_attribute("aria-expanded") == "false"


def test_a_typo_shows_did_you_mean_and_its_link_searches_the_fix(page, live_server, shots):  # noqa: F811
    make_shop()
    page.goto(live_server.url + "/")
    page.fill("#header-q", "tshrit")
    page.press("#header-q", "Enter")
    page.wait_for_url(re.compile(r"/\?q=tshrit"))
    line = page.locator(".did-you-mean")
    assert line.inner_text() == "Did you mean tshirt?"
    page.screenshot(path=str(shots / "search-did-you-mean.png"))
    line.locator("a").click()
    page.wait_for_url(re.compile(r"/\?q=tshirt$"))
    assert page.locator(".did-you-mean").count() == 0
    assert page.locator(".results .card").count() == 2


def test_the_header_box_suggests_on_a_product_page_too(page, live_server):  # noqa: F811
    # The header's box is on every page; type-ahead used to load on the search page only.
    make_shop()
    from catalog.models import Product

    product = Product.objects.get(title="Red Running Shoe")
    page.goto(live_server.url + product.get_absolute_url())
    page.locator("#header-q").press_sequentially("navy b", delay=40)
    assert "navy blue jeans" in options(page)
    page.locator("#header-q-suggestions [role=option]", has_text="navy blue jeans").click()
    page.wait_for_url(re.compile(r"\?q=navy\+blue\+jeans"))
