"""Attributes from the import: mapped columns, a gender column, the demo catalog's colour,
pattern and type."""

from __future__ import annotations

import csv

import pytest
from django.core.management import CommandError

from catalog.models import Product
from tests.conftest import make_image
from tests.embeddings.test_commands import row, run, write_catalog

pytestmark = pytest.mark.django_db(transaction=True)


def test_import_maps_attribute_columns_lower_case(tmp_path):
    images = {"a.png": make_image((200, 20, 20)), "b.png": make_image((20, 20, 200))}
    rows = [row("A1", "Red tee", "a.png", colour="Red"), row("B2", "Blue tee", "b.png", colour="")]
    csv_path = write_catalog(tmp_path / "cat", rows, images)
    run(
        "import_catalog",
        "--csv",
        str(csv_path),
        "--no-embed",
        "--attribute-columns",
        "colour=baseColour",
        "type=articleType",
    )
    assert Product.objects.get(sku="A1").attributes == {"colour": "red", "type": "tshirts"}
    # An empty cell means "no colour", not an empty value.
    assert Product.objects.get(sku="B2").attributes == {"type": "tshirts"}

    # Staff-set attributes the import does not map survive a re-run; mapped ones follow the CSV.
    product = Product.objects.get(sku="A1")
    product.attributes = {**product.attributes, "usage": "sports"}
    product.save()
    rows[0]["baseColour"] = "Maroon"
    write_catalog(tmp_path / "cat", rows, images)
    out, _ = run(
        "import_catalog",
        "--csv",
        str(csv_path),
        "--no-embed",
        "--attribute-columns",
        "colour=baseColour",
        "type=articleType",
    )
    assert "1 updated, 1 unchanged" in out
    assert Product.objects.get(sku="A1").attributes == {
        "colour": "maroon",
        "type": "tshirts",
        "usage": "sports",
    }


def test_import_takes_gender_from_a_gender_column(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(make_image())
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "product_id", "title", "gender"])
        writer.writerow(["images/a.png", "G1", "Kurta", "Women"])
    run("import_catalog", "--csv", str(path), "--no-embed")
    assert Product.objects.get(sku="G1").attributes == {"gender": "women"}


def test_import_names_a_missing_or_malformed_attribute_column(tmp_path):
    csv_path = write_catalog(tmp_path / "cat", [row("A1", "Tee", "a.png")], {"a.png": make_image()})
    with pytest.raises(CommandError, match="no attribute column"):
        run("import_catalog", "--csv", str(csv_path), "--attribute-columns", "usage=usage")
    with pytest.raises(CommandError, match="NAME=COLUMN"):
        run("import_catalog", "--csv", str(csv_path), "--attribute-columns", "colour")


def test_demo_catalog_products_have_colour_pattern_and_type(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    run("load_demo_catalog", "--count", "12")
    products = list(Product.objects.all())
    assert len(products) == 12
    for product in products:
        attrs = product.attributes
        assert set(attrs) == {"colour", "pattern", "type"}, attrs
        # The title says the colour; the category is the type.
        assert attrs["colour"] in product.title.lower()
        assert attrs["type"] == product.category.name.lower()
        assert attrs["pattern"] in {"plain", "striped", "dotted", "graphic"}
        assert (attrs["pattern"] == "striped") == ("striped" in product.title)
