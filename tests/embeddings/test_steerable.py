"""Steerable queries: weighted parts, negative terms, the photo <-> words balance.

The model is the tiny random-init CLIP of tests/conftest.py: text rankings are arbitrary but
deterministic, so each test either builds its case from image vectors (which it controls) or
compares with the documented rule computed here with NumPy."""

from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from catalog import services as catalog_services
from catalog.models import ProductImage
from embeddings import runtime, selectors, steering
from embeddings.encoder import load_image
from embeddings.engine.fulltext import ProductDoc, TextIndex
from embeddings.views import PER_PAGE
from tests.conftest import distinct_image

API = "/api/v1/search/"
SEARCH = reverse("embeddings:search")


# --- the rule, without a database ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, positive, negatives",
    [
        ("striped shirt -striped", "striped shirt", ["striped"]),
        ('dress -"light blue" -red', "dress", ["light blue", "red"]),
        ("t-shirt -red -Red", "t-shirt", ["red"]),  # a hyphen inside a word is the word
        ("shirt - red", "shirt red", []),  # a lone minus is dropped
        ("-red", "", ["red"]),
    ],
)
def test_minus_words_are_split_off(text, positive, negatives):
    assert steering.split_negatives(text) == (positive, negatives)


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_combine_is_the_normalised_weighted_sum():
    rng = np.random.default_rng(1)
    vectors = [unit(rng.normal(size=16)) for _ in range(3)]
    weights = [1.0, 0.4, -0.3]
    parts = [steering.Part(v.astype(np.float32), w) for v, w in zip(vectors, weights, strict=True)]
    expected = unit(sum(w * v for v, w in zip(vectors, weights, strict=True)))
    np.testing.assert_allclose(steering.combine(parts), expected, atol=1e-6)


def test_combine_refuses_no_positive_part_cancelling_parts_and_big_weights():
    v = unit([1.0, 0.0, 0.0]).astype(np.float32)
    with pytest.raises(steering.SteeringError, match="positive"):
        steering.combine([steering.Part(v, -0.5)])
    with pytest.raises(steering.SteeringError, match="cancel"):
        steering.combine([steering.Part(v, 0.7), steering.Part(v, -0.7)])
    with pytest.raises(steering.SteeringError, match="between -1 and 1"):
        steering.combine([steering.Part(v, 1.5)])


def test_word_index_leaves_out_products_with_every_word_of_a_negative_phrase(tmp_path):
    index = TextIndex.build(
        tmp_path / "ft",
        [
            ProductDoc(1, "Striped cotton shirt"),
            ProductDoc(2, "Plain cotton shirt"),
            ProductDoc(3, "Light blue shirt"),
            ProductDoc(4, "Blue shirt, light fabric"),
            ProductDoc(5, "Dark blue shirt"),
        ],
    )
    assert set(index.search("shirt").ids) == {1, 2, 3, 4, 5}
    assert set(index.search("shirt", exclude=["striped"]).ids) == {2, 3, 4, 5}
    # A phrase leaves out products with all of its words, not those with one of them.
    assert set(index.search("shirt", exclude=["light blue"]).ids) == {1, 2, 5}


# --- searches against a small catalog ------------------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


def create(title: str, n: int, *, category: str = "Tops"):
    return catalog_services.product_create(
        title=title,
        price=Decimal("10.00"),
        category=catalog_services.category_get_or_create(name=category),
        images=[SimpleUploadedFile(f"p{n}.png", distinct_image(n), content_type="image/png")],
    )


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def shop():
    return [create(f"Product {n}", n) for n in range(8)]


def stored(product) -> np.ndarray:
    return selectors.stored_image_vector(image_id=product.images.first().id)


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [r["product"]["id"] for r in response.json()["results"]]


def scores(response) -> dict[int, float]:
    assert response.status_code == 200, response.content
    return {r["product"]["id"]: r["score"] for r in response.json()["results"]}


def parts_search(client, parts, **extra):
    return client.post(API, {"parts": parts, **extra}, format="json")


@pytestmark_db
def test_a_negative_image_part_drops_its_product_below_the_other(client, shop):
    a, b = shop[0], shop[3]
    img_a, img_b = a.images.first().id, b.images.first().id
    pull = [{"image_id": img_a, "weight": 1.0}, {"image_id": img_b, "weight": 0.5}]
    before = ids(parts_search(client, pull))
    assert before.index(a.id) < before.index(b.id)  # a alone scores 1 against its own image
    after = ids(parts_search(client, [*pull, {"image_id": img_a, "weight": -0.8}]))
    # 0.2 a + 0.5 b: b now scores 0.2 c + 0.5 > 0.2 + 0.5 c for a (c = cos(a, b) < 1).
    assert after.index(b.id) < after.index(a.id)


