"""The search API end to end: eager Celery embeds uploads when they commit, so these tests run
with real transactions and search what they just created."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog import services as catalog_services
from tests.conftest import make_image

pytestmark = pytest.mark.django_db(transaction=True)

API = "/api/v1"
RED = {"color": (220, 20, 20), "shape": "circle"}
BLUE = {"color": (20, 20, 220), "shape": "square"}
GREEN = {"color": (20, 200, 40), "shape": "stripes"}
YELLOW = {"color": (230, 220, 30), "shape": "circle", "accent": (0, 0, 0)}


def picture(look: dict, name: str = "p.png", fmt: str = "PNG") -> SimpleUploadedFile:
    look = dict(look)
    return SimpleUploadedFile(name, make_image(look.pop("color"), fmt=fmt, **look))


def product(
    title: str, *looks: dict, category: str | None = None, price: str = "10.00", active: bool = True
):
    return catalog_services.product_create(
        title=title,
        price=Decimal(price),
        category=catalog_services.category_get_or_create(name=category) if category else None,
        is_active=active,
        images=[picture(look, f"{title}-{i}.png") for i, look in enumerate(looks)],
    )


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error


def image_search(client: APIClient, look: dict, **fields):
    return client.post(f"{API}/search/", {"image": picture(look), **fields}, format="multipart")


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def shop():
    """Four products, one of them with two images, one inactive."""
    return {
        "red": product("Red circle tee", RED, category="T-shirts", price="10.00"),
        "blue": product("Blue square bag", BLUE, GREEN, category="Bags", price="40.00"),
        "yellow": product("Yellow tee", YELLOW, category="T-shirts", price="25.00"),
        "hidden": product("Hidden red", RED, category="T-shirts", active=False),
    }


def result_ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [r["product"]["id"] for r in response.json()["results"]]


# --- the main flow ----------------------------------------------------------------------------


def test_product_created_through_the_api_is_found_first_by_its_image(client):
    product("Decoy yellow", YELLOW)
    product("Decoy green", GREEN)
    staff = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    token = Token.objects.create(user=staff)
    writer = APIClient()
    writer.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    created = writer.post(
        f"{API}/products/",
        {
            "title": "Blue bag",
            "category": "Bags",
            "images": [picture(BLUE, "a.png"), picture(RED, "b.png")],
        },
        format="multipart",
    )
    assert created.status_code == 201, created.content
    assert {img["index_status"] for img in created.json()["images"]} == {"indexed"}

    response = image_search(client, BLUE)
    body = response.json()
    assert body["query"] == {"text": "", "image": True, "not": [], "image_weight": None}
    best = body["results"][0]
    assert best["product"]["id"] == created.json()["id"]
    assert best["matched_image_id"] == created.json()["images"][0]["id"]
    assert best["score"] == pytest.approx(1.0, abs=1e-4)


def test_search_response_has_the_documented_shape(client, shop):
    body = client.get(f"{API}/search/", {"q": "  red   shirt "}).json()
    assert set(body) == {
        "count",
        "next",
        "previous",
        "query",
        "search_id",
        "did_you_mean",
        "facets",
        "results",
    }
    assert body["query"] == {"text": "red shirt", "image": False, "not": [], "image_weight": None}
    hit = body["results"][0]
    assert set(hit) == {"score", "matched_image_id", "product"}
    assert {"id", "title", "price", "category", "images", "url"} <= set(hit["product"])


def test_several_images_of_one_product_collapse_to_one_result(client, shop):
    ids = result_ids(image_search(client, GREEN))
    assert ids[0] == shop["blue"].pk
    assert len(ids) == len(set(ids)) == 3  # three active products, each once


def test_text_search_ranks_every_active_indexed_product_once(client, shop):
    ids = result_ids(client.get(f"{API}/search/", {"q": "tee"}))
    assert sorted(ids) == sorted([shop["red"].pk, shop["blue"].pk, shop["yellow"].pk])


def test_inactive_products_are_never_found(client, shop):
    assert shop["hidden"].pk not in result_ids(image_search(client, RED))


def test_image_and_text_together(client, shop):
    body = image_search(client, RED, q="red shirt").json()
    assert body["query"] == {"text": "red shirt", "image": True, "not": [], "image_weight": 0.5}
    scores = {r["product"]["id"]: r["score"] for r in body["results"]}
    # The query is the mean of both vectors: the text moves it off the exact image match
    # (which alone scores 1.0). Ranking by the text part is arbitrary with a random-init model.
    assert 0 < scores[shop["red"].pk] < 0.999


def test_jpeg_query_image_works(client, shop):
    response = client.post(
        f"{API}/search/", {"image": picture(YELLOW, "q.jpg", fmt="JPEG")}, format="multipart"
    )
    assert result_ids(response)[0] == shop["yellow"].pk


# --- filters ----------------------------------------------------------------------------------


def test_filters_by_category_and_price_in_query_string(client, shop):
    assert set(result_ids(client.get(f"{API}/search/", {"q": "x", "category": "t-shirts"}))) == {
        shop["red"].pk,
        shop["yellow"].pk,
    }
    assert result_ids(
        client.get(f"{API}/search/", {"q": "x", "price_min": "20", "price_max": "30"})
    ) == [shop["yellow"].pk]


def test_image_search_takes_filters_as_form_fields(client, shop):
    # Blue is the best match, but the category filter leaves only t-shirts.
    ids = result_ids(image_search(client, BLUE, category="t-shirts"))
    assert set(ids) == {shop["red"].pk, shop["yellow"].pk}


@pytest.mark.parametrize("field", ["price_min", "price_max"])
def test_non_numeric_price_is_400_naming_the_field(client, shop, field):
    error = assert_error(client.get(f"{API}/search/", {"q": "tee", field: "cheap"}), 400)
    assert field in error["message"]


def test_empty_optional_fields_count_as_not_given(client, shop):
    params = {
        "q": "tee",
        "category": "",
        "price_min": "",
        "price_max": "",
        "page": "",
        "page_size": "",
    }
    assert len(result_ids(client.get(f"{API}/search/", params))) == 3
    response = client.post(
        f"{API}/search/", {"image": picture(RED), "price_min": "", "page": ""}, format="multipart"
    )
    assert result_ids(response)[0] == shop["red"].pk


def test_price_range_upside_down_is_400(client, shop):
    error = assert_error(
        client.get(f"{API}/search/", {"q": "tee", "price_min": "50", "price_max": "10"}), 400
    )
    assert "price_max" in error["message"]


# --- pagination -------------------------------------------------------------------------------


def test_results_are_paged_with_links(client, shop):
    first = client.get(f"{API}/search/", {"q": "tee", "page_size": 2}).json()
    assert first["count"] == 3
    assert len(first["results"]) == 2
    assert first["previous"] is None and "page=2" in first["next"]
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 1
    assert second["next"] is None and second["previous"]
    all_ids = [r["product"]["id"] for r in first["results"] + second["results"]]
    assert len(set(all_ids)) == 3


def test_page_past_the_end_is_404_in_the_error_shape(client, shop):
    error = assert_error(client.get(f"{API}/search/", {"q": "tee", "page": 9}), 404, "not_found")
    assert "last page" in error["message"]


def test_no_results_is_an_empty_first_page_not_404(client, shop):
    body = client.get(f"{API}/search/", {"q": "tee", "category": "no-such"}).json()
    assert body["count"] == 0 and body["results"] == []


def test_query_string_page_wins_over_the_form_so_next_links_work_for_posts(client, shop):
    response = client.post(
        f"{API}/search/?page=2",
        {"image": picture(RED), "page": "1", "page_size": "2"},
        format="multipart",
    )
    body = response.json()
    assert len(body["results"]) == 1 and body["previous"]


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": "0"},
        {"page_size": "101"},
        {"page_size": "99999"},
        {"page_size": "all"},
        {"page": "0"},
        {"page": "first"},
    ],
)
def test_absurd_paging_is_400(client, shop, params):
    assert_error(client.get(f"{API}/search/", {"q": "tee", **params}), 400)


# --- bad queries ------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "    "}, {"category": "t-shirts"}])
def test_missing_query_is_400_with_a_clear_message(client, params):
    error = assert_error(client.get(f"{API}/search/", params), 400, "invalid")
    assert error["message"].startswith("q: ") and "?q=giraffe+shirt" in error["message"]
    assert set(error["details"]) == {"q"}


def test_post_without_image_or_text_is_400(client):
    error = assert_error(client.post(f"{API}/search/", {}, format="multipart"), 400)
    assert error["message"] == "Give a text query (q), an image, or both."


def test_overlong_text_query_is_400(client):
    error = assert_error(client.get(f"{API}/search/", {"q": "x" * 600}), 400)
    assert "limit" in error["message"]


def test_corrupt_query_image_is_400_invalid_image(client, shop):
    data = make_image(size=(200, 200), fmt="JPEG")
    cut = SimpleUploadedFile("cut.jpg", data[: len(data) // 3])
    assert_error(
        client.post(f"{API}/search/", {"image": cut}, format="multipart"), 400, "invalid_image"
    )


def test_non_image_query_file_is_400_invalid_image(client, shop):
    text = SimpleUploadedFile("q.png", b"just some text", content_type="image/png")
    error = assert_error(
        client.post(f"{API}/search/", {"image": text}, format="multipart"), 400, "invalid_image"
    )
    assert "JPEG" in error["message"]


def test_oversized_query_image_is_413(client, shop, settings):
    settings.MAX_UPLOAD_BYTES = 1024
    big = SimpleUploadedFile("big.bmp", make_image(size=(64, 64), fmt="BMP"))
    assert_error(
        client.post(f"{API}/search/", {"image": big}, format="multipart"), 413, "file_too_large"
    )


def test_decompression_bomb_query_image_is_400_image_too_large(client, shop, settings):
    settings.MAX_IMAGE_PIXELS = 10_000
    bomb = SimpleUploadedFile("bomb.png", make_image(size=(300, 300)))
    error = assert_error(
        client.post(f"{API}/search/", {"image": bomb}, format="multipart"), 400, "image_too_large"
    )
    assert "10,000 pixels" in error["message"] and "Resize" in error["message"]


def test_big_png_query_is_refused_but_a_jpeg_as_big_is_decoded_small(client, shop, settings):
    # PNGs are decoded in full (CPU grows with pixels), JPEGs at a reduced DCT scale.
    settings.EMBEDDINGS_QUERY_MAX_PIXELS = 50_000
    png = SimpleUploadedFile("big.png", make_image(size=(300, 300), fmt="PNG"))
    error = assert_error(
        client.post(f"{API}/search/", {"image": png}, format="multipart"), 400, "image_too_large"
    )
    assert "0.05 megapixels" in error["message"] and "JPEG" in error["message"]
    jpeg = SimpleUploadedFile("big.jpg", make_image(size=(800, 800), fmt="JPEG"))
    response = client.post(f"{API}/search/", {"image": jpeg}, format="multipart")
    assert response.status_code == 200, response.content


def test_json_body_needs_parts_and_other_bodies_are_415(client):
    # JSON is the weighted-parts form (tests/embeddings/test_steerable.py); `q` is not a part.
    error = assert_error(client.post(f"{API}/search/", {"q": "tee"}, format="json"), 400)
    assert "parts" in error["details"]
    plain = client.post(f"{API}/search/", "q=tee", content_type="text/plain")
    assert_error(plain, 415)


# --- similar ----------------------------------------------------------------------------------


def test_similar_leaves_out_the_product_itself_and_ranks_the_rest(client, shop):
    twin = product("Another red tee", RED, category="T-shirts")
    response = client.get(f"{API}/products/{shop['red'].pk}/similar/")
    ids = result_ids(response)
    assert shop["red"].pk not in ids
    assert ids[0] == twin.pk
    assert response.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert response.json()["count"] == len(ids) == 3  # blue, yellow, twin; not the inactive one


def test_similar_respects_limit(client, shop):
    assert (
        len(result_ids(client.get(f"{API}/products/{shop['red'].pk}/similar/", {"limit": 1}))) == 1
    )


@pytest.mark.parametrize("limit", ["0", "101", "ten", "-1"])
def test_similar_rejects_a_bad_limit(client, shop, limit):
    error = assert_error(
        client.get(f"{API}/products/{shop['red'].pk}/similar/", {"limit": limit}), 400
    )
    assert "limit" in error["message"]


def test_similar_of_an_unknown_or_inactive_product_is_404(client, shop):
    assert_error(client.get(f"{API}/products/99999/similar/"), 404, "not_found")
    assert_error(client.get(f"{API}/products/{shop['hidden'].pk}/similar/"), 404, "not_found")


def test_similar_of_a_product_without_images_is_empty(client, shop):
    bare = product("No pictures yet")
    assert client.get(f"{API}/products/{bare.pk}/similar/").json() == {"count": 0, "results": []}


def test_deleted_product_disappears_from_search(client, shop):
    assert shop["blue"].pk in result_ids(image_search(client, BLUE))
    catalog_services.product_delete(product=shop["blue"])
    assert shop["blue"].pk not in result_ids(image_search(client, BLUE))


# --- the product list and search answer bad paging and filters alike --------------------------


@pytest.mark.parametrize("page", ["-1", "0", "abc", "1.5", "last"])
def test_list_and_search_both_refuse_a_bad_page_with_400(client, shop, page):
    for url in (f"{API}/products/", f"{API}/search/?q=tee"):
        error = assert_error(client.get(url, {"page": page}), 400, "invalid")
        assert error["message"].startswith("page"), (url, error)
        assert "page" in error["details"]


def test_list_and_search_both_answer_a_page_past_the_end_with_the_same_404(client, shop):
    listed = assert_error(client.get(f"{API}/products/", {"page_size": 2, "page": 3}), 404)
    searched = assert_error(
        client.get(f"{API}/search/", {"q": "tee", "page_size": 2, "page": 3}), 404
    )
    assert (
        listed
        == searched
        == {
            "code": "not_found",
            "message": "Page 3 is past the last page of results (2).",
        }
    )
    assert len(client.get(f"{API}/products/", {"page_size": 2, "page": 2}).json()["results"]) == 1


def test_list_and_search_both_refuse_an_upside_down_price_range(client, shop):
    params = {"price_min": "50", "price_max": "10"}
    listed = assert_error(client.get(f"{API}/products/", params), 400, "invalid")
    searched = assert_error(client.get(f"{API}/search/", {"q": "tee", **params}), 400, "invalid")
    assert listed["message"] == searched["message"]
    assert "swap them" in listed["message"] and set(listed["details"]) == {"price_min"}
    equal = client.get(f"{API}/products/", {"price_min": "10", "price_max": "10"})
    assert [p["title"] for p in equal.json()["results"]] == ["Red circle tee"]


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
    ids=["no-body", "empty-form", "empty-multipart"],
)
def test_post_search_with_an_empty_body_is_a_400_not_a_500(content_type):
    # Found by the fuzz run: POST /api/v1/search/ with no body at all answered 500.
    client = APIClient()
    if content_type is None:
        response = client.post(f"{API}/search/")
    else:
        response = client.generic("POST", f"{API}/search/", b"", content_type=content_type)
    assert_error(response, 400)
