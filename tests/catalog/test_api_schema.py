import json

import pytest
import yaml
from django.core.management import call_command


def test_openapi_schema_generates_and_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn turns every drf-spectacular warning (unresolvable type, missing
    # serializer...) into a failure; --validate checks the result against the OpenAPI spec.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    paths = schema["paths"]
    for path in [
        "/api/v1/products/",
        "/api/v1/products/{id}/",
        "/api/v1/products/{id}/images/",
        "/api/v1/products/{id}/images/{image_id}/",
        "/api/v1/products/{id}/similar/",
        "/api/v1/categories/",
        "/api/v1/search/",
        "/api/v1/auth/token/",
    ]:
        assert path in paths, path
    search_post = paths["/api/v1/search/"]["post"]
    assert "multipart/form-data" in search_post["requestBody"]["content"]
    assert {"400", "404", "413"} <= set(search_post["responses"])
    create = paths["/api/v1/products/"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(create["requestBody"]["content"])
    assert {"201", "401", "403", "413", "415"} <= set(create["responses"])
    list_params = {p["name"] for p in paths["/api/v1/products/"]["get"]["parameters"]}
    assert {"category", "price_min", "price_max", "page", "page_size"} <= list_params


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/v1/schema/", "/api/v1/docs/", "/api/v1/redoc/"])
def test_schema_and_docs_pages_render(client, url):
    assert client.get(url).status_code == 200


# What each endpoint can answer besides its success (see catalog.api.schema); 401 (a wrong
# token), 414 (a URL too long for the server) and 503 (database or index away) anywhere.
EXPECTED_ERRORS = {
    ("get", "/api/v1/products/"): {400, 404},
    ("post", "/api/v1/products/"): {400, 403, 413, 415},
    ("get", "/api/v1/products/{id}/"): {404},
    ("put", "/api/v1/products/{id}/"): {400, 403, 404, 413, 415},
    ("patch", "/api/v1/products/{id}/"): {400, 403, 404, 413, 415},
    ("delete", "/api/v1/products/{id}/"): {403, 404},
    ("post", "/api/v1/products/{id}/images/"): {400, 403, 404, 413, 415},
    ("delete", "/api/v1/products/{id}/images/{image_id}/"): {403, 404},
    ("get", "/api/v1/products/{id}/similar/"): {400, 404, 429},
    ("get", "/api/v1/categories/"): set(),
    ("get", "/api/v1/search/"): {400, 404, 429},
    ("post", "/api/v1/search/"): {400, 403, 404, 413, 415, 429},
    ("post", "/api/v1/search/clicks/"): {400, 403, 413, 415, 429},
    ("get", "/api/v1/search/suggest/"): {400, 429},
    ("post", "/api/v1/auth/token/"): {400, 413, 415, 429},
}


@pytest.fixture
def live_schema(client) -> dict:
    response = client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def params_of(operation: dict) -> dict:
    return {p["name"]: p for p in operation.get("parameters", [])}


@pytest.mark.django_db
def test_schema_states_every_error_each_endpoint_can_answer_in_the_error_shape(live_schema):
    paths = live_schema["paths"]
    operations = {
        (method, path)
        for path, ops in paths.items()
        for method in ops
        if not path.startswith("/api/v1/schema")
    }
    assert operations == set(EXPECTED_ERRORS)
    for (method, path), expected in EXPECTED_ERRORS.items():
        responses = paths[path][method]["responses"]
        declared = {int(code) for code in responses if int(code) >= 400}
        assert declared == expected | {401, 414, 503}, (method, path)
        # 414 comes from gunicorn, before the API: no body is promised.
        assert (
            "content" not in responses["414"]
            and "limit_request_line" in (responses["414"]["description"])
        )
        for code in declared - {414}:
            schema = responses[str(code)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
            assert responses[str(code)]["description"], (method, path, code)
    error = live_schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]


@pytest.mark.django_db
def test_schema_states_paging_bounds_and_that_text_search_needs_q(live_schema):
    paths = live_schema["paths"]
    for path in ("/api/v1/products/", "/api/v1/search/"):
        params = params_of(paths[path]["get"])
        page_size = params["page_size"]["schema"]
        assert (page_size["minimum"], page_size["maximum"]) == (1, 100), path
        assert params["page"]["schema"]["minimum"] == 1, path
        assert params["price_min"]["schema"]["type"] == "number", path
    q = params_of(paths["/api/v1/search/"]["get"])["q"]
    assert q["required"] is True
    assert q["schema"]["maxLength"] == 500 and q["schema"]["minLength"] == 1
    # POST: an image, or a text that is not only blanks.
    form = live_schema["components"]["schemas"]["SearchFormRequest"]
    assert form["anyOf"] == [
        {"required": ["image"]},
        {"required": ["q"], "properties": {"q": {"pattern": r"\S"}}},
    ]
    similar = params_of(paths["/api/v1/products/{id}/similar/"]["get"])["limit"]["schema"]
    assert (similar["minimum"], similar["maximum"]) == (1, 100)
    image_position = live_schema["components"]["schemas"]["ProductImageCreateRequest"]
    assert image_position["properties"]["position"]["maximum"] == 2147483647


@pytest.mark.django_db
def test_schema_states_the_token_endpoints_answers(live_schema):
    token = live_schema["paths"]["/api/v1/auth/token/"]["post"]
    ok = token["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert live_schema["components"]["schemas"][ok.rsplit("/", 1)[1]]["properties"] == {
        "token": {"type": "string"}
    }
    assert "Wrong username or password" in token["responses"]["400"]["description"]
