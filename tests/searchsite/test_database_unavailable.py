"""A database that is away answers 503 with Retry-After: JSON in the API's error shape under
/api/, the 503 page for the shop's pages; never a 500 or a traceback.

The outage is made with Django's own query hook (connection.execute_wrapper): every SQL statement
of the request raises the OperationalError psycopg raises when PostgreSQL refuses the connection.
tests/integration/test_faults_database.py does the same against a real PostgreSQL going away."""

from __future__ import annotations

import json
import logging

import pytest
from django.db import InterfaceError, OperationalError, connection
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from searchsite.api import server_error
from tests.factories import ProductFactory, ProductImageFactory

pytestmark = pytest.mark.django_db


class Outage:
    """Raises ``error`` for every SQL statement while installed."""

    def __init__(self, error: Exception):
        self.error = error
        self.statements = 0

    def __call__(self, execute, sql, params, many, context):
        self.statements += 1
        raise self.error


REFUSED = OperationalError(
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
)


@pytest.fixture
def product():
    image = ProductImageFactory(product=ProductFactory(title="Red shirt"))
    return image.product


def assert_json_503(response):
    assert response.status_code == 503, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "5"
    body = json.loads(response.content)
    assert set(body) == {"error"}
    assert body["error"]["code"] == "service_unavailable"
    assert "database is unreachable" in body["error"]["message"]
    assert "try again in a few seconds" in body["error"]["message"]


API_READS = [
    "/api/v1/products/",
    "/api/v1/products/{pk}/",
    "/api/v1/categories/",
    "/api/v1/search/?q=red+shirt",
    "/api/v1/products/{pk}/similar/",
    "/api/v1/schema/",  # reads nothing from the database: must still answer 200
]


@pytest.mark.parametrize("path", API_READS)
def test_every_api_read_answers_json_503_while_the_database_is_away(path, product, caplog):
    client = APIClient()
    assert client.get(path.format(pk=product.pk)).status_code == 200  # warm: index loaded
    outage = Outage(REFUSED)
    with caplog.at_level(logging.ERROR), connection.execute_wrapper(outage):
        response = client.get(path.format(pk=product.pk))
    if path == "/api/v1/schema/":
        assert response.status_code == 200 and outage.statements == 0
        return
    assert outage.statements >= 1
    assert_json_503(response)
    # One line that names the cause, no traceback per request.
    logged = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert logged and "Connection refused" in logged[0].getMessage()
    assert all(r.exc_info is None for r in logged)


def test_api_writes_and_the_token_endpoint_answer_json_503(product):
    client = APIClient()
    with connection.execute_wrapper(Outage(REFUSED)):
        assert_json_503(
            client.post("/api/v1/auth/token/", {"username": "a", "password": "b"}, format="json")
        )
        # Authentication itself reads the token table.
        client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")
        assert_json_503(client.post("/api/v1/products/", {"title": "x"}, format="json"))


def test_image_search_answers_json_503(product, image_bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = APIClient()
    upload = SimpleUploadedFile("q.png", image_bytes(), content_type="image/png")
    with connection.execute_wrapper(Outage(REFUSED)):
        assert_json_503(client.post("/api/v1/search/", {"image": upload}, format="multipart"))


@pytest.mark.parametrize(
    "error",
    [
        REFUSED,
        OperationalError("canceling statement due to statement timeout"),
        InterfaceError("connection already closed"),
    ],
    ids=["refused", "statement-timeout", "connection-lost"],
)
@pytest.mark.parametrize("path", ["/?q=red+shirt", "/products/{pk}/"])
def test_pages_answer_the_html_503_page(path, error, product):
    client = Client()
    assert client.get(path.format(pk=product.pk)).status_code == 200
    with connection.execute_wrapper(Outage(error)):
        response = client.get(path.format(pk=product.pk))
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == "5"
    html = response.content.decode()
    assert "temporarily unavailable" in html and "try again" in html
    assert "Traceback" not in html and "OperationalError" not in html


def test_service_recovers_on_the_next_request_without_a_restart(product):
    client = APIClient()
    with connection.execute_wrapper(Outage(REFUSED)):
        assert client.get("/api/v1/products/").status_code == 503
        assert client.get("/?q=red").status_code == 503
    response = client.get("/api/v1/products/")
    assert response.status_code == 200 and response.json()["count"] == 1
    assert Client().get(f"/products/{product.pk}/").status_code == 200


def test_a_database_error_outside_a_view_is_a_503_too():
    """handler500 sees the exception being handled: one raised in a middleware (a session saved
    after the view) is a 503 like one raised in a view."""
    request = RequestFactory().get("/api/v1/products/")
    try:
        raise REFUSED
    except OperationalError:
        api = server_error(request)
        page = server_error(RequestFactory().get("/"))
    assert_json_503(api)
    assert page.status_code == 503 and b"temporarily unavailable" in page.content


def test_an_unexpected_api_error_is_a_json_500_not_an_html_page(monkeypatch):
    from catalog import selectors

    def broken(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(selectors, "category_list", broken)
    response = Client(raise_request_exception=False).get("/api/v1/categories/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "server_error"
    assert "bug" not in response.content.decode()  # no internals leak
