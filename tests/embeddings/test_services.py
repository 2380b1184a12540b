"""Embedding on upload: queued on commit, skip unchanged, failures recorded, deletes leave search."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from catalog.models import ProductImage
from embeddings import runtime, services, tasks
from embeddings.encoder import ImageDecodeError
from embeddings.models import ImageEmbedding, IndexChange
from tests.conftest import make_image
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db


def add_image(product, data, name="x.png"):
    return catalog_services.product_image_add(product=product, file=SimpleUploadedFile(name, data))


def test_embedding_is_queued_only_after_commit(django_capture_on_commit_callbacks):
    product = ProductFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        image = add_image(product, make_image())
        assert not ImageEmbedding.objects.exists()
    assert len(callbacks) == 1
    image.refresh_from_db()
    assert image.index_status == "pending"
    callbacks[0]()
    image.refresh_from_db()
    assert image.index_status == "indexed" and image.indexed_at is not None
    emb = ImageEmbedding.objects.get(image=image)
    assert emb.model_id == runtime.get_encoder().model_id and emb.dim == 32
    assert emb.array.shape == (32,)


def test_rerunning_for_an_unchanged_image_does_no_work(
    django_capture_on_commit_callbacks, monkeypatch
):
    with django_capture_on_commit_callbacks(execute=True):
        image = add_image(ProductFactory(), make_image())
    changes = IndexChange.objects.count()
    calls = []
    encoder = runtime.get_encoder()
    monkeypatch.setattr(encoder, "encode_images", lambda imgs: calls.append(imgs))
    assert services.image_embed(image_id=image.id).status == "skipped"
    assert calls == [] and IndexChange.objects.count() == changes


def test_changed_file_is_embedded_again(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        image = add_image(ProductFactory(), make_image((255, 0, 0)))
    before = bytes(ImageEmbedding.objects.get(image=image).vector)
    with django_capture_on_commit_callbacks(execute=True):
        image.image.save("new.png", ContentFile(make_image((0, 0, 255), shape="square")))
    after = ImageEmbedding.objects.get(image=image)
    assert bytes(after.vector) != before
    assert ImageEmbedding.objects.filter(image=image).count() == 1


def test_corrupt_image_is_marked_failed_with_a_reason_and_not_raised(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        image = add_image(ProductFactory(), b"this is not a picture", name="broken.jpg")
    image.refresh_from_db()
    assert image.index_status == "failed"
    assert "not a readable image" in image.index_error
    assert not ImageEmbedding.objects.filter(image=image).exists()


def test_missing_file_is_marked_failed(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        image = add_image(ProductFactory(), make_image())
    image.image.storage.delete(image.image.name)
    outcome = services.image_embed(image_id=image.id, force=True)
    image.refresh_from_db()
    assert outcome.status == "failed" and "missing from storage" in image.index_error


def test_task_skips_rows_that_no_longer_exist():
    assert tasks.image_embed_task.apply(args=[987654]).get() == "missing"


def test_task_retries_transient_errors_only():
    retried = tasks.image_embed_task.autoretry_for
    assert OSError in retried
    assert not any(issubclass(ImageDecodeError, e) for e in retried if e is not OSError)
    assert tasks.image_embed_task.max_retries == 8


def test_deleting_a_product_removes_its_images_from_search(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        product = catalog_services.product_create(
            title="Tee",
            images=[
                SimpleUploadedFile("a.png", make_image()),
                SimpleUploadedFile("b.png", make_image((0, 90, 0))),
            ],
        )
    image_ids = set(product.images.values_list("id", flat=True))
    live = runtime.get_live_index()
    assert set(live.store.image_ids().tolist()) == image_ids
    files = [img.image.name for img in product.images.all()]
    with django_capture_on_commit_callbacks(execute=True):
        catalog_services.product_delete(product=product)
    assert len(runtime.get_live_index()) == 0
    assert (
        set(IndexChange.objects.filter(op="delete").values_list("image_id", flat=True)) == image_ids
    )
    from django.core.files.storage import default_storage

    assert not any(default_storage.exists(name) for name in files)


def test_reembed_all_recomputes_every_image(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]:
            add_image(ProductFactory(), make_image(c))
    counts = services.images_reembed_all(progress=False)
    assert counts == {"indexed": 3, "skipped": 0, "failed": 0, "missing": 0}
    assert set(ProductImage.objects.values_list("index_status", flat=True)) == {"indexed"}
