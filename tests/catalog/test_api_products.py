from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog.models import Category, Product, ProductImage
from embeddings.models import IndexChange
from tests.conftest import make_image
from tests.factories import CategoryFactory, ProductFactory, ProductImageFactory

API = "/api/v1"


def png(name: str = "p.png", color=(200, 30, 30), **kwargs) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_image(color, **kwargs), content_type="image/png")


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)


@pytest.fixture
def staff_client(staff) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=staff)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def shopper_client(db) -> APIClient:
    user = get_user_model().objects.create_user("shopper", password="pw-shopper-123")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


# --- reads ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_product_json_has_the_documented_shape(anon):
    product = ProductFactory(title="Giraffe tee", price=Decimal("19.99"), category__name="T-shirts")
    ProductImageFactory(product=product, alt_text="front")
    body = anon.get(f"{API}/products/{product.pk}/").json()
    assert set(body) == {
        "id",
        "title",
        "description",
        "price",
        "currency",
        "sku",
        "is_active",
        "category",
        "attributes",
        "boost",
        "stock",
        "popularity",
        "url",
        "images",
        "created_at",
        "updated_at",
    }
    assert body["attributes"] == {}
    assert body["boost"] == 0.0 and body["stock"] is None and body["popularity"] == 0.0
    assert body["price"] == "19.99" and body["currency"] == "USD"
    assert body["category"] == {"id": product.category.pk, "name": "T-shirts", "slug": "t-shirts"}
    assert body["url"].startswith("http://testserver/")
    (image,) = body["images"]
    assert set(image) == {
        "id",
        "url",
        "width",
        "height",
        "thumbnails",
        "position",
        "alt_text",
        "index_status",
        "index_error",
    }
    assert image["url"].startswith("http://testserver/media/")
    assert image["alt_text"] == "front"


@pytest.mark.django_db
@pytest.mark.parametrize("with_request", [True, False])
def test_product_json_fast_path_equals_the_model_serializer(with_request):
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from catalog.api.serializers import ProductSerializer

    full = ProductFactory(category=CategoryFactory(name="Bags"), price=Decimal("12.5"))
    ProductImageFactory(product=full, position=1, alt_text="side")
    ProductImageFactory(product=full, position=0)
    bare = ProductFactory(category=None, price=None, description="")
    context = {"request": Request(APIRequestFactory().get("/"))} if with_request else {}
    for product in Product.objects.filter(id__in=[full.id, bare.id]).prefetch_related("images"):
        serializer = ProductSerializer(context=context)
        assert serializer.to_representation(product) == serializer.full_representation(product)


@pytest.mark.django_db
def test_list_is_public_paginated_and_hides_inactive_products(anon):
    ProductFactory.create_batch(3)
    ProductFactory(is_active=False)
    body = anon.get(f"{API}/products/", {"page_size": 2}).json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"] and body["previous"] is None


@pytest.mark.django_db
def test_staff_list_includes_inactive_products(staff_client):
    ProductFactory()
    ProductFactory(is_active=False)
    assert staff_client.get(f"{API}/products/").json()["count"] == 2


@pytest.mark.django_db
def test_list_filters_by_category_slug_and_price(anon):
    shirts = CategoryFactory(name="T-shirts")
    cheap = ProductFactory(category=shirts, price=Decimal("9.00"))
    dear = ProductFactory(category=shirts, price=Decimal("50.00"))
    shoe = ProductFactory(category=CategoryFactory(name="Shoes"), price=Decimal("20.00"))

    def ids(**params):
        return {p["id"] for p in anon.get(f"{API}/products/", params).json()["results"]}

    assert ids(category="t-shirts") == {cheap.pk, dear.pk}
    assert ids(category="t-shirts", price_min="10") == {dear.pk}
    assert ids(price_max="20") == {cheap.pk, shoe.pk}
    assert ids(category="no-such-category") == set()


