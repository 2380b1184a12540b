"""The admin's catalog map: the 2-D layout (PCA), the sample, the cache, the mislabelled list,
and the page (who may see it, what it shows when there is nothing or the model is broken)."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from catalog import services as catalog_services
from catalog.models import Category, Product
from embeddings import runtime
from embeddings.catalog_map import (
    NO_CATEGORY,
    catalog_map,
    mislabelled,
    nearest_neighbours,
    pca_2d,
    product_vectors,
    stratified_sample,
)
from embeddings.models import ImageEmbedding
from tests.conftest import make_image

URL = reverse("admin:embeddings_catalog_map")

# Two kinds of picture the tiny test model tells apart: warm backgrounds and cool ones, each
# with a different shape and accent per product.
WARM = [(220, 30, 30), (240, 90, 20), (230, 40, 80), (250, 60, 40), (200, 20, 50)]
COOL = [(20, 40, 220), (30, 120, 230), (40, 20, 200), (20, 90, 180), (60, 60, 240)]
SHAPES = ["circle", "square", "stripes"]


def picture(palette: list, n: int) -> bytes:
    accent = (255 - (n * 37) % 90, 255 - (n * 53) % 90, 255 - (n * 71) % 90)
    return make_image(palette[n % len(palette)], shape=SHAPES[n % 3], accent=accent)


def add_product(title: str, category: Category | None, *pictures: bytes) -> Product:
    return catalog_services.product_create(
        title=title,
        description="",
        price=Decimal("10"),
        category=category,
        images=[
            SimpleUploadedFile(f"{title}-{i}.png", data, content_type="image/png")
            for i, data in enumerate(pictures)
        ],
    )


def model_id() -> str:
    return runtime.get_encoder().model_id


@pytest.fixture
def shop(db, django_capture_on_commit_callbacks) -> dict:
    """12 tees (warm pictures), 12 shoes (cool pictures), a tee whose picture is one of the
    shoes' (the planted mislabel), and one product without a category; all embedded."""
    tees, shoes = Category.objects.create(name="Tees"), Category.objects.create(name="Shoes")
    shoe_pictures = [picture(COOL, n) for n in range(12)]
    with django_capture_on_commit_callbacks(execute=True):
        out = {
            "tees": [add_product(f"Tee {n}", tees, picture(WARM, n)) for n in range(12)],
            "shoes": [add_product(f"Shoe {n}", shoes, shoe_pictures[n]) for n in range(12)],
        }
        out["planted"] = add_product("Tee that is a shoe", tees, shoe_pictures[3])
        out["loose"] = add_product("Loose item", None, picture(WARM, 20))
    return out


# --- the pure parts ------------------------------------------------------------------------------


