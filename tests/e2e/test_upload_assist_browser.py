"""Suggestions on upload in a real browser, as staff use them: on the product add form, choose
a file that is the same picture as an existing product's; the near-duplicate warning links to
that product, the suggested category is shown, and "accept" sets the category select."""

from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.models import Category
from tests.e2e.test_browser import browser, page, shots  # noqa: F401
from tests.embeddings.test_catalog_map import COOL, WARM, picture
from tests.embeddings.test_upload_assist import ORIGINAL, THRESHOLD, add_product, reencoded

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_see_the_duplicate_warning_and_accept_the_category(
    page,  # noqa: F811
    live_server,
    shots,  # noqa: F811
    django_user_model,
    settings,
    tmp_path,
):
    settings.EMBEDDINGS_DUPLICATE_THRESHOLD = THRESHOLD
    tees, shoes = Category.objects.create(name="Tees"), Category.objects.create(name="Shoes")
    original = add_product("Red circle tee", tees, ORIGINAL, attributes={"colour": "red"})
    for n in range(6):
        add_product(f"Tee {n}", tees, picture(WARM, n), attributes={"colour": "red"})
        add_product(f"Shoe {n}", shoes, picture(COOL, n), attributes={"colour": "blue"})
    django_user_model.objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    upload = tmp_path / "copy-of-the-red-tee.jpg"
    upload.write_bytes(reencoded(ORIGINAL))

    page.goto(live_server.url + reverse("admin:catalog_product_add"))
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#product_form")
    assert page.input_value("#id_category") == ""

    page.set_input_files("#id_add_images", str(upload))
    warning = page.wait_for_selector(".upload-assist-duplicate")
    link = warning.query_selector("a")
    assert link.inner_text() == original.title
    assert link.get_attribute("href") == reverse("admin:catalog_product_change", args=[original.pk])
    assert "Nearly identical to" in warning.inner_text()
    assert page.inner_text(".upload-assist-category-name") == "Tees"
    assert page.inner_text(".upload-assist-attribute-value") == "red"
    page.screenshot(path=str(shots / "admin-upload-assist.png"), full_page=True)

    page.click(".upload-assist-category .upload-assist-accept")
    assert page.input_value("#id_category") == str(tees.pk)
    assert "category set" in page.inner_text(".upload-assist-category")
    page.click(".upload-assist-attribute .upload-assist-accept")
    assert '"colour":"red"' in page.input_value("#id_attributes").replace(" ", "")

    # Advice only: the product saves with the duplicate picture and the accepted category.
    page.fill("#id_title", "Another red tee")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    saved = tees.products.get(title="Another red tee")
    assert saved.images.count() == 1 and saved.attributes.get("colour") == "red"
