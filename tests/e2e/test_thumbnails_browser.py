"""Light pages in a real browser: the result grid and the product gallery download thumbnails,
never the uploads, and every image carries its size (no layout shift). System Chromium, as in
test_browser.py (a missing Chromium fails, never skips)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from catalog.models import ProductImage
from tests.conftest import make_image
from tests.e2e.test_browser import browser, page  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COLORS = [(200, 30, 30), (30, 30, 200), (30, 160, 40), (230, 200, 30), (120, 40, 160)]


def create_products(count: int) -> list:
    """Products with 900 x 900 photos (bigger than any grid cell), the embedding worker (eager
    in tests) making their thumbnails on commit; every third has a second photo."""
    products = []
    for n in range(count):
        images = [
            SimpleUploadedFile(
                f"p{n}.png", make_image(COLORS[n % 5], size=(900, 900), accent=(n * 9, 255, 0))
            )
        ]
        if n % 3 == 0:
            images.append(
                SimpleUploadedFile(
                    f"p{n}b.png", make_image(COLORS[(n + 2) % 5], size=(900, 600), shape="square")
                )
            )
        products.append(
            catalog_services.product_create(
                title=f"Tee no. {n}", price=Decimal(10 + n), images=images
            )
        )
    return products


def downloaded_media(tab) -> list[str]:
    urls: list[str] = []
    tab.on("response", lambda r: urls.append(r.url) if "/media/" in r.url else None)
    return urls


def scroll_through(tab) -> None:
    """Scrolls to the end so every lazy image loads, then waits for all of them."""
    tab.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    tab.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
    )


def test_result_grid_downloads_only_thumbnails_with_sizes(page, live_server):  # noqa: F811
    create_products(8)
    assert not ProductImage.objects.filter(thumbnail_hash="").exists()
    originals = set(ProductImage.objects.values_list("image", flat=True))
    media = downloaded_media(page)
    page.goto(live_server.url + "/?q=tee")
    assert page.locator(".results .card").count() == 8
    scroll_through(page)
    images = page.eval_on_selector_all(
        ".results .card img",
        """imgs => imgs.map(img => ({src: img.currentSrc, width: img.getAttribute('width'),
            height: img.getAttribute('height'), natural: img.naturalWidth,
            shown: img.getBoundingClientRect().width}))""",
    )
    assert len(images) == 8
    for img in images:
        assert re.search(r"/media/products/\d+/thumbs/\d+-[0-9a-f]{8}-\d+\.webp$", img["src"]), img
        assert img["width"] and img["height"], img
        # At a 1280 px desktop a card is ~220 CSS px wide: the 320 px thumbnail, not the 640.
        assert img["shown"] <= img["natural"] <= 320, img
    assert media, "the page loaded no media at all"
    assert not [u for u in media if any(u.endswith(name) for name in originals)]


def test_product_gallery_shows_medium_thumbnails_and_swaps_them(page, live_server):  # noqa: F811
    product = create_products(1)[0]  # two photos
    first, second = product.images.all()
    originals = {first.image.name, second.image.name}
    media = downloaded_media(page)
    page.goto(f"{live_server.url}/products/{product.pk}/")
    main = page.locator("[data-gallery-main]")
    scroll_through(page)

    def main_src() -> str:
        return main.evaluate("img => img.currentSrc")

    assert re.search(rf"/thumbs/{first.pk}-[0-9a-f]{{8}}-640\.webp$", main_src())
    assert main.get_attribute("width") == "640" and main.get_attribute("height") == "640"
    page.locator("[data-gallery-thumb]").nth(1).click()
    page.wait_for_function(
        "img => img.complete && /thumbs\\/" + str(second.pk) + "-/.test(img.currentSrc)",
        arg=main.element_handle(),
    )
    assert main_src().endswith("-640.webp")
    strip = page.eval_on_selector_all(".gallery-thumbs img", "imgs => imgs.map(i => i.currentSrc)")
    assert len(strip) == 2 and all(src.endswith("-160.webp") for src in strip)
    assert not [u for u in media if any(u.endswith(name) for name in originals)]
