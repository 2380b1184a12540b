"""Search selectors: collapsing images to products, filters, thresholds, similar products."""

import json
import shutil
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from embeddings import runtime, selectors
from embeddings.encoder import load_image
from tests.conftest import make_image
from tests.factories import CategoryFactory

pytestmark = pytest.mark.django_db(transaction=True)

COLOURS = [
    (230, 20, 20),
    (20, 200, 20),
    (20, 20, 230),
    (230, 230, 20),
    (20, 230, 230),
    (230, 20, 230),
]


def product(title, colours, **kw):
    files = [
        SimpleUploadedFile(f"{i}.png", make_image(c, shape=s)) for i, (c, s) in enumerate(colours)
    ]
    return catalog_services.product_create(title=title, images=files, **kw)


def query(colour, shape="circle"):
    return load_image(make_image(colour, shape=shape))


def test_several_images_of_one_product_collapse_to_one_result_with_the_best_score():
    multi = product("Two-image tee", [(COLOURS[0], "circle"), (COLOURS[1], "square")])
    other = product("Other", [(COLOURS[2], "stripes")])
    hits = selectors.product_search(image=query(COLOURS[1], "square"), limit=10)
    assert [h.product.id for h in hits] == [multi.id, other.id]
    assert hits[0].image_id == multi.images.get(position=1).id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_filters_by_category_and_price_and_hide_inactive_products():
    shirts, bags = CategoryFactory(name="Shirts"), CategoryFactory(name="Bags")
    cheap = product("Cheap shirt", [(COLOURS[0], "circle")], category=shirts, price=Decimal("10"))
    dear = product("Dear shirt", [(COLOURS[1], "circle")], category=shirts, price=Decimal("90"))
    bag = product("Bag", [(COLOURS[2], "circle")], category=bags, price=Decimal("50"))
    hidden = product("Hidden", [(COLOURS[3], "circle")], category=shirts, is_active=False)
    q = query(COLOURS[0])
    ids = lambda **kw: {h.product.id for h in selectors.product_search(image=q, limit=50, **kw)}  # noqa: E731
    assert ids() == {cheap.id, dear.id, bag.id}
    assert ids(category="shirts") == {cheap.id, dear.id}
    assert ids(price_min=Decimal("20")) == {dear.id, bag.id}
    assert ids(price_max=Decimal("60"), category="bags") == {bag.id}
    assert hidden.id not in ids()


def test_filters_reach_past_the_first_page_of_vector_hits():
    shirts, bags = CategoryFactory(name="Shirts"), CategoryFactory(name="Bags")
    many = [
        product(f"Shirt {i}", [(((i * 8) % 255, 30, 30), "circle")], category=shirts)
        for i in range(30)
    ]
    far_bag = product("Far bag", [((10, 10, 250), "stripes")], category=bags)
    hits = selectors.product_search(image=query((0, 30, 30)), limit=1, category="bags")
    assert [h.product.id for h in hits] == [far_bag.id]
    assert len(many) == 30


def test_text_and_image_together_use_both(settings):
    a = product("A", [(COLOURS[0], "circle")])
    product("B", [(COLOURS[2], "square")])
    both = selectors.query_vector(text="a red tee", image=query(COLOURS[0]))
    text_only = selectors.query_vector(text="a red tee")
    image_only = selectors.query_vector(image=query(COLOURS[0]))
    assert float(both @ text_only) < 0.9999 and float(both @ image_only) < 0.9999
    assert float(both @ text_only) > 0 and float(both @ image_only) > 0
    assert (
        selectors.product_search(text="a red tee", image=query(COLOURS[0]), limit=5)[0].product.id
        == a.id
    )


def test_missing_or_overlong_query_is_a_search_error():
    with pytest.raises(selectors.SearchError, match="Give a text query"):
        selectors.product_search(text="   ")
    with pytest.raises(selectors.SearchError, match="limit is 500"):
        selectors.product_search(text="x" * 501)


def test_min_score_turns_weak_text_matches_into_no_results(settings):
    product("A", [(COLOURS[0], "circle")])
    assert selectors.product_search(text="anything", limit=5)
    settings.EMBEDDINGS_MIN_SCORE = 0.9999
    assert len(selectors.product_search(text="anything", limit=5)) == 0
    # Image queries are never cut off: the shopper showed us what they want.
    assert selectors.product_search(image=query(COLOURS[1]), limit=5)


