"""Every API error, wherever it arises, comes back in the one JSON error shape of
searchsite/api.py: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]


@pytest.fixture
def staff(django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw-123456", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_non_get_requests_to_unknown_api_paths_are_json_404s_not_the_csrf_page(method):
    # A browser-like client that enforces CSRF, with no token: still the JSON 404.
    client = Client(enforce_csrf_checks=True)
    error = error_of(getattr(client, method)("/api/v1/no-such-thing/", {}), 404)
    assert error["code"] == "not_found" and "/api/v1/docs/" in error["message"]


def test_a_method_the_endpoint_lacks_is_a_json_405_with_allow():
    response = APIClient().delete("/api/v1/search/")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert "GET" in response["Allow"]


def test_an_unsupported_content_type_is_a_json_415(staff):
    response = staff.post("/api/v1/products/", b"title=x", content_type="text/plain")
    assert error_of(response, 415)["code"] == "unsupported_media_type"


def test_malformed_json_is_a_json_400_parse_error(staff):
    response = staff.post("/api/v1/products/", b'{"title": ', content_type="application/json")
    assert error_of(response, 400)["code"] == "parse_error"
    token = APIClient().post("/api/v1/auth/token/", b"{nope", content_type="application/json")
    assert error_of(token, 400)["code"] == "parse_error"


def test_an_unknown_host_is_a_json_400_for_the_api():
    error = error_of(Client().get("/api/v1/products/", HTTP_HOST="evil.example"), 400)
    assert error["code"] == "bad_request"
    page = Client().get("/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")


def test_form_fields_over_the_memory_limit_are_a_json_400(settings, staff):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = staff.post("/api/v1/products/", {"title": "x" * 5000}, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["message"]
