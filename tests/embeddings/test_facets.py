"""Sort and facet counts: the API's `sort` and `facets`, the search page's sort select and
facet sidebar. Counts and orders are checked against the products each test makes."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from catalog import services as catalog_services
from catalog.facets import product_facets
from catalog.models import Product
from tests.embeddings.test_api_search import BLUE, GREEN, RED, YELLOW, assert_error, picture

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"


def product(title, look, *, category, price, colour, pattern="plain"):
    return catalog_services.product_create(
        title=title,
        price=None if price is None else Decimal(price),
        category=catalog_services.category_get_or_create(name=category),
        attributes={"colour": colour, "pattern": pattern},
        images=[picture(look, f"{title}.png")],
    )


@pytest.fixture
def shop(settings):
    settings.SEARCH_FACET_PRICE_EDGES = (0, 25, 50)
    return {
        "red": product("Red tee", RED, category="T-shirts", price="12.00", colour="Red"),
        "blue": product(
            "Blue bag", BLUE, category="Bags", price="45.50", colour="Blue", pattern="striped"
        ),
        "green": product("Green tee", GREEN, category="T-shirts", price="30.00", colour="Green"),
        "yellow": product("Yellow tee", YELLOW, category="T-shirts", price="60.00", colour="red"),
        "free": product("Sticker", RED, category="Bags", price=None, colour="Red"),
    }


def photo_search(look, **params):
    return APIClient().post(
        f"{API}/search/", {"image": picture(look), **params}, format="multipart"
    )


def prices(body) -> list:
    return [r["product"]["price"] for r in body["results"]]


def test_facet_counts_of_a_catalog_are_exact(shop):
    facets = product_facets(Product.objects.filter(is_active=True))
    assert facets["category"] == [
        {"value": "t-shirts", "label": "T-shirts", "count": 3},
        {"value": "bags", "label": "Bags", "count": 2},
    ]
    # "Red" and "red" are one value (attributes are stored lower-case).
    assert facets["colour"] == [
        {"value": "red", "label": "red", "count": 3},
        {"value": "blue", "label": "blue", "count": 1},
        {"value": "green", "label": "green", "count": 1},
    ]
    assert facets["pattern"] == [
        {"value": "plain", "label": "plain", "count": 4},
        {"value": "striped", "label": "striped", "count": 1},
    ]
    # The product without a price is in no bucket; 45.50 is below the 50 edge.
    assert facets["price"] == [
        {"min": 0, "max": 25, "count": 1},
        {"min": 25, "max": 50, "count": 2},
        {"min": 50, "max": None, "count": 1},
    ]
    assert facets["type"] == [] and facets["usage"] == [] and facets["gender"] == []


def test_api_search_facets_count_the_results_not_the_page(shop):
    body = photo_search(RED, category="t-shirts", page_size=1).json()
    assert body["count"] == 3 and len(body["results"]) == 1
    assert body["facets"]["category"] == [{"value": "t-shirts", "label": "T-shirts", "count": 3}]
    assert body["facets"]["colour"] == [
        {"value": "red", "label": "red", "count": 2},
        {"value": "green", "label": "green", "count": 1},
    ]
    assert body["facets"]["price"] == [
        {"min": 0, "max": 25, "count": 1},
        {"min": 25, "max": 50, "count": 1},
        {"min": 50, "max": None, "count": 1},
    ]


def test_api_sorts_the_query_results_by_price_both_ways_and_newest(shop):
    relevance = photo_search(BLUE).json()
    assert relevance["results"][0]["product"]["id"] == shop["blue"].id
    ascending = photo_search(BLUE, sort="price").json()
    assert prices(ascending) == ["12.00", "30.00", "45.50", "60.00", None]
    descending = photo_search(BLUE, sort="-price").json()
    assert prices(descending) == ["60.00", "45.50", "30.00", "12.00", None]
    newest = photo_search(BLUE, sort="newest").json()
    order = [r["product"]["id"] for r in newest["results"]]
    assert order == sorted(order, reverse=True)  # created one after another in the fixture
    # Sorting reorders the same results; counts and facets do not change.
    assert ascending["count"] == relevance["count"] == 5
    assert ascending["facets"] == relevance["facets"]
    # Paging keeps the order: page 2 of 2 continues page 1.
    page1 = photo_search(BLUE, sort="price", page_size=2).json()
    page2 = APIClient().post(
        f"{API}/search/?page=2", {"image": picture(BLUE), "sort": "price", "page_size": 2}
    )
    assert prices(page1) + prices(page2.json()) == ["12.00", "30.00", "45.50", "60.00"]


def test_api_rejects_an_unknown_sort(shop):
    response = APIClient().get(f"{API}/search/", {"q": "tee", "sort": "cheapest"})
    error = assert_error(response, 400, "invalid")
    assert "relevance, price, -price, newest" in str(error)


def test_page_browse_sorts_and_shows_facets_with_counts(client, shop):
    response = client.get("/", {"sort": "price"})
    html = response.content.decode()
    assert 'id="sort-select"' in html and '<option value="price" selected>' in html
    order = [p.title for p in response.context["page_obj"]]
    assert order == ["Red tee", "Green tee", "Blue bag", "Yellow tee", "Sticker"]
    facet = re.search(r'data-facet="colour".*?</section>', html, re.S).group(0)
    counts = dict(
        re.findall(r'data-facet-value="([^"]+)"[^>]*>[^<]*</\w+> <span[^>]*>(\d+)<', facet)
    )
    assert counts == {"red": "3", "blue": "1", "green": "1"}


def test_page_category_facet_link_narrows_and_keeps_the_sort(client, shop):
    html = client.get("/", {"sort": "-price"}).content.decode()
    href = re.search(r'<a href="([^"]+)" data-facet-value="bags"', html).group(1)
    assert "sort=-price" in href and "category=bags" in href
    narrowed = client.get("/" + href.replace("&amp;", "&"))
    assert narrowed.status_code == 200
    assert [p.title for p in narrowed.context["page_obj"]] == ["Blue bag", "Sticker"]


def test_page_price_facet_link_selects_its_bucket(client, shop):
    html = client.get("/").content.decode()
    href = re.search(r'<a href="([^"]+)" data-facet-value="25"', html).group(1)
    narrowed = client.get("/" + href.replace("&amp;", "&"))
    assert {p.title for p in narrowed.context["page_obj"]} == {"Green tee", "Blue bag"}


def test_page_rejects_an_unknown_sort(client, shop):
    response = client.get("/", {"sort": "cheapest"})
    assert response.status_code == 400
    assert "Pick a sort order from the list." in response.content.decode()


# --- narrowing by attribute, inside the index ---------------------------------------------------


def test_engine_filter_keeps_rows_with_one_of_the_codes_per_attribute():
    import numpy as np

    from embeddings.engine.columns import Attrs, Filter, attribute_code, columns_from

    red, blue, plain = attribute_code("red"), attribute_code("blue"), attribute_code("plain")
    cols = columns_from(
        [1, 2, 3, 4],
        [
            Attrs(10, True, None, 1.0, (red, plain)),
            Attrs(20, True, None, 1.0, (blue, plain)),
            Attrs(30, True, None, 1.0, (red,)),  # no pattern
            Attrs(40, False, None, 1.0, (red, plain)),  # inactive
        ],
    )
    assert Filter(attributes=((0, (red,)),)).mask(cols).tolist() == [True, False, True, False]
    either = Filter(attributes=((0, tuple(sorted((red, blue)))),))
    assert either.mask(cols).tolist() == [True, True, True, False]
    both = Filter(attributes=((0, (red,)), (1, (plain,))))
    assert both.mask(cols).tolist() == [True, False, False, False]
    assert not both.is_empty and Filter().is_empty
    assert cols["attr7"].dtype == np.int32 and cols["attr7"].tolist() == [0, 0, 0, 0]


def ids_of(body) -> set[int]:
    return {r["product"]["id"] for r in body["results"]}


def test_api_narrows_by_attribute_or_within_and_across(shop):
    red = photo_search(BLUE, colour="Red").json()
    assert ids_of(red) == {shop["red"].id, shop["yellow"].id, shop["free"].id}
    assert red["count"] == 3 and red["facets"]["colour"] == [
        {"value": "red", "label": "red", "count": 3}
    ]
    either = APIClient().post(
        f"{API}/search/?colour=red&colour=blue", {"image": picture(BLUE)}, format="multipart"
    )
    assert ids_of(either.json()) == {
        shop["red"].id,
        shop["yellow"].id,
        shop["free"].id,
        shop["blue"].id,
    }
    both = photo_search(BLUE, colour="blue", pattern="striped").json()
    assert ids_of(both) == {shop["blue"].id}
    none = photo_search(BLUE, colour="red", pattern="striped").json()
    assert none["count"] == 0 and none["results"] == []
    # Words too: the word side keeps only products with the attribute.
    text = APIClient().get(f"{API}/search/", {"q": "tee", "colour": "green"}).json()
    assert ids_of(text) <= {shop["green"].id}


def test_an_attribute_change_reaches_the_index_through_the_change_log(shop):
    assert ids_of(photo_search(GREEN, colour="purple").json()) == set()
    catalog_services.product_update(product=shop["green"], attributes={"colour": "Purple"})
    assert ids_of(photo_search(GREEN, colour="purple").json()) == {shop["green"].id}
    assert shop["green"].id not in ids_of(photo_search(GREEN, colour="green").json())


def test_a_base_built_for_other_facet_attributes_is_not_served(shop, settings):
    from embeddings import runtime
    from embeddings.engine.live import _open_current, base_build, snapshot_root

    encoder = runtime.get_encoder()
    root = snapshot_root(encoder.model_id)
    base_build(model_id=encoder.model_id, dim=encoder.dim, root=root)
    assert _open_current(root, model_id=encoder.model_id, dim=encoder.dim) is not None
    settings.CATALOG_FACET_ATTRIBUTES = ("pattern", "colour")
    assert _open_current(root, model_id=encoder.model_id, dim=encoder.dim) is None


def test_page_colour_facet_click_narrows_to_its_count(client, shop):
    html = client.get("/", {"sort": "price"}).content.decode()
    match = re.search(
        r'<a href="([^"]+)" data-facet-value="red"[^>]*>red</a> <span[^>]*>(\d+)<', html
    )
    href, count = match.group(1).replace("&amp;", "&"), int(match.group(2))
    narrowed = client.get("/" + href)
    titles = [p.title for p in narrowed.context["page_obj"]]
    assert len(titles) == count == 3
    assert titles == ["Red tee", "Yellow tee", "Sticker"]  # still by price
    assert 'aria-current="true" class="selected">red</a>' in narrowed.content.decode()


def test_an_overlong_attribute_value_is_a_400(client, shop):
    response = APIClient().get(f"{API}/search/", {"q": "tee", "colour": "x" * 61})
    error = assert_error(response, 400, "invalid")
    assert "colour must be text of at most 60 characters" in error["message"]
    page = client.get("/", {"colour": "x" * 61})
    assert page.status_code == 400
    assert "at most 60 characters" in page.content.decode()
