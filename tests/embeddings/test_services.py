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


# --- A save never fails because of the broker -------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def broker_down():
    """This process publishes to a Redis URL where nothing listens (a broker that is down)."""
    from searchsite.celery import app as celery_app

    conf = celery_app.conf
    saved = (conf.broker_url, conf.task_always_eager)
    conf.broker_url, conf.task_always_eager = f"redis://127.0.0.1:{_free_port()}/0", False
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    services._publish_paused_until = 0.0
    yield
    conf.broker_url, conf.task_always_eager = saved
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    services._publish_paused_until = 0.0


def test_api_save_with_the_broker_down_answers_201_once_and_leaves_images_pending(
    broker_down, django_capture_on_commit_callbacks, caplog
):
    import time

    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from catalog.models import Product

    user = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    files = [
        SimpleUploadedFile(f"{n}.png", make_image((40 * n, 90, 30)), content_type="image/png")
        for n in range(4)
    ]
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            "/api/v1/products/",
            {"title": "Broker-down tee", "images": files},
            format="multipart",
        )
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.content
    assert callbacks, "the embedding was not queued after the commit"
    assert elapsed < 3.0, f"a save with the broker down took {elapsed:.1f} s"
    assert Product.objects.filter(title="Broker-down tee").count() == 1
    images = ProductImage.objects.filter(product_id=response.json()["id"])
    assert images.count() == 4
    assert {(i.index_status, i.queued_at is not None) for i in images} == {("pending", True)}
    assert not ImageEmbedding.objects.exists()
    assert "stay pending" in caplog.text and "reconcile" in caplog.text


def test_a_failed_publish_pauses_publishing_so_many_images_cost_one_attempt(
    broker_down, monkeypatch
):
    attempts = []
    real = tasks.image_embed_task.apply_async

    def counting(*args, **kwargs):
        attempts.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks.image_embed_task, "apply_async", counting)
    assert services._publish([1, 2, 3], force=False) == 0
    assert services._publish([4], force=False) == 0
    assert len(attempts) == 1


def test_enqueue_in_eager_mode_still_surfaces_task_errors(monkeypatch):
    # Without a broker nothing can be lost, so nothing is swallowed either.
    def boom(*args, **kwargs):
        raise RuntimeError("task bug")

    monkeypatch.setattr(tasks.image_embed_task, "apply_async", boom)
    with pytest.raises(RuntimeError, match="task bug"):
        services._publish([1], force=False)


# --- Races end in one consistent state ----------------------------------------------------------


def test_an_older_file_read_before_an_edit_never_overwrites_the_newer_vector(
    django_capture_on_commit_callbacks, monkeypatch
):
    with django_capture_on_commit_callbacks(execute=True):
        image = add_image(ProductFactory(), make_image((255, 0, 0)), name="old.png")
    old_hash = ImageEmbedding.objects.get(image=image).content_hash
    encoder = runtime.get_encoder()
    real_encode = encoder.encode_images
    new_bytes = make_image((0, 0, 255), shape="stripes")
    edited = []

    def encode_then_edit(images):
        vectors = real_encode(images)
        if not edited:  # while the first run computes, staff upload a new file and its task runs
            edited.append(True)
            with django_capture_on_commit_callbacks(execute=True):
                fresh = ProductImage.objects.get(id=image.id)
                fresh.image.save("new.png", ContentFile(new_bytes))
        return vectors

    monkeypatch.setattr(encoder, "encode_images", encode_then_edit)
    outcome = services.image_embed(image_id=image.id, force=True)
    assert outcome.status == "skipped"  # its vector was of the old file

    image.refresh_from_db()
    emb = ImageEmbedding.objects.get(image=image)
    assert emb.content_hash == image.content_hash != old_hash
    assert image.index_status == "indexed" and image.image.name.startswith("products/")
    import numpy as np

    from embeddings.encoder import load_image

    expected = real_encode([load_image(new_bytes, max_pixels=10**8)])[0]
    assert np.allclose(emb.array, expected, atol=1e-5)


def test_two_runs_storing_the_same_content_leave_one_row_and_one_change(
    django_capture_on_commit_callbacks, monkeypatch
):
    with django_capture_on_commit_callbacks(execute=False):
        image = add_image(ProductFactory(), make_image())
    encoder = runtime.get_encoder()
    real_encode = encoder.encode_images
    other_run = []

    def encode_while_another_run_stores(images):
        if not other_run:  # a second worker, given the same image, finishes first
            other_run.append("running")
            other_run[0] = services.image_embed(image_id=image.id).status
        return real_encode(images)

    monkeypatch.setattr(encoder, "encode_images", encode_while_another_run_stores)
    assert services.image_embed(image_id=image.id).status == "skipped"
    assert other_run == ["indexed"]
    assert ImageEmbedding.objects.filter(image=image).count() == 1
    assert IndexChange.objects.filter(image_id=image.id, op="upsert").count() == 1
    image.refresh_from_db()
    assert image.index_status == "indexed"


def test_an_image_deleted_while_it_is_embedded_gets_no_vector(
    django_capture_on_commit_callbacks, monkeypatch
):
    with django_capture_on_commit_callbacks(execute=False):
        image = add_image(ProductFactory(), make_image())
    encoder = runtime.get_encoder()
    real_encode = encoder.encode_images

    def encode_while_deleted(images):
        with django_capture_on_commit_callbacks(execute=True):
            catalog_services.product_image_delete(image=ProductImage.objects.get(id=image.id))
        return real_encode(images)

    monkeypatch.setattr(encoder, "encode_images", encode_while_deleted)
    assert services.image_embed(image_id=image.id).status == "missing"
    assert not ImageEmbedding.objects.exists()
    assert not IndexChange.objects.filter(op="upsert").exists()