def test_min_score_defaults_to_the_model_cards_calibrated_value(
    settings, tiny_checkpoint, tmp_path
):
    ckpt = tmp_path / "carded.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    shutil.copy(str(tiny_checkpoint) + ".json", str(ckpt) + ".json")
    (tmp_path / "carded.card.json").write_text(json.dumps({"min_score": 0.42}))
    settings.EMBEDDINGS_PRETRAINED = str(ckpt)
    runtime.reset()
    assert runtime.get_min_score() == 0.42
    settings.EMBEDDINGS_MIN_SCORE = -1.0
    assert runtime.get_min_score() == -1.0


def test_similar_products_exclude_the_product_itself_and_rank_lookalikes_first():
    base = product("Base", [(COLOURS[0], "circle"), (COLOURS[0], "square")])
    twin = product("Twin", [(COLOURS[0], "circle")])
    product("Different", [(COLOURS[2], "stripes")])
    hits = selectors.product_similar(product_id=base.id, limit=5)
    assert base.id not in [h.product.id for h in hits]
    assert hits[0].product.id == twin.id
    assert len(selectors.product_similar(product_id=999999)) == 0


def test_query_text_vectors_are_cached(monkeypatch):
    product("A", [(COLOURS[0], "circle")])
    encoder = runtime.get_encoder()
    calls = []
    real = encoder.encode_texts
    monkeypatch.setattr(encoder, "encode_texts", lambda texts: calls.append(texts) or real(texts))
    selectors.product_search(text="Blue  Shirt", limit=3)
    selectors.product_search(text="blue shirt", limit=3)
    assert len(calls) == 1


def test_iterating_results_loads_products_in_one_query(django_assert_max_num_queries):
    for i in range(5):
        product(f"P{i}", [(COLOURS[i], "circle")])
    results = selectors.product_search(image=query(COLOURS[0]), limit=10)
    with django_assert_max_num_queries(3):  # products + prefetched images (+ category join)
        titles = [hit.product.title for hit in results]
    assert len(titles) == 5


def test_hybrid_puts_exact_title_words_and_skus_first(settings):
    settings.EMBEDDINGS_HYBRID = True
    products = [product(f"Plain item {i}", [(COLOURS[i], "circle")]) for i in range(5)]
    polo = product("Acme polo shirt", [(COLOURS[5], "square")], sku="ACME-POLO-1")
    hits = selectors.product_search(text="acme polo", limit=10)
    assert hits[0].product.id == polo.id
    assert len(hits) == 6, "vector results still follow the lexical ones"
    assert hits[0].image_id == polo.images.get().id and -1.0 <= hits[0].score <= 1.0
    assert selectors.product_search(text="ACME-POLO-1", limit=3)[0].product.id == polo.id
    assert products[0].id in {h.product.id for h in hits}


def test_hybrid_off_is_pure_vector_ranking(settings):
    product("Acme polo shirt", [(COLOURS[5], "square")])
    for i in range(3):
        product(f"Plain item {i}", [(COLOURS[i], "circle")])
    settings.EMBEDDINGS_HYBRID = False
    vector_only = [h.product.id for h in selectors.product_search(text="acme polo", limit=10)]
    expected = [
        h.product.id
        for h in selectors.product_search_by_vector(
            selectors.query_vector(text="acme polo"), limit=10
        )
    ]
    assert vector_only == expected


def test_lexical_matches_respect_filters_and_the_threshold_still_hides_nonsense(settings):
    settings.EMBEDDINGS_HYBRID = True
    settings.EMBEDDINGS_MIN_SCORE = 0.9999
    shirts, bags = CategoryFactory(name="Shirts"), CategoryFactory(name="Bags")
    shirt = product("Acme polo shirt", [(COLOURS[0], "circle")], category=shirts)
    product("Acme tote", [(COLOURS[1], "circle")], category=bags)
    assert [
        h.product.id for h in selectors.product_search(text="acme", category="shirts", limit=5)
    ] == [shirt.id]
    assert len(selectors.product_search(text="qwzx blorf", limit=5)) == 0


def words(text):
    """The word side of hybrid search, as product_search asks it."""
    from embeddings.engine.columns import Filter

    return runtime.get_fulltext().search(text, flt=Filter(), limit=100).ids


