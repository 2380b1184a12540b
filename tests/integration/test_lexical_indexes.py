"""PostgreSQL: title and SKU substring lookups (admin search, the product list) are served by
trigram indexes, not a scan. (Search ranks words with its own full-text index.)"""

from __future__ import annotations

import pytest
from django.db import connection

from catalog.models import Product
from tests.factories import ProductFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_title_and_sku_word_lookups_use_the_trigram_indexes():
    if connection.vendor != "postgresql":
        pytest.skip(
            "trigram indexes are PostgreSQL-only; `make test` runs this in its PostgreSQL pass"
        )
    with connection.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'catalog_product'")
        names = {row[0] for row in cur.fetchall()}
    assert {"catalog_product_title_trgm", "catalog_product_sku_trgm"} <= names
    polo = ProductFactory(title="Striped Polo Tshirt", sku="TS-0042")
    ProductFactory(title="Floral Dress", sku="DR-0001")
    with connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned anyway
        plan = Product.objects.filter(title__icontains="polo").explain()
        sku_plan = Product.objects.filter(sku__icontains="ts-00").explain()
    # The index matches the SQL Django writes for icontains (UPPER(col::text) LIKE ...).
    assert "catalog_product_title_trgm" in plan
    assert "catalog_product_sku_trgm" in sku_plan
    assert list(Product.objects.filter(title__icontains="polo")) == [polo]
