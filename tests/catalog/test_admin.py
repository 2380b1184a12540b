from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog import services as catalog_services
from catalog.models import Product, ProductImage
from embeddings import selectors as search
from embeddings.encoder import load_image
from embeddings.models import ImageEmbedding, IndexChange
from tests.conftest import make_image
from tests.factories import CategoryFactory, ProductFactory, ProductImageFactory

INLINE_EMPTY = {
    "images-TOTAL_FORMS": "0",
    "images-INITIAL_FORMS": "0",
    "images-MIN_NUM_FORMS": "0",
    "images-MAX_NUM_FORMS": "1000",
}


def png(name: str, color=(200, 30, 30), **kwargs) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_image(color, **kwargs), content_type="image/png")


def product_form(**overrides) -> dict:
    return {
        "title": "Admin tee",
        "sku": "",
        "description": "",
        "price": "15.00",
        "category": "",
        "is_active": "on",
        **INLINE_EMPTY,
        **overrides,
    }


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- product list ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_product_list_shows_image_count_index_summary_and_thumbnail(admin_client):
    product = ProductFactory(title="Striped scarf", sku="SCARF-1")
    ProductImageFactory(product=product)
    ProductImageFactory(product=product)
    ProductImage.objects.filter(pk=product.images.first().pk).update(
        index_status="failed", index_error="bad"
    )
    response = admin_client.get(reverse("admin:catalog_product_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Striped scarf" in html and "SCARF-1" in html
    assert "0/2 indexed, 1 waiting, 1 failed" in html
    assert f'src="{product.images.first().image.url}"' in html
    assert "Re-index selected products" in html  # added by embeddings/admin.py


@pytest.mark.django_db
def test_product_list_filters_by_image_index_status_and_searches_sku(admin_client):
    broken = ProductFactory(title="Broken", sku="BRK-1")
    ProductImage.objects.filter(pk=ProductImageFactory(product=broken).pk).update(
        index_status="failed"
    )
    fine = ProductFactory(title="Fine", sku="FIN-1")
    ProductImage.objects.filter(pk=ProductImageFactory(product=fine).pk).update(
        index_status="indexed"
    )
    ProductFactory(title="Bare", sku="BAR-1")
    url = reverse("admin:catalog_product_changelist")

    def titles(**params) -> set[str]:
        return {p.title for p in admin_client.get(url, params).context["cl"].result_list}

    assert titles(index="failed") == {"Broken"}
    assert titles(index="indexed") == {"Fine"}
    assert titles(index="none") == {"Bare"}
    assert titles(q="FIN-1") == {"Fine"}


@pytest.mark.django_db
def test_non_staff_cannot_open_the_admin(client, django_user_model):
    user = django_user_model.objects.create_user("shopper", password="pw-shopper-123")
    client.force_login(user)
    response = client.get(reverse("admin:catalog_product_changelist"))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


# --- add / change -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_add_page_with_two_files_creates_two_indexed_images(admin_client):
    shirts = CategoryFactory(name="T-shirts")
    page = admin_client.get(reverse("admin:catalog_product_add"))
    assert page.status_code == 200 and "multiple" in page.content.decode()
    data = product_form(
        category=str(shirts.pk),
        add_images=[png("front.png"), png("back.png", (20, 20, 220), shape="square")],
    )
    response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    product = Product.objects.get()
    assert product.sku.startswith("SKU-")  # generated: the form left it empty
    images = list(product.images.order_by("position"))
    assert [img.position for img in images] == [0, 1]
    assert [img.index_status for img in images] == ["indexed", "indexed"]
    hits = search.product_search(
        image=load_image(make_image((20, 20, 220), shape="square")), limit=3
    )
    assert hits[0].product.pk == product.pk and hits[0].image_id == images[1].pk


@pytest.mark.django_db
def test_add_page_names_the_file_it_rejects_and_saves_nothing(admin_client):
    data = product_form(add_images=[png("ok.png"), SimpleUploadedFile("notes.jpg", b"plain text")])
    response = admin_client.post(reverse("admin:catalog_product_add"), data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["add_images"]
    assert any("notes.jpg" in e and "JPEG" in e for e in errors)
    assert Product.objects.count() == 0 and ProductImage.objects.count() == 0


@pytest.mark.django_db
def test_add_page_rejects_an_oversized_file(admin_client, settings):
    settings.MAX_UPLOAD_BYTES = 1024
    big = SimpleUploadedFile("big.bmp", make_image(size=(64, 64), fmt="BMP"))
    response = admin_client.post(
        reverse("admin:catalog_product_add"), product_form(add_images=[big])
    )
    assert response.status_code == 200
    assert "largest accepted upload" in str(response.context["adminform"].form.errors["add_images"])


@pytest.mark.django_db
def test_change_page_appends_new_files_after_existing_images(admin_client):
    product = ProductFactory(price=Decimal("9.99"))
    existing = ProductImageFactory(product=product, position=0)
    url = reverse("admin:catalog_product_change", args=[product.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'type="file" name="add_images"' in html and "multiple" in html
    assert "index_status" in html or "index status" in html.lower()
    data = product_form(
        title=product.title,
        sku=product.sku,
        **{
            "images-TOTAL_FORMS": "1",
            "images-INITIAL_FORMS": "1",
            "images-0-id": str(existing.pk),
            "images-0-product": str(product.pk),
            "images-0-position": "0",
            "images-0-alt_text": "front view",
            "add_images": [png("new.png")],
        },
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    images = list(product.images.order_by("position"))
    assert [(img.pk == existing.pk, img.position) for img in images] == [(True, 0), (False, 1)]
    assert images[0].alt_text == "front view"


@pytest.mark.django_db
def test_inline_rejects_a_corrupt_replacement_image(admin_client):
    product = ProductFactory()
    url = reverse("admin:catalog_product_change", args=[product.pk])
    data = make_image(size=(200, 200), fmt="JPEG")
    response = admin_client.post(
        url,
        product_form(
            title=product.title,
            sku=product.sku,
            **{
                "images-TOTAL_FORMS": "1",
                "images-0-position": "0",
                "images-0-alt_text": "",
                "images-0-image": SimpleUploadedFile("cut.jpg", data[: len(data) // 2]),
            },
        ),
    )
    assert response.status_code == 200
    assert "corrupt" in str(response.context["inline_admin_formsets"][0].formset.errors)
    assert product.images.count() == 0


# --- re-index -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_reindex_action_requeues_images_pending_then_indexed(
    admin_client, django_capture_on_commit_callbacks
):
    product = ProductFactory()
    images = [ProductImageFactory(product=product), ProductImageFactory(product=product)]
    ProductFactory()  # not selected, no images
    ProductImage.objects.update(index_status="failed", index_error="old failure")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(
            reverse("admin:catalog_product_changelist"),
            {"action": "reindex_products", "_selected_action": [str(product.pk)]},
        )
    assert response.status_code == 302
    assert messages_of(response) == ["Queued 2 images of 1 product for re-indexing."]
    assert set(ProductImage.objects.values_list("index_status", "index_error")) == {("pending", "")}
    assert len(callbacks) == 2
    for callback in callbacks:  # what happens when the action's transaction commits
        callback()
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
    assert ImageEmbedding.objects.filter(image__in=images).count() == 2


@pytest.mark.django_db
def test_reindex_of_products_without_images_says_so(admin_client):
    product = ProductFactory()
    response = admin_client.post(
        reverse("admin:catalog_product_changelist"),
        {"action": "reindex_products", "_selected_action": [str(product.pk)]},
    )
    assert messages_of(response) == ["The selected 1 product have no images to index."]


@pytest.mark.django_db
def test_image_admin_lists_status_and_error_and_reindexes(
    admin_client, django_capture_on_commit_callbacks
):
    image = ProductImageFactory()
    ProductImage.objects.filter(pk=image.pk).update(
        index_status="failed", index_error="The file is corrupt"
    )
    url = reverse("admin:catalog_productimage_changelist")
    html = admin_client.get(url).content.decode()
    assert "The file is corrupt" in html and "failed" in html
    change = admin_client.get(reverse("admin:catalog_productimage_change", args=[image.pk]))
    assert change.status_code == 200 and "The file is corrupt" in change.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            url, {"action": "reindex_images", "_selected_action": [str(image.pk)]}
        )
    assert messages_of(response) == ["Queued 1 image of the selection for re-indexing."]
    image.refresh_from_db()
    assert (image.index_status, image.index_error) == ("indexed", "")


# --- delete ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_deleting_a_product_in_the_admin_removes_it_from_search(admin_client):
    keep = catalog_services.product_create(
        title="Keep", images=[png("k.png", (20, 200, 40), shape="stripes")]
    )
    gone = catalog_services.product_create(title="Gone", images=[png("g.png")])
    query = load_image(make_image((200, 30, 30)))
    assert search.product_search(image=query, limit=5)[0].product.pk == gone.pk
    gone_image_id = gone.images.get().pk

    response = admin_client.post(
        reverse("admin:catalog_product_delete", args=[gone.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Product.objects.filter(pk=gone.pk).exists()
    assert IndexChange.objects.filter(image_id=gone_image_id, op="delete").exists()
    assert [h.product.pk for h in search.product_search(image=query, limit=5)] == [keep.pk]


@pytest.mark.django_db(transaction=True)
def test_deleting_an_image_in_the_admin_removes_it_from_search(admin_client):
    product = catalog_services.product_create(
        title="Two looks", images=[png("a.png"), png("b.png", (20, 20, 220))]
    )
    red, blue = product.images.order_by("position")
    response = admin_client.post(
        reverse("admin:catalog_productimage_delete", args=[red.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    hits = search.product_search(image=load_image(make_image((200, 30, 30))), limit=5)
    assert [(h.product.pk, h.image_id) for h in hits] == [(product.pk, blue.pk)]


# --- other pages ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_index_admin_pages_are_read_only_and_render(admin_client):
    catalog_services.product_create(title="Tee", images=[png("t.png")])
    for model in ["imageembedding", "indexchange"]:
        changelist = admin_client.get(reverse(f"admin:embeddings_{model}_changelist"))
        assert changelist.status_code == 200
        assert admin_client.get(reverse(f"admin:embeddings_{model}_add")).status_code == 403
    embedding = ImageEmbedding.objects.get()
    detail = admin_client.get(
        reverse("admin:embeddings_imageembedding_change", args=[embedding.pk])
    )
    assert detail.status_code == 200 and embedding.model_id in detail.content.decode()
    delete_url = reverse("admin:embeddings_imageembedding_delete", args=[embedding.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert ImageEmbedding.objects.filter(pk=embedding.pk).exists()


@pytest.mark.django_db
def test_category_admin_lists_product_counts(admin_client):
    bags = CategoryFactory(name="Bags")
    ProductFactory.create_batch(2, category=bags)
    response = admin_client.get(reverse("admin:catalog_category_changelist"))
    assert response.status_code == 200
    assert [(c.name, c.n_products) for c in response.context["cl"].result_list] == [("Bags", 2)]