def two_clusters(n: int = 40, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    labels = np.repeat([0, 1], n // 2)
    x = (
        rng.normal(scale=0.05, size=(n, dim))
        + np.where(labels[:, None] == 0, 1.0, -1.0) * direction
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def test_pca_puts_two_separated_clusters_apart_on_the_first_axis():
    x, labels = two_clusters()
    xy, explained = pca_2d(x)
    assert xy.shape == (40, 2) and xy.dtype == np.float32
    first = xy[:, 0]
    a, b = first[labels == 0], first[labels == 1]
    assert a.max() < b.min() or b.max() < a.min()
    # Almost all the variance lies between the clusters, and the second axis is within them.
    assert explained[0] > 0.9 and explained[1] < 0.05
    assert np.abs(xy[:, 1]).max() < np.abs(first).min()


def test_pca_matches_the_covariance_eigenvectors():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    xy, explained = pca_2d(x)
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    top = vectors[:, ::-1][:, :2]
    expected = centred @ top
    # The same axes up to sign; the variance shares from the eigenvalues.
    for axis in range(2):
        assert np.allclose(np.abs(xy[:, axis]), np.abs(expected[:, axis]), atol=1e-3)
    assert np.allclose(explained, values[::-1][:2] / values.sum(), atol=1e-6)


def test_pca_is_deterministic_whatever_the_sign_of_the_input():
    x, _ = two_clusters(seed=5)
    first, _ = pca_2d(x)
    assert np.array_equal(first, pca_2d(x.copy())[0])
    # The axes' signs follow the data, not the order LAPACK meets the rows in: shuffled rows
    # land on the same spots.
    perm = np.random.default_rng(9).permutation(len(x))
    assert np.allclose(pca_2d(x[perm])[0], first[perm], atol=1e-5)


def test_pca_of_too_few_points_is_zeros():
    assert pca_2d(np.ones((1, 4)))[0].tolist() == [[0.0, 0.0]]
    assert pca_2d(np.ones((3, 4)))[0].tolist() == [[0.0, 0.0]] * 3


def test_the_sample_is_bounded_keeps_small_categories_and_is_deterministic():
    sizes = {7: 5, NO_CATEGORY: 10, 3: 50, 9: 2000}
    cats = np.concatenate([np.full(n, c) for c, n in sizes.items()])
    ids = np.arange(1000, 1000 + len(cats))
    picked = stratified_sample(ids, cats, 100)
    assert len(picked) == 100 and len(set(picked.tolist())) == 100
    taken = {c: int((cats[picked] == c).sum()) for c in sizes}
    # The two small ones whole; the rest shared as equally as the sizes allow.
    assert taken == {7: 5, NO_CATEGORY: 10, 3: 42, 9: 43}
    assert np.array_equal(picked, stratified_sample(ids, cats, 100))
    # Not simply the first ids of the big category: spread over it.
    big = ids[picked][cats[picked] == 9]
    assert big.max() - big.min() > 1500
    # Everything when it fits.
    assert stratified_sample(ids[:60], cats[:60], 100).tolist() == list(range(60))


def test_nearest_neighbours_match_brute_force_and_skip_the_point_itself():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(300, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    found = nearest_neighbours(v, 10, block=64)  # several blocks
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1)[:, :10]
    assert np.array_equal(found, expected)
    assert nearest_neighbours(v[:4], 10).shape == (4, 3)


def test_mislabelled_names_the_product_sitting_in_another_category():
    x, labels = two_clusters(n=30, seed=2)
    cats = np.where(labels == 0, 11, 22)
    ids = np.arange(500, 530)
    cats[4] = 22  # a product of cluster 11 labelled 22
    cats[7] = NO_CATEGORY  # one without a category, among 11
    found = {s.product_id: s for s in mislabelled(x, cats, ids, k=10)}
    assert set(found) == {504, 507}
    assert (found[504].category_id, found[504].likely_category_id) == (22, 11)
    assert found[504].likely_count >= 9 and found[504].own_count <= 1
    assert (found[507].category_id, found[507].likely_category_id) == (NO_CATEGORY, 11)


# --- from the database -------------------------------------------------------------------------


def test_one_point_per_product_at_the_mean_of_its_image_vectors(
    db, django_capture_on_commit_callbacks
):
    category = Category.objects.create(name="Bags")
    with django_capture_on_commit_callbacks(execute=True):
        two = add_product("Two photos", category, picture(WARM, 1), picture(COOL, 2))
        for n in range(3):
            add_product(f"Bag {n}", category, picture(WARM, 5 + n))
    cmap = catalog_map(model_id=model_id())
    assert sorted(cmap.product_ids.tolist()) == sorted(Product.objects.values_list("id", flat=True))
    assert cmap.xy.shape == (4, 2) and cmap.total_products == 4 and not cmap.sampled
    vectors = [e.array for e in ImageEmbedding.objects.filter(image__product=two)]
    assert len(vectors) == 2
    mean = np.mean(vectors, axis=0)
    mean /= np.linalg.norm(mean)
    ids, matrix = product_vectors(model_id=model_id(), product_ids=np.array([two.id]))
    assert ids.tolist() == [two.id] and np.allclose(matrix[0], mean, atol=1e-6)


def test_the_map_is_cached_until_a_vector_changes(
    shop, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    first = catalog_map(model_id=model_id())
    with django_assert_max_num_queries(2):  # the sequence, no vectors read
        again = catalog_map(model_id=model_id())
    assert again.computed_at == first.computed_at and np.array_equal(again.xy, first.xy)
    tee = shop["tees"][0]
    before = first.xy[first.product_ids.tolist().index(tee.id)]
    with django_capture_on_commit_callbacks(execute=True):
        catalog_services.product_image_add(
            product=tee, file=SimpleUploadedFile("more.png", picture(COOL, 9))
        )
    changed = catalog_map(model_id=model_id())
    assert changed.seq > first.seq and changed.computed_at > first.computed_at
    after = changed.xy[changed.product_ids.tolist().index(tee.id)]
    assert not np.allclose(before, after)


def test_the_map_samples_at_most_the_setting(shop, settings):
    settings.EMBEDDINGS_MAP_MAX_POINTS = 6
    cmap = catalog_map(model_id=model_id())
    assert len(cmap.product_ids) == 6 and cmap.total_products == 26 and cmap.sampled
    # Every category is on the map, the one-product "no category" too.
    assert set(cmap.category_ids.tolist()) == {
        shop["tees"][0].category_id,
        shop["shoes"][0].category_id,
        NO_CATEGORY,
    }


def test_the_planted_mislabel_is_found_with_the_category_it_looks_like(shop):
    cmap = catalog_map(model_id=model_id())
    suspects = {s.product_id: s for s in cmap.suspects}
    planted = suspects[shop["planted"].id]
    assert planted.likely_category_id == shop["shoes"][0].category_id
    assert planted.likely_count > planted.k // 2
    # The well-labelled products are not listed.
    assert not {p.id for p in shop["tees"] + shop["shoes"]} & set(suspects)


def test_no_vectors_yet_is_none(db):
    Category.objects.create(name="Empty")
    assert catalog_map(model_id=model_id()) is None


# --- the page -----------------------------------------------------------------------------------


def page_data(html: str) -> dict:
    start = html.index('<script id="catalog-map-data" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])


def test_the_page_draws_every_product_by_category_and_lists_the_mislabel(admin_client, shop):
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    data = page_data(html)
    by_name = {c["name"]: c for c in data["categories"]}
    assert set(by_name) == {"Shoes", "Tees", "(none)"}
    assert len(by_name["Tees"]["id"]) == 13 and len(by_name["Shoes"]["id"]) == 12
    assert by_name["(none)"]["title"] == ["Loose item"]
    # Hover images are the 64 px thumbnails the worker made of these 64 px pictures.
    assert all(url.endswith("-64.webp") and "/thumbs/" in url for url in by_name["Tees"]["thumb"])
    assert data["change_url"].replace("{id}", "5") == reverse(
        "admin:catalog_product_change", args=[5]
    )
    # The planted tee that is a shoe, and the product without a category that looks like a tee.
    named = {s["title"]: (s["category"], s["likely_category"]) for s in data["suspects"]}
    assert named == {"Tee that is a shoe": ("Tees", "Shoes"), "Loose item": ("(none)", "Tees")}
    assert 'id="suspects"' in html and "Tee that is a shoe</a>" in html
    assert "/static/embeddings/vendor/plotly.min.js" in html
    assert "26 products shown." in " ".join(html.split())


def test_the_page_says_so_when_there_are_no_vectors(admin_client, db):
    response = admin_client.get(URL)
    assert response.status_code == 200
    assert 'id="no-vectors"' in response.content.decode()


def test_the_page_shows_the_error_when_the_model_cannot_load(
    admin_client, shop, settings, tmp_path
):
    settings.EMBEDDINGS_PRETRAINED = str(tmp_path / "gone.pt")
    runtime.reset()
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="model-error"' in html and "gone.pt" in html
    assert "catalog-map-data" not in html


def staff(django_user_model, *perms: str) -> Client:
    user = django_user_model.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


def test_non_staff_are_sent_to_the_admin_login(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("shopper", password="pw-123456"))
    response = client.get(URL)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]


def test_staff_without_product_view_get_403_and_no_link(django_user_model, shop):
    client = staff(django_user_model, "view_productimage")
    assert client.get(URL).status_code == 403
    assert f'href="{URL}"' not in client.get(reverse("admin:index")).content.decode()


def test_staff_who_may_view_products_see_the_map_and_its_link(django_user_model, shop):
    client = staff(django_user_model, "view_product")
    assert client.get(URL).status_code == 200
    assert client.post(URL).status_code == 405
    assert f'href="{URL}"' in client.get(reverse("admin:index")).content.decode()
