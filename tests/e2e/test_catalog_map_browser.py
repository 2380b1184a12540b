"""The admin's catalog map in a real browser: staff follow the admin index's link, the plot
draws one point per product, hovering a point shows its thumbnail in the side panel, a legend
click hides a category's points, and clicking a point opens the product's admin page."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import services as catalog_services
from catalog.models import Category, Product
from tests.conftest import make_image

# The browser, page and screenshot fixtures of the shopper pages' browser tests (system
# Chromium; a missing one fails the test, never skips it).
from tests.e2e.test_browser import browser, page, shots  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

POINTS = "#catalog-map .scatterlayer path.point"


def add(title: str, category: Category, color: tuple, n: int) -> None:
    # 200 px pictures, so the worker makes a 160 px thumbnail for the hover panel.
    data = make_image(color, size=(200, 200), shape=["circle", "square", "stripes"][n % 3])
    catalog_services.product_create(
        title=title,
        description="",
        price=Decimal("12"),
        category=category,
        images=[SimpleUploadedFile(f"p{n}.png", data, content_type="image/png")],
    )


def test_staff_explore_the_catalog_map(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    django_user_model,
):
    tees, shoes = Category.objects.create(name="Tees"), Category.objects.create(name="Shoes")
    for n in range(6):
        add(f"Red tee {n}", tees, (220, 30 + 10 * n, 30), n)
    for n in range(4):
        add(f"Blue shoe {n}", shoes, (30, 30 + 10 * n, 220), n)
    django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123")

    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-123")
    page.click("input[type=submit]")
    page.click("#search-index-module a:has-text('Catalog map')")
    page.wait_for_url(f"**{reverse('admin:embeddings_catalog_map')}")
    page.wait_for_selector("#catalog-map[data-ready='1']")
    assert page.locator(POINTS).count() == 10
    page.screenshot(path=str(shots / "admin-catalog-map.png"), full_page=True)

    # Hover a point: the panel shows that product's 160 px thumbnail, title and category.
    box = page.locator(POINTS).first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#map-panel-thumb:not([hidden])")
    shown = Product.objects.get(id=int(page.get_attribute("#catalog-map", "data-shown")))
    assert page.inner_text("#map-panel-title") == shown.title
    assert page.inner_text("#map-panel-category") == shown.category.name
    src = page.get_attribute("#map-panel-thumb", "src")
    assert src.endswith("-160.webp") and "/thumbs/" in src
    assert page.evaluate("document.getElementById('map-panel-thumb').naturalWidth") == 160

    # The legend toggles a category: hiding Shoes leaves the six tees, showing it again all ten.
    page.click("#catalog-map .legend .traces:has-text('Shoes') .legendtoggle")
    page.wait_for_function(f"document.querySelectorAll('{POINTS}').length === 6")
    page.click("#catalog-map .legend .traces:has-text('Shoes') .legendtoggle")
    page.wait_for_function(f"document.querySelectorAll('{POINTS}').length === 10")

    # A click opens the product's admin page.
    box = page.locator(POINTS).first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.getElementById('catalog-map').dataset.shown !== undefined")
    target = int(page.get_attribute("#catalog-map", "data-shown"))
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(f"**{reverse('admin:catalog_product_change', args=[target])}")
    assert page.input_value("#id_title") == Product.objects.get(id=target).title
