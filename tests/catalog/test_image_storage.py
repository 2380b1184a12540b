"""A rejected or failed image write leaves no file behind in storage."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog import services
from catalog.models import ProductImage
from tests.conftest import make_image
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)


def png(name: str = "p.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_image(), content_type="image/png")


def stored_files(settings) -> list[str]:
    root = settings.MEDIA_ROOT
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def staff_client() -> APIClient:
    staff = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    return client


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"position": "2147483648"}, "position"),
        ({"position": "99999999999999999999"}, "position"),
        ({"position": "-1"}, "position"),
        ({"position": "first"}, "position"),
        ({"alt_text": "x" * 256}, "alt_text"),
    ],
)
def test_bad_image_fields_are_400_and_store_no_file(staff_client, settings, fields, field):
    product = ProductFactory()
    response = staff_client.post(
        f"/api/v1/products/{product.pk}/images/", {"image": png(), **fields}, format="multipart"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["details"]
    assert error["message"].startswith(f"{field}:")
    assert stored_files(settings) == [] and product.images.count() == 0


def test_the_largest_position_is_accepted(staff_client):
    product = ProductFactory()
    response = staff_client.post(
        f"/api/v1/products/{product.pk}/images/",
        {"image": png(), "position": "2147483647"},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["position"] == 2147483647


def test_service_checks_fields_before_writing_the_file(settings):
    product = ProductFactory()
    with pytest.raises(ValidationError) as caught:
        services.product_image_add(product=product, file=png(), alt_text="x" * 300)
    assert "alt_text" in caught.value.message_dict
    assert stored_files(settings) == []


def test_a_row_that_fails_to_save_takes_its_file_with_it(settings, monkeypatch):
    product = ProductFactory()

    def fail(self, *args, **kwargs):
        raise IntegrityError("simulated")

    monkeypatch.setattr(ProductImage, "save", fail)
    with pytest.raises(IntegrityError):
        services.product_image_add(product=product, file=png())
    assert stored_files(settings) == []


def test_a_create_that_fails_on_a_later_image_removes_the_earlier_files(settings, monkeypatch):
    real_save = ProductImage.save
    calls = []

    def fail_on_third(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 3:
            raise IntegrityError("simulated")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(ProductImage, "save", fail_on_third)
    with pytest.raises(IntegrityError):
        services.product_create(title="Tee", images=[png("a.png"), png("b.png"), png("c.png")])
    assert stored_files(settings) == []
    assert not ProductImage.objects.exists()