@pytestmark_db
def test_weighted_parts_score_as_the_documented_formula(client, shop, settings):
    settings.EMBEDDINGS_HYBRID = False
    prod = shop[5]
    body = [
        {"text": "red summer dress", "weight": 0.6},
        {"product_id": prod.id, "weight": 0.9},
        {"image_id": shop[2].images.first().id, "weight": -0.4},
    ]
    response = parts_search(client, body, **{"not": ["stripes"], "not_weight": 0.3})
    got = scores(response)
    encoder = runtime.get_encoder()
    t = encoder.encode_texts(["red summer dress"])[0].astype(np.float64)
    n = encoder.encode_texts(["stripes"])[0].astype(np.float64)
    q = unit(0.6 * t + 0.9 * stored(prod) - 0.4 * stored(shop[2]) - 0.3 * n)
    expected = {p.id: float(stored(p) @ q) for p in shop}
    assert got.keys() == expected.keys()
    for pid, score in got.items():
        assert score == pytest.approx(expected[pid], abs=1e-5)
    assert ids(response) == sorted(expected, key=expected.get, reverse=True)
    assert response.json()["query"]["not"] == ["stripes"]


@pytestmark_db
def test_a_not_term_lowers_the_products_nearest_to_it(client, shop, settings):
    settings.EMBEDDINGS_HYBRID = False
    words = "a cotton top"
    plain = scores(client.get(API, {"q": words}))
    steered = scores(client.get(API, {"q": words, "not": "summer dress"}))
    n = runtime.get_encoder().encode_texts(["summer dress"])[0]
    closeness = {p.id: float(stored(p) @ n) for p in shop}
    nearest = max(closeness, key=closeness.get)
    farthest = min(closeness, key=closeness.get)
    # Pushing away from "summer dress" costs the product nearest to it more than the farthest.
    drop = {pid: plain[pid] - steered[pid] for pid in plain}
    assert drop[nearest] > drop[farthest]


@pytestmark_db
def test_image_weight_one_is_the_image_ranking_and_zero_the_text_ranking(client, shop):
    def form(**fields):
        photo = SimpleUploadedFile("q.png", distinct_image(4), content_type="image/png")
        return client.post(API, {"image": photo, **fields}, format="multipart")

    image_only = form()
    text_only = client.get(API, {"q": "striped tee"})
    photo_side = form(q="striped tee", image_weight="1")
    word_side = form(q="striped tee", image_weight="0")
    both = form(q="striped tee")
    assert ids(photo_side) == ids(image_only)
    assert scores(photo_side) == pytest.approx(scores(image_only))
    assert ids(word_side) == ids(text_only)
    assert scores(word_side) == pytest.approx(scores(text_only))
    assert scores(both) != pytest.approx(scores(image_only))
    assert both.json()["query"]["image_weight"] == 0.5
    assert photo_side.json()["query"]["image_weight"] == 1.0


@pytestmark_db
def test_product_search_keeps_its_old_meaning_for_existing_callers(shop):
    image = load_image(SimpleUploadedFile("q.png", distinct_image(6)))
    old = selectors.query_vector(text="blue bag", image=image)
    hits = selectors.product_search(text="blue bag", image=image, limit=8)
    for hit in hits:
        expected = float(stored(hit.product) @ old)
        assert hit.score == pytest.approx(expected, abs=1e-5)


@pytestmark_db
@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"parts": [{"text": "tee", "weight": 2}]}, 400, "weight"),
        ({"parts": [{"text": "tee", "image_id": 1}]}, 400, "exactly one"),
        ({"parts": [{"weight": 1}]}, 400, "exactly one"),
        ({"parts": [{"text": "  "}]}, 400, "text"),
        ({"parts": []}, 400, "parts"),
        ({"parts": [{"text": f"t{i}"} for i in range(9)]}, 400, "parts"),
        ({"parts": [{"text": "tee", "weight": -0.5}]}, 400, "positive"),
        ({"parts": [{"text": "tee"}, {"text": "tee", "weight": -1}]}, 400, "cancel"),
        ({"parts": [{"image_id": 987654}]}, 400, "987654"),
        ({"parts": [{"product_id": 987654}]}, 400, "987654"),
        ({"parts": [{"text": "tee"}], "not": ["x"] * 8}, 400, "8"),
        ({"parts": [{"text": "tee"}], "not_weight": 3}, 400, "not_weight"),
        ({"parts": [{"text": "tee"}], "page_size": 0}, 400, "page_size"),
        ([{"text": "tee"}], 400, "object"),
    ],
)
def test_bad_parts_are_400_with_a_message_naming_the_problem(client, shop, body, status, needle):
    response = client.post(API, body, format="json")
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert needle.lower() in (error["message"] + str(error.get("details"))).lower()


@pytestmark_db
def test_a_product_without_an_indexed_image_is_a_clear_400(client):
    bare = catalog_services.product_create(title="No photo", price=Decimal("5"), images=[])
    response = parts_search(client, [{"product_id": bare.id}])
    assert response.status_code == 400
    assert "no indexed image" in response.json()["error"]["message"]