@pytest.mark.django_db
@pytest.mark.parametrize("page_size", ["0", "101", "100000", "-5", "lots"])
def test_list_rejects_an_absurd_page_size(anon, page_size):
    error = assert_error(anon.get(f"{API}/products/", {"page_size": page_size}), 400)
    assert "page_size" in error["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("price", ["cheap", "1e400", "NaN", "12,50"])
def test_list_rejects_a_non_numeric_price(anon, price):
    error = assert_error(anon.get(f"{API}/products/", {"price_min": price}), 400)
    assert "price_min" in error["message"]


@pytest.mark.django_db
def test_list_page_past_the_end_is_404_in_the_error_shape(anon):
    ProductFactory()
    assert_error(anon.get(f"{API}/products/", {"page": 5}), 404, "not_found")


@pytest.mark.django_db
def test_unknown_or_inactive_product_is_404_for_shoppers(anon):
    hidden = ProductFactory(is_active=False)
    assert_error(anon.get(f"{API}/products/999999/"), 404, "not_found")
    assert_error(anon.get(f"{API}/products/{hidden.pk}/"), 404, "not_found")


@pytest.mark.django_db
def test_categories_are_listed_unpaginated(anon):
    CategoryFactory(name="Bags")
    CategoryFactory(name="Shoes")
    body = anon.get(f"{API}/categories/").json()
    assert [c["slug"] for c in body] == ["bags", "shoes"]


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_token_endpoint_gives_a_token_that_authorizes_writes(anon, staff):
    response = anon.post(f"{API}/auth/token/", {"username": "staff", "password": "pw-staff-123"})
    assert response.status_code == 200
    anon.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert anon.post(f"{API}/products/", {"title": "Tee"}, format="json").status_code == 201


@pytest.mark.django_db
def test_token_endpoint_rejects_a_wrong_password(anon, staff):
    assert_error(anon.post(f"{API}/auth/token/", {"username": "staff", "password": "nope"}), 400)


@pytest.mark.django_db
def test_writes_without_credentials_are_401(anon):
    product = ProductFactory()
    assert_error(
        anon.post(f"{API}/products/", {"title": "Tee"}, format="json"), 401, "not_authenticated"
    )
    assert_error(anon.patch(f"{API}/products/{product.pk}/", {"title": "x"}, format="json"), 401)
    assert_error(anon.delete(f"{API}/products/{product.pk}/"), 401)
    assert_error(anon.post(f"{API}/products/{product.pk}/images/", {"image": png()}), 401)
    assert Product.objects.count() == 1


@pytest.mark.django_db
def test_writes_by_a_non_staff_user_are_403(shopper_client):
    product = ProductFactory()
    image = ProductImageFactory(product=product)
    assert_error(
        shopper_client.post(f"{API}/products/", {"title": "Tee"}, format="json"),
        403,
        "permission_denied",
    )
    assert_error(
        shopper_client.put(f"{API}/products/{product.pk}/", {"title": "x"}, format="json"), 403
    )
    assert_error(shopper_client.delete(f"{API}/products/{product.pk}/"), 403)
    assert_error(shopper_client.delete(f"{API}/products/{product.pk}/images/{image.pk}/"), 403)
    assert Product.objects.get().title == product.title


@pytest.mark.django_db
def test_a_wrong_token_is_401(anon):
    anon.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = anon.post(f"{API}/products/", {"title": "Tee"}, format="json")
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_staff_session_without_csrf_token_cannot_write(staff):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff)
    response = client.post(f"{API}/products/", {"title": "Tee"}, format="json")
    assert_error(response, 403)


