"""The machine's word index (tantivy): ranking over the whole catalog, filters inside the query,
and keeping in step with the change log with one writer per machine."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from catalog.models import Product
from embeddings import runtime
from embeddings.engine.columns import Filter
from embeddings.engine.fulltext import CURRENT, CURSOR, FullText, query_terms
from embeddings.models import IndexChange, IndexChangePrune
from tests.factories import CategoryFactory, ProductFactory

pytestmark = pytest.mark.django_db


def touch(*products: Product | int) -> None:
    """What the product signal writes (written here too: a duplicate change is harmless)."""
    for p in products:
        IndexChange.objects.create(
            product_id=p if isinstance(p, int) else p.id, op=IndexChange.Op.PRODUCT
        )


def ids(fulltext: FullText, text: str, flt: Filter | None = None, limit: int = 100) -> list[int]:
    return fulltext.search(text, flt=flt or Filter(), limit=limit).ids


@pytest.fixture
def fulltext():
    ft = FullText()
    yield ft
    ft.close()


def test_rare_word_beats_common_words(fulltext):
    common = [ProductFactory(title=f"Cotton Shirt {n}") for n in range(20)]
    giraffe = ProductFactory(title="Giraffe Print Top")
    fulltext.sync()
    ranked = ids(fulltext, "giraffe shirt")
    assert ranked[0] == giraffe.id
    assert set(ranked) == {giraffe.id, *(p.id for p in common)}


def test_more_matching_words_rank_higher(fulltext):
    one = ProductFactory(title="Green Red Shirt")
    three = ProductFactory(title="Navy Blue Shirt")
    two = ProductFactory(title="Navy Red Shirt")
    ProductFactory(title="Yellow Socks")
    fulltext.sync()
    assert ids(fulltext, "navy blue shirt") == [three.id, two.id, one.id]


def test_every_matching_product_is_ranked_not_a_capped_sample(fulltext):
    # The old lexical search ranked only the first 2,000 title matches the database returned.
    Product.objects.bulk_create(
        Product(title=f"Plain Shirt {n}", sku=f"P-{n:05d}") for n in range(2100)
    )
    striped = Product.objects.create(title="Striped Shirt", sku="S-1")
    fulltext.sync()
    assert ids(fulltext, "striped shirt", limit=10)[0] == striped.id
    assert len(ids(fulltext, "shirt", limit=5000)) == 2101


def test_plurals_and_word_pieces_find_their_products(fulltext):
    tshirt = ProductFactory(title="Men Navy-Blue Tshirt")
    watch = ProductFactory(title="Steel Watch")
    fulltext.sync()
    assert ids(fulltext, "tshirts") == [tshirt.id]
    assert ids(fulltext, "Watches") == [watch.id]
    assert ids(fulltext, "navy blue") == [tshirt.id]
    assert query_terms("Navy Tshirts navy") == ["navi", "tshirt"]


def test_query_terms_fold_the_catalogs_plural_type_names():
    # The catalog's types are plural ('Tshirts', 'Watches') and its titles singular.
    pairs = [
        ("tshirts", "tshirt"),
        ("watches", "watch"),
        ("dresses", "dress"),
        ("boxes", "box"),
        ("accessories", "accessory"),
        ("shoes", "shoe"),
        ("sunglasses", "sunglass"),
    ]
    for plural, singular in pairs:
        assert query_terms(plural) == query_terms(singular)
    assert query_terms("Navy-Blue T-Shirts, 2 PACK") == ["navi", "blue", "t", "shirt", "2", "pack"]


def test_description_sku_and_category_words_match(fulltext):
    cat = CategoryFactory(name="Outerwear")
    by_description = ProductFactory(title="Jacket", description="Waterproof seams")
    by_category = ProductFactory(title="Coat", category=cat)
    by_sku = ProductFactory(title="Scarf", sku="WOOL-77")
    fulltext.sync()
    assert ids(fulltext, "waterproof") == [by_description.id]
    assert ids(fulltext, "outerwear") == [by_category.id]
    assert ids(fulltext, "wool") == [by_sku.id]


def test_exact_sku_comes_first(fulltext):
    lookup = ProductFactory(title="Leather Belt", sku="AB-100")
    wordy = ProductFactory(title="AB 100 AB 100 adapter", sku="X-1")
    fulltext.sync()
    hits = fulltext.search("ab-100", flt=Filter(), limit=10)
    assert hits.exact_sku == [lookup.id]
    assert hits.ids == [lookup.id, wordy.id]
    assert fulltext.search("  AB-100 ", flt=Filter(), limit=10).exact_sku == [lookup.id]


def test_no_word_matches_gives_nothing(fulltext):
    ProductFactory(title="Blue Shirt")
    fulltext.sync()
    assert ids(fulltext, "giraffe") == []
    assert ids(fulltext, "  ... ") == []
    assert ids(fulltext, "shirt", limit=0) == []


def test_filters_run_inside_the_query(fulltext):
    shirts, shoes = CategoryFactory(name="Shirts"), CategoryFactory(name="Shoes")
    cheap = ProductFactory(title="Blue Shirt", category=shirts, price=Decimal("10"))
    dear = ProductFactory(title="Blue Shirt Deluxe", category=shirts, price=Decimal("90"))
    no_price = ProductFactory(title="Blue Shirt Sample", category=shirts, price=None)
    shoe = ProductFactory(title="Blue Shoe", category=shoes, price=Decimal("50"))
    hidden = ProductFactory(title="Blue Shirt", category=shirts, is_active=False)
    fulltext.sync()
    every = {cheap.id, dear.id, no_price.id, shoe.id}
    assert set(ids(fulltext, "blue")) == every  # inactive products never match
    assert hidden.id not in ids(fulltext, "blue shirt")
    assert set(ids(fulltext, "blue", Filter(category_ids=(shoes.id,)))) == {shoe.id}
    assert set(ids(fulltext, "blue", Filter(category_ids=(shirts.id, shoes.id)))) == every
    assert ids(fulltext, "blue", Filter(category_ids=())) == []
    assert set(ids(fulltext, "blue", Filter(price_min=20.0))) == {dear.id, shoe.id}
    assert set(ids(fulltext, "blue", Filter(price_max=50.0))) == {cheap.id, shoe.id}
    assert set(ids(fulltext, "blue", Filter(price_min=10.0, price_max=10.0))) == {cheap.id}
    excluded = Filter(exclude_product_ids=frozenset({cheap.id, dear.id}))
    assert set(ids(fulltext, "blue", excluded)) == {no_price.id, shoe.id}
    sku_under_filter = Filter(category_ids=(shoes.id,))
    assert fulltext.search(cheap.sku, flt=sku_under_filter, limit=5).exact_sku == []


def test_sync_applies_created_renamed_deactivated_and_deleted_products(fulltext):
    fulltext.sync()
    assert fulltext.status()["docs"] == 0
    product = ProductFactory(title="Red Scarf")
    touch(product)
    fulltext.sync()
    assert ids(fulltext, "scarf") == [product.id]

    product.title = "Red Mittens"
    product.save()
    touch(product)
    fulltext.sync()
    assert ids(fulltext, "scarf") == []
    assert ids(fulltext, "mittens") == [product.id]

    product.is_active = False
    product.save()
    touch(product)
    fulltext.sync()
    assert ids(fulltext, "mittens") == []

    product.is_active = True
    product.save()
    touch(product)
    fulltext.sync()
    assert ids(fulltext, "mittens") == [product.id]

    product_id = product.id
    product.delete()
    touch(product_id)
    touch(product_id)  # applying a change twice is harmless
    fulltext.sync()
    assert ids(fulltext, "mittens") == []
    assert fulltext.status() | {"path": None} == {
        "path": None,
        "docs": 0,
        "seq": IndexChange.objects.latest("id").id,
        "writer": True,
    }


def test_another_process_reads_the_writers_commits_and_takes_over_when_it_closes(fulltext):
    fulltext.sync()
    assert fulltext.is_writer
    other = FullText()
    try:
        other.sync()
        assert not other.is_writer  # one writer a machine
        product = ProductFactory(title="Wool Hat")
        touch(product)
        fulltext.sync()
        assert ids(fulltext, "hat") == [product.id]
        assert ids(other, "hat") == []  # until it reloads
        other.sync()
        assert ids(other, "hat") == [product.id]

        fulltext.close()  # the writer's process ends
        later = ProductFactory(title="Wool Gloves")
        touch(later)
        other.sync()
        assert other.is_writer
        assert ids(other, "gloves") == [later.id]
        assert other.status()["seq"] == IndexChange.objects.latest("id").id
    finally:
        other.close()


def test_a_rebuild_elsewhere_is_picked_up_by_the_writer_and_readers(fulltext):
    first = ProductFactory(title="Linen Trousers")
    fulltext.sync()
    reader = FullText()
    try:
        reader.sync()
        old = fulltext.status()["path"]
        FullText().rebuild()  # e.g. manage.py rebuild_index while the site runs
        later = ProductFactory(title="Linen Shorts")
        touch(later)
        fulltext.sync()
        reader.sync()
        assert fulltext.status()["path"] != old
        for ft in (fulltext, reader):
            assert set(ids(ft, "linen")) == {first.id, later.id}
    finally:
        reader.close()


def test_rebuilds_when_its_cursor_is_behind_the_pruned_log(fulltext, caplog):
    fulltext.sync()
    product = ProductFactory(title="Silk Tie")  # its change is pruned before anyone read it
    touch(product)
    latest = IndexChange.objects.latest("id").id
    IndexChange.objects.all().delete()
    IndexChangePrune.objects.create(pruned_through=latest, deleted=1)
    fulltext.sync()
    assert ids(fulltext, "tie") == [product.id]
    assert "pruned" in caplog.text
    assert fulltext.status()["seq"] >= latest


def test_missing_or_damaged_index_is_rebuilt(fulltext, caplog):
    product = ProductFactory(title="Canvas Bag")
    fulltext.sync()
    fulltext.close()
    folder = fulltext.root / (fulltext.root / CURRENT).read_text().strip()
    (folder / CURSOR).write_text(json.dumps({"format": "something else"}))
    again = FullText()
    try:
        again.sync()
        assert ids(again, "bag") == [product.id]
        assert "no usable cursor" in caplog.text
        again.close()
        (fulltext.root / CURRENT).unlink()
        again.sync()
        assert ids(again, "bag") == [product.id]
    finally:
        again.close()


def test_runtime_keeps_one_fulltext_per_process_and_reset_releases_it(settings):
    product = ProductFactory(title="Denim Jacket")
    first = runtime.get_fulltext()
    assert runtime.get_fulltext() is first
    assert first.search("jacket", flt=Filter(), limit=5).ids == [product.id]
    runtime.reset()
    assert not first.is_writer
    second = runtime.get_fulltext()
    assert second is not first and second.is_writer