@pytestmark_db
@pytest.mark.parametrize(
    "params, needle",
    [
        ({"q": "tee", "not": "tee", "not_weight": "1"}, "cancel"),
        ({"q": "tee", "not_weight": "-1"}, "not_weight"),
        ({"q": "tee", "not": "a,b,c,d,e,f,g,h,i"}, "8"),
    ],
)
def test_bad_get_steering_is_400(client, shop, params, needle):
    response = client.get(API, params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert needle in error["message"] + str(error.get("details"))


@pytestmark_db
def test_image_weight_outside_0_1_is_400(client, shop):
    photo = SimpleUploadedFile("q.png", distinct_image(1), content_type="image/png")
    response = client.post(API, {"image": photo, "q": "tee", "image_weight": "1.5"})
    assert response.status_code == 400
    assert "image_weight" in str(response.json()["error"])


@pytestmark_db
def test_not_may_repeat_or_use_commas(client, shop):
    repeated = client.get(API + "?q=tee&not=red&not=blue+bag")
    commas = client.get(API, {"q": "tee", "not": "red, blue bag"})
    assert repeated.json()["query"]["not"] == commas.json()["query"]["not"] == ["red", "blue bag"]
    assert scores(repeated) == pytest.approx(scores(commas))


@pytestmark_db
def test_json_parts_page_on_with_the_next_link(client):
    for n in range(7):
        create(f"Item {n}", n)
    body = {"parts": [{"text": "tee"}, {"image_id": 1, "weight": 0}], "page_size": 3}
    body["parts"][1]["image_id"] = ProductImage.objects.first().id
    first = client.post(API, body, format="json").json()
    second = client.post(first["next"], body, format="json").json()
    assert first["count"] == 7 and len(second["results"]) == 3
    seen = [r["product"]["id"] for r in first["results"] + second["results"]]
    assert len(set(seen)) == 6


# --- the search page ------------------------------------------------------------------------------


@pytestmark_db
def test_page_minus_word_leaves_the_words_products_behind(client, settings):
    settings.EMBEDDINGS_HYBRID = True
    striped = [create(f"Striped tee {n}", n) for n in range(3)]
    plain = [create(f"Plain tee {n}", n + 3) for n in range(3)]

    def titles(q):
        response = client.get(SEARCH, {"q": q})
        assert response.status_code == 200
        return re.findall(r'<h3 class="card-title">(.*?)</h3>', response.content.decode())

    before = titles("striped tee")
    assert before[0].startswith("Striped")  # the words pull the striped ones first
    after = titles("striped tee -striped")
    assert [t.split()[0] for t in after] == ["Plain"] * 3 + ["Striped"] * 3
    assert len(striped) == len(plain) == 3


@pytestmark_db
def test_page_shows_what_is_left_out_and_only_minus_words_is_a_message(client, shop):
    response = client.get(SEARCH, {"q": 'shirt -red -"light blue"'})
    assert response.status_code == 200
    assert "Leaving out: “red”, “light blue”" in response.content.decode()
    response = client.get(SEARCH, {"q": "-red"})
    assert response.status_code == 400
    assert "as well as what to leave out" in response.content.decode()


def photo_token(client, product) -> str:
    response = client.get(SEARCH, {"photo": product.images.first().id})
    assert response.status_code == 302
    return parse_qs(urlparse(response["Location"]).query)["qi"][0]


@pytestmark_db
def test_page_photo_words_slider_is_kept_by_pagination_and_changes_the_ranking(client):
    products = [create(f"Thing {n}", n) for n in range(PER_PAGE + 4)]
    token = photo_token(client, products[2])
    params = {"q": "green stripes", "qi": token, "image_weight": "0.2"}
    response = client.get(SEARCH, params)
    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'type="range" name="image_weight"[^>]*value="0.2"', html)
    next_link = re.search(r'href="\?([^"]*)" rel="next"', html).group(1).replace("&amp;", "&")
    carried = parse_qs(next_link)
    assert carried["image_weight"] == ["0.2"] and carried["qi"] == [token]
    assert carried["q"] == ["green stripes"]
    # The page ranks as the selector does with the same balance, not as the default mean.
    hits = selectors.product_search(
        text="green stripes",
        image_vec=selectors.stored_image_vector(image_id=products[2].images.first().id),
        image_weight=0.2,
        limit=PER_PAGE,
    )
    first = re.findall(r'<h3 class="card-title">(.*?)</h3>', html)
    assert first == [h.product.title for h in hits[:PER_PAGE]]
    default = client.get(SEARCH, {"q": "green stripes", "qi": token}).content.decode()
    assert re.findall(r'<h3 class="card-title">(.*?)</h3>', default) != first


@pytestmark_db
def test_page_rejects_a_balance_outside_0_1(client, shop):
    token = photo_token(client, shop[0])
    response = client.get(SEARCH, {"q": "tee", "qi": token, "image_weight": "7"})
    assert response.status_code == 400
    assert "from 0 to 1" in response.content.decode()