# --- writes ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_staff_creates_a_product_with_two_images_which_get_indexed(staff_client):
    response = staff_client.post(
        f"{API}/products/",
        {
            "title": "Red circle tee",
            "price": "12.50",
            "category": "T-shirts",
            "images": [png("front.png"), png("back.png", (30, 30, 200), shape="square")],
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["category"]["slug"] == "t-shirts"
    assert body["is_active"] is True
    assert body["sku"].startswith("SKU-")
    assert [img["position"] for img in body["images"]] == [0, 1]
    # Eager Celery: the images were embedded when the create committed.
    assert [img["index_status"] for img in body["images"]] == ["indexed", "indexed"]


@pytest.mark.django_db
def test_create_with_json_uses_an_existing_category_by_name(staff_client):
    shoes = CategoryFactory(name="Shoes")
    body = staff_client.post(
        f"{API}/products/", {"title": "Runner", "sku": "RUN-1", "category": "shoes"}, format="json"
    ).json()
    assert body["category"]["id"] == shoes.pk
    assert body["sku"] == "RUN-1"
    assert Category.objects.count() == 1


@pytest.mark.django_db
def test_staff_sets_boost_and_stock_and_patch_keeps_them(staff_client):
    body = staff_client.post(
        f"{API}/products/", {"title": "Runner", "boost": 0.5, "stock": 3}, format="json"
    ).json()
    assert body["boost"] == 0.5 and body["stock"] == 3
    url = f"{API}/products/{body['id']}/"
    body = staff_client.patch(url, {"stock": None}, format="json").json()
    assert body["boost"] == 0.5 and body["stock"] is None
    product = Product.objects.get(pk=body["id"])
    assert (product.boost, product.stock) == (0.5, None)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "title"),
        ({"title": "  "}, "title"),
        ({"title": "Tee", "price": "-1"}, "price"),
        ({"title": "Tee", "price": "abc"}, "price"),
        ({"title": "Tee", "price": "123456789012"}, "price"),
        ({"title": "Tee", "is_active": "maybe"}, "is_active"),
        ({"title": "Tee", "boost": 11}, "boost"),
        ({"title": "Tee", "boost": "lots"}, "boost"),
        ({"title": "Tee", "stock": -1}, "stock"),
    ],
)
def test_create_rejects_bad_fields_with_a_400_naming_the_field(staff_client, payload, field):
    error = assert_error(staff_client.post(f"{API}/products/", payload, format="json"), 400)
    assert field in error["details"]
    assert Product.objects.count() == 0


@pytest.mark.django_db
def test_create_with_a_taken_sku_is_400(staff_client):
    ProductFactory(sku="DUP-1")
    error = assert_error(
        staff_client.post(f"{API}/products/", {"title": "Tee", "sku": "DUP-1"}, format="json"), 400
    )
    assert "sku" in error["message"].lower()


@pytest.mark.django_db
def test_create_with_a_bad_image_stores_nothing(staff_client):
    response = staff_client.post(
        f"{API}/products/",
        {"title": "Tee", "images": [png(), SimpleUploadedFile("notes.jpg", b"not an image")]},
        format="multipart",
    )
    error = assert_error(response, 415, "unsupported_media_type")
    assert "notes.jpg" in error["message"]
    assert Product.objects.count() == 0


@pytest.mark.django_db
def test_multipart_create_without_is_active_keeps_the_product_active(staff_client):
    body = staff_client.post(f"{API}/products/", {"title": "Tee"}, format="multipart").json()
    assert body["is_active"] is True


@pytest.mark.django_db
def test_patch_changes_only_the_given_fields(staff_client):
    product = ProductFactory(title="Old", price=Decimal("5.00"), description="keep me")
    response = staff_client.patch(
        f"{API}/products/{product.pk}/", {"title": "New", "category": "Bags"}, format="json"
    )
    assert response.status_code == 200
    product.refresh_from_db()
    assert (product.title, product.price, product.description) == (
        "New",
        Decimal("5.00"),
        "keep me",
    )
    assert product.category.name == "Bags"


@pytest.mark.django_db
def test_put_replaces_fields_and_empty_category_clears_it(staff_client):
    product = ProductFactory(description="old text", is_active=False)
    response = staff_client.put(
        f"{API}/products/{product.pk}/", {"title": "Replaced", "category": ""}, format="json"
    )
    assert response.status_code == 200, response.content
    product.refresh_from_db()
    assert (product.title, product.description, product.category, product.is_active) == (
        "Replaced",
        "",
        None,
        True,
    )


@pytest.mark.django_db
def test_update_of_an_unknown_product_is_404(staff_client):
    assert_error(staff_client.patch(f"{API}/products/424242/", {"title": "x"}, format="json"), 404)


@pytest.mark.django_db(transaction=True)
def test_delete_removes_the_product_and_its_images_from_the_index(staff_client):
    product = ProductFactory()
    image = ProductImageFactory(product=product)
    assert staff_client.delete(f"{API}/products/{product.pk}/").status_code == 204
    assert not Product.objects.filter(pk=product.pk).exists()
    assert IndexChange.objects.filter(image_id=image.pk, op="delete").exists()


