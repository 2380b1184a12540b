"""The shopper pages in a real browser: Debian's Chromium driven by Playwright against
pytest-django's live server.

Playwright's own browser download needs its CDN, which this project cannot reach, so the
tests use the system Chromium (`apt-get install -y chromium`). A missing Chromium is a test
failure, never a skip: a silently skipped browser suite would hide a broken search page.
Set E2E_SCREENSHOT_DIR to keep the screenshots somewhere you can look at them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog import services as catalog_services
from embeddings import selectors
from embeddings.encoder import load_image
from embeddings.views import PER_PAGE, photo_query_load
from tests.conftest import distinct_image as picture
from tests.conftest import make_image

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = (
    f"Chromium is required for the browser tests but was not found at {CHROMIUM}. "
    "Install it with: apt-get update && apt-get install -y chromium"
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def chromium_problem() -> str | None:
    installed = os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)
    return None if installed or shutil.which(CHROMIUM) else INSTALL_HINT


@pytest.fixture(scope="module")
def browser():
    problem = chromium_problem()
    if problem:
        pytest.fail(problem)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; Django would then refuse
    # ORM calls from the test body as "async unsafe", though they are plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            try:
                chromium = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
            except Exception as exc:  # a broken install fails here, with the way to fix it
                pytest.fail(f"{INSTALL_HINT}\nLaunching it failed: {exc}")
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("E2E_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


NAMES = ["Tee", "Hoodie", "Dress", "Sneaker", "Tote bag", "Cap", "Scarf"]


def create_products(count: int) -> list:
    categories = [
        catalog_services.category_get_or_create(name=name) for name in ("Tops", "Shoes", "Bags")
    ]
    products = []
    for n in range(count):
        images = [SimpleUploadedFile(f"p{n}.png", picture(n), content_type="image/png")]
        if n % 5 == 0:  # some products have a second photo for the gallery
            images.append(
                SimpleUploadedFile(f"p{n}b.png", picture(n + 100), content_type="image/png")
            )
        products.append(
            catalog_services.product_create(
                title=f"{NAMES[n % len(NAMES)]} no. {n}",
                description=f"A generated test product, number {n}.",
                price=Decimal(10 + n),
                category=categories[n % len(categories)],
                images=images,
            )
        )
    return products


def card_titles(page) -> list[str]:
    return page.locator(".results .card-title").all_inner_texts()


def test_chromium_is_installed():
    assert chromium_problem() is None, INSTALL_HINT


def test_text_query_shows_a_result_grid(page, live_server, shots):
    create_products(6)
    page.goto(live_server.url + "/")
    assert page.locator(".results .card").count() == 6  # browse view before any query
    page.fill("#header-q", "red cotton tee")
    page.press("#header-q", "Enter")
    page.wait_for_url(re.compile(r"\?q=red\+cotton\+tee"))
    assert "Results for “red cotton tee”" in page.inner_text("h1")
    assert page.locator(".results .card").count() == 6
    first_image = page.locator(".results .card img").first
    first_image.wait_for()
    # Images really load from media (naturalWidth is 0 for a broken image).
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=first_image.element_handle()
    )
    page.screenshot(path=str(shots / "search-results.png"), full_page=True)


def shopper_photo(tmp_path) -> Path:
    """The shopper's photo: product 9's picture at (88, 88) in a bigger, unrelated 240 px scene."""
    scene = Image.new("RGB", (240, 240), (90, 90, 90))
    stripes = make_image((250, 250, 250), size=(240, 240), shape="stripes", accent=(0, 0, 0))
    scene.paste(Image.open(io.BytesIO(stripes)))
    scene.paste(Image.open(io.BytesIO(picture(9))).convert("RGB"), (88, 88))
    photo_path = tmp_path / "shopper-photo.png"
    scene.save(photo_path)
    return photo_path


def open_cropper(page, live_server, photo_path):
    page.goto(live_server.url + "/")
    page.click("summary:has-text('Search with a photo')")
    page.set_input_files("#photo-input", str(photo_path))
    canvas = page.locator("[data-cropper] canvas")
    canvas.wait_for(state="visible")
    return canvas


def search_and_check_only_product_9_went_up(page):
    page.click("button:has-text('Search by photo')")
    page.wait_for_url(re.compile(r"\?qi="))
    # Only the cropped region went up: the vector kept for the token is the vector of the
    # product's own picture (Playwright does not expose multipart bodies of form navigations).
    token = re.search(r"qi=([^&]+)", page.url).group(1)
    kept = photo_query_load(token)
    expected = selectors.query_vector(image=load_image(picture(9)))
    assert float(kept @ expected) > 0.999
    assert "Results for your photo" in page.inner_text("h1")


def test_cropped_photo_finds_its_product_first_and_paginates(page, live_server, tmp_path, shots):
    products = create_products(PER_PAGE + 6)
    target = products[9]
    canvas = open_cropper(page, live_server, shopper_photo(tmp_path))
    box = canvas.bounding_box()
    assert round(box["width"]) == 240, "small photos are shown 1:1 so a drag maps to photo pixels"
    page.mouse.move(box["x"] + 88, box["y"] + 88)
    page.mouse.down()
    page.mouse.move(box["x"] + 120, box["y"] + 120, steps=4)
    page.mouse.move(box["x"] + 152, box["y"] + 152, steps=4)
    page.mouse.up()
    assert "64 × 64" in page.inner_text("[data-photo-status]")
    page.screenshot(path=str(shots / "photo-crop.png"))

    search_and_check_only_product_9_went_up(page)
    titles = card_titles(page)
    assert titles[0] == target.title
    assert len(titles) == PER_PAGE

    page.click(".pagination a[rel=next]")
    page.wait_for_url(re.compile(r"qi=.*page=2"))
    assert "Results for your photo" in page.inner_text("h1")
    second = card_titles(page)
    assert len(second) == 6 and not set(second) & set(titles)
    assert page.locator(".pagination .current").inner_text() == "2"


def test_photo_crop_works_from_the_keyboard(page, live_server, tmp_path):
    products = create_products(12)
    canvas = open_cropper(page, live_server, shopper_photo(tmp_path))
    status = page.locator("[data-photo-status]")
    canvas.focus()
    page.keyboard.press("ArrowRight")  # first press: the middle half of the photo
    assert "120 × 120 px area at 60, 60" in status.inner_text()
    page.keyboard.press("Escape")
    assert "whole photo is used" in status.inner_text()
    page.keyboard.press("ArrowDown")
    # Shift + arrows resize (steps of 1/50 of the photo: 5 px here; Alt: 1 px) ...
    for key in ["Shift+ArrowLeft"] * 11 + ["Alt+Shift+ArrowLeft"]:
        page.keyboard.press(key)
    for key in ["Shift+ArrowUp"] * 11 + ["Alt+Shift+ArrowUp"]:
        page.keyboard.press(key)
    assert "64 × 64 px area at 60, 60" in status.inner_text()
    # ... plain arrows move, and the selection never leaves the photo.
    for key in (
        ["ArrowRight"] * 5 + ["Alt+ArrowRight"] * 3 + ["ArrowDown"] * 5 + ["Alt+ArrowDown"] * 3
    ):
        page.keyboard.press(key)
    assert "64 × 64 px area at 88, 88" in status.inner_text()
    for _ in range(40):
        page.keyboard.press("ArrowLeft")
    assert "64 × 64 px area at 0, 88" in status.inner_text()
    for _ in range(40):
        page.keyboard.press("ArrowRight")
    for _ in range(6):
        page.keyboard.press("ArrowLeft")
    page.keyboard.press("Alt+ArrowRight")
    page.keyboard.press("Alt+ArrowRight")
    # 240 - 64 = 176 at the right edge; back 30 and on 2: x = 148. Back to 88 for the search.
    assert "64 × 64 px area at 148, 88" in status.inner_text()
    for key in ["ArrowLeft"] * 12:
        page.keyboard.press(key)
    assert "64 × 64 px area at 88, 88" in status.inner_text()
    search_and_check_only_product_9_went_up(page)
    assert card_titles(page)[0] == products[9].title


def test_product_page_shows_gallery_and_more_like_this(page, live_server, shots):
    products = create_products(8)
    product = products[5]  # has two photos
    page.goto(live_server.url + "/")
    page.click(f".results .card:has-text('{product.title}') a")
    page.wait_for_url(re.compile(rf"/products/{product.pk}/$"))
    assert page.inner_text("h1") == product.title
    assert product.sku in page.inner_text(".product-facts")

    main = page.locator("[data-gallery-main]")
    thumbs = page.locator("[data-gallery-thumb]")
    assert thumbs.count() == 2
    thumbs.nth(1).click()
    # The main frame shows the clicked photo's medium thumbnail (the link keeps the full photo).
    assert main.get_attribute("src") == thumbs.nth(1).get_attribute("data-main-src")

    section = page.locator(".more-like-this")
    assert "More like this" in section.inner_text()
    similar = section.locator(".card-title").all_inner_texts()
    assert similar and product.title not in similar
    assert set(similar) <= {p.title for p in products}
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)"
    )
    page.screenshot(path=str(shots / "product-page.png"), full_page=True)

    section.locator(".card a").first.click()
    page.wait_for_url(re.compile(r"/products/\d+/$"))
    assert page.inner_text("h1") == similar[0]

    # "Search with this photo" follows the photo shown: the second one of this product.
    page.go_back()
    page.wait_for_url(re.compile(rf"/products/{product.pk}/$"))
    page.locator("[data-gallery-thumb]").nth(1).click()
    page.click("[data-photo-search]")
    page.wait_for_url(re.compile(r"\?qi="))
    assert card_titles(page)[0] == product.title
