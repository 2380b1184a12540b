"""The product page at `/products/<id>/`."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import services as catalog_services
from tests.conftest import make_image

pytestmark = pytest.mark.django_db(transaction=True)


def create(title: str, *colors, active: bool = True, **fields):
    images = [SimpleUploadedFile(f"{i}.png", make_image(color)) for i, color in enumerate(colors)]
    return catalog_services.product_create(title=title, is_active=active, images=images, **fields)


def more_like_this_titles(html: str) -> list[str]:
    section = html.split('id="more-like-this-title"', 1)
    if len(section) < 2:
        return []
    return re.findall(r'<h3 class="card-title">(.*?)</h3>', section[1])


def test_product_page_shows_details_and_every_image(client):
    product = create(
        "Linen shirt",
        (200, 30, 30),
        (30, 30, 200),
        (30, 200, 30),
        description="Breathable linen.\n\nMade in Portugal.",
        price=Decimal("49.90"),
        category=catalog_services.category_get_or_create(name="Shirts"),
        sku="LIN-001",
    )
    response = client.get(reverse("catalog:product-detail", args=[product.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Linen shirt</h1>" in html
    assert "$49.90" in html and "Shirts" in html and "LIN-001" in html
    assert "<p>Breathable linen.</p>" in html and "Made in Portugal." in html
    for image in product.images.all():
        assert image.image.url in html
    assert html.count("data-gallery-thumb") == 3
    assert f"/?similar={product.pk}" in html
    for image in product.images.all():  # "search with this photo", one per image
        assert f"/?photo={image.pk}" in html


def test_missing_product_is_404(client):
    response = client.get(reverse("catalog:product-detail", args=[999999]))
    assert response.status_code == 404


def test_inactive_product_is_404(client):
    product = create("Retired shirt", (200, 30, 30), active=False)
    response = client.get(product.get_absolute_url())
    assert response.status_code == 404


def test_more_like_this_lists_other_products_but_not_this_one(client):
    product = create("Red shirt", (220, 20, 20))
    create("Dark red shirt", (180, 20, 20))
    create("Blue shirt", (20, 20, 220))
    create("Hidden shirt", (200, 20, 20), active=False)
    html = client.get(product.get_absolute_url()).content.decode()
    titles = more_like_this_titles(html)
    assert "More like this" in html
    assert sorted(titles) == ["Blue shirt", "Dark red shirt"]
    assert "Red shirt" not in titles


def test_more_like_this_failure_leaves_the_product_page_working(client, monkeypatch):
    from embeddings.templatetags import search_tags

    def broken(**kwargs):
        raise RuntimeError("index unavailable")

    monkeypatch.setattr(search_tags, "product_similar", broken)
    product = create("Red shirt", (220, 20, 20))
    create("Blue shirt", (20, 20, 220))
    response = client.get(product.get_absolute_url())
    assert response.status_code == 200
    assert "<h1>Red shirt</h1>" in response.content.decode()
    assert "More like this" not in response.content.decode()


def test_product_without_images_renders(client):
    product = catalog_services.product_create(title="Gift card", price=Decimal("25.00"))
    response = client.get(product.get_absolute_url())
    assert response.status_code == 200
    assert "No photo yet" in response.content.decode()


def test_catalog_python_code_never_imports_embeddings():
    from pathlib import Path

    import catalog

    root = Path(catalog.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"^\s*(from|import)\s+embeddings\b", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_more_like_this_loads_its_products_in_a_few_queries(client, django_assert_max_num_queries):
    product = create("Red shirt", (220, 20, 20))
    for n in range(8):
        create(f"Other {n}", (20 * n, 40, 200 - 20 * n))
    client.get(product.get_absolute_url())  # warm the encoder and index
    with django_assert_max_num_queries(10):
        html = client.get(product.get_absolute_url()).content.decode()
    assert len(more_like_this_titles(html)) == 8


def test_prices_show_in_the_shop_currency(client, settings):
    from catalog.templatetags.catalog_tags import format_money

    assert format_money(Decimal("1299.5"), "USD") == "$1,299.50"
    assert format_money(Decimal("12.5"), "CHF") == "12.50 CHF"
    assert format_money(Decimal("1500"), "JPY") == "¥1,500"
    assert format_money(None, "USD") == ""
    product = create("Wool scarf", (20, 20, 20), price=Decimal("1299.00"))
    settings.SHOP_CURRENCY = "EUR"
    html = client.get(reverse("catalog:product-detail", args=[product.pk])).content.decode()
    assert "€1,299.00" in html
    unpriced = create("Mystery box", (90, 20, 20))
    html = client.get(reverse("catalog:product-detail", args=[unpriced.pk])).content.decode()
    assert "Price on request" in html


def test_a_bad_currency_setting_stops_start_up_with_what_to_set():
    import os
    import subprocess
    import sys

    env = {**os.environ, "SHOP_CURRENCY": "dollars"}
    result = subprocess.run(
        [sys.executable, "-c", "import searchsite.settings"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "SHOP_CURRENCY='DOLLARS' is not an ISO 4217 currency code" in result.stderr
