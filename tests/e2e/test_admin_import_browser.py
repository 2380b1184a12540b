"""Bulk import in a real browser, as staff use it: from the admin index's "Import products" link,
upload a CSV and a ZIP of images, check the guessed column mapping and fix one, start, and read
the finished job's page: rows created, the skipped row with its line, images indexed."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Product, ProductImage
from tests.conftest import distinct_image

# The browser, page and screenshot fixtures of the shopper pages' browser tests (system
# Chromium; a missing one fails the test, never skips it).
from tests.e2e.test_browser import browser, page, shots  # noqa: F401
from tests.embeddings.test_admin_import import make_csv, make_zip

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def figure(page, name: str) -> str:  # noqa: F811 - page is the fixture's value
    return page.inner_text(f'[data-figure="{name}"]').strip()


def test_staff_import_a_csv_and_zip_through_to_indexed(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    django_user_model,
    tmp_path,
):
    rows = [
        ["T-1", "Red tee", "img/red.png", "19.90", "T-shirt", "Soft cotton"],
        ["T-2", "Blue tee", "img/blue.png", "21.00", "T-shirt", "Loose fit"],
        ["T-3", "Green bag", "green.png", "35", "Bag", "Canvas"],
        ["T-4", "Ghost", "missing.png", "1", "Bag", ""],
    ]
    header = ("article", "product_name", "picture", "price", "kind", "notes")
    (tmp_path / "catalog.csv").write_bytes(make_csv(rows, header=header))
    (tmp_path / "images.zip").write_bytes(
        make_zip(
            {
                "img/red.png": distinct_image(0),
                "img/blue.png": distinct_image(1),
                "green.png": distinct_image(2),
            }
        )
    )
    django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123")

    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-123")
    page.click("input[type=submit]")
    page.click("#search-index-module a:has-text('Import products')")
    page.wait_for_url(f"**{reverse('admin:embeddings_catalogimport_add')}")
    page.set_input_files("#id_csv_file", str(tmp_path / "catalog.csv"))
    page.set_input_files("#id_zip_file", str(tmp_path / "images.zip"))
    page.click("input[value='Upload and map columns']")

    page.wait_for_selector("#import-map")
    assert "article" in page.inner_text("#csv-header")
    # Guessed from the names: article -> SKU, product_name -> title, picture -> image path.
    assert page.input_value("#id_sku") == "article"
    assert page.input_value("#id_title") == "product_name"
    assert page.input_value("#id_path") == "picture"
    assert page.input_value("#id_category") == ""  # "kind" is not a name it knows
    page.select_option("#id_category", "kind")
    page.check("input[name=description][value=notes]")
    page.screenshot(path=str(shots / "admin-import-map.png"), full_page=True)
    page.click("input[value='Start import']")

    # The (eager) worker has run by the time the page loads; a real one reloads it until done.
    page.wait_for_selector("#import-status[data-status='done']", timeout=30_000)
    assert (figure(page, "rows"), figure(page, "created"), figure(page, "skipped")) == (
        "4",
        "3",
        "1",
    )
    assert (figure(page, "indexed"), figure(page, "pending"), figure(page, "failed")) == (
        "3",
        "0",
        "0",
    )
    errors = page.inner_text("#import-errors")
    assert "5" in errors and "not found" in errors
    assert page.locator("#errors-csv").is_visible()
    page.screenshot(path=str(shots / "admin-import-done.png"), full_page=True)

    assert set(Product.objects.values_list("sku", flat=True)) == {"T-1", "T-2", "T-3"}
    assert Product.objects.get(sku="T-2").category.name == "T-shirt"
    assert Product.objects.get(sku="T-3").description == "Canvas"
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
