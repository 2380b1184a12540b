"""Abuse is bounded: DRF throttles on the searches and the token endpoint answer 429 with
Retry-After in the API's error shape, and request bodies over the limit are refused with 413
before anything reads them."""

from __future__ import annotations

import io

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from tests.factories import ProductFactory, ProductImageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(monkeypatch):
    """Sets throttle rates for one test (DRF reads them from this dict at each request)."""

    def set_rate(scope: str, rate: str | None) -> None:
        monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, scope, rate)

    return set_rate


@pytest.fixture
def product():
    return ProductImageFactory(product=ProductFactory(title="Blue shoe")).product


def assert_throttled(response):
    assert response.status_code == 429, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "throttled"
    wait = int(response["Retry-After"])
    assert 1 <= wait <= 60
    assert f"try again in {wait} second" in error["message"]
    return wait


def test_anonymous_searches_are_throttled_per_address_with_retry_after(rates, product):
    rates("search_anon", "3/min")
    client = APIClient()
    for _ in range(3):
        assert client.get("/api/v1/search/?q=shoe").status_code == 200
    assert_throttled(client.get("/api/v1/search/?q=shoe"))
    # "More like this" is a search too, counted in the same budget.
    assert_throttled(client.get(f"/api/v1/products/{product.pk}/similar/"))
    # Another address has its own budget.
    other = APIClient(REMOTE_ADDR="10.0.0.9")
    assert other.get("/api/v1/search/?q=shoe").status_code == 200
    # Catalog reads are not searches: not throttled.
    assert client.get("/api/v1/products/").status_code == 200


def test_a_forged_x_forwarded_for_does_not_escape_the_anonymous_limit(rates, product):
    rates("search_anon", "2/min")
    client = APIClient()
    for n in range(2):
        assert (
            client.get("/api/v1/search/?q=shoe", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}").status_code
            == 200
        )
    assert_throttled(client.get("/api/v1/search/?q=shoe", HTTP_X_FORWARDED_FOR="1.2.3.99"))


def test_a_token_client_has_its_own_per_user_rate(rates, product, django_user_model):
    rates("search_anon", "1/min")
    rates("search_user", "3/min")
    user = django_user_model.objects.create_user("shopfront", password="pw-123456")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    assert APIClient().get("/api/v1/search/?q=shoe").status_code == 200
    assert_throttled(APIClient().get("/api/v1/search/?q=shoe"))  # anonymous budget spent
    for _ in range(3):  # the same address with a token: the user's budget
        assert client.get("/api/v1/search/?q=shoe").status_code == 200
    assert_throttled(client.get("/api/v1/search/?q=shoe"))


def test_password_guessing_on_the_token_endpoint_is_throttled_at_the_default_rate(
    settings, django_user_model
):
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["auth_token"] == "10/min"
    django_user_model.objects.create_user("staff", password="right-password", is_staff=True)
    client = APIClient()
    for n in range(10):
        response = client.post(
            "/api/v1/auth/token/", {"username": "staff", "password": f"guess-{n}"}, format="json"
        )
        assert response.status_code == 400
    assert_throttled(
        client.post(
            "/api/v1/auth/token/",
            {"username": "staff", "password": "right-password"},
            format="json",
        )
    )


def test_throttles_let_requests_through_when_the_cache_is_away(settings, rates, product):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    rates("search_anon", "1/min")
    client = APIClient()
    for _ in range(3):
        assert client.get("/api/v1/search/?q=shoe").status_code == 200


def test_a_rate_that_is_not_a_rate_stops_the_settings_with_what_to_write():
    import os
    import subprocess
    import sys

    env = {**os.environ, "THROTTLE_SEARCH_ANON": "lots"}
    result = subprocess.run(
        [sys.executable, "-c", "import searchsite.settings"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "THROTTLE_SEARCH_ANON='lots' is not a rate: use e.g. 60/min" in result.stderr


class Unreadable(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def readable(self):
        return True

    def read(self, *args):
        raise AssertionError("the body was read")

    readline = readinto = read


def huge_post(client, path: str, size: int):
    return client.generic(
        "POST",
        path,
        b"",
        content_type="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(size),
        **{"wsgi.input": Unreadable()},
    )


def test_an_image_search_over_the_limit_is_413_json_before_the_body_is_read(settings):
    settings.MAX_UPLOAD_BYTES = 1_000_000
    response = huge_post(Client(), "/api/v1/search/", 1_000_000 + 1024 * 1024 + 1)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "at most 2048576 bytes" in error["message"] and "smaller" in error["message"]


def test_the_pages_photo_search_over_the_limit_is_an_html_413(settings):
    settings.MAX_UPLOAD_BYTES = 1_000_000
    response = huge_post(Client(enforce_csrf_checks=True), "/", 50_000_000)
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    assert b"too large" in response.content


def test_other_requests_are_bounded_by_max_request_bytes(settings, django_user_model):
    settings.MAX_REQUEST_BYTES = 5_000_000
    user = django_user_model.objects.create_user("staff", password="pw-123456", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    response = huge_post(client, "/api/v1/products/", 5_000_001)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    # Unknown paths and the admin are bounded too.
    assert huge_post(client, "/api/v1/nothing/", 5_000_001).status_code == 413
    assert huge_post(Client(), "/admin/login/", 5_000_001).status_code == 413


def test_a_body_within_the_limit_reaches_the_view(settings, image_bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MAX_UPLOAD_BYTES = 1_000_000
    upload = SimpleUploadedFile("q.png", image_bytes(), content_type="image/png")
    response = APIClient().post("/api/v1/search/", {"image": upload}, format="multipart")
    assert response.status_code == 200
