"""Errors outside any view still come back in the one JSON error shape."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path", ["/api/v1/products/abc/", "/api/v1/nope/", "/api/v1/products/1/images/x/"]
)
def test_unknown_api_paths_are_json_404s(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_api_docs_pages_load_their_assets_locally(client):
    html = client.get("/api/v1/docs/").content.decode()
    assert "cdn" not in html.lower() and "swagger-ui" in html
    redoc = client.get("/api/v1/redoc/").content.decode()
    assert "cdn" not in redoc.lower()
