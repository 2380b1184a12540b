"""The admin's index health page in a real browser, as staff use it: log in, follow the link on
the admin index, read the counts, press "Re-index failed images", see the message and the
failed count go down once the (eager) worker has run."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import services as catalog_services
from catalog.models import ProductImage
from tests.conftest import distinct_image

# The browser, page and screenshot fixtures of the shopper pages' browser tests (system
# Chromium; a missing one fails the test, never skips it).
from tests.e2e.test_browser import browser, page, shots  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def figure(page, name: str) -> str:  # noqa: F811 - page is the fixture's value
    return page.inner_text(f'[data-figure="{name}"]').strip()


def test_staff_reindex_failed_images_from_the_health_page(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    django_user_model,
):
    for n in range(4):
        catalog_services.product_create(
            title=f"Tee no. {n}",
            description="",
            price=Decimal(10 + n),
            category=None,
            images=[SimpleUploadedFile(f"t{n}.png", distinct_image(n), content_type="image/png")],
        )
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
    failed_ids = list(ProductImage.objects.order_by("id").values_list("id", flat=True)[:2])
    ProductImage.objects.filter(id__in=failed_ids).update(
        index_status="failed", index_error="the worker could not read the file"
    )
    django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123")

    page.goto(live_server.url + reverse("admin:index"))
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#search-index-module")
    page.screenshot(path=str(shots / "admin-index.png"))
    page.click("#search-index-module a:has-text('Index health')")
    page.wait_for_url(f"**{reverse('admin:embeddings_index_health')}")
    assert page.inner_text("h1") == "Index health"
    assert (figure(page, "indexed"), figure(page, "pending"), figure(page, "failed")) == (
        "2",
        "0",
        "2",
    )
    assert figure(page, "index-size") == "4"
    # The live server is a thread of this process: the page names the process it drew from.
    caption = page.text_content("#index caption")
    assert f"(this web process, pid {os.getpid()})" in caption
    page.screenshot(path=str(shots / "admin-index-health.png"), full_page=True)

    page.click("input[value='Re-index failed images']")
    page.wait_for_selector(".messagelist .success")
    assert page.inner_text(".messagelist .success") == (
        "Queued 2 images that had failed for re-indexing."
    )
    assert (figure(page, "indexed"), figure(page, "failed")) == ("4", "0")
    assert page.locator("input[value='Re-index failed images']").is_disabled()
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