# --- images ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_staff_adds_an_image_and_gets_its_json(staff_client):
    product = ProductFactory()
    ProductImageFactory(product=product)
    response = staff_client.post(
        f"{API}/products/{product.pk}/images/",
        {"image": png(), "alt_text": "side"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["position"] == 1
    assert body["alt_text"] == "side"
    assert body["index_status"] == "indexed"
    assert product.images.count() == 2


@pytest.mark.django_db
def test_image_upload_of_an_unsupported_type_is_415(staff_client):
    product = ProductFactory()
    pdf = SimpleUploadedFile(
        "catalog.png", b"%PDF-1.4 not really an image", content_type="image/png"
    )
    error = assert_error(
        staff_client.post(
            f"{API}/products/{product.pk}/images/", {"image": pdf}, format="multipart"
        ),
        415,
        "unsupported_media_type",
    )
    assert "JPEG" in error["message"]
    assert product.images.count() == 0


@pytest.mark.django_db
def test_oversized_image_upload_is_413_with_the_limit_in_the_message(staff_client, settings):
    settings.MAX_UPLOAD_BYTES = 2048
    product = ProductFactory()
    big = SimpleUploadedFile("big.bmp", make_image(size=(64, 64), fmt="BMP"))
    error = assert_error(
        staff_client.post(
            f"{API}/products/{product.pk}/images/", {"image": big}, format="multipart"
        ),
        413,
        "file_too_large",
    )
    assert "2 KB" in error["message"]


@pytest.mark.django_db
def test_corrupt_image_upload_is_400_invalid_image(staff_client):
    product = ProductFactory()
    data = make_image(size=(200, 200), fmt="JPEG")
    cut = SimpleUploadedFile("cut.jpg", data[: len(data) // 2])
    assert_error(
        staff_client.post(
            f"{API}/products/{product.pk}/images/", {"image": cut}, format="multipart"
        ),
        400,
        "invalid_image",
    )


@pytest.mark.django_db
def test_decompression_bomb_upload_is_400(staff_client, settings):
    settings.MAX_IMAGE_PIXELS = 10_000
    product = ProductFactory()
    bomb = SimpleUploadedFile("bomb.png", make_image(size=(500, 500), shape="none"))
    error = assert_error(
        staff_client.post(
            f"{API}/products/{product.pk}/images/", {"image": bomb}, format="multipart"
        ),
        400,
        "image_too_large",
    )
    assert "500x500" in error["message"]


@pytest.mark.django_db
def test_image_upload_without_a_file_is_400(staff_client):
    product = ProductFactory()
    error = assert_error(
        staff_client.post(f"{API}/products/{product.pk}/images/", {}, format="multipart"), 400
    )
    assert "image" in error["details"]


@pytest.mark.django_db
def test_image_upload_to_an_unknown_product_is_404(staff_client):
    assert_error(
        staff_client.post(f"{API}/products/98765/images/", {"image": png()}, format="multipart"),
        404,
    )


@pytest.mark.django_db
def test_json_body_on_the_image_endpoint_is_415(staff_client):
    product = ProductFactory()
    assert_error(
        staff_client.post(f"{API}/products/{product.pk}/images/", {"image": "x"}, format="json"),
        415,
    )


@pytest.mark.django_db(transaction=True)
def test_staff_deletes_an_image_and_it_leaves_the_index(staff_client):
    image = ProductImageFactory()
    url = f"{API}/products/{image.product_id}/images/{image.pk}/"
    assert staff_client.delete(url).status_code == 204
    assert not ProductImage.objects.filter(pk=image.pk).exists()
    assert IndexChange.objects.filter(image_id=image.pk, op="delete").exists()


@pytest.mark.django_db
def test_deleting_another_products_image_is_404(staff_client):
    image = ProductImageFactory()
    other = ProductFactory()
    assert_error(staff_client.delete(f"{API}/products/{other.pk}/images/{image.pk}/"), 404)
    assert ProductImage.objects.filter(pk=image.pk).exists()


@pytest.mark.django_db
def test_unsupported_method_is_405_in_the_error_shape(anon):
    assert_error(anon.delete(f"{API}/categories/"), 401)
    staff_user = get_user_model().objects.create_user("s2", password="pw-s2-12345", is_staff=True)
    anon.force_authenticate(staff_user)
    assert_error(anon.delete(f"{API}/categories/"), 405, "method_not_allowed")
