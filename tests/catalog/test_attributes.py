"""Product attributes (colour, pattern, type, ...): stored lower-case, edited in the admin,
read and written through the API."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from catalog import services
from catalog.attributes import attributes_normalise
from catalog.models import Product
from tests.catalog.test_admin import product_form
from tests.factories import ProductFactory

API = "/api/v1"


def test_normalise_lowercases_trims_and_drops_empty_values():
    raw = {" Colour ": "  Navy   Blue ", "Pattern": "Striped", "usage": "", "size": None, "n": 3}
    assert attributes_normalise(raw) == {"colour": "navy blue", "pattern": "striped", "n": "3"}


@pytest.mark.parametrize(
    "raw, message",
    [
        (["red"], "object of name: value"),
        ({"col-our!": "red"}, "letters, digits and underscores"),
        ({"colour": ["red"]}, "must be text"),
        ({"colour": "x" * 61}, "at most 60"),
    ],
)
def test_normalise_rejects_what_is_not_a_flat_dict_of_short_text(raw, message):
    with pytest.raises(ValidationError, match=message):
        attributes_normalise(raw)


@pytest.mark.django_db
def test_every_save_stores_the_normal_form():
    product = ProductFactory(attributes={"Colour": "RED", "Type": " Tshirts "})
    product.refresh_from_db()
    assert product.attributes == {"colour": "red", "type": "tshirts"}
    services.product_update(product=product, attributes={"colour": "Blue"})
    product.refresh_from_db()
    assert product.attributes == {"colour": "blue"}


@pytest.mark.django_db
def test_admin_shows_and_edits_attributes(admin_client):
    product = ProductFactory(attributes={"colour": "red"})
    url = reverse("admin:catalog_product_change", args=[product.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="attributes"' in html and "&quot;colour&quot;: &quot;red&quot;" in html
    data = product_form(
        title=product.title,
        sku=product.sku,
        attributes=json.dumps({"Colour": "Green", "Pattern": "Dotted"}),
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    product.refresh_from_db()
    assert product.attributes == {"colour": "green", "pattern": "dotted"}
    bad = admin_client.post(url, {**data, "attributes": json.dumps({"colour": ["a"]})})
    assert bad.status_code == 200
    assert "must be text" in str(bad.context["adminform"].form.errors)


@pytest.fixture
def staff_client(db) -> APIClient:
    staff = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    return client


@pytest.mark.django_db
def test_api_product_objects_include_attributes(client):
    product = ProductFactory(attributes={"colour": "red", "pattern": "plain"})
    body = client.get(f"{API}/products/{product.pk}/").json()
    assert body["attributes"] == {"colour": "red", "pattern": "plain"}
    listed = client.get(f"{API}/products/").json()["results"]
    assert listed[0]["attributes"] == {"colour": "red", "pattern": "plain"}


@pytest.mark.django_db
def test_api_writes_attributes_lower_case_and_rejects_bad_ones(staff_client):
    response = staff_client.post(
        f"{API}/products/",
        {"title": "Tee", "attributes": {"Colour": "Sky Blue"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    product = Product.objects.get(pk=response.json()["id"])
    assert product.attributes == {"colour": "sky blue"}
    patched = staff_client.patch(
        f"{API}/products/{product.pk}/", {"attributes": {"colour": "red"}}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["attributes"] == {"colour": "red"}
    bad = staff_client.patch(
        f"{API}/products/{product.pk}/", {"attributes": {"bad name!": "x"}}, format="json"
    )
    assert bad.status_code == 400
    assert set(bad.json()) == {"error"} and "attributes" in json.dumps(bad.json())