def test_lexical_ranking_prefers_more_matching_words():
    one = product("Red shirt", [(COLOURS[0], "circle")])
    two = product("Red giraffe shirt", [(COLOURS[1], "circle")])
    product("Blue bag", [(COLOURS[2], "circle")])
    ranking = words("giraffe shirt")
    assert ranking[:2] == [two.id, one.id] and len(ranking) == 2
    assert words("zq") == []


def test_lexical_ranking_folds_plurals_both_ways():
    tee = product("Men Navy Blue Tshirt", [(COLOURS[0], "circle")])
    watches = product("Watches gift set", [(COLOURS[1], "circle")])
    bag = product("Accessories pouch", [(COLOURS[2], "circle")])
    product("Blue bag", [(COLOURS[3], "circle")])
    assert words("navy tshirts")[0] == tee.id  # plural query, singular title
    assert words("watch") == [watches.id]  # singular query, plural title
    assert words("accessory") == [bag.id]  # -y against -ies


def test_min_score_judges_the_best_hit_not_each_hit(settings):
    settings.EMBEDDINGS_HYBRID = False
    for i, c in enumerate(COLOURS):
        product(f"P{i}", [(c, "circle")])
    settings.EMBEDDINGS_MIN_SCORE = None
    everything = selectors.product_search(text="a tee", limit=10)
    scores = [h.score for h in everything]
    assert len(scores) == 6 and scores[0] > scores[-1]
    # A threshold between the best and the worst hit: a real query keeps its whole ranking.
    settings.EMBEDDINGS_MIN_SCORE = (scores[0] + scores[-1]) / 2
    assert [h.product.id for h in selectors.product_search(text="a tee", limit=10)] == [
        h.product.id for h in everything
    ]
    settings.EMBEDDINGS_MIN_SCORE = scores[0] + 1e-3
    assert len(selectors.product_search(text="a tee", limit=10)) == 0


@pytest.mark.parametrize("hybrid", [False, True])
def test_deep_pages_are_consistent_with_one_deep_ranking(settings, hybrid, monkeypatch):
    """Rankings are computed to the page asked for, not to the 1000-result cap; page after page
    must still be exactly the slices of one deep ranking (no product twice, none skipped)."""
    settings.EMBEDDINGS_HYBRID = hybrid
    settings.EMBEDDINGS_MIN_SCORE = -1
    monkeypatch.setattr(selectors, "RANK_WINDOW", 4)
    for i in range(30):
        colour = tuple((37 * i + 60 * j) % 230 + 20 for j in range(3))
        product(f"{'Striped' if i % 3 else 'Plain'} tee {i}", [(colour, "stripes")])
    deep = [h.product.id for h in selectors.product_search(text="striped tee", limit=1000)[0:30]]
    assert len(deep) == len(set(deep)) == 30
    paged = []
    for start in range(0, 30, 7):
        fresh = selectors.product_search(text="striped tee", limit=1000)  # a new request
        paged += [h.product.id for h in fresh[start : start + 7]]
        assert len(fresh) == 30
    assert paged == deep


def test_product_field_changes_reach_filters_without_re_embedding(settings):
    """Price, category and the active flag live beside the vectors; an edit (or a category's
    deletion) is applied by the next sync, with no new vector computed."""
    settings.EMBEDDINGS_HYBRID = False
    shirts, bags = CategoryFactory(name="Shirts"), CategoryFactory(name="Bags")
    item = product("Tee", [(COLOURS[0], "circle")], category=shirts, price=Decimal("10"))
    other = product("Bag", [(COLOURS[1], "circle")], category=bags, price=Decimal("50"))
    q = query(COLOURS[0])
    ids = lambda **kw: [h.product.id for h in selectors.product_search(image=q, limit=9, **kw)]  # noqa: E731
    assert ids(category="shirts") == [item.id]
    embedded = item.images.get().embeddings.get().updated_at

    item.category, item.price = bags, Decimal("60")
    item.save()
    assert set(ids(category="bags")) == {item.id, other.id} and ids(category="shirts") == []
    assert ids(price_min=Decimal("55")) == [item.id]
    item.is_active = False
    item.save()
    assert ids() == [other.id]
    bags.delete()  # products keep existing, without a category
    assert ids(category="bags") == [] and ids() == [other.id]
    assert item.images.get().embeddings.get().updated_at == embedded, "no re-embedding"
