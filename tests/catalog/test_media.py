"""Product image files at MEDIA_URL: inactive means private, staff still see everything."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services
from tests.conftest import make_image

pytestmark = pytest.mark.django_db


def product_with_image(*, active: bool):
    upload = SimpleUploadedFile("shirt.png", make_image(), content_type="image/png")
    product = services.product_create(title="Shirt", is_active=active, images=[upload])
    return product.images.get()


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(
        django_user_model.objects.create_user("staff", "s@x.io", "pw", is_staff=True)
    )
    return client


def test_active_products_image_is_public_and_cacheable(client):
    image = product_with_image(active=True)
    response = client.get(image.image.url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == make_image()
    assert response["Content-Type"] == "image/png"
    assert response["Cache-Control"] == "public, max-age=86400"
    # No session lookup for a public image, so shared caches need not vary by cookie.
    assert "Cookie" not in response.get("Vary", "")


def test_inactive_products_image_is_404_for_shoppers(client):
    image = product_with_image(active=False)
    response = client.get(image.image.url)
    assert response.status_code == 404
    assert response["Cache-Control"] == "no-store"


def test_staff_see_images_of_active_and_inactive_products(staff_client):
    active, inactive = product_with_image(active=True), product_with_image(active=False)
    assert staff_client.get(active.image.url).status_code == 200
    response = staff_client.get(inactive.image.url)
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"


def test_deactivating_a_product_hides_its_image_and_reactivating_shows_it(client):
    image = product_with_image(active=True)
    services.product_update(product=image.product, is_active=False)
    assert client.get(image.image.url).status_code == 404
    services.product_update(product=image.product, is_active=True)
    assert client.get(image.image.url).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/media/products/1/nope.png",
        "/media/../searchsite/settings.py",
        "/media/%2e%2e/%2e%2e/etc/passwd",
        "/media/products/1/..%2f..%2f..%2fetc%2fpasswd",
        "/media//etc/passwd",
        "/media/products/1/x%00.png",
    ],
)
def test_unknown_and_traversal_paths_are_404(staff_client, settings, path):
    (settings.MEDIA_ROOT / "products").mkdir(parents=True, exist_ok=True)
    assert staff_client.get(path).status_code == 404


def test_a_file_no_image_row_names_is_404(client, settings):
    # An orphan left in storage (or anything else under MEDIA_ROOT) is not published.
    folder = settings.MEDIA_ROOT / "products" / "7"
    folder.mkdir(parents=True)
    (folder / "orphan.png").write_bytes(make_image())
    assert client.get("/media/products/7/orphan.png").status_code == 404


def test_unchanged_image_revalidates_with_304(client):
    image = product_with_image(active=True)
    first = client.get(image.image.url)
    again = client.get(image.image.url, HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])
    assert again.status_code == 304


def test_x_accel_redirect_hands_the_bytes_to_nginx_after_the_check(client, settings):
    settings.MEDIA_ACCEL = "x-accel-redirect"
    settings.MEDIA_ACCEL_PREFIX = "/protected-media/"
    image = product_with_image(active=True)
    response = client.get(image.image.url)
    assert response.status_code == 200 and response.content == b""
    assert response["X-Accel-Redirect"] == f"/protected-media/{image.image.name}"
    assert response["Content-Type"] == "image/png"
    hidden = product_with_image(active=False)
    assert client.get(hidden.image.url).status_code == 404


def test_x_sendfile_names_the_file_on_disk(client, settings):
    settings.MEDIA_ACCEL = "x-sendfile"
    image = product_with_image(active=True)
    response = client.get(image.image.url)
    assert response["X-Sendfile"] == str(settings.MEDIA_ROOT / image.image.name)
