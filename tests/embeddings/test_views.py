"""The search page at `/`, through Django's test client.

Products are created through the catalog service so their images are embedded on commit (eager
Celery), hence transactional tests. The model is a tiny random-init CLIP: text results are
arbitrary but deterministic, while a photo identical to a product's image scores 1.0.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import services as catalog_services
from embeddings.views import PER_PAGE
from tests.conftest import distinct_image as picture
from tests.conftest import make_image

pytestmark = pytest.mark.django_db(transaction=True)

SEARCH = reverse("embeddings:search")


def create(
    title: str,
    n: int,
    *,
    price: str = "19.99",
    category: str = "Shirts",
    active: bool = True,
    extra_images=(),
):
    images = [SimpleUploadedFile(f"p{n}.png", picture(n))]
    images += [SimpleUploadedFile(f"p{n}-{i}.png", picture(m)) for i, m in enumerate(extra_images)]
    return catalog_services.product_create(
        title=title,
        price=Decimal(price),
        category=catalog_services.category_get_or_create(name=category),
        is_active=active,
        images=images,
    )


def card_titles(response) -> list[str]:
    return re.findall(r'<h3 class="card-title">(.*?)</h3>', response.content.decode())


def photo(n: int, name: str = "query.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, picture(n), content_type="image/png")


def upload(client, data: dict):
    response = client.post(SEARCH, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    return response, parse_qs(urlparse(response["Location"]).query)


# --- browse, text ---------------------------------------------------------------------------


def test_empty_query_browses_newest_active_products(client):
    create("Old tee", 0)
    create("Hidden tee", 1, active=False)
    create("New tee", 2)
    response = client.get(SEARCH)
    assert response.status_code == 200
    assert card_titles(response) == ["New tee", "Old tee"]
    assert "New arrivals" in response.content.decode()


def test_browse_applies_filters(client):
    create("Cheap shirt", 0, price="5.00")
    create("Pricey shirt", 1, price="80.00")
    create("Cheap shoe", 2, price="6.00", category="Shoes")
    response = client.get(SEARCH, {"category": "shirts", "price_max": "10"})
    assert card_titles(response) == ["Cheap shirt"]


def test_text_search_renders_a_grid_of_product_cards(client):
    create("Red tee", 0, price="12.50")
    create("Blue tee", 1)
    response = client.get(SEARCH, {"q": "red shirt"})
    assert response.status_code == 200
    assert sorted(card_titles(response)) == ["Blue tee", "Red tee"]
    html = response.content.decode()
    assert "Results for “red shirt”" in html
    assert "12.50" in html and "Shirts" in html
    assert '<img src="/media/products/' in html
    assert "score" not in html.lower()


def test_text_search_hides_inactive_products(client):
    create("Visible tee", 0)
    create("Retired tee", 1, active=False)
    response = client.get(SEARCH, {"q": "tee"})
    assert card_titles(response) == ["Visible tee"]


def test_several_images_of_one_product_are_one_result(client):
    create("Three photo tee", 0, extra_images=[1, 2])
    create("One photo tee", 3)
    response = client.get(SEARCH, {"q": "tee"})
    assert sorted(card_titles(response)) == ["One photo tee", "Three photo tee"]


def test_text_search_applies_category_and_price_filters(client):
    create("Cheap shirt", 0, price="5.00")
    create("Pricey shirt", 1, price="80.00")
    create("Cheap shoe", 2, price="6.00", category="Shoes")
    response = client.get(
        SEARCH, {"q": "anything", "category": "shirts", "price_min": "1", "price_max": "10"}
    )
    assert response.status_code == 200
    assert card_titles(response) == ["Cheap shirt"]


def test_no_match_says_so_honestly(client):
    create("Shirt", 0, price="10.00")
    response = client.get(SEARCH, {"q": "shirt", "price_min": "500"})
    assert response.status_code == 200
    assert card_titles(response) == []
    assert "No good match" in response.content.decode()


def test_text_pagination_uses_page_links(client):
    for n in range(PER_PAGE + 3):
        create(f"Tee {n}", n)
    first = client.get(SEARCH, {"q": "tee"})
    second = client.get(SEARCH, {"q": "tee", "page": 2})
    assert len(card_titles(first)) == PER_PAGE
    assert len(card_titles(second)) == 3
    assert not set(card_titles(first)) & set(card_titles(second))
    assert "?q=tee&amp;page=2" in first.content.decode()


# --- photo ------------------------------------------------------------------------------------


def test_photo_upload_redirects_to_a_get_url_with_a_token(client):
    create("Red tee", 0)
    target = create("Blue tee", 1)
    response, params = upload(client, {"image": photo(1)})
    assert set(params) == {"qi"}
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert card_titles(page)[0] == target.title
    assert "Results for your photo" in page.content.decode()


def test_photo_token_keeps_working_for_pagination_and_filters(client):
    for n in range(PER_PAGE + 5):
        create(f"Tee {n}", n, price="10.00" if n % 2 else "50.00")
    _, params = upload(client, {"image": photo(4)})
    token = params["qi"][0]
    first = client.get(SEARCH, {"qi": token})
    second = client.get(SEARCH, {"qi": token, "page": 2})
    assert card_titles(first)[0] == "Tee 4"
    assert len(card_titles(first)) == PER_PAGE and len(card_titles(second)) == 5
    assert not set(card_titles(first)) & set(card_titles(second))
    assert f"?qi={token}&amp;page=2" in first.content.decode()
    cheap = client.get(SEARCH, {"qi": token, "price_max": "20"})
    assert cheap.status_code == 200
    assert card_titles(cheap) and all(int(t.split()[1]) % 2 for t in card_titles(cheap))


def test_photo_and_text_together_keep_both_in_the_redirect(client):
    target = create("Green tee", 2)
    create("Red tee", 0)
    response, params = upload(client, {"image": photo(2), "q": "green shirt", "category": "shirts"})
    assert params["q"] == ["green shirt"] and params["category"] == ["shirts"] and "qi" in params
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert target.title in card_titles(page)
    assert "Results for your photo and “green shirt”" in page.content.decode()


def test_text_only_post_redirects_to_a_text_search(client):
    response, params = upload(client, {"q": "red tee", "image": ""})
    assert params == {"q": ["red tee"]}


def test_expired_photo_token_asks_to_upload_again(client):
    create("Red tee", 0)
    response = client.get(SEARCH, {"qi": "no-such-token"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Your photo search has expired" in html and "upload the photo again" in html
    assert card_titles(response) == []


def test_photo_search_and_its_pages_create_no_session_row(client):
    from django.conf import settings
    from django.contrib.sessions.models import Session

    for n in range(PER_PAGE + 2):
        create(f"Tee {n}", n)
    response, params = upload(client, {"image": photo(3), "q": "tee"})
    assert client.get(response["Location"]).status_code == 200
    assert client.get(SEARCH, {"qi": params["qi"][0], "page": 2}).status_code == 200
    assert Session.objects.count() == 0
    assert settings.SESSION_COOKIE_NAME not in client.cookies


def test_photo_link_works_in_another_browser_until_it_expires(client, settings):
    from django.test import Client

    settings.SEARCH_PHOTO_TTL = 1
    create("Red tee", 0)
    response, _ = upload(client, {"image": photo(0)})
    stranger = Client()
    assert card_titles(stranger.get(response["Location"])) == ["Red tee"]
    time.sleep(0.6)
    assert card_titles(client.get(response["Location"])) == ["Red tee"]
    time.sleep(0.6)  # 1.2 s after the upload, 0.6 s after the last use: still there
    assert card_titles(client.get(response["Location"])) == ["Red tee"]
    time.sleep(1.1)
    assert "Your photo search has expired" in client.get(response["Location"]).content.decode()


@pytest.mark.parametrize("token", ["short", "x" * 64 + "y", "bad token with spaces!!", "a" * 22])
def test_malformed_or_unknown_photo_tokens_are_expired_searches(client, token):
    response = client.get(SEARCH, {"qi": token})
    assert response.status_code in (200, 400)
    assert '<h3 class="card-title">' not in response.content.decode()


def test_photo_search_says_so_when_the_cache_is_down(client, monkeypatch):
    from django.core.cache import cache

    def down(*args, **kwargs):
        raise ConnectionError("cache unreachable")

    monkeypatch.setattr(cache, "set", down)
    response = client.post(SEARCH, {"image": photo(0)})
    assert response.status_code == 503
    assert "Photo search is unavailable right now" in response.content.decode()


# --- similar -------------------------------------------------------------------------------


def test_similar_link_lists_other_products_not_the_product_itself(client):
    shown = create("Original tee", 0)
    create("Other tee", 1)
    response = client.get(SEARCH, {"similar": shown.pk})
    assert response.status_code == 200
    assert card_titles(response) == ["Other tee"]
    assert "Similar to" in response.content.decode()


def test_similar_to_a_missing_product_is_a_message(client):
    response = client.get(SEARCH, {"similar": 999999})
    assert response.status_code == 404
    assert "no longer available" in response.content.decode()


# --- bad input: a message on the page, never a 500 -------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "x" * 600}, "The search text is too long"),
        ({"price_min": "abc"}, "Min price must be a number"),
        ({"price_max": "12,5,0"}, "Max price must be a number"),
        ({"price_min": "-3"}, "Min price cannot be negative"),
        ({"price_max": "1.999"}, "Max price can have at most 2 decimal places"),
        ({"price_max": "1e30"}, "Max price is too large"),
        ({"price_min": "NaN"}, "Min price must be a number"),
        ({"price_min": "50", "price_max": "10"}, "Min price is higher than max price"),
        ({"category": "no-such-category"}, "That category does not exist"),
        ({"similar": "abc"}, "That link to similar products is broken"),
    ],
)
def test_bad_query_values_are_a_message_with_400(client, params, message):
    create("Red tee", 0)
    response = client.get(SEARCH, params)
    assert response.status_code == 400
    assert message in response.content.decode()


@pytest.mark.parametrize(
    ("upload_file", "message"),
    [
        (
            SimpleUploadedFile(
                "notes.txt", b"just some text, not a picture", content_type="text/plain"
            ),
            "not a readable image",
        ),
        (
            SimpleUploadedFile("broken.png", make_image()[:60], content_type="image/png"),
            "corrupt or truncated",
        ),
        (SimpleUploadedFile("empty.png", b"", content_type="image/png"), "empty"),
    ],
    ids=["unsupported", "corrupt", "empty"],
)
def test_bad_photo_is_a_message_with_400(client, upload_file, message):
    response = client.post(SEARCH, {"image": upload_file})
    assert response.status_code == 400
    assert message in response.content.decode()


def test_too_large_photo_is_a_message_with_400(client, settings):
    settings.MAX_UPLOAD_BYTES = 1000
    big = make_image(size=(400, 400), shape="stripes", fmt="BMP")
    response = client.post(
        SEARCH, {"image": SimpleUploadedFile("big.bmp", big, content_type="image/bmp")}
    )
    assert response.status_code == 400
    assert "the limit is 1000" in response.content.decode()


def test_photo_with_too_many_pixels_to_decode_is_a_message_with_400(client, settings):
    settings.EMBEDDINGS_QUERY_MAX_PIXELS = 1000
    response = client.post(SEARCH, {"image": photo(0)})
    assert response.status_code == 400
    assert "0.001 megapixels" in response.content.decode()


def test_post_with_neither_photo_nor_text_is_a_message(client):
    response = client.post(SEARCH, {"q": "   "})
    assert response.status_code == 400
    assert "Choose a photo to search with" in response.content.decode()


def test_bad_photo_keeps_the_text_and_filters_the_shopper_typed(client):
    catalog_services.category_get_or_create(name="Shirts")
    response = client.post(
        SEARCH, {"image": SimpleUploadedFile("x.txt", b"nope"), "q": "blue", "category": "shirts"}
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert 'value="blue"' in html and '<option value="shirts" selected>' in html


def test_out_of_range_or_garbage_page_numbers_still_render(client):
    for n in range(3):
        create(f"Tee {n}", n)
    for page in ("abc", "0", "999", "-1"):
        response = client.get(SEARCH, {"q": "tee", "page": page})
        assert response.status_code == 200
        assert len(card_titles(response)) == 3


def test_editing_the_text_of_a_photo_search_keeps_the_photo(client):
    target = create("Green tee", 2)
    for n in range(3, 8):
        create(f"Other {n}", n)
    _, params = upload(client, {"image": photo(2)})
    token = params["qi"][0]
    response = client.get(SEARCH, {"qi": token, "q": "with a collar"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Results for your photo and “with a collar”" in html
    assert f'name="qi" value="{token}"' in html  # header box and filters keep refining it
    assert target.title in card_titles(response)


def test_search_with_a_catalog_photo_shows_that_product_first(client):
    for n in range(4):
        create(f"Tee {n}", n)
    target = create("Two photo tee", 5, extra_images=[6])
    second_photo = list(target.images.all())[1]
    response = client.get(SEARCH, {"photo": second_photo.pk, "category": "shirts"})
    assert response.status_code == 302
    params = parse_qs(urlparse(response["Location"]).query)
    assert set(params) == {"qi", "category"}
    page = client.get(response["Location"])
    assert card_titles(page)[0] == target.title
    assert "Results for your photo" in page.content.decode()


def test_search_with_a_catalog_photo_uses_its_stored_vector(client, monkeypatch):
    from embeddings import selectors as search_selectors
    from embeddings.models import ImageEmbedding

    for n in range(3):
        create(f"Tee {n}", n)
    target = create("Indexed tee", 7)
    image = target.images.first()
    stored = ImageEmbedding.objects.get(image=image).array
    encoded = []
    real_image_vector = search_selectors.image_vector
    monkeypatch.setattr(
        search_selectors,
        "image_vector",
        lambda img: encoded.append(img) or real_image_vector(img),
    )
    response = client.get(SEARCH, {"photo": image.pk})
    assert response.status_code == 302
    assert encoded == []  # indexed: its vector was read, the file was not decoded again
    page = client.get(response["Location"])
    assert card_titles(page)[0] == target.title
    assert search_selectors.stored_image_vector(image_id=image.pk) == pytest.approx(stored)

    # A vector of an earlier version of the file is not used: the photo is decoded instead.
    ImageEmbedding.objects.filter(image=image).update(content_hash="stale")
    assert search_selectors.stored_image_vector(image_id=image.pk) is None
    response = client.get(SEARCH, {"photo": image.pk})
    assert response.status_code == 302 and len(encoded) == 1
    assert card_titles(client.get(response["Location"]))[0] == target.title


@pytest.mark.parametrize("case", ["missing", "inactive", "garbage"])
def test_search_with_an_unavailable_catalog_photo_is_a_message(client, case):
    hidden = create("Retired tee", 0, active=False)
    photo_id = {"missing": 999999, "inactive": hidden.images.first().pk, "garbage": "abc"}[case]
    response = client.get(SEARCH, {"photo": photo_id})
    assert response.status_code in (400, 404)
    html = response.content.decode()
    assert "That photo is no longer in the catalog" in html or "That photo link is broken" in html
